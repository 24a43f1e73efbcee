# croft over WebSocket for Godot 3.2+ (WebSocketClient; works in HTML5 exports, where the
# browser's WebSocket is used). The Godot 4 version is croft_ws.gd, with the same interface.
#
#   const CroftWs = preload("res://addons/croft/croft_ws_godot3.gd")
#   var lobby = CroftWs.new(true)          # true: connection server (Lobby messages)
#   lobby.connect("message", self, "_on_lobby_message")
#   lobby.connect("closed", self, "_on_lobby_closed")
#   lobby.connect_to("wss://play.example.org/ws", token_bytes)
#   func _process(_delta): lobby.poll()     # every frame; returns the messages received
#   lobby.send_message({"type": "FindMatch"})
#
# The wire format (docs/PROTOCOL.md, WebSocket section): subprotocol "croft.v4"; the first
# client frame is binary, the raw netcode connect token; then every binary frame is one
# postcard message each way. The server pings; nothing else is needed to keep alive.
extends Reference

# The connection is open and the token was sent: messages may be sent now.
signal connected()
# One decoded message from the server (a Dictionary; see protocol.gd).
signal message(msg)
# The connection ended: the server's close code and reason (Protocol.CLOSE_*), or 1006 and a
# local reason when it was lost or could not be opened. Emitted once per connect_to().
signal closed(code, reason)
# A frame that is not a valid message (text, or bytes that do not decode). The connection stays.
signal bad_frame(error)

const Protocol = preload("protocol.gd")

enum State { IDLE, CONNECTING, OPEN, CLOSED }

# true: the connection server (LobbyClientMessage / LobbyServerMessage); false: an instance
# server (ClientMessage / ServerMessage).
var lobby = false
var state = State.IDLE
var close_code = -1
var close_reason = ""
# Why the last send_message() failed.
var last_error = ""

var _ws = null
var _token = null
var _inbox = []
var _server_code = -1
var _server_reason = ""


func _init(for_lobby = false):
	lobby = for_lobby


func is_open():
	return state == State.OPEN


# Opens a connection to `url` (ws:// or wss://, path included) and, once it is open, sends
# `token_bytes` (the raw connect token: a PoolByteArray, e.g. Marshalls.base64_to_raw of the
# REST answer's connect_token, or MatchFound.connect_token) as the first frame. Returns OK or
# the error of WebSocketClient.connect_to_url. `verify_ssl` and `trusted_cert` apply to wss://.
func connect_to(url, token_bytes, verify_ssl = true, trusted_cert = null):
	close()
	_ws = WebSocketClient.new()
	_ws.verify_ssl = verify_ssl
	if trusted_cert != null:
		_ws.trusted_ssl_certificate = trusted_cert
	_ws.connect("connection_established", self, "_on_established")
	_ws.connect("connection_closed", self, "_on_closed")
	_ws.connect("connection_error", self, "_on_error")
	_ws.connect("server_close_request", self, "_on_close_request")
	_ws.connect("data_received", self, "_on_data")
	_token = token_bytes
	_inbox = []
	_server_code = -1
	_server_reason = ""
	close_code = -1
	close_reason = ""
	state = State.CONNECTING
	var err = _ws.connect_to_url(url, PoolStringArray([Protocol.SUBPROTOCOL]), false)
	if err != OK:
		_ws = null
		_finish(Protocol.CLOSE_ABNORMAL, "cannot open %s (error %d)" % [url, err])
	return err


# Call every frame. Returns the messages received since the last call (also emitted one by one
# as `message`).
func poll():
	if _ws != null:
		_ws.poll()
	var out = _inbox
	_inbox = []
	return out


# Encodes `msg` (a ClientMessage, or a LobbyClientMessage when `lobby`) and sends it as one
# binary frame. Returns OK, ERR_UNAVAILABLE when not open, or ERR_INVALID_DATA when the
# dictionary does not encode (see last_error).
func send_message(msg):
	var kind = Protocol.LOBBY_CLIENT if lobby else Protocol.CLIENT
	var r = Protocol.encode_result(kind, msg)
	if not r.ok:
		last_error = r.error
		return ERR_INVALID_DATA
	return send_raw(r.bytes)


# Sends already encoded bytes as one binary frame.
func send_raw(bytes):
	if state != State.OPEN or _ws == null:
		last_error = "not connected"
		return ERR_UNAVAILABLE
	var peer = _ws.get_peer(1)
	peer.set_write_mode(WebSocketPeer.WRITE_MODE_BINARY)
	var err = peer.put_packet(bytes)
	if err != OK:
		last_error = "send failed (error %d)" % err
	return err


# Closes the connection (the `closed` signal follows from poll()).
func close(code = 1000, reason = ""):
	if _ws != null and (state == State.OPEN or state == State.CONNECTING):
		_ws.disconnect_from_host(code, reason)


func _on_established(protocol):
	# croft servers refuse upgrades without the subprotocol; "" means the platform did not say.
	if protocol != Protocol.SUBPROTOCOL and protocol != "":
		_ws.disconnect_from_host(1002, "wrong subprotocol")
		_finish(Protocol.CLOSE_ABNORMAL, "the server chose subprotocol '%s', not %s" % [protocol, Protocol.SUBPROTOCOL])
		return
	var peer = _ws.get_peer(1)
	peer.set_write_mode(WebSocketPeer.WRITE_MODE_BINARY)
	var err = peer.put_packet(_token)
	_token = null
	if err != OK:
		_ws.disconnect_from_host(1000, "")
		_finish(Protocol.CLOSE_ABNORMAL, "cannot send the token (error %d)" % err)
		return
	state = State.OPEN
	emit_signal("connected")


func _on_data():
	var peer = _ws.get_peer(1)
	while peer.get_available_packet_count() > 0:
		var pkt = peer.get_packet()
		if peer.was_string_packet():
			emit_signal("bad_frame", "text frame")
			continue
		var kind = Protocol.LOBBY_SERVER if lobby else Protocol.SERVER
		var r = Protocol.decode_result(kind, pkt)
		if r.ok:
			_inbox.append(r.message)
			emit_signal("message", r.message)
		else:
			emit_signal("bad_frame", r.error)


func _on_close_request(code, reason):
	_server_code = code
	_server_reason = reason


func _on_closed(was_clean):
	if _server_code >= 0:
		_finish(_server_code, _server_reason)
	elif was_clean:
		_finish(Protocol.CLOSE_NORMAL, "")
	else:
		_finish(Protocol.CLOSE_ABNORMAL, "connection lost")


func _on_error():
	_finish(Protocol.CLOSE_ABNORMAL, "connection failed")


func _finish(code, reason):
	if state == State.CLOSED:
		return
	state = State.CLOSED
	close_code = code
	close_reason = reason
	emit_signal("closed", code, reason)
