# croft over WebSocket for Godot 4.x (WebSocketPeer; works in web exports, where the browser's
# WebSocket is used). The Godot 3 version is croft_ws_godot3.gd, with the same interface; keep
# the two in step. (Godot 4 syntax: this file does not parse in Godot 3.)
#
#   const CroftWs = preload("res://addons/croft/croft_ws.gd")
#   var lobby = CroftWs.new(true)          # true: connection server (Lobby messages)
#   lobby.message.connect(_on_lobby_message)
#   lobby.closed.connect(_on_lobby_closed)
#   lobby.connect_to("wss://play.example.org/ws", token_bytes)
#   func _process(_delta): lobby.poll()     # every frame; returns the messages received
#   lobby.send_message({"type": "FindMatch"})
#
# The wire format (docs/PROTOCOL.md, WebSocket section): subprotocol "croft.v4"; the first
# client frame is binary, the raw netcode connect token; then every binary frame is one
# postcard message each way. The server pings; WebSocketPeer answers by itself.
extends RefCounted

## The connection is open and the token was sent: messages may be sent now.
signal connected()
## One decoded message from the server (a Dictionary; see protocol.gd).
signal message(msg)
## The connection ended: the server's close code and reason (Protocol.CLOSE_*), or 1006 and a
## local reason when it was lost or could not be opened. Emitted once per connect_to().
signal closed(code, reason)
## A frame that is not a valid message (text, or bytes that do not decode). The connection stays.
signal bad_frame(error)

const Protocol = preload("protocol.gd")

enum State { IDLE, CONNECTING, OPEN, CLOSED }

## true: the connection server (LobbyClientMessage / LobbyServerMessage); false: an instance
## server (ClientMessage / ServerMessage).
var lobby = false
var state = State.IDLE
var close_code = -1
var close_reason = ""
## Why the last send_message() failed.
var last_error = ""

var _ws: WebSocketPeer = null
var _token = null
var _inbox = []


func _init(for_lobby = false):
	lobby = for_lobby


func is_open():
	return state == State.OPEN


## Opens a connection to `url` (ws:// or wss://, path included) and, once it is open, sends
## `token_bytes` (the raw connect token: a PackedByteArray, e.g. Marshalls.base64_to_raw of the
## REST answer's connect_token, or MatchFound.connect_token) as the first frame. Returns OK or
## the error of WebSocketPeer.connect_to_url. `tls_options` (TLSOptions) applies to wss://.
func connect_to(url: String, token_bytes: PackedByteArray, tls_options: TLSOptions = null) -> Error:
	close()
	_ws = WebSocketPeer.new()
	_ws.supported_protocols = PackedStringArray([Protocol.SUBPROTOCOL])
	_token = token_bytes
	_inbox = []
	close_code = -1
	close_reason = ""
	state = State.CONNECTING
	var err = _ws.connect_to_url(url, tls_options)
	if err != OK:
		_ws = null
		_finish(Protocol.CLOSE_ABNORMAL, "cannot open %s (error %d)" % [url, err])
	return err


## Call every frame. Returns the messages received since the last call (also emitted one by one
## as `message`).
func poll() -> Array:
	if _ws != null and state != State.CLOSED:
		_ws.poll()
		var ready_state = _ws.get_ready_state()
		if state == State.CONNECTING and ready_state == WebSocketPeer.STATE_OPEN:
			_on_established()
		if state == State.OPEN:
			_read_frames()
		if ready_state == WebSocketPeer.STATE_CLOSED and state != State.CLOSED:
			var code = _ws.get_close_code()
			if code < 0:
				_finish(Protocol.CLOSE_ABNORMAL, "connection lost" if state == State.OPEN else "connection failed")
			else:
				_finish(code, _ws.get_close_reason())
	var out = _inbox
	_inbox = []
	return out


## Encodes `msg` (a ClientMessage, or a LobbyClientMessage when `lobby`) and sends it as one
## binary frame. Returns OK, ERR_UNAVAILABLE when not open, or ERR_INVALID_DATA when the
## dictionary does not encode (see last_error).
func send_message(msg) -> Error:
	var kind = Protocol.LOBBY_CLIENT if lobby else Protocol.CLIENT
	var r = Protocol.encode_result(kind, msg)
	if not r.ok:
		last_error = r.error
		return ERR_INVALID_DATA
	return send_raw(r.bytes)


## Sends already encoded bytes as one binary frame.
func send_raw(bytes: PackedByteArray) -> Error:
	if state != State.OPEN or _ws == null:
		last_error = "not connected"
		return ERR_UNAVAILABLE
	var err = _ws.put_packet(bytes)  # put_packet sends a binary frame
	if err != OK:
		last_error = "send failed (error %d)" % err
	return err


## Closes the connection (the `closed` signal follows from poll()).
func close(code: int = 1000, reason: String = "") -> void:
	if _ws != null and (state == State.OPEN or state == State.CONNECTING):
		_ws.close(code, reason)


func _on_established() -> void:
	var protocol = _ws.get_selected_protocol()
	# croft servers refuse upgrades without the subprotocol; "" means the platform did not say.
	if protocol != Protocol.SUBPROTOCOL and protocol != "":
		_ws.close(1002, "wrong subprotocol")
		_finish(Protocol.CLOSE_ABNORMAL, "the server chose subprotocol '%s', not %s" % [protocol, Protocol.SUBPROTOCOL])
		return
	var err = _ws.put_packet(_token)
	_token = null
	if err != OK:
		_ws.close(1000, "")
		_finish(Protocol.CLOSE_ABNORMAL, "cannot send the token (error %d)" % err)
		return
	state = State.OPEN
	connected.emit()


func _read_frames() -> void:
	var kind = Protocol.LOBBY_SERVER if lobby else Protocol.SERVER
	while _ws.get_available_packet_count() > 0:
		var pkt = _ws.get_packet()
		if _ws.was_string_packet():
			bad_frame.emit("text frame")
			continue
		var r = Protocol.decode_result(kind, pkt)
		if r.ok:
			_inbox.append(r.message)
			message.emit(r.message)
		else:
			bad_frame.emit(r.error)


func _finish(code: int, reason: String) -> void:
	if state == State.CLOSED:
		return
	state = State.CLOSED
	close_code = code
	close_reason = reason
	closed.emit(code, reason)
