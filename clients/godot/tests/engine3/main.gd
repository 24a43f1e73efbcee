extends Node
# Engine-in-the-loop test of the croft GDNative binding: logs in through CroftClient, asks the
# named bot to be friends, queues, plays the match it finds with the built-in policy
# (suggest_action / play_suggested), and quits with 0 only once match_ended arrived.
# Any failure quits with 1; so do the time and frame guards.
#
# Environment: CROFT_AUTH_URL, CROFT_USER, CROFT_PASSWORD (required), CROFT_FRIEND (a user to
# send a friend request to; the test then needs to see it as Outgoing in the friends list),
# CROFT_DROP=1 (drop the match connection once, on our second turn, and require the binding
# to rejoin the match by itself), CROFT_TEST_SECONDS (default 240).

var client = null
var started_ms = 0
var limit_ms = 240000
var frames = 0
const MAX_FRAMES = 60 * 600
var finished = false
var friend = ""
var friend_seen = false
var friends_lists = 0
var match_seen = false
var actions = 0
var rejected = 0
var last_state = null
var retry_at_ms = -1
var drop = false
var dropped = false
var lost_retrying = 0
var joins = 0


func _ready():
	Engine.target_fps = 60
	started_ms = OS.get_ticks_msec()
	var url = OS.get_environment("CROFT_AUTH_URL")
	var user = OS.get_environment("CROFT_USER")
	var password = OS.get_environment("CROFT_PASSWORD")
	friend = OS.get_environment("CROFT_FRIEND")
	drop = OS.get_environment("CROFT_DROP") == "1"
	var seconds = OS.get_environment("CROFT_TEST_SECONDS")
	if seconds != "":
		limit_ms = int(seconds) * 1000
	if url == "" or user == "" or password == "":
		fail("set CROFT_AUTH_URL, CROFT_USER and CROFT_PASSWORD")
		return
	var script = load("res://croft_client.gdns")
	if script == null:
		fail("cannot load croft_client.gdns (is libcroft_godot3.so next to it?)")
		return
	client = script.new()
	if client == null:
		fail("cannot create CroftClient")
		return
	for s in ["logged_in", "login_failed", "disconnected", "friends", "friend_online",
			"chat_received", "queued", "queue_left", "match_found", "match_joined",
			"match_state", "match_events", "action_result", "match_connection_lost",
			"match_ended", "match_closed", "error"]:
		var err = client.connect(s, self, "_on_" + s)
		if err != OK:
			fail("cannot connect signal %s: %d" % [s, err])
			return
	add_child(client)
	print("engine3: logging in as %s at %s" % [user, url])
	client.login(url, user, password)


func _process(_delta):
	if finished or client == null:
		return
	frames += 1
	var elapsed = OS.get_ticks_msec() - started_ms
	if elapsed > limit_ms:
		fail("timed out after %d ms (match seen: %s, actions: %d)" % [elapsed, match_seen, actions])
		return
	if frames > MAX_FRAMES:
		fail("frame guard: %d frames" % frames)
		return
	if retry_at_ms >= 0 and OS.get_ticks_msec() >= retry_at_ms:
		retry_at_ms = -1
		# The Unavailable may have answered the friend request (a database call that failed on
		# a slow machine) rather than the queue: ask again until the friends list shows it.
		if friend != "" and not friend_seen:
			print("engine3: friend request again")
			client.friend_request(friend)
		print("engine3: queueing again")
		client.find_match()
	# Once, on our second turn: lose the match connection; the binding must rejoin.
	if drop and not dropped and last_state != null and last_state["my_turn"] and last_state["turn"] >= 3:
		dropped = true
		print("engine3: dropping the match connection")
		client.drop_match_connection()
		return
	# One action in flight at a time, on our turn only (can_act checks both).
	if client.can_act():
		var suggestion = client.suggest_action()
		var seq = client.play_suggested()
		if seq >= 0:
			actions += 1
			if typeof(suggestion) == TYPE_DICTIONARY and suggestion["type"] != "end_turn":
				print("engine3: action %d: %s" % [seq, to_json(suggestion)])


func fail(why):
	if finished:
		return
	finished = true
	printerr("engine3: FAILED: " + why)
	print("engine3: FAILED: " + why)
	get_tree().quit(1)


func succeed():
	finished = true
	print("engine3: PASSED")
	get_tree().quit(0)


func _on_logged_in(user_id, username):
	print("engine3: logged in as %s (user %d)" % [username, user_id])
	if client.get_user_id() != user_id:
		fail("get_user_id() is %d, logged_in said %d" % [client.get_user_id(), user_id])
		return
	if friend != "":
		client.friend_request(friend)
	client.chat(0, "hello from Godot 3")
	client.find_match()


func _on_login_failed(reason):
	fail("login failed: " + reason)


func _on_disconnected(reason):
	fail("lobby connection lost: " + reason)


func _on_friends(list):
	friends_lists += 1
	var names = []
	for f in list:
		names.append("%s:%s:%s" % [f["username"], f["state"], f["presence"]])
		if f["username"] == friend and f["state"] == "Outgoing":
			friend_seen = true
	print("engine3: friends (%d): %s" % [list.size(), PoolStringArray(names).join(", ")])


func _on_friend_online(user_id, username):
	print("engine3: friend online: %s (%d)" % [username, user_id])


func _on_chat_received(from, from_name, channel, text):
	print("engine3: chat from %s (%d) on %s: %s" % [from_name, from, channel, text])


func _on_queued():
	print("engine3: queued")


func _on_queue_left(reason):
	print("engine3: left the queue: " + reason)
	if reason != "Cancelled" and not match_seen:
		retry_at_ms = OS.get_ticks_msec() + 1000


func _on_match_found(match_id):
	match_seen = true
	print("engine3: match found: %d" % match_id)


func _on_match_joined(match_id, seat):
	joins += 1
	print("engine3: joined match %d in seat %d" % [match_id, seat])


func _on_match_state(state):
	if typeof(state) != TYPE_DICTIONARY:
		fail("match_state is not a Dictionary")
		return
	if last_state == null or last_state["turn"] != state["turn"]:
		print("engine3: turn %d, my turn: %s, life %d vs %d, hand %d, board %d vs %d" % [
			state["turn"], state["my_turn"], state["me"]["life"], state["opponent"]["life"],
			state["me"]["hand"].size(), state["me"]["board"].size(), state["opponent"]["board"].size()])
	last_state = state


func _on_match_events(events):
	for e in events:
		if not e.has("type"):
			fail("an event without a type")
			return


func _on_action_result(seq, error, message):
	if error != "":
		rejected += 1
		print("engine3: action %d rejected: %s (%s)" % [seq, error, message])


func _on_match_connection_lost(match_id, reason, retrying):
	print("engine3: match %d connection lost (%s), retrying: %s" % [match_id, reason, retrying])
	if retrying:
		lost_retrying += 1
	else:
		fail("the match connection was lost for good")


func _on_match_ended(match_id, outcome, reason):
	print("engine3: match ended: match %d outcome=%s reason=%s actions=%d rejected=%d" % [
		match_id, outcome, reason, actions, rejected])
	if actions == 0:
		fail("the match ended without an action of ours")
	elif not (outcome in ["won", "lost", "draw"]) or reason == "Aborted":
		fail("the match did not end by play: outcome %s, reason %s" % [outcome, reason])
	elif friend != "" and not friend_seen:
		fail("the friend request to %s never showed in the friends list (%d lists)" % [friend, friends_lists])
	elif drop and (not dropped or lost_retrying == 0 or joins < 2):
		fail("no rejoin after the drop (dropped: %s, lost: %d, joins: %d)" % [dropped, lost_retrying, joins])
	elif friends_lists == 0:
		fail("no friends list arrived")
	else:
		succeed()


func _on_match_closed(match_id, aborted):
	print("engine3: match %d closed (aborted: %s)" % [match_id, aborted])


func _on_error(code, message):
	print("engine3: error %s: %s" % [code, message])
	# FindMatch refused while matchmaking is busy or the last match is being closed: retry.
	if not match_seen and (code == "Unavailable" or code == "NotAllowed"):
		retry_at_ms = OS.get_ticks_msec() + 1000
