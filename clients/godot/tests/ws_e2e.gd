# End to end over WebSocket from GDScript alone (Godot 3.2+, godot3-server), against a running
# croft stack: log in over REST, connect to a connection server's WebSocket URL with the login's
# connect token, queue, follow MatchFound to the instance server's WebSocket URL, play the
# match by ending every turn, and concede after CROFT_E2E_TURNS turns.
#
#   CROFT_AUTH_URL=http://127.0.0.1:7000 CROFT_E2E_USER=alice CROFT_E2E_PASSWORD=... \
#     godot3-server --path clients/godot/tests -s ws_e2e.gd
#
# Prints PASSED and exits 0 only when the match ended (its MatchEnded event arrived on the
# instance connection); 1 on any failure, 2 on a time-out. (bin/croft/tests/godot.rs runs
# it against `croft up` with a bot as the opponent.)
extends SceneTree

const MAX_MSEC = 120000

var Protocol = null
var CroftWs = null
var phase = "login"
var start_msec = 0
var http = HTTPClient.new()
var body = PoolByteArray()
var lobby = null
var game = null
var user_id = -1
var seat = ""
var seq = 0
var turns_ended = 0
var max_turns = 3
var events_seen = 0


func _init():
	start_msec = OS.get_ticks_msec()
	Protocol = _load_addon("protocol.gd")
	CroftWs = _load_addon("croft_ws_godot3.gd")
	if Protocol == null or CroftWs == null:
		return _fail("cannot load addons/croft")
	var turns = OS.get_environment("CROFT_E2E_TURNS")
	if turns != "":
		max_turns = int(turns)
	var url = OS.get_environment("CROFT_AUTH_URL")
	if not url.begins_with("http://"):
		return _fail("CROFT_AUTH_URL must be http://host:port, got '%s'" % url)
	var host_port = url.substr(7, url.length() - 7).split(":")
	var err = http.connect_to_host(host_port[0], int(host_port[1]))
	if err != OK:
		return _fail("cannot reach %s (error %d)" % [url, err])


func _idle(_delta):
	if OS.get_ticks_msec() - start_msec > MAX_MSEC:
		print("FAIL: timed out in phase ", phase)
		quit(2)
		return true
	match phase:
		"login":
			_poll_login()
		"lobby", "match":
			for m in lobby.poll():
				_on_lobby(m)
			if lobby.state == lobby.State.CLOSED and phase != "done":
				_fail("lobby closed: %d %s" % [lobby.close_code, lobby.close_reason])
			if game != null:
				for m in game.poll():
					_on_game(m)
				if game != null and game.state == game.State.CLOSED and phase == "match":
					_fail("match connection closed: %d %s" % [game.close_code, game.close_reason])
	return false


func _poll_login():
	http.poll()
	match http.get_status():
		HTTPClient.STATUS_CONNECTED:
			if body.size() == 0 and not http.has_response():
				var request = {
					"username": OS.get_environment("CROFT_E2E_USER"),
					"password": OS.get_environment("CROFT_E2E_PASSWORD"),
				}
				var headers = ["Content-Type: application/json"]
				http.request(HTTPClient.METHOD_POST, "/v1/auth/login", headers, JSON.print(request))
		HTTPClient.STATUS_BODY:
			var chunk = http.read_response_body_chunk()
			if chunk.size() > 0:
				body.append_array(chunk)
			if http.get_status() != HTTPClient.STATUS_BODY:
				_logged_in()
		HTTPClient.STATUS_CANT_CONNECT, HTTPClient.STATUS_CONNECTION_ERROR, HTTPClient.STATUS_CANT_RESOLVE:
			_fail("the auth service is unreachable")


func _logged_in():
	if http.get_response_code() != 200:
		return _fail("login answered %d: %s" % [http.get_response_code(), body.get_string_from_utf8()])
	var parsed = JSON.parse(body.get_string_from_utf8())
	if parsed.error != OK or typeof(parsed.result) != TYPE_DICTIONARY:
		return _fail("login answer is not JSON")
	var login = parsed.result
	var urls = login.get("connection_ws_urls", [])
	if urls.empty():
		return _fail("the login answer names no WebSocket URL")
	var token = Marshalls.base64_to_raw(login["connect_token"])
	print("logged in as user ", login["user_id"], "; lobby at ", urls[0])
	lobby = CroftWs.new(true)
	if lobby.connect_to(urls[0], token) != OK:
		return _fail("cannot open " + urls[0])
	phase = "lobby"


func _on_lobby(m):
	match m["type"]:
		"Welcome":
			user_id = m["user_id"]
			print("lobby welcome: ", m["username"])
			_send(lobby, {"type": "FindMatch"})
		"Queued":
			print("queued")
		"MatchFound":
			if m["ws_url"] == null:
				return _fail("MatchFound without a WebSocket URL")
			print("match ", m["match_id"], " at ", m["ws_url"])
			game = CroftWs.new(false)
			if game.connect_to(m["ws_url"], m["connect_token"]) != OK:
				return _fail("cannot open " + m["ws_url"])
			phase = "match"
		"QueueLeft":
			print("left the queue (", m["reason"], "): queueing again")
			_send(lobby, {"type": "FindMatch"})
		"Error":
			print("lobby error: ", m["code"], " ", m["message"])


func _on_game(m):
	match m["type"]:
		"Welcome":
			seat = m["seat"]
			print("seated as ", seat, " in match ", m["match_id"])
		"Snapshot":
			var s = m["snapshot"]
			if s["active"] == seat:
				_my_turn()
		"Events":
			for e in m["events"]:
				events_seen += 1
				if e["type"] == "TurnStarted" and e["seat"] == seat:
					_my_turn()
				elif e["type"] == "MatchEnded":
					var result = e["result"]
					print("match ended: winner ", result["winner"], ", ", result["reason"],
						" after ", events_seen, " events")
					print("PASSED")
					phase = "done"
					game.close()
					lobby.close()
					quit(0)
		"ActionRejected":
			_fail("action rejected: " + JSON.print(m["reason"]))
		"Error":
			_fail("instance error: %s %s" % [m["code"], m["message"]])


func _my_turn():
	seq += 1
	if turns_ended >= max_turns:
		print("conceding")
		_send(game, {"type": "MatchAction", "seq": seq, "action": "Concede"})
	else:
		turns_ended += 1
		_send(game, {"type": "MatchAction", "seq": seq, "action": "EndTurn"})


func _send(conn, msg):
	var err = conn.send_message(msg)
	if err != OK:
		_fail("cannot send %s: %s" % [msg["type"], conn.last_error])


func _fail(why):
	print("FAIL: ", why)
	phase = "done"
	quit(1)


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
