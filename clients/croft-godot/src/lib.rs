//! Godot 4 (GDExtension, gdext) binding of the croft client core: a `CroftClient` node over
//! [`croft_client::Client`].

// `#[gdextension]` needs an `unsafe impl ExtensionLibrary`; the class macros generate FFI glue.
#![allow(unsafe_code)]

use croft_client::client::{Client, Value};
use godot::classes::{INode, Node};
use godot::prelude::*;
use shared_sim::farm::FarmAction;

struct CroftExtension;

#[gdextension]
unsafe impl ExtensionLibrary for CroftExtension {}

/// A core value as a Godot variant (dictionaries and arrays are new ones).
pub fn to_variant(v: Value) -> Variant {
    match v {
        Value::Nil => Variant::nil(),
        Value::Bool(b) => b.to_variant(),
        Value::Int(i) => i.to_variant(),
        Value::Str(s) => GString::from(s.as_str()).to_variant(),
        Value::List(items) => {
            let mut array = VarArray::new();
            for item in items {
                array.push(&to_variant(item));
            }
            array.to_variant()
        }
        Value::Map(pairs) => {
            let mut dict = VarDictionary::new();
            for (k, item) in pairs {
                dict.set(&GString::from(k.as_str()).to_variant(), &to_variant(item));
            }
            dict.to_variant()
        }
    }
}

/// An action's `seq` for GDScript: -1 when nothing was sent.
fn seq(s: Option<u32>) -> i64 {
    s.map_or(-1, i64::from)
}

/// The croft client as a node: add it to the scene, connect its signals, call `login`.
///
/// Every call returns at once; `process` polls the client and emits one signal per event
/// (names and arguments: [`croft_client::client::SIGNALS`], the table in
/// `clients/godot/README.md`). The sample project is `clients/godot/demo/`.
///
/// The Godot 3 binding (`croft-godot3`, tested in godot3-server) has the same methods and
/// signals over the same core; keep this file as thin as that one.
#[derive(GodotClass)]
#[class(base=Node)]
pub struct CroftClient {
    base: Base<Node>,
    client: Client,
    /// Poll in `_process` (on by default; call `poll()` yourself when off).
    #[var]
    auto_poll: bool,
}

#[godot_api]
impl INode for CroftClient {
    fn init(base: Base<Node>) -> Self {
        Self {
            base,
            client: Client::new(),
            auto_poll: true,
        }
    }

    fn process(&mut self, _delta: f64) {
        if self.auto_poll {
            self.poll();
        }
    }
}

#[godot_api]
impl CroftClient {
    #[signal]
    fn logged_in(user_id: i64, username: GString);
    #[signal]
    fn login_failed(reason: GString);
    #[signal]
    fn logged_out();
    #[signal]
    fn disconnected(reason: GString);
    #[signal]
    fn friends(friends: VarArray);
    #[signal]
    fn friend_presence(user_id: i64, username: GString, presence: GString);
    #[signal]
    fn friend_online(user_id: i64, username: GString);
    #[signal]
    fn friend_offline(user_id: i64, username: GString);
    #[signal]
    fn friend_request_received(user_id: i64, username: GString);
    #[signal]
    fn friend_update(user_id: i64, accepted: bool);
    #[signal]
    fn chat_received(from: i64, from_name: GString, channel: GString, text: GString);
    #[signal]
    fn notification_received(text: GString);
    #[signal]
    fn queued();
    #[signal]
    fn queue_left(reason: GString);
    #[signal]
    fn match_found(match_id: i64);
    #[signal]
    fn match_joined(match_id: i64, seat: i64);
    #[signal]
    fn match_state(state: VarDictionary);
    #[signal]
    fn match_events(events: VarArray);
    #[signal]
    fn action_result(seq: i64, error: GString, message: GString);
    #[signal]
    fn opponent_left(grace_seconds: i64);
    #[signal]
    fn opponent_returned();
    #[signal]
    fn match_connection_lost(match_id: i64, reason: GString, retrying: bool);
    #[signal]
    fn match_ended(match_id: i64, outcome: GString, reason: GString);
    #[signal]
    fn match_closed(match_id: i64, aborted: bool);
    #[signal]
    fn inventory_received(items: VarDictionary, cards: VarDictionary);
    #[signal]
    fn crafted(recipe: GString, output: GString, quantity: i64);
    #[signal]
    fn decks_received(decks: VarArray, active: i64);
    #[signal]
    fn farm_ready();
    #[signal]
    fn farm_state(tick: i64, plots: VarArray, items: VarDictionary);
    #[signal]
    fn farm_result(seq: i64, error: GString, message: GString);
    #[signal]
    fn farm_left(reason: GString);
    #[signal]
    fn hub_ready();
    #[signal]
    fn hub_event(event: VarDictionary);
    #[signal]
    fn hub_left(reason: GString);
    #[signal]
    fn error(code: GString, message: GString);

    /// Drives the connections and emits the signals; returns how many events there were.
    #[func]
    fn poll(&mut self) -> i64 {
        let events = self.client.poll();
        let count = events.len() as i64;
        for event in events {
            for (name, args) in event.signals() {
                let args: Vec<Variant> = args.into_iter().map(to_variant).collect();
                // `base_mut` lets signal handlers call back into this node.
                self.base_mut().emit_signal(name, &args);
            }
        }
        count
    }

    /// An id from GDScript; a negative one is reported (an `error` signal) and gives `None`.
    fn id<T: TryFrom<i64>>(&mut self, what: &str, v: i64) -> Option<T> {
        let id = T::try_from(v).ok();
        if id.is_none() {
            self.client.push_error(format!("bad {what}: {v}"));
        }
        id
    }

    // ----- session -----

    #[func]
    fn login(&mut self, base_url: GString, username: GString, password: GString) {
        self.client.login(
            &base_url.to_string(),
            &username.to_string(),
            &password.to_string(),
        );
    }

    #[func]
    fn logout(&mut self) {
        self.client.logout();
    }

    #[func]
    fn reconnect(&mut self) {
        self.client.reconnect();
    }

    #[func]
    fn is_logged_in(&self) -> bool {
        self.client.is_logged_in()
    }

    #[func]
    fn get_user_id(&self) -> i64 {
        self.client
            .user_id()
            .map_or(-1, |u| i64::try_from(u).unwrap_or(-1))
    }

    #[func]
    fn get_username(&self) -> GString {
        GString::from(self.client.username().unwrap_or_default())
    }

    // ----- lobby -----

    #[func]
    fn find_match(&mut self) {
        self.client.find_match();
    }

    #[func]
    fn cancel_match(&mut self) {
        self.client.cancel_match();
    }

    /// A direct message to `user_id`, or to the common channel when `user_id` is 0 or less.
    #[func]
    fn chat(&mut self, user_id: i64, text: GString) {
        let to = u64::try_from(user_id).ok().filter(|u| *u > 0);
        self.client.chat(to, &text.to_string());
    }

    #[func]
    fn friend_request(&mut self, username: GString) {
        self.client.friend_request(&username.to_string());
    }

    #[func]
    fn friend_accept(&mut self, user_id: i64) {
        if let Some(u) = self.id("user id", user_id) {
            self.client.friend_accept(u);
        }
    }

    #[func]
    fn friend_decline(&mut self, user_id: i64) {
        if let Some(u) = self.id("user id", user_id) {
            self.client.friend_decline(u);
        }
    }

    #[func]
    fn friend_remove(&mut self, user_id: i64) {
        if let Some(u) = self.id("user id", user_id) {
            self.client.friend_remove(u);
        }
    }

    #[func]
    fn friend_list(&mut self) {
        self.client.friend_list();
    }

    /// The friends list as last received (an Array of Dictionaries).
    #[func]
    fn get_friends(&self) -> Variant {
        to_variant(self.client.friends_value())
    }

    #[func]
    fn inventory(&mut self) {
        self.client.inventory();
    }

    #[func]
    fn craft(&mut self, recipe: GString) {
        self.client.craft(&recipe.to_string());
    }

    #[func]
    fn decks(&mut self) {
        self.client.decks();
    }

    #[func]
    fn save_deck(&mut self, slot: i64, name: GString, cards: PackedStringArray) {
        let cards: Vec<String> = cards.as_slice().iter().map(|c| c.to_string()).collect();
        if let Some(slot) = self.id("deck slot", slot) {
            self.client.save_deck(slot, &name.to_string(), cards);
        }
    }

    /// Queue with the deck in `slot` from now on; -1: the starter deck.
    #[func]
    fn choose_deck(&mut self, slot: i64) {
        if slot < 0 {
            return self.client.choose_deck(None);
        }
        if let Some(slot) = self.id("deck slot", slot) {
            self.client.choose_deck(Some(slot));
        }
    }

    // ----- match -----

    /// Plays `card` from the hand at `target` ("" none, "me", "enemy", or a creature id);
    /// returns the action's seq (answered by `action_result`), -1 when nothing was sent.
    #[func]
    fn play_card(&mut self, card: GString, target: GString) -> i64 {
        seq(self
            .client
            .play_card(&card.to_string(), &target.to_string()))
    }

    #[func]
    fn attack(&mut self, attacker: i64, target: GString) -> i64 {
        match self.id("creature id", attacker) {
            Some(a) => seq(self.client.attack(a, &target.to_string())),
            None => -1,
        }
    }

    #[func]
    fn end_turn(&mut self) -> i64 {
        seq(self.client.end_turn())
    }

    #[func]
    fn concede(&mut self) -> i64 {
        seq(self.client.concede())
    }

    #[func]
    fn request_snapshot(&mut self) {
        self.client.request_snapshot();
    }

    #[func]
    fn rejoin_match(&mut self) {
        self.client.rejoin_match();
    }

    /// Drops the match connection as a network failure would; the node rejoins by itself
    /// (`match_connection_lost`, then `match_joined` again).
    #[func]
    fn drop_match_connection(&mut self) {
        self.client.drop_match_connection();
    }

    /// Our turn, the match running, and no action of ours waiting for its answer.
    #[func]
    fn can_act(&self) -> bool {
        self.client.can_act()
    }

    /// The built-in policy's move (a Dictionary with `type`), or null when it is not our turn.
    #[func]
    fn suggest_action(&self) -> Variant {
        to_variant(self.client.suggestion_value())
    }

    /// Plays the suggested move; its seq, or -1.
    #[func]
    fn play_suggested(&mut self) -> i64 {
        seq(self.client.play_suggested())
    }

    /// The match view (the `match_state` Dictionary), or null.
    #[func]
    fn get_match_state(&self) -> Variant {
        to_variant(self.client.match_state_value())
    }

    #[func]
    fn card_info(&self, card: GString) -> Variant {
        to_variant(self.client.card_value(&card.to_string()))
    }

    // ----- farm and common area -----

    #[func]
    fn enter_farm(&mut self) {
        self.client.enter_farm();
    }

    #[func]
    fn farm_plant(&mut self, plot: i64, seed: GString) -> i64 {
        let seed = seed.to_string();
        self.farm(plot, |plot| FarmAction::Plant { plot, seed })
    }

    #[func]
    fn farm_water(&mut self, plot: i64) -> i64 {
        self.farm(plot, |plot| FarmAction::Water { plot })
    }

    #[func]
    fn farm_harvest(&mut self, plot: i64) -> i64 {
        self.farm(plot, |plot| FarmAction::Harvest { plot })
    }

    #[func]
    fn farm_clear(&mut self, plot: i64) -> i64 {
        self.farm(plot, |plot| FarmAction::Clear { plot })
    }

    #[func]
    fn leave_farm(&mut self) {
        self.client.leave_farm();
    }

    #[func]
    fn enter_hub(&mut self) {
        self.client.enter_hub();
    }

    #[func]
    fn hub_walk(&mut self, x: i64, y: i64) {
        if let (Some(x), Some(y)) = (self.id("x", x), self.id("y", y)) {
            self.client.hub_walk(x, y);
        }
    }

    #[func]
    fn hub_say(&mut self, text: GString) {
        self.client.hub_say(&text.to_string());
    }

    #[func]
    fn leave_hub(&mut self) {
        self.client.leave_hub();
    }

    fn farm(&mut self, plot: i64, action: impl FnOnce(u8) -> FarmAction) -> i64 {
        match self.id("plot", plot) {
            Some(p) => seq(self.client.farm_action(action(p))),
            None => -1,
        }
    }
}

#[cfg(test)]
mod tests {
    use croft_client::client::SIGNALS;

    /// The signals declared above are the core's list (names and arity), checked on the
    /// source since nothing can load the class without the engine.
    #[test]
    fn declared_signals_match_the_core() {
        let src = include_str!("lib.rs");
        for (name, params) in SIGNALS {
            let decl = format!("    fn {name}(");
            let line = src
                .lines()
                .find(|l| l.starts_with(&decl))
                .unwrap_or_else(|| panic!("signal {name} is not declared"));
            let args = line[decl.len()..].trim_end_matches(");");
            let declared: Vec<&str> = args
                .split(',')
                .map(|a| a.split(':').next().unwrap_or_default().trim())
                .filter(|a| !a.is_empty())
                .collect();
            assert_eq!(&declared, params, "{name}");
        }
    }
}
