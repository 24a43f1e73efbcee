# Socket addresses in croft messages (Rust's SocketAddr): their postcard form and the display
# strings GDScript sees ("1.2.3.4:5000", "[::1]:5000"). Works in Godot 3.2+ and Godot 4.x;
# protocol.gd uses it, and re-exports parse_socket_addr and format_ipv6.
#
# SocketAddr: serde's non-human-readable form is an enum, V4 (0) = 4 raw octets then the port
# (u16 varint), V6 (1) = 16 raw octets then the port. In GDScript it is Rust's display string.

static func decode(r):
	var kind = r.get_variant()
	if r.error != "":
		return ""
	if kind == 0:
		var ip4 = r.get_raw(4)
		var port4 = r.get_u16()
		if r.error != "":
			return ""
		return "%d.%d.%d.%d:%d" % [ip4[0], ip4[1], ip4[2], ip4[3], port4]
	if kind == 1:
		var ip6 = r.get_raw(16)
		var port6 = r.get_u16()
		if r.error != "":
			return ""
		return "[%s]:%d" % [format_ipv6(ip6), port6]
	r.fail("unknown SocketAddr variant %d" % kind)
	return ""


static func encode(w, value, path):
	var parsed = parse_socket_addr(value)
	if parsed == null:
		w.fail("%s: not a socket address (\"1.2.3.4:5000\" or \"[::1]:5000\"): %s" % [path, str(value)])
		return
	w.put_variant(0 if parsed[0].size() == 4 else 1)
	w.put_raw(parsed[0], path)
	w.put_u16(parsed[1], path)


# Rust's Ipv6Addr display: IPv4-mapped as ::ffff:a.b.c.d, else lowercase hex groups with the
# first longest run of two or more zero groups written as "::".
static func format_ipv6(octets):
	var seg = []
	for i in range(8):
		seg.append(octets[2 * i] * 256 + octets[2 * i + 1])
	if seg[0] == 0 and seg[1] == 0 and seg[2] == 0 and seg[3] == 0 and seg[4] == 0 and seg[5] == 0xFFFF:
		return "::ffff:%d.%d.%d.%d" % [octets[12], octets[13], octets[14], octets[15]]
	var best_start = 0
	var best_len = 0
	var cur_start = 0
	var cur_len = 0
	for i in range(8):
		if seg[i] == 0:
			if cur_len == 0:
				cur_start = i
			cur_len += 1
			if cur_len > best_len:
				best_start = cur_start
				best_len = cur_len
		else:
			cur_len = 0
	if best_len > 1:
		return _hex_groups(seg, 0, best_start) + "::" + _hex_groups(seg, best_start + best_len, 8)
	return _hex_groups(seg, 0, 8)


static func _hex_groups(seg, from, to):
	var parts = []
	for i in range(from, to):
		parts.append("%x" % seg[i])
	var out = ""
	for i in range(parts.size()):
		if i > 0:
			out += ":"
		out += parts[i]
	return out


# [octets (4 or 16 bytes), port] from "a.b.c.d:port" or "[ipv6]:port", or null.
static func parse_socket_addr(text):
	if typeof(text) != TYPE_STRING:
		return null
	var host = ""
	var port_text = ""
	var octets = null
	if text.begins_with("["):
		var close = text.find("]:")
		if close < 0:
			return null
		host = text.substr(1, close - 1)
		port_text = text.substr(close + 2, text.length() - close - 2)
		octets = _parse_ipv6(host)
	else:
		var colon = text.rfind(":")
		if colon < 0:
			return null
		host = text.substr(0, colon)
		port_text = text.substr(colon + 1, text.length() - colon - 1)
		octets = _parse_ipv4(host)
	var port = _parse_decimal(port_text)
	if octets == null or port < 0 or port > 65535:
		return null
	var w = StreamPeerBuffer.new()
	for b in octets:
		w.put_u8(b)
	return [w.data_array, port]


# A non-negative decimal without sign, or -1.
static func _parse_decimal(text):
	if text.length() == 0 or text.length() > 18:
		return -1
	var n = 0
	for i in range(text.length()):
		var d = "0123456789".find(text[i])
		if d < 0:
			return -1
		n = n * 10 + d
	return n


# An Array of 4 ints, or null.
static func _parse_ipv4(text):
	var parts = text.split(".")
	if parts.size() != 4:
		return null
	var out = []
	for p in parts:
		var n = _parse_decimal(p)
		if n < 0 or n > 255 or p.length() > 3:
			return null
		out.append(n)
	return out


# An Array of 16 ints, or null.
static func _parse_ipv6(text):
	var head = text
	var tail = ""
	var gap = text.find("::")
	if gap >= 0:
		head = text.substr(0, gap)
		tail = text.substr(gap + 2, text.length() - gap - 2)
		if tail.find("::") >= 0:
			return null
	var head_groups = _parse_groups(head, gap < 0)
	var tail_groups = []
	if gap >= 0:
		tail_groups = _parse_groups(tail, true)
	if head_groups == null or tail_groups == null:
		return null
	var groups = []
	if gap >= 0:
		if head_groups.size() + tail_groups.size() > 7:
			return null
		groups = head_groups.duplicate()
		for _i in range(8 - head_groups.size() - tail_groups.size()):
			groups.append(0)
		groups += tail_groups
	else:
		groups = head_groups
	if groups.size() != 8:
		return null
	var out = []
	for g in groups:
		out.append(g >> 8)
		out.append(g & 0xFF)
	return out


# The 16-bit groups of a colon-separated part; the last may be a dotted IPv4 address.
static func _parse_groups(text, ipv4_allowed):
	var out = []
	if text == "":
		return out
	var pieces = text.split(":")
	for i in range(pieces.size()):
		var p = pieces[i]
		if i == pieces.size() - 1 and ipv4_allowed and p.find(".") >= 0:
			var v4 = _parse_ipv4(p)
			if v4 == null:
				return null
			out.append(v4[0] * 256 + v4[1])
			out.append(v4[2] * 256 + v4[3])
			continue
		if p.length() < 1 or p.length() > 4:
			return null
		var n = 0
		var lower = p.to_lower()
		for k in range(lower.length()):
			var d = "0123456789abcdef".find(lower[k])
			if d < 0:
				return null
			n = n * 16 + d
		out.append(n)
	return out
