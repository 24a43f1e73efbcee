# The croft messages (shared-sim/src/protocol.rs, PROTOCOL_VERSION 4) as GDScript
# dictionaries, encoded and decoded with postcard. Works in Godot 3.2+ and Godot 4.x.
#
#   const Protocol = preload("res://addons/croft/protocol.gd")
#   var bytes = Protocol.encode(Protocol.LOBBY_CLIENT, {"type": "FindMatch"})
#   var r = Protocol.decode_result(Protocol.LOBBY_SERVER, bytes_from_server)
#   if r.ok: handle(r.message) else: print(r.error)
#
# The four message sets ("kinds"):
#   CLIENT        ClientMessage        client -> instance server (match, farm, hub)
#   SERVER        ServerMessage        instance server -> client
#   LOBBY_CLIENT  LobbyClientMessage   client -> connection server (lobby)
#   LOBBY_SERVER  LobbyServerMessage   connection server -> client
#
# How Rust values look in GDScript (the same rules throughout, see SCHEMA below):
#   - A message, and any value of an enum that has a variant with data (Action, Target,
#     ActionError, MatchEvent, FarmAction, Plot, ChatTarget), is a Dictionary with "type" = the
#     variant name, plus one key per field, named as in Rust:
#       {"type": "MatchAction", "seq": 1, "action": {"type": "EndTurn"}}
#       {"type": "MatchFound", "match_id": 7, "server_addr": "127.0.0.1:5000",
#        "connect_token": <PoolByteArray>, "ws_url": "ws://127.0.0.1:7100/ws"}
#     Newtype variants (one unnamed field) get these keys: ServerMessage Snapshot -> "snapshot",
#     Events -> "events", HubJoined -> "player", HubMoves -> "moves"; LobbyServerMessage
#     Friends -> "friends"; Target Hero -> "seat", Creature -> "id"; ChatTarget User -> "user_id".
#   - Enums whose variants carry no data (Seat, ErrorCode, Keyword, EndReason, FarmError,
#     MoveError, Presence, FriendState, QueueEnd) are the variant name as a String: "Second".
#     When encoding, the variant index (int) is accepted as well, and a unit variant of a data
#     enum may be given as a plain String ("EndTurn" for {"type": "EndTurn"}).
#   - Structs (MatchSnapshot, PlayerView, CreatureView, MatchResult, HubPlayer, FriendEntry,
#     DeckEntry) are Dictionaries of their fields, without "type".
#   - Option: null or the value. Vec<T>: Array. Tuples and [T; N]: Array (items as
#     [["wheat", 3]], moves as [[user_id, x, y]], players as [first_seat, second_seat]).
#   - Vec<u8> (connect_token): PoolByteArray (Godot 3) / PackedByteArray (Godot 4); an Array of
#     ints is accepted when encoding.
#   - SocketAddr: "a.b.c.d:port" or "[ipv6]:port" (Rust's Display form, e.g. "[::1]:5000").
#   - Integers: int. u64 above 2^63-1 appear as negative ints (two's complement); floats with
#     an integral value (from JSON.parse) are accepted when encoding.
#
# Errors never crash: encode() returns an empty byte array on a bad message (encode_result()
# says why), decode() returns null on bad bytes (decode_result() says why). Bytes left over
# after a message are an error, as on the servers; client messages over
# MAX_CLIENT_MESSAGE_BYTES are refused both ways.

const Postcard = preload("postcard.gd")
const SocketAddr = preload("socket_addr.gd")

const PROTOCOL_VERSION = 4
const PROTOCOL_ID = 0x43524F4654000004
# The WebSocket subprotocol every croft WS endpoint requires.
const SUBPROTOCOL = "croft.v4"
const WS_PATH = "/ws"
const MAX_CLIENT_MESSAGE_BYTES = 1024

# WebSocket close codes sent by croft servers (shared-sim protocol.rs `ws_close`).
const CLOSE_NORMAL = 1000
const CLOSE_GOING_AWAY = 1001  # the server is shutting down
const CLOSE_ABNORMAL = 1006  # no close frame (connection lost); set locally
const CLOSE_CLOSED_BY_SERVER = 4000  # an Error message before it says why
const CLOSE_BAD_TOKEN = 4001
const CLOSE_EXPIRED_TOKEN = 4002
const CLOSE_ALREADY_CONNECTED = 4003
const CLOSE_WRONG_SERVER = 4004
const CLOSE_TIMEOUT = 4005  # no token in time, silent too long, or reading too slowly

const CLIENT = "client"
const SERVER = "server"
const LOBBY_CLIENT = "lobby_client"
const LOBBY_SERVER = "lobby_server"

const KIND_TYPES = {
	"client": "ClientMessage",
	"server": "ServerMessage",
	"lobby_client": "LobbyClientMessage",
	"lobby_server": "LobbyServerMessage",
}

# The wire layout of every type. A type is a primitive name ("u8", "u16", "u32", "u64", "i16",
# "i32", "bool", "str", "bytes" = Vec<u8>, "addr" = SocketAddr), the name of a SCHEMA entry, or
# ["opt", T], ["vec", T], ["tuple", [T, ...]], ["array", T, N].
# Entries: ["struct", [[field, T], ...]], ["enum", [[variant, [[field, T], ...]], ...]] (variant
# index = position), ["units", [variant, ...]] (an enum without data). Keep the order of
# variants and fields exactly as in Rust.
const SCHEMA = {
	"ClientMessage": ["enum", [
		["MatchAction", [["seq", "u32"], ["action", "Action"]]],
		["RequestSnapshot", []],
		["FarmAction", [["seq", "u32"], ["action", "FarmAction"]]],
		["HubMove", [["x", "i32"], ["y", "i32"]]],
		["HubChat", [["text", "str"]]],
	]],
	"ServerMessage": ["enum", [
		["Welcome", [["user_id", "u64"], ["match_id", "u64"], ["seat", "Seat"]]],
		["Snapshot", [["snapshot", "MatchSnapshot"]]],
		["Events", [["events", ["vec", "MatchEvent"]]]],
		["ActionAccepted", [["seq", "u32"]]],
		["ActionRejected", [["seq", "u32"], ["reason", "ActionError"]]],
		["OpponentLeft", [["grace_seconds", "u32"]]],
		["OpponentReturned", []],
		["Error", [["code", "ErrorCode"], ["message", "str"]]],
		["FarmState", [["tick", "u64"], ["plots", ["vec", "Plot"]], ["items", ["vec", ["tuple", ["str", "u32"]]]]]],
		["FarmActionResult", [["seq", "u32"], ["error", ["opt", "FarmError"]]]],
		["HubWelcome", [["hub_id", "u32"], ["you", "HubPlayer"], ["players", ["vec", "HubPlayer"]]]],
		["HubJoined", [["player", "HubPlayer"]]],
		["HubLeft", [["user_id", "u64"]]],
		["HubMoves", [["moves", ["vec", ["tuple", ["u64", "i32", "i32"]]]]]],
		["HubMoveRejected", [["error", "MoveError"], ["x", "i32"], ["y", "i32"]]],
		["HubChat", [["from", "u64"], ["name", "str"], ["text", "str"]]],
	]],
	"LobbyClientMessage": ["enum", [
		["FindMatch", []],
		["CancelMatch", []],
		["Chat", [["to", "ChatTarget"], ["text", "str"]]],
		["FriendRequest", [["username", "str"]]],
		["FriendAccept", [["user_id", "u64"]]],
		["FriendDecline", [["user_id", "u64"]]],
		["FriendRemove", [["user_id", "u64"]]],
		["FriendList", []],
		["RejoinMatch", []],
		["Inventory", []],
		["EnterFarm", []],
		["EnterHub", []],
		["Craft", [["recipe", "str"]]],
		["Decks", []],
		["SaveDeck", [["slot", "u8"], ["name", "str"], ["cards", ["vec", "str"]]]],
		["ChooseDeck", [["slot", ["opt", "u8"]]]],
	]],
	"LobbyServerMessage": ["enum", [
		["Welcome", [["user_id", "u64"], ["username", "str"]]],
		["Friends", [["friends", ["vec", "FriendEntry"]]]],
		["FriendPresence", [["user_id", "u64"], ["presence", "Presence"]]],
		["FriendRequestReceived", [["user_id", "u64"], ["username", "str"]]],
		["FriendUpdate", [["user_id", "u64"], ["accepted", "bool"]]],
		["Queued", []],
		["QueueLeft", [["reason", "QueueEnd"]]],
		["MatchFound", [["match_id", "u64"], ["server_addr", "addr"], ["connect_token", "bytes"], ["ws_url", ["opt", "str"]]]],
		["MatchEnded", [["match_id", "u64"], ["aborted", "bool"]]],
		["Chat", [["from", "u64"], ["from_name", "str"], ["to", "ChatTarget"], ["text", "str"]]],
		["Notification", [["text", "str"]]],
		["Error", [["code", "ErrorCode"], ["message", "str"]]],
		["Inventory", [["items", ["vec", ["tuple", ["str", "u32"]]]], ["cards", ["vec", ["tuple", ["str", "u32"]]]]]],
		["Crafted", [["recipe", "str"], ["output", "str"], ["quantity", "u32"]]],
		["FarmReady", [["server_addr", "addr"], ["connect_token", "bytes"], ["ws_url", ["opt", "str"]]]],
		["HubReady", [["server_addr", "addr"], ["connect_token", "bytes"], ["ws_url", ["opt", "str"]]]],
		["Decks", [["decks", ["vec", "DeckEntry"]], ["active", ["opt", "u8"]]]],
	]],
	# shared-sim/src/rules.rs
	"Seat": ["units", ["First", "Second"]],
	"Target": ["enum", [
		["Hero", [["seat", "Seat"]]],
		["Creature", [["id", "u32"]]],
	]],
	"Action": ["enum", [
		["PlayCard", [["card", "str"], ["target", ["opt", "Target"]]]],
		["Attack", [["attacker", "u32"], ["target", "Target"]]],
		["EndTurn", []],
		["Concede", []],
	]],
	"ActionError": ["enum", [
		["MatchOver", []],
		["NotYourTurn", []],
		["CardNotInHand", []],
		["NotEnoughMana", [["have", "u8"], ["need", "u8"]]],
		["BoardFull", []],
		["TargetRequired", []],
		["TargetNotAllowed", []],
		["InvalidTarget", []],
		["UnknownCreature", []],
		["CreatureCannotAttack", []],
		["MustAttackGuard", []],
	]],
	"EndReason": ["units", ["HeroDied", "Concede", "Forfeit", "TurnLimit", "Aborted"]],
	"MatchResult": ["struct", [["winner", ["opt", "Seat"]], ["reason", "EndReason"]]],
	"CreatureView": ["struct", [
		["id", "u32"], ["card", "str"], ["attack", "u8"], ["health", "i16"], ["max_health", "u8"],
		["keywords", ["vec", "Keyword"]], ["can_attack", "bool"], ["shield", "bool"],
	]],
	"MatchEvent": ["enum", [
		["TurnStarted", [["seat", "Seat"], ["turn", "u32"], ["max_mana", "u8"], ["seconds", "u32"]]],
		["CardDrawn", [["seat", "Seat"], ["card", ["opt", "str"]]]],
		["CardBurned", [["seat", "Seat"], ["card", "str"]]],
		["Fatigue", [["seat", "Seat"], ["damage", "u8"]]],
		["CardPlayed", [["seat", "Seat"], ["card", "str"], ["mana_left", "u8"], ["target", ["opt", "Target"]]]],
		["CreatureSummoned", [["seat", "Seat"], ["creature", "CreatureView"]]],
		["Attacked", [["attacker", "u32"], ["target", "Target"]]],
		["Damaged", [["target", "Target"], ["amount", "u8"], ["remaining", "i16"]]],
		["Healed", [["target", "Target"], ["amount", "u8"], ["remaining", "i16"]]],
		["ShieldBroken", [["creature", "u32"]]],
		["CreatureDied", [["creature", "u32"]]],
		["TurnEnded", [["seat", "Seat"], ["timed_out", "bool"]]],
		["MatchEnded", [["result", "MatchResult"]]],
	]],
	# shared-sim/src/data.rs
	"Keyword": ["units", ["Haste", "Guard", "Lifesteal", "Shield"]],
	# shared-sim/src/view.rs
	"PlayerView": ["struct", [
		["life", "i16"], ["max_mana", "u8"], ["mana", "u8"], ["deck_count", "u16"],
		["hand", ["vec", "str"]], ["hand_count", "u16"], ["board", ["vec", "CreatureView"]],
	]],
	"MatchSnapshot": ["struct", [
		["match_id", "u64"], ["you", "Seat"], ["turn", "u32"], ["active", "Seat"],
		["seconds_left", "u32"], ["players", ["array", "PlayerView", 2]],
		["result", ["opt", "MatchResult"]],
	]],
	# shared-sim/src/protocol.rs
	"ErrorCode": ["units", [
		"Malformed", "TooLarge", "BadToken", "UnknownMatch", "NotAllowed", "TooManyErrors",
		"ShuttingDown", "RateLimited", "UnknownUser", "BadChat", "Unavailable", "SessionRevoked",
		"Replaced", "UnknownId", "NotEnoughItems", "InventoryFull", "InvalidDeck",
	]],
	"Presence": ["units", ["Offline", "Online", "InQueue", "InMatch"]],
	"FriendState": ["units", ["Accepted", "Incoming", "Outgoing"]],
	"FriendEntry": ["struct", [["user_id", "u64"], ["username", "str"], ["state", "FriendState"], ["presence", "Presence"]]],
	"ChatTarget": ["enum", [
		["User", [["user_id", "u64"]]],
		["Common", []],
	]],
	"DeckEntry": ["struct", [["slot", "u8"], ["name", "str"], ["cards", ["vec", "str"]]]],
	"QueueEnd": ["units", ["Cancelled", "TimedOut", "NoCapacity"]],
	# shared-sim/src/farm.rs
	"Plot": ["enum", [
		["Empty", []],
		["Growing", [["crop", "str"], ["stage", "u8"], ["progress", "u32"], ["water", "u8"], ["neglect", "u32"]]],
		["Ripe", [["crop", "str"], ["neglect", "u32"]]],
		["Withered", [["crop", "str"]]],
	]],
	"FarmAction": ["enum", [
		["Plant", [["plot", "u8"], ["seed", "str"]]],
		["Water", [["plot", "u8"]]],
		["Harvest", [["plot", "u8"]]],
		["Clear", [["plot", "u8"]]],
	]],
	"FarmError": ["units", [
		"NoSuchPlot", "PlotNotEmpty", "NotASeed", "MissingSeed", "NothingGrowing",
		"AlreadyWatered", "NotRipe", "NotWithered", "InventoryFull", "Busy", "Unavailable",
	]],
	# shared-sim/src/hub.rs
	"HubPlayer": ["struct", [["user_id", "u64"], ["name", "str"], ["x", "i32"], ["y", "i32"]]],
	"MoveError": ["units", ["OutOfBounds", "TooFast"]],
}


# ---------------------------------------------------------------------------------------------
# Public API

# The encoded message, or an empty byte array when `message` does not fit the schema.
static func encode(kind, message):
	var r = encode_result(kind, message)
	if r.ok:
		return r.bytes
	return Postcard.empty_bytes()


# {"ok": true, "bytes": <byte array>} or {"ok": false, "error": String}.
static func encode_result(kind, message):
	if not KIND_TYPES.has(kind):
		return {"ok": false, "error": "unknown message kind %s" % str(kind)}
	var w = Postcard.Writer.new()
	_enc(w, KIND_TYPES[kind], message, KIND_TYPES[kind])
	if not w.ok():
		return {"ok": false, "error": w.error}
	if _is_client_kind(kind) and w.size() > MAX_CLIENT_MESSAGE_BYTES:
		return {"ok": false, "error": "message of %d bytes exceeds the limit" % w.size()}
	return {"ok": true, "bytes": w.bytes()}


# The decoded message (a Dictionary), or null when `bytes` is not exactly one message.
static func decode(kind, bytes):
	var r = decode_result(kind, bytes)
	if r.ok:
		return r.message
	return null


# {"ok": true, "message": Dictionary} or {"ok": false, "error": String}.
static func decode_result(kind, bytes):
	if not KIND_TYPES.has(kind):
		return {"ok": false, "error": "unknown message kind %s" % str(kind)}
	if typeof(bytes) != typeof(Postcard.empty_bytes()):
		return {"ok": false, "error": "expected a byte array"}
	if _is_client_kind(kind) and bytes.size() > MAX_CLIENT_MESSAGE_BYTES:
		return {"ok": false, "error": "message of %d bytes exceeds the limit" % bytes.size()}
	var r = Postcard.Reader.new(bytes)
	var value = _dec(r, KIND_TYPES[kind])
	if r.error != "":
		return {"ok": false, "error": "malformed message: " + r.error}
	if r.remaining() > 0:
		return {"ok": false, "error": "%d trailing bytes after the message" % r.remaining()}
	return {"ok": true, "message": value}


static func encode_client(message):
	return encode(CLIENT, message)


static func encode_lobby_client(message):
	return encode(LOBBY_CLIENT, message)


static func decode_server(bytes):
	return decode(SERVER, bytes)


static func decode_lobby_server(bytes):
	return decode(LOBBY_SERVER, bytes)


# The variant names of a SCHEMA enum, in wire order ("Seat" -> ["First", "Second"]).
static func variants(type_name):
	var entry = SCHEMA[type_name]
	if entry[0] == "units":
		return entry[1].duplicate()
	var names = []
	for v in entry[1]:
		names.append(v[0])
	return names


static func _is_client_kind(kind):
	return kind == CLIENT or kind == LOBBY_CLIENT


# ---------------------------------------------------------------------------------------------
# Encoding

static func _enc(w, t, value, path):
	if not w.ok():
		return
	if typeof(t) == TYPE_ARRAY:
		_enc_compound(w, t, value, path)
		return
	if t == "u8":
		w.put_u8(value, path)
	elif t == "u16":
		w.put_u16(value, path)
	elif t == "u32":
		w.put_u32(value, path)
	elif t == "u64":
		w.put_u64(value, path)
	elif t == "i16":
		w.put_i16(value, path)
	elif t == "i32":
		w.put_i32(value, path)
	elif t == "bool":
		w.put_bool(value, path)
	elif t == "str":
		w.put_str(value, path)
	elif t == "bytes":
		w.put_bytes(value, path)
	elif t == "addr":
		SocketAddr.encode(w, value, path)
	else:
		_enc_named(w, t, value, path)


static func _enc_compound(w, t, value, path):
	var form = t[0]
	if form == "opt":
		w.put_option_tag(value != null)
		if value != null:
			_enc(w, t[1], value, path)
		return
	if typeof(value) != TYPE_ARRAY:
		w.fail("%s: expected an Array, got %s" % [path, str(value)])
		return
	if form == "vec":
		w.put_usize(value.size(), path)
		for i in range(value.size()):
			_enc(w, t[1], value[i], "%s[%d]" % [path, i])
			if not w.ok():
				return
	elif form == "tuple":
		var types = t[1]
		if value.size() != types.size():
			w.fail("%s: expected %d items, got %d" % [path, types.size(), value.size()])
			return
		for i in range(types.size()):
			_enc(w, types[i], value[i], "%s[%d]" % [path, i])
	elif form == "array":
		if value.size() != t[2]:
			w.fail("%s: expected %d items, got %d" % [path, t[2], value.size()])
			return
		for i in range(t[2]):
			_enc(w, t[1], value[i], "%s[%d]" % [path, i])
	else:
		w.fail("%s: bad schema form %s" % [path, str(form)])


static func _enc_fields(w, fields, value, path):
	for f in fields:
		if not value.has(f[0]):
			w.fail("%s: missing field '%s'" % [path, f[0]])
			return
		_enc(w, f[1], value[f[0]], path + "." + f[0])
		if not w.ok():
			return


static func _enc_named(w, type_name, value, path):
	if not SCHEMA.has(type_name):
		w.fail("%s: unknown type %s" % [path, type_name])
		return
	var entry = SCHEMA[type_name]
	var form = entry[0]
	if form == "units":
		var index = _variant_index(entry[1], value)
		if index < 0:
			w.fail("%s: not a %s: %s" % [path, type_name, str(value)])
			return
		w.put_variant(index)
	elif form == "struct":
		if typeof(value) != TYPE_DICTIONARY:
			w.fail("%s: expected a Dictionary (%s), got %s" % [path, type_name, str(value)])
			return
		_enc_fields(w, entry[1], value, path)
	elif form == "enum":
		var vname = value
		if typeof(value) == TYPE_DICTIONARY:
			if not value.has("type"):
				w.fail("%s: missing 'type' (a %s variant)" % [path, type_name])
				return
			vname = value["type"]
		elif typeof(value) != TYPE_STRING:
			w.fail("%s: expected a Dictionary with 'type' (%s), got %s" % [path, type_name, str(value)])
			return
		var names = []
		for v in entry[1]:
			names.append(v[0])
		var index = -1
		if typeof(vname) == TYPE_STRING:
			index = names.find(vname)
		if index < 0:
			w.fail("%s: unknown %s variant %s" % [path, type_name, str(vname)])
			return
		var fields = entry[1][index][1]
		if typeof(value) == TYPE_STRING and fields.size() > 0:
			w.fail("%s: %s.%s has fields; give a Dictionary" % [path, type_name, vname])
			return
		w.put_variant(index)
		if fields.size() > 0:
			_enc_fields(w, fields, value, path)


# The index of a unit variant given by name or by index, or -1.
static func _variant_index(names, value):
	if typeof(value) == TYPE_STRING:
		return names.find(value)
	if typeof(value) == TYPE_INT and value >= 0 and value < names.size():
		return value
	return -1


# ---------------------------------------------------------------------------------------------
# Decoding

static func _dec(r, t):
	if r.error != "":
		return null
	if typeof(t) == TYPE_ARRAY:
		return _dec_compound(r, t)
	if t == "u8":
		return r.get_u8()
	elif t == "u16":
		return r.get_u16()
	elif t == "u32":
		return r.get_u32()
	elif t == "u64":
		return r.get_u64()
	elif t == "i16":
		return r.get_i16()
	elif t == "i32":
		return r.get_i32()
	elif t == "bool":
		return r.get_bool()
	elif t == "str":
		return r.get_str()
	elif t == "bytes":
		return r.get_bytes()
	elif t == "addr":
		return SocketAddr.decode(r)
	return _dec_named(r, t)


static func _dec_compound(r, t):
	var form = t[0]
	if form == "opt":
		if r.get_option_tag():
			return _dec(r, t[1])
		return null
	var out = []
	if form == "vec":
		var n = r.get_len()
		for _i in range(n):
			out.append(_dec(r, t[1]))
			if r.error != "":
				return out
	elif form == "tuple":
		for item_type in t[1]:
			out.append(_dec(r, item_type))
	elif form == "array":
		for _i in range(t[2]):
			out.append(_dec(r, t[1]))
	else:
		r.fail("bad schema form %s" % str(form))
	return out


static func _dec_named(r, type_name):
	var entry = SCHEMA[type_name]
	var form = entry[0]
	if form == "units":
		var start = r.position()
		var index = r.get_variant()
		if r.error != "":
			return null
		if index >= entry[1].size():
			r.buf.seek(start)
			r.fail("unknown %s variant %d" % [type_name, index])
			return null
		return entry[1][index]
	var out = {}
	if form == "enum":
		var start = r.position()
		var index = r.get_variant()
		if r.error != "":
			return null
		if index >= entry[1].size():
			r.buf.seek(start)
			r.fail("unknown %s variant %d" % [type_name, index])
			return null
		out["type"] = entry[1][index][0]
		_dec_fields(r, entry[1][index][1], out)
	else:
		_dec_fields(r, entry[1], out)
	return out


static func _dec_fields(r, fields, out):
	for f in fields:
		out[f[0]] = _dec(r, f[1])
		if r.error != "":
			return


# Rust's SocketAddr display form parsed to [octets (4 or 16 bytes), port], or null (see
# socket_addr.gd).
static func parse_socket_addr(text):
	return SocketAddr.parse_socket_addr(text)


# Rust's Ipv6Addr display form of 16 octets.
static func format_ipv6(octets):
	return SocketAddr.format_ipv6(octets)
