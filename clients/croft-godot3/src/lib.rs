//! Godot 3 (GDNative, gdnative 0.11) binding of the croft client core: a `CroftClient` node
//! over [`croft_client::Client`].

// gdnative's derives and `godot_init!` expand to `unsafe impl`s and FFI entry points.
#![allow(unsafe_code)]

use std::cell::RefCell;

use croft_client::client::{Client, SIGNALS, Value};
use gdnative::prelude::*;
use shared_sim::farm::FarmAction;

/// A core value as a Godot variant (dictionaries and arrays are new, shared ones).
pub fn to_variant(v: Value) -> Variant {
    match v {
        Value::Nil => Variant::nil(),
        Value::Bool(b) => b.to_variant(),
        Value::Int(i) => i.to_variant(),
        Value::Str(s) => s.to_variant(),
        Value::List(items) => {
            let array = VariantArray::new();
            for item in items {
                array.push(to_variant(item));
            }
            array.into_shared().to_variant()
        }
        Value::Map(pairs) => {
            let dict = Dictionary::new();
            for (k, item) in pairs {
                dict.insert(k, to_variant(item));
            }
            dict.into_shared().to_variant()
        }
    }
}

/// An action's `seq` for GDScript: -1 when nothing was sent.
fn seq(s: Option<u32>) -> i64 {
    s.map_or(-1, i64::from)
}

/// The `CroftClient` node. Methods take `&self` (the client sits in a `RefCell` borrowed only
/// inside each call), so signal handlers may call back into the node while `_process` emits.
///
/// Every call returns at once; `_process` polls the client and emits one signal per event
/// (names and arguments: [`croft_client::client::SIGNALS`], the table in
/// `clients/godot/README.md`). The engine-in-the-loop test (`tests/engine.rs`,
/// `clients/godot/tests/engine3/`) runs it in godot3-server.
///
/// The Godot 4 binding (`croft-godot`) has the same methods and signals over the same core;
/// keep this file as thin as that one.
#[derive(NativeClass)]
#[inherit(Node)]
#[register_with(Self::register)]
pub struct CroftClient {
    client: RefCell<Client>,
    /// Poll in `_process` (on by default; tests may poll by hand with `poll()`).
    auto_poll: RefCell<bool>,
}

impl CroftClient {
    fn new(_base: &Node) -> Self {
        Self {
            client: RefCell::new(Client::new()),
            auto_poll: RefCell::new(true),
        }
    }

    fn register(builder: &ClassBuilder<Self>) {
        for (name, params) in SIGNALS {
            let mut signal = builder.signal(name);
            for p in *params {
                signal = signal.with_param_untyped(p);
            }
            signal.done();
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Client) -> R) -> R {
        f(&mut self.client.borrow_mut())
    }

    /// An id from GDScript (an int); a negative one is reported and gives `None`.
    fn id<T: TryFrom<i64>>(&self, what: &str, v: i64) -> Option<T> {
        let id = T::try_from(v).ok();
        if id.is_none() {
            self.with(|c| c.push_error(format!("bad {what}: {v}")));
        }
        id
    }
}

#[methods]
impl CroftClient {
    #[method]
    fn _process(&self, #[base] base: &Node, _delta: f64) {
        if *self.auto_poll.borrow() {
            self.poll(base);
        }
    }

    /// Drives the connections and emits the signals; returns how many events there were.
    #[method]
    fn poll(&self, #[base] base: &Node) -> i64 {
        // The borrow ends before any signal handler runs.
        let events = self.with(|c| c.poll());
        let count = events.len() as i64;
        for event in events {
            for (name, args) in event.signals() {
                let args: Vec<Variant> = args.into_iter().map(to_variant).collect();
                base.emit_signal(name, &args);
            }
        }
        count
    }

    #[method]
    fn set_auto_poll(&self, on: bool) {
        *self.auto_poll.borrow_mut() = on;
    }

    // ----- session -----

    #[method]
    fn login(&self, base_url: String, username: String, password: String) {
        self.with(|c| c.login(&base_url, &username, &password));
    }

    #[method]
    fn logout(&self) {
        self.with(|c| c.logout());
    }

    #[method]
    fn reconnect(&self) {
        self.with(|c| c.reconnect());
    }

    #[method]
    fn is_logged_in(&self) -> bool {
        self.with(|c| c.is_logged_in())
    }

    #[method]
    fn get_user_id(&self) -> i64 {
        self.with(|c| c.user_id().map_or(-1, |u| i64::try_from(u).unwrap_or(-1)))
    }

    #[method]
    fn get_username(&self) -> String {
        self.with(|c| c.username().unwrap_or_default().to_string())
    }

    // ----- lobby -----

    #[method]
    fn find_match(&self) {
        self.with(|c| c.find_match());
    }

    #[method]
    fn cancel_match(&self) {
        self.with(|c| c.cancel_match());
    }

    /// A direct message to `user_id`, or to the common channel when `user_id` is 0 or less.
    #[method]
    fn chat(&self, user_id: i64, text: String) {
        let to = u64::try_from(user_id).ok().filter(|u| *u > 0);
        self.with(|c| c.chat(to, &text));
    }

    #[method]
    fn friend_request(&self, username: String) {
        self.with(|c| c.friend_request(&username));
    }

    #[method]
    fn friend_accept(&self, user_id: i64) {
        if let Some(u) = self.id("user id", user_id) {
            self.with(|c| c.friend_accept(u));
        }
    }

    #[method]
    fn friend_decline(&self, user_id: i64) {
        if let Some(u) = self.id("user id", user_id) {
            self.with(|c| c.friend_decline(u));
        }
    }

    #[method]
    fn friend_remove(&self, user_id: i64) {
        if let Some(u) = self.id("user id", user_id) {
            self.with(|c| c.friend_remove(u));
        }
    }

    #[method]
    fn friend_list(&self) {
        self.with(|c| c.friend_list());
    }

    /// The friends list as last received (an Array of Dictionaries).
    #[method]
    fn get_friends(&self) -> Variant {
        to_variant(self.with(|c| c.friends_value()))
    }

    #[method]
    fn inventory(&self) {
        self.with(|c| c.inventory());
    }

    #[method]
    fn craft(&self, recipe: String) {
        self.with(|c| c.craft(&recipe));
    }

    #[method]
    fn decks(&self) {
        self.with(|c| c.decks());
    }

    #[method]
    fn save_deck(&self, slot: i64, name: String, cards: VariantArray) {
        let cards: Vec<String> = cards
            .iter()
            .map(|v| v.to::<String>().unwrap_or_default())
            .collect();
        if let Some(slot) = self.id("deck slot", slot) {
            self.with(|c| c.save_deck(slot, &name, cards));
        }
    }

    /// Queue with the deck in `slot` from now on; -1: the starter deck.
    #[method]
    fn choose_deck(&self, slot: i64) {
        if slot < 0 {
            return self.with(|c| c.choose_deck(None));
        }
        if let Some(slot) = self.id("deck slot", slot) {
            self.with(|c| c.choose_deck(Some(slot)));
        }
    }

    // ----- match -----

    /// Plays `card` from the hand at `target` ("" none, "me", "enemy", or a creature id);
    /// returns the action's seq (answered by `action_result`), -1 when nothing was sent.
    #[method]
    fn play_card(&self, card: String, target: String) -> i64 {
        seq(self.with(|c| c.play_card(&card, &target)))
    }

    #[method]
    fn attack(&self, attacker: i64, target: String) -> i64 {
        match self.id("creature id", attacker) {
            Some(a) => seq(self.with(|c| c.attack(a, &target))),
            None => -1,
        }
    }

    #[method]
    fn end_turn(&self) -> i64 {
        seq(self.with(|c| c.end_turn()))
    }

    #[method]
    fn concede(&self) -> i64 {
        seq(self.with(|c| c.concede()))
    }

    #[method]
    fn request_snapshot(&self) {
        self.with(|c| c.request_snapshot());
    }

    #[method]
    fn rejoin_match(&self) {
        self.with(|c| c.rejoin_match());
    }

    /// Drops the match connection as a network failure would; the node rejoins by itself
    /// (`match_connection_lost`, then `match_joined` again).
    #[method]
    fn drop_match_connection(&self) {
        self.with(|c| c.drop_match_connection());
    }

    /// Our turn, the match running, and no action of ours waiting for its answer.
    #[method]
    fn can_act(&self) -> bool {
        self.with(|c| c.can_act())
    }

    /// The built-in policy's move (a Dictionary with `type`), or null when it is not our turn.
    #[method]
    fn suggest_action(&self) -> Variant {
        to_variant(self.with(|c| c.suggestion_value()))
    }

    /// Plays the suggested move; its seq, or -1.
    #[method]
    fn play_suggested(&self) -> i64 {
        seq(self.with(|c| c.play_suggested()))
    }

    /// The match view (the `match_state` Dictionary), or null.
    #[method]
    fn get_match_state(&self) -> Variant {
        to_variant(self.with(|c| c.match_state_value()))
    }

    #[method]
    fn card_info(&self, card: String) -> Variant {
        to_variant(self.with(|c| c.card_value(&card)))
    }

    // ----- farm and common area -----

    #[method]
    fn enter_farm(&self) {
        self.with(|c| c.enter_farm());
    }

    #[method]
    fn farm_plant(&self, plot: i64, seed: String) -> i64 {
        self.farm(plot, |plot| FarmAction::Plant { plot, seed })
    }

    #[method]
    fn farm_water(&self, plot: i64) -> i64 {
        self.farm(plot, |plot| FarmAction::Water { plot })
    }

    #[method]
    fn farm_harvest(&self, plot: i64) -> i64 {
        self.farm(plot, |plot| FarmAction::Harvest { plot })
    }

    #[method]
    fn farm_clear(&self, plot: i64) -> i64 {
        self.farm(plot, |plot| FarmAction::Clear { plot })
    }

    #[method]
    fn leave_farm(&self) {
        self.with(|c| c.leave_farm());
    }

    #[method]
    fn enter_hub(&self) {
        self.with(|c| c.enter_hub());
    }

    #[method]
    fn hub_walk(&self, x: i64, y: i64) {
        if let (Some(x), Some(y)) = (self.id("x", x), self.id("y", y)) {
            self.with(|c| c.hub_walk(x, y));
        }
    }

    #[method]
    fn hub_say(&self, text: String) {
        self.with(|c| c.hub_say(&text));
    }

    #[method]
    fn leave_hub(&self) {
        self.with(|c| c.leave_hub());
    }
}

impl CroftClient {
    fn farm(&self, plot: i64, action: impl FnOnce(u8) -> FarmAction) -> i64 {
        match self.id("plot", plot) {
            Some(p) => seq(self.with(|c| c.farm_action(action(p)))),
            None => -1,
        }
    }
}

fn init(handle: InitHandle) {
    handle.add_class::<CroftClient>();
}

godot_init!(init);
