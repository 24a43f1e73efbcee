extends Control
## croft demo (Godot 4.3+): log in, see friends and chat, queue and play a match with buttons.
## Everything goes through the CroftClient node of the croft GDExtension: its calls never
## block, and what arrives comes as signals emitted from its _process.
## The UI is built in code so that this script is the whole sample.

# Untyped: CroftClient comes from the extension, so its methods are called dynamically.
var client = null

var url_edit: LineEdit
var user_edit: LineEdit
var pass_edit: LineEdit
var status_label: Label
var friends_list: ItemList
var friend_edit: LineEdit
var chat_log: RichTextLabel
var chat_edit: LineEdit
var match_label: Label
var hand_box: HFlowContainer
var board_box: HFlowContainer
var enemy_box: HFlowContainer
var target_option: OptionButton
var auto_check: CheckBox
var log_view: RichTextLabel

var friends: Array = []
var state: Dictionary = {}


func _ready() -> void:
	_build_ui()
	if not ClassDB.class_exists("CroftClient"):
		_status("CroftClient is missing: build clients/croft-godot and copy the library into res://bin/ (see clients/godot/README.md)")
		return
	client = ClassDB.instantiate("CroftClient")
	add_child(client)
	var handlers := {
		"logged_in": _on_logged_in,
		"login_failed": _on_login_failed,
		"logged_out": _on_logged_out,
		"disconnected": _on_disconnected,
		"friends": _on_friends,
		"friend_presence": _on_friend_presence,
		"friend_request_received": _on_friend_request_received,
		"chat_received": _on_chat_received,
		"notification_received": _on_notification_received,
		"queued": _on_queued,
		"queue_left": _on_queue_left,
		"match_found": _on_match_found,
		"match_joined": _on_match_joined,
		"match_state": _on_match_state,
		"match_events": _on_match_events,
		"action_result": _on_action_result,
		"opponent_left": _on_opponent_left,
		"opponent_returned": _on_opponent_returned,
		"match_connection_lost": _on_match_connection_lost,
		"match_ended": _on_match_ended,
		"match_closed": _on_match_closed,
		"error": _on_error,
	}
	for signal_name in handlers:
		client.connect(signal_name, handlers[signal_name])


func _process(_delta: float) -> void:
	# "Auto" plays the built-in policy's moves (the headless bot's) whenever we may act.
	if client != null and auto_check.button_pressed and client.can_act():
		client.play_suggested()


# ----- UI -----

func _build_ui() -> void:
	var root := HBoxContainer.new()
	root.set_anchors_and_offsets_preset(Control.PRESET_FULL_RECT)
	root.add_theme_constant_override("separation", 12)
	add_child(root)

	var left := VBoxContainer.new()
	left.custom_minimum_size = Vector2(380, 0)
	root.add_child(left)

	left.add_child(_title("Login"))
	url_edit = _line(left, "http://127.0.0.1:7000", "auth URL")
	user_edit = _line(left, "", "username")
	pass_edit = _line(left, "", "password")
	pass_edit.secret = true
	var login_row := HBoxContainer.new()
	left.add_child(login_row)
	_button(login_row, "Log in", _on_login_pressed)
	_button(login_row, "Log out", func(): client.logout())
	_button(login_row, "Reconnect", func(): client.reconnect())
	status_label = Label.new()
	status_label.autowrap_mode = TextServer.AUTOWRAP_WORD_SMART
	status_label.text = "Not logged in."
	left.add_child(status_label)

	left.add_child(_title("Friends"))
	friends_list = ItemList.new()
	friends_list.custom_minimum_size = Vector2(0, 140)
	left.add_child(friends_list)
	var friend_row := HBoxContainer.new()
	left.add_child(friend_row)
	friend_edit = _line(friend_row, "", "username")
	friend_edit.size_flags_horizontal = Control.SIZE_EXPAND_FILL
	_button(friend_row, "Add", func(): client.friend_request(friend_edit.text))
	_button(friend_row, "Accept", func(): _with_selected_friend(func(id): client.friend_accept(id)))
	_button(friend_row, "Remove", func(): _with_selected_friend(func(id): client.friend_remove(id)))

	left.add_child(_title("Chat (to the selected friend, else everyone)"))
	chat_log = RichTextLabel.new()
	chat_log.size_flags_vertical = Control.SIZE_EXPAND_FILL
	chat_log.scroll_following = true
	left.add_child(chat_log)
	var chat_row := HBoxContainer.new()
	left.add_child(chat_row)
	chat_edit = _line(chat_row, "", "message")
	chat_edit.size_flags_horizontal = Control.SIZE_EXPAND_FILL
	chat_edit.text_submitted.connect(func(_t): _on_send_pressed())
	_button(chat_row, "Send", _on_send_pressed)

	var right := VBoxContainer.new()
	right.size_flags_horizontal = Control.SIZE_EXPAND_FILL
	root.add_child(right)
	right.add_child(_title("Match"))
	var queue_row := HBoxContainer.new()
	right.add_child(queue_row)
	_button(queue_row, "Find match", func(): client.find_match())
	_button(queue_row, "Cancel", func(): client.cancel_match())
	_button(queue_row, "End turn", func(): client.end_turn())
	_button(queue_row, "Suggest", _on_suggest_pressed)
	_button(queue_row, "Concede", func(): client.concede())
	auto_check = CheckBox.new()
	auto_check.text = "Auto"
	queue_row.add_child(auto_check)
	match_label = Label.new()
	match_label.text = "No match."
	right.add_child(match_label)

	right.add_child(_title("Your hand (click to play at the target below)"))
	hand_box = HFlowContainer.new()
	right.add_child(hand_box)
	var target_row := HBoxContainer.new()
	right.add_child(target_row)
	var target_label := Label.new()
	target_label.text = "Target:"
	target_row.add_child(target_label)
	target_option = OptionButton.new()
	target_row.add_child(target_option)
	right.add_child(_title("Your board (click to attack the target)"))
	board_box = HFlowContainer.new()
	right.add_child(board_box)
	right.add_child(_title("Their board"))
	enemy_box = HFlowContainer.new()
	right.add_child(enemy_box)

	right.add_child(_title("Log"))
	log_view = RichTextLabel.new()
	log_view.size_flags_vertical = Control.SIZE_EXPAND_FILL
	log_view.scroll_following = true
	right.add_child(log_view)
	_fill_targets()


func _title(text: String) -> Label:
	var l := Label.new()
	l.text = text
	l.add_theme_font_size_override("font_size", 18)
	return l


func _line(parent: Control, text: String, placeholder: String) -> LineEdit:
	var e := LineEdit.new()
	e.text = text
	e.placeholder_text = placeholder
	parent.add_child(e)
	return e


func _button(parent: Control, text: String, on_pressed: Callable) -> Button:
	var b := Button.new()
	b.text = text
	b.pressed.connect(on_pressed)
	parent.add_child(b)
	return b


func _status(text: String) -> void:
	status_label.text = text


func _log(text: String) -> void:
	log_view.append_text(text + "\n")


func _with_selected_friend(action: Callable) -> void:
	var picked := friends_list.get_selected_items()
	if picked.is_empty():
		_status("Select a friend first.")
		return
	action.call(friends[picked[0]]["user_id"])


# ----- actions -----

func _on_login_pressed() -> void:
	if client == null:
		return
	_status("Logging in...")
	client.login(url_edit.text, user_edit.text, pass_edit.text)


func _on_send_pressed() -> void:
	if chat_edit.text.strip_edges() == "":
		return
	var to := 0
	var picked := friends_list.get_selected_items()
	if not picked.is_empty():
		to = friends[picked[0]]["user_id"]
	client.chat(to, chat_edit.text)
	chat_log.append_text("[me] %s\n" % chat_edit.text)
	chat_edit.clear()


func _on_suggest_pressed() -> void:
	var s = client.suggest_action()
	if s == null:
		_log("Nothing to suggest (not your turn).")
	else:
		_log("Suggested: %s" % JSON.stringify(s))


func _selected_target() -> String:
	if target_option.item_count == 0 or target_option.selected < 0:
		return "enemy"
	return target_option.get_item_metadata(target_option.selected)


func _fill_targets() -> void:
	var keep := _selected_target() if target_option.item_count > 0 else "enemy"
	target_option.clear()
	var entries := [["Enemy hero", "enemy"], ["My hero", "me"], ["No target", ""]]
	if not state.is_empty():
		for c in state["opponent"]["board"]:
			entries.append(["Their %s (%d/%d)" % [c["card"], c["attack"], c["health"]], str(c["id"])])
		for c in state["me"]["board"]:
			entries.append(["My %s (%d/%d)" % [c["card"], c["attack"], c["health"]], str(c["id"])])
	for i in entries.size():
		target_option.add_item(entries[i][0])
		target_option.set_item_metadata(i, entries[i][1])
		if entries[i][1] == keep:
			target_option.select(i)


func _show_match() -> void:
	for box in [hand_box, board_box, enemy_box]:
		for child in box.get_children():
			child.queue_free()
	if state.is_empty():
		match_label.text = "No match."
		return
	var me: Dictionary = state["me"]
	var them: Dictionary = state["opponent"]
	match_label.text = "Turn %d, %s. You: %d life, %d/%d mana, deck %d. Them: %d life, %d cards in hand, deck %d." % [
		state["turn"], "your turn" if state["my_turn"] else "their turn",
		me["life"], me["mana"], me["max_mana"], me["deck_count"],
		them["life"], them["hand_count"], them["deck_count"]]
	var n := 1
	for card_id in me["hand"]:
		var info = client.card_info(card_id)
		var label := "%d. %s" % [n, card_id]
		if info != null:
			label = "%d. %s (%d)" % [n, info["name"], info["cost"]]
		var b := _button(hand_box, "Play card " + label, _play_card.bind(card_id))
		b.disabled = not state["my_turn"]
		n += 1
	for c in me["board"]:
		var b := _button(board_box, "Attack with %s %d/%d" % [c["card"], c["attack"], c["health"]], _attack.bind(c["id"]))
		b.disabled = not (state["my_turn"] and c["can_attack"])
	for c in them["board"]:
		var l := Label.new()
		l.text = "%s %d/%d %s" % [c["card"], c["attack"], c["health"], ", ".join(PackedStringArray(c["keywords"]))]
		enemy_box.add_child(l)
	_fill_targets()


func _play_card(card_id: String) -> void:
	var info = client.card_info(card_id)
	var target := ""
	# Spells with a target take the one picked below; creatures take none.
	if info != null and info["kind"] == "spell" and info["target"] != "None":
		target = _selected_target()
	client.play_card(card_id, target)


func _attack(creature_id: int) -> void:
	var target := _selected_target()
	if target == "" or target == "me":
		target = "enemy"
	client.attack(creature_id, target)


# ----- signals -----

func _on_logged_in(user_id: int, username: String) -> void:
	_status("Logged in as %s (user %d)." % [username, user_id])


func _on_login_failed(reason: String) -> void:
	_status("Login failed: " + reason)


func _on_logged_out() -> void:
	_status("Logged out.")
	friends = []
	friends_list.clear()
	state = {}
	_show_match()


func _on_disconnected(reason: String) -> void:
	_status("Disconnected: %s (press Reconnect)" % reason)


func _on_friends(list: Array) -> void:
	friends = list
	friends_list.clear()
	for f in list:
		friends_list.add_item("%s (%s, %s)" % [f["username"], f["state"], f["presence"]])


func _on_friend_presence(_user_id: int, username: String, presence: String) -> void:
	chat_log.append_text("(%s is %s)\n" % [username, presence])
	client.friend_list()


func _on_friend_request_received(user_id: int, username: String) -> void:
	chat_log.append_text("(%s, user %d, wants to be friends: select them and press Accept)\n" % [username, user_id])


func _on_chat_received(_from: int, from_name: String, channel: String, text: String) -> void:
	chat_log.append_text("[%s] %s: %s\n" % [channel, from_name, text])


func _on_notification_received(text: String) -> void:
	chat_log.append_text("** %s **\n" % text)


func _on_queued() -> void:
	_log("Queued.")


func _on_queue_left(reason: String) -> void:
	_log("Left the queue: " + reason)


func _on_match_found(match_id: int) -> void:
	_log("Match %d found, connecting..." % match_id)


func _on_match_joined(match_id: int, seat: int) -> void:
	_log("Joined match %d in seat %d." % [match_id, seat])


func _on_match_state(new_state: Dictionary) -> void:
	state = new_state
	_show_match()


func _on_match_events(events: Array) -> void:
	for e in events:
		if e["type"] in ["TurnStarted", "CardPlayed", "Attacked", "CreatureDied", "MatchEnded"]:
			_log(JSON.stringify(e))


func _on_action_result(seq: int, error: String, message: String) -> void:
	if error != "":
		_log("Action %d refused: %s" % [seq, message])


func _on_opponent_left(grace_seconds: int) -> void:
	_log("The opponent left; they forfeit in %d s unless they return." % grace_seconds)


func _on_opponent_returned() -> void:
	_log("The opponent is back.")


func _on_match_connection_lost(match_id: int, reason: String, retrying: bool) -> void:
	_log("Match %d connection lost (%s)%s" % [match_id, reason, ", reconnecting" if retrying else ""])


func _on_match_ended(match_id: int, outcome: String, reason: String) -> void:
	_log("Match %d is over: you %s (%s)." % [match_id, outcome, reason])
	auto_check.button_pressed = false


func _on_match_closed(_match_id: int, _aborted: bool) -> void:
	state = {}
	_show_match()
	_log("You can queue again.")


func _on_error(code: String, message: String) -> void:
	_log("Error %s: %s" % [code, message])
