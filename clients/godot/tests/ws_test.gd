# The Godot 3 WebSocket transport (addons/croft/croft_ws_godot3.gd) against ws_stub_server.py:
#   CROFT_WS_TEST_URL=ws://127.0.0.1:PORT/ws CROFT_WS_TEST_TOKEN=<hex> \
#     godot3-server --path clients/godot/tests -s ws_test.gd
# (scripts/godot-codec-test starts the stub server and runs this.) Exits 0 when the transport
# sent the token first, answered the ping, decoded Welcome, Friends and MatchFound, reported the
# text frame as a bad frame, sent FindMatch, and reported close code 4003 with its reason.
extends SceneTree

const MAX_FRAMES = 3000
const MAX_MSEC = 30000

var CroftWs = null
var Protocol = null
var ws = null
var frames = 0
var start_msec = 0
var got = []
var bad_frames = []
var connected_count = 0
var closed_with = null
var polled = 0


func _init():
	start_msec = OS.get_ticks_msec()
	CroftWs = _load_addon("croft_ws_godot3.gd")
	Protocol = _load_addon("protocol.gd")
	var url = OS.get_environment("CROFT_WS_TEST_URL")
	var token = Protocol.Postcard.from_hex(OS.get_environment("CROFT_WS_TEST_TOKEN"))
	if CroftWs == null or url == "" or token == null:
		print("FAIL: set CROFT_WS_TEST_URL and CROFT_WS_TEST_TOKEN (and keep the addon reachable)")
		quit(1)
		return
	ws = CroftWs.new(true)
	ws.connect("connected", self, "_on_connected")
	ws.connect("message", self, "_on_message")
	ws.connect("closed", self, "_on_closed")
	ws.connect("bad_frame", self, "_on_bad_frame")
	# Sending before the connection is open is refused, not queued.
	if ws.send_message({"type": "FindMatch"}) != ERR_UNAVAILABLE:
		print("FAIL: send before open was not refused")
		quit(1)
		return
	var err = ws.connect_to(url, token)
	if err != OK:
		print("FAIL: connect_to: %d" % err)
		quit(1)


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


func _on_connected():
	connected_count += 1
	var bad = ws.send_message({"type": "Nope"})
	if bad != ERR_INVALID_DATA:
		print("FAIL: a bad message was not refused: %d" % bad)
	var err = ws.send_message({"type": "FindMatch"})
	if err != OK:
		print("FAIL: send FindMatch: %d %s" % [err, ws.last_error])


func _on_message(msg):
	got.append(msg)


func _on_bad_frame(error):
	bad_frames.append(error)


func _on_closed(code, reason):
	closed_with = [code, reason]


func _idle(_delta):
	frames += 1
	if ws != null:
		polled += ws.poll().size()
	if closed_with != null:
		_finish()
		return true
	if frames > MAX_FRAMES or OS.get_ticks_msec() - start_msec > MAX_MSEC:
		print("FAIL: time-out (%d frames); state %d, messages %s" % [frames, ws.state if ws != null else -1, str(got)])
		quit(2)
		return true
	OS.delay_msec(5)
	return false


func _finish():
	var problems = []
	var types = []
	for m in got:
		types.append(m["type"])
	if connected_count != 1:
		problems.append("connected emitted %d times" % connected_count)
	if str(types) != str(["Welcome", "Friends", "MatchFound"]):
		problems.append("messages: %s" % str(types))
	if polled != got.size():
		problems.append("poll() returned %d messages, signals %d" % [polled, got.size()])
	if got.size() >= 3:
		var found = got[2]
		if found["server_addr"] != "127.0.0.1:5000" or Protocol.Postcard.to_hex(found["connect_token"]) != "aa" or found["ws_url"] != null or found["match_id"] != 7:
			problems.append("MatchFound: %s" % str(found))
		if got[0]["username"] != "ann" or got[0]["user_id"] != 1001:
			problems.append("Welcome: %s" % str(got[0]))
	if bad_frames.size() != 1 or bad_frames[0] != "text frame":
		problems.append("bad frames: %s" % str(bad_frames))
	if closed_with[0] != Protocol.CLOSE_ALREADY_CONNECTED or closed_with[1] != "replaced by a newer connection":
		problems.append("closed with %s" % str(closed_with))
	if ws.is_open() or ws.close_code != Protocol.CLOSE_ALREADY_CONNECTED:
		problems.append("state after close: %d, code %d" % [ws.state, ws.close_code])
	if problems.size() > 0:
		for p in problems:
			print("FAIL: " + p)
		quit(1)
	else:
		print("ws transport (Godot 3): PASSED (%d messages, close %d '%s')" % [got.size(), closed_with[0], closed_with[1]])
		quit(0)
