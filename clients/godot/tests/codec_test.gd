# Codec test for addons/croft (Godot 3.2+, headless):
#   godot3-server --path clients/godot/tests -s codec_test.gd      (or scripts/godot-codec-test)
#
# For every line of fixtures.tsv (written by shared-sim/tests/gdscript_fixtures.rs from the real
# Rust types): decode; compare with the expected value (canonical JSON of the GDScript form) or
# check that it is refused; re-encode and compare the bytes. For the value fixtures, also check
# that every truncation and a trailing byte are refused. Then seeded random garbage, malformed
# calls and bad dictionaries must give errors without crashing or hanging.
# Exits 0 when everything passes, 1 on a failure, 2 on a time-out.
extends SceneTree

const MAX_FRAMES = 2000
const MAX_MSEC = 90000
const LINES_PER_FRAME = 40

var Protocol = null
var Postcard = null
var lines = []
var next_line = 0
var frames = 0
var start_msec = 0
var failures = []
var counts = {
	"lines": 0, "values": 0, "rejects": 0, "mutants_ok": 0, "mutants_refused": 0,
	"truncations": 0, "garbage": 0, "misc": 0,
}
var kinds_seen = {}
var phase = "fixtures"
var _rng_state = 88172645463325252


func _init():
	start_msec = OS.get_ticks_msec()
	Protocol = _load_addon("protocol.gd")
	if Protocol == null:
		print("FAIL: cannot load addons/croft/protocol.gd")
		quit(1)
		return
	Postcard = Protocol.Postcard
	if not _read_fixtures():
		quit(1)
		return
	print("croft codec test: %d fixture lines, protocol version %d" % [lines.size(), Protocol.PROTOCOL_VERSION])


# The addon as installed in a project (res://addons/croft), else from the repository layout
# (clients/godot/addons/croft next to clients/godot/tests).
func _load_addon(file):
	var installed = "res://addons/croft/" + file
	if File.new().file_exists(installed):
		return load(installed)
	var here = ProjectSettings.globalize_path("res://")
	while here.ends_with("/"):
		here = here.substr(0, here.length() - 1)
	var repo = here.get_base_dir() + "/addons/croft/" + file
	if File.new().file_exists(repo):
		return load(repo)
	return null


func _read_fixtures():
	var f = File.new()
	if f.open("res://fixtures.tsv", File.READ) != OK:
		print("FAIL: cannot open res://fixtures.tsv")
		return false
	while not f.eof_reached():
		var line = f.get_line()
		if line == "":
			continue
		if line.begins_with("#"):
			if line.begins_with("# protocol_version\t"):
				var v = int(line.split("\t")[1])
				if v != Protocol.PROTOCOL_VERSION:
					_fail("fixtures are for protocol version %d, protocol.gd is %d" % [v, Protocol.PROTOCOL_VERSION])
			continue
		var parts = line.split("\t")
		if parts.size() != 4:
			_fail("bad fixture line: " + line)
			continue
		lines.append(parts)
	f.close()
	return true


func _idle(_delta):
	frames += 1
	if frames > MAX_FRAMES or OS.get_ticks_msec() - start_msec > MAX_MSEC:
		print("FAIL: time-out after %d frames, %d ms (phase %s, line %d)" % [frames, OS.get_ticks_msec() - start_msec, phase, next_line])
		quit(2)
		return false
	if phase == "fixtures":
		var stop = int(min(lines.size(), next_line + LINES_PER_FRAME))
		while next_line < stop:
			_check_line(lines[next_line])
			next_line += 1
		if next_line >= lines.size():
			phase = "misc"
		return false
	if phase == "misc":
		_check_primitives()
		_check_garbage()
		_check_bad_calls()
		_check_bad_dictionaries()
		phase = "done"
		return false
	_finish()
	return true


func _finish():
	for k in ["client", "server", "lobby_client", "lobby_server"]:
		if not kinds_seen.has(k):
			_fail("no fixtures for kind " + k)
	print("fixture lines: %d (values %d, rejects %d, mutants decoded %d, mutants refused %d)" % [
		counts["lines"], counts["values"], counts["rejects"], counts["mutants_ok"], counts["mutants_refused"]])
	print("truncations refused: %d, garbage inputs: %d, other checks: %d" % [
		counts["truncations"], counts["garbage"], counts["misc"]])
	print("time: %d ms, %d frames" % [OS.get_ticks_msec() - start_msec, frames])
	if failures.size() > 0:
		print("FAILED: %d failure(s)" % failures.size())
		quit(1)
	else:
		print("PASSED")
		quit(0)


func _fail(msg):
	failures.append(msg)
	if failures.size() <= 50:
		print("FAIL: " + msg)


func _check_line(parts):
	var kind = parts[0]
	var fname = parts[1]
	var bytes = Postcard.from_hex(parts[2])
	var expected = parts[3]
	counts["lines"] += 1
	kinds_seen[kind] = true
	if bytes == null:
		_fail("%s %s: bad hex" % [kind, fname])
		return
	var r = Protocol.decode_result(kind, bytes)
	if expected == "error":
		if r.ok:
			_fail("%s %s: decoded but Rust refuses it: %s" % [kind, fname, _canon(r.message)])
		elif fname.begins_with("mutant."):
			counts["mutants_refused"] += 1
		else:
			counts["rejects"] += 1
		return
	if not r.ok:
		_fail("%s %s: %s" % [kind, fname, r.error])
		return
	var got = _canon(r.message)
	if got != expected:
		_fail("%s %s: decoded\n  got:  %s\n  want: %s" % [kind, fname, got, expected])
		return
	var again = Protocol.encode_result(kind, r.message)
	if not again.ok:
		_fail("%s %s: re-encode failed: %s" % [kind, fname, again.error])
		return
	if Postcard.to_hex(again.bytes) != parts[2]:
		_fail("%s %s: re-encoded\n  got:  %s\n  want: %s" % [kind, fname, Postcard.to_hex(again.bytes), parts[2]])
		return
	if fname.begins_with("mutant."):
		counts["mutants_ok"] += 1
		return
	counts["values"] += 1
	# Every strict prefix and one trailing byte must be refused.
	for n in range(bytes.size()):
		var prefix = Postcard.empty_bytes()
		if n > 0:
			prefix = bytes.subarray(0, n - 1)  # Godot 3: inclusive end
		if Protocol.decode_result(kind, prefix).ok:
			_fail("%s %s: the %d-byte prefix decodes" % [kind, fname, n])
			return
		counts["truncations"] += 1
	var longer = bytes
	longer.append(0)
	var tr = Protocol.decode_result(kind, longer)
	if tr.ok or tr.error.find("trailing") < 0:
		_fail("%s %s: a trailing byte is not refused as trailing: %s" % [kind, fname, str(tr)])
	counts["misc"] += 1


# ---------------------------------------------------------------------------------------------

func _expect(cond, what):
	counts["misc"] += 1
	if not cond:
		_fail(what)


func _check_primitives():
	var cases = [[0, "00"], [1, "01"], [127, "7f"], [128, "8001"], [300, "ac02"],
		[-1, "ffffffffffffffffff01"], [Protocol.PROTOCOL_ID, "848080a0e5e893a943"]]
	for c in cases:
		var w = Postcard.Writer.new()
		w.put_u64(c[0])
		_expect(Postcard.to_hex(w.bytes()) == c[1], "varint %s: %s" % [str(c[0]), Postcard.to_hex(w.bytes())])
		var r = Postcard.Reader.new(w.bytes())
		_expect(r.get_u64() == c[0] and r.ok() and r.remaining() == 0, "varint read back %s" % str(c[0]))
	var zz = [[20, "28"], [-1, "01"], [-3, "05"], [32767, "feff03"], [-32768, "ffff03"]]
	for c in zz:
		var w = Postcard.Writer.new()
		w.put_i16(c[0])
		_expect(Postcard.to_hex(w.bytes()) == c[1], "zigzag i16 %d: %s" % [c[0], Postcard.to_hex(w.bytes())])
		var r = Postcard.Reader.new(w.bytes())
		_expect(r.get_i16() == c[0] and r.ok(), "zigzag i16 read back %d" % c[0])
	var wide = [0, -1, 1, 2147483647, -2147483648, 9223372036854775807, -9223372036854775807 - 1]
	for v in wide:
		var w = Postcard.Writer.new()
		w.put_i64(v)
		var r = Postcard.Reader.new(w.bytes())
		_expect(r.get_i64() == v and r.ok() and r.remaining() == 0, "i64 round trip %s (%s)" % [str(v), Postcard.to_hex(w.bytes())])
	var w32 = Postcard.Writer.new()
	w32.put_i32(-2147483648)
	w32.put_i32(2147483647)
	var r32 = Postcard.Reader.new(w32.bytes())
	_expect(r32.get_i32() == -2147483648 and r32.get_i32() == 2147483647 and r32.ok(), "i32 extremes")
	var wi8 = Postcard.Writer.new()
	wi8.put_i8(-2)
	_expect(Postcard.to_hex(wi8.bytes()) == "fe", "i8 is one raw byte")
	_expect(Postcard.Reader.new(wi8.bytes()).get_i8() == -2, "i8 read back")
	# Ranges are checked when writing.
	for bad in [[256, "u8"], [-1, "u8"], [65536, "u16"], [4294967296, "u32"], [-1, "u32"], [32768, "i16"], [2147483648, "i32"]]:
		var w = Postcard.Writer.new()
		if bad[1] == "u8":
			w.put_u8(bad[0])
		elif bad[1] == "u16":
			w.put_u16(bad[0])
		elif bad[1] == "u32":
			w.put_u32(bad[0])
		elif bad[1] == "i16":
			w.put_i16(bad[0])
		else:
			w.put_i32(bad[0])
		_expect(not w.ok() and w.size() == 0, "%s %s must be refused" % [bad[1], str(bad[0])])
	# Strings: multi-byte UTF-8 and the empty string.
	var ws = Postcard.Writer.new()
	ws.put_str("h\u00e9")
	_expect(Postcard.to_hex(ws.bytes()) == "0368c3a9", "utf-8 string: " + Postcard.to_hex(ws.bytes()))
	# Reads past the end set the error and return neutral values.
	var re = Postcard.Reader.new(Postcard.from_hex("80"))
	_expect(re.get_u32() == 0 and not re.ok(), "truncated varint")
	_expect(re.get_str() == "" and re.get_u8() == 0 and re.get_bytes().size() == 0, "reads after an error are neutral")
	# Socket addresses.
	for a in ["127.0.0.1:5000", "[::1]:5000", "[2001:db8::1:0:0:abcd]:443", "[::ffff:192.168.1.1]:1", "[::]:0", "[1:2:3:4:5:6:7:8]:65535"]:
		var p = Protocol.parse_socket_addr(a)
		_expect(p != null, "parse " + a)
		if p != null:
			var shown = ""
			if p[0].size() == 4:
				shown = "%d.%d.%d.%d:%d" % [p[0][0], p[0][1], p[0][2], p[0][3], p[1]]
			else:
				shown = "[%s]:%d" % [Protocol.format_ipv6(p[0]), p[1]]
			_expect(shown == a, "socket address round trip %s -> %s" % [a, shown])
	for a in ["127.0.0.1", "1.2.3:4", "256.0.0.1:1", "127.0.0.1:65536", "[::1:5000", "[1::2::3]:1", "[12345::]:1", "[1:2:3:4:5:6:7:8:9]:1", "", "x:1"]:
		_expect(Protocol.parse_socket_addr(a) == null, "bad socket address accepted: " + a)
	_expect(Protocol.parse_socket_addr(5) == null, "socket address from an int")
	# The tables.
	_expect(_canon(Protocol.variants("Seat")) == "[\"First\",\"Second\"]", "variants(Seat)")
	_expect(Protocol.variants("ServerMessage").size() == 16, "16 ServerMessage variants")


# A deterministic xorshift, so failures reproduce.
func _rand():
	_rng_state = _rng_state ^ (_rng_state << 13)
	_rng_state = _rng_state ^ ((_rng_state >> 7) & 0x01FFFFFFFFFFFFFF)
	_rng_state = _rng_state ^ (_rng_state << 17)
	return _rng_state & 0x7FFFFFFFFFFFFFFF


func _check_garbage():
	var kinds = ["client", "server", "lobby_client", "lobby_server"]
	for i in range(2000):
		var kind = kinds[i % 4]
		var w = StreamPeerBuffer.new()
		var n = _rand() % 48
		for _k in range(n):
			# Small values are more likely to follow real paths deep into the schema.
			var b = _rand() % 256
			if _rand() % 2 == 0:
				b = b % 4
			w.put_u8(b)
		var t0 = OS.get_ticks_msec()
		var r = Protocol.decode_result(kind, w.data_array)
		counts["garbage"] += 1
		if OS.get_ticks_msec() - t0 > 500:
			_fail("garbage decode took %d ms: %s" % [OS.get_ticks_msec() - t0, Postcard.to_hex(w.data_array)])
		if r.ok:
			var again = Protocol.encode_result(kind, r.message)
			if not again.ok:
				_fail("garbage decoded but does not re-encode: %s (%s)" % [Postcard.to_hex(w.data_array), again.error])
		elif typeof(r.error) != TYPE_STRING or r.error == "":
			_fail("garbage: an error without a message")
	# Large inputs: huge lengths and long junk must end quickly.
	var big = StreamPeerBuffer.new()
	for _k in range(100000):
		big.put_u8(0xff)
	for kind in kinds:
		var t0 = OS.get_ticks_msec()
		var r = Protocol.decode_result(kind, big.data_array)
		_expect(not r.ok, "100 KB of 0xff refused (%s)" % kind)
		_expect(OS.get_ticks_msec() - t0 < 2000, "100 KB of 0xff refused quickly (%s)" % kind)
	var lengths = ["02ffffffffffffffff7f", "08" + "00" + "ffffffff0f", "0dffffffff0f", "0d80808080808080808001"]
	for h in lengths:
		var t0 = OS.get_ticks_msec()
		var r = Protocol.decode_result("server", Postcard.from_hex(h))
		_expect(not r.ok and OS.get_ticks_msec() - t0 < 200, "huge length refused at once: " + h)
	# Client messages over the limit are refused before decoding.
	var over = StreamPeerBuffer.new()
	over.put_u8(4)
	for _k in range(1100):
		over.put_u8(0x61)
	var rc = Protocol.decode_result("client", over.data_array)
	_expect(not rc.ok and rc.error.find("limit") >= 0, "client message over 1024 bytes refused: " + str(rc))


func _check_bad_calls():
	_expect(not Protocol.decode_result("nope", Postcard.from_hex("00")).ok, "unknown kind (decode)")
	_expect(not Protocol.encode_result("nope", {"type": "FindMatch"}).ok, "unknown kind (encode)")
	_expect(not Protocol.decode_result("server", "00").ok, "decode of a String")
	_expect(not Protocol.decode_result("server", null).ok, "decode of null")
	_expect(not Protocol.decode_result("server", [0]).ok, "decode of an Array")
	_expect(Protocol.decode("server", Postcard.from_hex("ff")) == null, "decode() gives null on error")
	_expect(Protocol.encode("client", {"type": "Nope"}).size() == 0, "encode() gives empty bytes on error")
	_expect(Protocol.decode_server(Postcard.from_hex("06")).type == "OpponentReturned", "decode_server")
	_expect(Protocol.decode_lobby_server(Postcard.from_hex("05")).type == "Queued", "decode_lobby_server")
	_expect(Postcard.to_hex(Protocol.encode_client({"type": "RequestSnapshot"})) == "01", "encode_client")
	_expect(Postcard.to_hex(Protocol.encode_lobby_client({"type": "FindMatch"})) == "00", "encode_lobby_client")
	_expect(Postcard.from_hex("0g") == null and Postcard.from_hex("abc") == null, "from_hex refuses non-hex")
	# Godot strings cannot hold U+0000: such a string is refused (Rust would accept it).
	var nul = Protocol.decode_result("client", Postcard.from_hex("04026100"))
	_expect(not nul.ok and nul.error.find("U+0000") >= 0, "a string with NUL is refused: " + str(nul))


func _check_bad_dictionaries():
	var act = {"type": "MatchAction", "seq": 1, "action": {"type": "EndTurn"}}
	_expect(Postcard.to_hex(Protocol.encode("client", act)) == "000102", "EndTurn")
	# Conveniences: a unit variant of a data enum as a String, a unit enum by index, JSON floats.
	var short = {"type": "MatchAction", "seq": 1.0, "action": "EndTurn"}
	_expect(Postcard.to_hex(Protocol.encode("client", short)) == "000102", "unit variant as a String, float seq")
	var by_index = {"type": "MatchAction", "seq": 300, "action": {"type": "Attack", "attacker": 5, "target": {"type": "Hero", "seat": 1}}}
	_expect(Postcard.to_hex(Protocol.encode("client", by_index)) == "00ac0201050001", "unit enum by index")
	var token = StreamPeerBuffer.new()
	token.put_u8(0xaa)
	var found = {"type": "MatchFound", "match_id": 7, "server_addr": "127.0.0.1:5000", "connect_token": token.data_array, "ws_url": null}
	_expect(Postcard.to_hex(Protocol.encode("lobby_server", found)) == "0707007f000001882701aa00", "MatchFound")
	found["connect_token"] = [0xaa]
	_expect(Postcard.to_hex(Protocol.encode("lobby_server", found)) == "0707007f000001882701aa00", "connect_token as an Array")
	var long_text = ""
	for _k in range(1100):
		long_text += "x"
	var bad = [
		["client", null, "null message"],
		["client", "MatchAction", "a data variant as a String"],
		["client", {}, "no type"],
		["client", {"type": 0}, "type not a String"],
		["client", {"type": "Nope"}, "unknown type"],
		["client", {"type": "MatchAction", "seq": 1}, "missing field"],
		["client", {"type": "MatchAction", "seq": -1, "action": "EndTurn"}, "negative u32"],
		["client", {"type": "MatchAction", "seq": 4294967296, "action": "EndTurn"}, "u32 overflow"],
		["client", {"type": "MatchAction", "seq": "1", "action": "EndTurn"}, "String for an int"],
		["client", {"type": "MatchAction", "seq": 1.5, "action": "EndTurn"}, "fractional float"],
		["client", {"type": "MatchAction", "seq": 1, "action": {"type": "Attack", "attacker": 1, "target": {"type": "Hero", "seat": "Third"}}}, "unknown Seat"],
		["client", {"type": "MatchAction", "seq": 1, "action": {"type": "Attack", "attacker": 1, "target": {"type": "Hero", "seat": 2}}}, "Seat index out of range"],
		["client", {"type": "HubMove", "x": 2147483648, "y": 0}, "i32 overflow"],
		["client", {"type": "HubChat", "text": 5}, "int for a String"],
		["client", {"type": "FarmAction", "seq": 1, "action": {"type": "Water", "plot": 256}}, "u8 overflow"],
		["client", {"type": "HubChat", "text": long_text}, "client message over the limit"],
		["lobby_client", {"type": "SaveDeck", "slot": 1, "name": "a", "cards": "bolt"}, "String for a Vec"],
		["lobby_client", {"type": "ChooseDeck", "slot": "1"}, "String in an Option<u8>"],
		["lobby_client", {"type": "Chat", "to": {"type": "User"}, "text": "x"}, "newtype field missing"],
		["lobby_server", {"type": "MatchFound", "match_id": 7, "server_addr": "localhost:5000", "connect_token": [1], "ws_url": null}, "host name as SocketAddr"],
		["lobby_server", {"type": "MatchFound", "match_id": 7, "server_addr": "127.0.0.1:5000", "connect_token": "abc", "ws_url": null}, "String as bytes"],
		["lobby_server", {"type": "MatchFound", "match_id": 7, "server_addr": "127.0.0.1:5000", "connect_token": [256], "ws_url": null}, "byte out of range"],
		["lobby_server", {"type": "FriendUpdate", "user_id": 1, "accepted": 1}, "int for a bool"],
		["server", {"type": "HubMoves", "moves": [[1, 2]]}, "short tuple"],
		["server", {"type": "Snapshot", "snapshot": {"match_id": 1, "you": "First", "turn": 1, "active": "First", "seconds_left": 1, "players": [], "result": null}}, "players not two"],
	]
	for b in bad:
		var r = Protocol.encode_result(b[0], b[1])
		_expect(not r.ok and typeof(r.error) == TYPE_STRING and r.error != "", "bad dictionary accepted (%s): %s" % [b[2], str(r)])


# ---------------------------------------------------------------------------------------------
# Canonical JSON of a decoded value, as shared-sim/tests/gdscript_fixtures.rs writes it: object
# keys sorted, no whitespace, byte arrays as "0x<hex>", strings escaping only ", \ and control
# characters (as \u00xx).

func _canon(v):
	var t = typeof(v)
	if t == TYPE_NIL:
		return "null"
	if t == TYPE_BOOL:
		return "true" if v else "false"
	if t == TYPE_INT:
		return str(v)
	if t == TYPE_STRING:
		return _quote(v)
	if t == TYPE_RAW_ARRAY:
		return "\"0x" + Postcard.to_hex(v) + "\""
	if t == TYPE_ARRAY:
		var parts = []
		for item in v:
			parts.append(_canon(item))
		return "[" + _join(parts) + "]"
	if t == TYPE_DICTIONARY:
		var keys = v.keys()
		keys.sort()
		var parts = []
		for k in keys:
			parts.append(_quote(k) + ":" + _canon(v[k]))
		return "{" + _join(parts) + "}"
	return "<unexpected %s>" % str(v)


func _join(parts):
	var out = ""
	for i in range(parts.size()):
		if i > 0:
			out += ","
		out += parts[i]
	return out


func _quote(s):
	var out = "\""
	for i in range(s.length()):
		var c = s.ord_at(i)
		if c == 34:
			out += "\\\""
		elif c == 92:
			out += "\\\\"
		elif c < 0x20:
			out += "\\u%04x" % c
		else:
			out += s[i]
	return out + "\""
