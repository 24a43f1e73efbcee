# Postcard (serde, postcard 1.x) primitives for GDScript, shared by Godot 3.2+ and Godot 4.x.
#
# Writer and Reader work on a StreamPeerBuffer (a reference type with the same API in Godot 3
# and 4), because Godot 3's PoolByteArray is passed by value. Neither ever crashes on bad input:
# the first problem is kept in `error` (a String, "" while all is well), and once it is set every
# further read returns a neutral value (0, "", false, an empty byte array) and every write is
# ignored. Check `error` (or `ok()`) at the end.
#
# Encoding (docs/PROTOCOL.md section 3):
#   u8, i8, bool       one raw byte (bool: 00 / 01, anything else is an error)
#   u16, u32, u64      unsigned LEB128 varint, at most 3 / 5 / 10 bytes, and the last byte of a
#                      maximal varint may only carry the bits that fit (as postcard checks)
#   i16, i32, i64      zigzag, then the varint of the same width
#   usize (lengths)    as u64
#   String             varint byte length, then UTF-8 (validated like Rust's str::from_utf8)
#   Vec<u8>            varint length, then the raw bytes
#   Option<T>          00, or 01 then T
#   enum               varint(u32) variant index, then the fields
#
# GDScript ints are signed 64-bit: a u64 above 2^63-1 is read as its two's complement
# (negative), and a negative int written as u64 is written as that u64. Shifts are made
# logical with masks.
#
# Godot strings cannot hold U+0000, so a string containing a NUL byte is a decode error here
# (Rust would accept it; the servers never send one).
#
# Usage:
#   var Postcard = preload("res://addons/croft/postcard.gd")
#   var w = Postcard.Writer.new()
#   w.put_varint(300)
#   w.put_str("ab")
#   var bytes = w.bytes()                  # PoolByteArray (Godot 3) / PackedByteArray (Godot 4)
#   var r = Postcard.Reader.new(bytes)
#   var n = r.get_u32()
#   var s = r.get_str()
#   if r.error != "" or r.remaining() != 0: ...


# Byte length of the longest varint of each width and the largest value its last byte may hold.
const U16_BYTES = 3
const U16_LAST = 0x03
const U32_BYTES = 5
const U32_LAST = 0x0F
const U64_BYTES = 10
const U64_LAST = 0x01

const _HEX = "0123456789abcdef"


class Writer:
	var buf = StreamPeerBuffer.new()
	var error = ""

	func fail(msg):
		if error == "":
			error = msg

	func ok():
		return error == ""

	# The bytes written so far (a copy).
	func bytes():
		return buf.data_array

	func size():
		return buf.get_size()

	# Whole numbers only; floats with an integral value (from JSON) are accepted.
	func _as_int(v, what):
		if typeof(v) == TYPE_INT:
			return v
		if typeof(v) == 3 and v == floor(v):  # 3 is TYPE_REAL (Godot 3) / TYPE_FLOAT (Godot 4)
			return int(v)
		fail("%s: expected an integer, got %s" % [what, str(v)])
		return 0

	func _in_range(v, lo, hi, what):
		var n = _as_int(v, what)
		if n < lo or n > hi:
			fail("%s: %s is out of range %s..%s" % [what, str(n), str(lo), str(hi)])
			return 0
		return n

	# Unsigned LEB128 of any GDScript int (negative ints are written as their u64 pattern).
	func put_varint(v):
		if error != "":
			return
		var n = v
		while true:
			var b = n & 0x7F
			n = (n >> 7) & 0x01FFFFFFFFFFFFFF
			if n == 0:
				buf.put_u8(b)
				return
			buf.put_u8(b | 0x80)

	func put_u8(v, what = "u8"):
		var n = _in_range(v, 0, 255, what)
		if error == "":
			buf.put_u8(n)

	func put_i8(v, what = "i8"):
		var n = _in_range(v, -128, 127, what)
		if error == "":
			buf.put_u8(n & 0xFF)

	func put_bool(v, what = "bool"):
		if typeof(v) != TYPE_BOOL:
			fail("%s: expected a bool, got %s" % [what, str(v)])
			return
		if error == "":
			buf.put_u8(1 if v else 0)

	func put_u16(v, what = "u16"):
		var n = _in_range(v, 0, 0xFFFF, what)
		put_varint(n)

	func put_u32(v, what = "u32"):
		var n = _in_range(v, 0, 0xFFFFFFFF, what)
		put_varint(n)

	# Any GDScript int: values above 2^63-1 are passed as negative ints.
	func put_u64(v, what = "u64"):
		var n = _as_int(v, what)
		put_varint(n)

	func put_usize(v, what = "length"):
		var n = _as_int(v, what)
		if n < 0:
			fail("%s: negative" % what)
			return
		put_varint(n)

	func put_i16(v, what = "i16"):
		var n = _in_range(v, -32768, 32767, what)
		put_varint((n << 1) ^ (n >> 63))

	func put_i32(v, what = "i32"):
		var n = _in_range(v, -2147483648, 2147483647, what)
		put_varint((n << 1) ^ (n >> 63))

	func put_i64(v, what = "i64"):
		var n = _as_int(v, what)
		put_varint((n << 1) ^ (n >> 63))

	# An enum's variant index.
	func put_variant(index):
		put_varint(index)

	# Option tag: call, then write the value when `present`.
	func put_option_tag(present):
		if error == "":
			buf.put_u8(1 if present else 0)

	func put_str(s, what = "string"):
		if typeof(s) != TYPE_STRING:
			fail("%s: expected a String, got %s" % [what, str(s)])
			return
		if error != "":
			return
		# put_utf8_string writes a u32 length then the UTF-8 bytes, in Godot 3 and 4 alike.
		var tmp = StreamPeerBuffer.new()
		tmp.put_utf8_string(s)
		tmp.seek(0)
		var n = tmp.get_u32()
		put_varint(n)
		if n > 0:
			buf.put_data(tmp.get_data(n)[1])

	# Raw bytes, no length (fixed-size arrays such as IP octets). `data` may be a byte array
	# or an Array of ints.
	func put_raw(data, what = "bytes"):
		if error != "":
			return
		if typeof(data) == TYPE_ARRAY:
			for b in data:
				put_u8(b, what)
			return
		if typeof(data) != typeof(buf.data_array):
			fail("%s: expected a byte array, got %s" % [what, str(data)])
			return
		if data.size() > 0:
			buf.put_data(data)

	# Vec<u8>: length, then the bytes.
	func put_bytes(data, what = "bytes"):
		if typeof(data) != TYPE_ARRAY and typeof(data) != typeof(buf.data_array):
			fail("%s: expected a byte array, got %s" % [what, str(data)])
			return
		put_usize(data.size(), what)
		put_raw(data, what)


class Reader:
	var buf = StreamPeerBuffer.new()
	var error = ""
	var _size = 0

	func _init(data):
		if typeof(data) == typeof(buf.data_array):
			buf.data_array = data
			_size = data.size()
		else:
			_size = 0
			error = "expected a byte array"
		buf.seek(0)

	func fail(msg):
		if error == "":
			error = "%s at byte %d" % [msg, position()]

	func ok():
		return error == ""

	func position():
		return buf.get_position()

	func remaining():
		return _size - buf.get_position()

	func get_u8():
		if error != "":
			return 0
		if remaining() < 1:
			fail("unexpected end of input")
			return 0
		return buf.get_u8()

	func get_i8():
		var b = get_u8()
		if b > 127:
			return b - 256
		return b

	func get_bool():
		var b = get_u8()
		if b > 1:
			fail("invalid bool %d" % b)
			return false
		return b == 1

	# A varint of at most `max_bytes` bytes whose last byte is at most `max_last` when it is the
	# `max_bytes`-th (postcard's check). Non-minimal encodings are accepted, as in postcard.
	func get_varint(max_bytes, max_last):
		var out = 0
		var i = 0
		while i < max_bytes:
			var b = get_u8()
			if error != "":
				return 0
			out = out | ((b & 0x7F) << (7 * i))
			if (b & 0x80) == 0:
				if i == max_bytes - 1 and b > max_last:
					fail("bad varint")
					return 0
				return out
			i += 1
		fail("bad varint")
		return 0

	func get_u16():
		return get_varint(3, 0x03)

	func get_u32():
		return get_varint(5, 0x0F)

	func get_u64():
		return get_varint(10, 0x01)

	func get_i16():
		var z = get_u16()
		return (z >> 1) ^ -(z & 1)

	func get_i32():
		var z = get_u32()
		return (z >> 1) ^ -(z & 1)

	func get_i64():
		var z = get_u64()
		return ((z >> 1) & 0x7FFFFFFFFFFFFFFF) ^ -(z & 1)

	func get_variant():
		return get_u32()

	# A length (usize) that must fit in what is left: every element of every sequence in the
	# protocol takes at least one byte, so a longer length is an error (and never a long loop).
	func get_len():
		var n = get_u64()
		if error != "":
			return 0
		if n < 0 or n > remaining():
			fail("length %d exceeds the remaining %d bytes" % [n, remaining()])
			return 0
		return n

	# Returns true for Some, false for None (then nothing more to read).
	func get_option_tag():
		var b = get_u8()
		if b > 1:
			fail("invalid option tag %d" % b)
			return false
		return b == 1

	# `n` raw bytes.
	func get_raw(n):
		if error != "" or n <= 0:
			return StreamPeerBuffer.new().data_array
		if n > remaining():
			fail("unexpected end of input")
			return StreamPeerBuffer.new().data_array
		return buf.get_data(n)[1]

	# Vec<u8>.
	func get_bytes():
		var n = get_len()
		return get_raw(n)

	func get_str():
		var n = get_len()
		if error != "":
			return ""
		var start = position()
		var data = get_raw(n)
		if error != "":
			return ""
		var problem = _utf8_problem(data)
		if problem != "":
			buf.seek(start)
			fail(problem)
			return ""
		if n == 0:
			return ""
		return data.get_string_from_utf8()

	# "" when `data` is valid UTF-8 as Rust's str::from_utf8 defines it (no overlong forms, no
	# surrogates, nothing above U+10FFFF) and has no NUL (which Godot strings cannot hold).
	static func _utf8_problem(data):
		var n = data.size()
		var i = 0
		while i < n:
			var c = data[i]
			if c < 0x80:
				if c == 0:
					return "string contains U+0000 (not representable in Godot)"
				i += 1
				continue
			var need = 0
			var lo = 0x80
			var hi = 0xBF
			if c >= 0xC2 and c <= 0xDF:
				need = 1
			elif c >= 0xE0 and c <= 0xEF:
				need = 2
				if c == 0xE0:
					lo = 0xA0
				elif c == 0xED:
					hi = 0x9F
			elif c >= 0xF0 and c <= 0xF4:
				need = 3
				if c == 0xF0:
					lo = 0x90
				elif c == 0xF4:
					hi = 0x8F
			else:
				return "invalid UTF-8"
			if i + need >= n:
				return "invalid UTF-8"
			var second = data[i + 1]
			if second < lo or second > hi:
				return "invalid UTF-8"
			var k = 2
			while k <= need:
				var cont = data[i + k]
				if cont < 0x80 or cont > 0xBF:
					return "invalid UTF-8"
				k += 1
			i += need + 1
		return ""


# Lowercase hex of a byte array.
static func to_hex(data):
	var out = ""
	for b in data:
		out += _HEX[b >> 4] + _HEX[b & 0x0F]
	return out


# The bytes of a hex string (case-insensitive, even length), or null when it is not hex.
static func from_hex(text):
	if typeof(text) != TYPE_STRING or text.length() % 2 != 0:
		return null
	var lower = text.to_lower()
	var w = StreamPeerBuffer.new()
	var i = 0
	while i < lower.length():
		var hi = _HEX.find(lower[i])
		var lo = _HEX.find(lower[i + 1])
		if hi < 0 or lo < 0:
			return null
		w.put_u8(hi * 16 + lo)
		i += 2
	return w.data_array


# An empty byte array (PoolByteArray in Godot 3, PackedByteArray in Godot 4).
static func empty_bytes():
	return StreamPeerBuffer.new().data_array
