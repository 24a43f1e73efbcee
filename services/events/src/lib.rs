//! Events: a versioned envelope around typed payloads, written to the outbox in the same
//! transaction as the change they describe.

pub mod bus;
pub mod relay;

use serde::{Deserialize, Serialize};

/// Bumped when a payload changes incompatibly; consumers read `schema_version` first.
pub const SCHEMA_VERSION: u32 = 1;

/// Every event type, which is also its topic name (after a prefix).
pub const EVENT_TYPES: [&str; 13] = [
    "user_login",
    "user_logout",
    "match_found",
    "game_started",
    "game_ended",
    "friend_request",
    "item_crafted",
    "items_farmed",
    "notification",
    "presence_changed",
    "chat_message",
    "connection_alive",
    "friend_changed",
];

/// What happened. The tag is the event type, which is also the topic name (after a prefix).
///
/// The outbox relay (`relay.rs`) publishes events, one topic per event type, keyed by
/// [`Event::key`]. The JSON Schema of each event type is under `docs/events/`; a test checks
/// events of every type against them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum Event {
    UserLogin {
        user_id: i64,
    },
    UserLogout {
        user_id: i64,
    },
    MatchFound {
        match_id: u64,
        players: Vec<u64>,
        instance: String,
        server_addr: String,
    },
    GameStarted {
        match_id: u64,
        players: Vec<u64>,
    },
    GameEnded {
        match_id: u64,
        players: Vec<u64>,
        /// `None`: a draw or an aborted match.
        winner: Option<u64>,
        reason: String,
        turns: u32,
    },
    FriendRequest {
        from_user_id: i64,
        to_user_id: i64,
    },
    ItemCrafted {
        user_id: i64,
        recipe: String,
        output: String,
        quantity: u32,
    },
    /// A farm action changed the player's inventory (planting takes seeds, harvesting adds
    /// produce), written in the same transaction as the change and the farm.
    ItemsFarmed {
        user_id: i64,
        /// Each item's change, in the order applied (negative: taken).
        changes: Vec<ItemDelta>,
    },
    /// A global announcement for every connected player.
    Notification {
        text: String,
    },
    /// A player's presence on a connection server changed: `online`, `in_queue`, `in_match`
    /// or `offline`.
    PresenceChanged {
        user_id: u64,
        presence: String,
    },
    /// Chat crossing connection servers: direct (`to_user_id`) or the common channel (`None`).
    ChatMessage {
        from_user_id: u64,
        from_name: String,
        to_user_id: Option<u64>,
        text: String,
    },
    /// A friendship changed on one connection server (`requested`, `accepted`, `declined` or
    /// `removed`, by `from_user_id`): the others tell their players at once.
    FriendChanged {
        change: String,
        from_user_id: u64,
        /// The name of `from_user_id` (shown with a request).
        from_name: String,
        to_user_id: u64,
    },
    /// A connection server's heartbeat (every 2 s): the others take the players it reported
    /// offline when its heartbeats stop.
    ConnectionAlive {
        server: String,
        /// Random per process: a server restarted under the same name is a new one.
        boot: u64,
        /// Players connected to it.
        online: u64,
    },
}

impl Event {
    /// The event type: `user_login`, `match_found`, ...
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::UserLogin { .. } => "user_login",
            Event::UserLogout { .. } => "user_logout",
            Event::MatchFound { .. } => "match_found",
            Event::GameStarted { .. } => "game_started",
            Event::GameEnded { .. } => "game_ended",
            Event::FriendRequest { .. } => "friend_request",
            Event::ItemCrafted { .. } => "item_crafted",
            Event::ItemsFarmed { .. } => "items_farmed",
            Event::Notification { .. } => "notification",
            Event::PresenceChanged { .. } => "presence_changed",
            Event::ChatMessage { .. } => "chat_message",
            Event::ConnectionAlive { .. } => "connection_alive",
            Event::FriendChanged { .. } => "friend_changed",
        }
    }

    /// The partition key: the user or the match the event is about, so that each one's
    /// events stay in order.
    pub fn key(&self) -> String {
        match self {
            Event::UserLogin { user_id }
            | Event::UserLogout { user_id }
            | Event::ItemCrafted { user_id, .. }
            | Event::ItemsFarmed { user_id, .. } => user_id.to_string(),
            Event::FriendRequest { to_user_id, .. } => to_user_id.to_string(),
            Event::MatchFound { match_id, .. }
            | Event::GameStarted { match_id, .. }
            | Event::GameEnded { match_id, .. } => match_id.to_string(),
            Event::Notification { .. } => "global".to_string(),
            Event::PresenceChanged { user_id, .. } => user_id.to_string(),
            Event::ChatMessage { to_user_id, .. } => match to_user_id {
                Some(u) => u.to_string(),
                None => "common".to_string(),
            },
            Event::ConnectionAlive { server, .. } => server.clone(),
            Event::FriendChanged { to_user_id, .. } => to_user_id.to_string(),
        }
    }

    /// The envelope for this event, with a new UUIDv7 id and the current time.
    pub fn envelope(&self, producer: &str) -> Envelope {
        self.clone().into_envelope(producer, now_ms())
    }

    /// The envelope for an event that happened at `occurred_at_ms`. The UUIDv7 is made now
    /// (monotonic within this process), which may be a little after the event.
    pub fn into_envelope(self, producer: &str, occurred_at_ms: i64) -> Envelope {
        Envelope {
            event_id: uuid::Uuid::now_v7().to_string(),
            event_type: self.event_type().to_string(),
            schema_version: SCHEMA_VERSION,
            occurred_at_ms,
            producer: producer.to_string(),
            key: self.key(),
            event: self,
        }
    }

    /// The outbox row for this event (its payload is the whole envelope as JSON).
    pub fn outbox(&self, producer: &str) -> store::OutboxEvent {
        self.envelope(producer).outbox()
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

/// One item's change in an inventory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemDelta {
    pub item: String,
    pub delta: i64,
}

/// Every event on the bus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// UUIDv7: unique, and ordered by creation time; consumers de-duplicate by it.
    pub event_id: String,
    pub event_type: String,
    pub schema_version: u32,
    /// Unix milliseconds.
    pub occurred_at_ms: i64,
    /// The service that produced it: `auth`, `matchmaking`, `connection`, `instance`.
    pub producer: String,
    pub key: String,
    /// `{"type": ..., "payload": {...}}`.
    #[serde(flatten)]
    pub event: Event,
}

impl Envelope {
    pub fn to_json(&self) -> String {
        // Plain data: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn outbox(&self) -> store::OutboxEvent {
        store::OutboxEvent {
            event_id: self.event_id.clone(),
            event_type: self.event_type.clone(),
            key: self.key.clone(),
            payload: self.to_json(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One event of every type.
    pub fn samples() -> Vec<Event> {
        vec![
            Event::UserLogin { user_id: 7 },
            Event::UserLogout { user_id: 7 },
            Event::MatchFound {
                match_id: 9,
                players: vec![1, 2],
                instance: "local-1".into(),
                server_addr: "127.0.0.1:5000".into(),
            },
            Event::GameStarted {
                match_id: 9,
                players: vec![1, 2],
            },
            Event::GameEnded {
                match_id: 9,
                players: vec![1, 2],
                winner: Some(1),
                reason: "HeroDied".into(),
                turns: 12,
            },
            Event::GameEnded {
                match_id: 10,
                players: vec![3, 4],
                winner: None,
                reason: "Aborted".into(),
                turns: 0,
            },
            Event::FriendRequest {
                from_user_id: 1,
                to_user_id: 2,
            },
            Event::ItemCrafted {
                user_id: 1,
                recipe: "ember_wand".into(),
                output: "card:ember_wand".into(),
                quantity: 1,
            },
            Event::ItemsFarmed {
                user_id: 1,
                changes: vec![
                    ItemDelta {
                        item: "wheat".into(),
                        delta: 3,
                    },
                    ItemDelta {
                        item: "wheat_seed".into(),
                        delta: -1,
                    },
                ],
            },
            Event::Notification {
                text: "maintenance at noon".into(),
            },
            Event::PresenceChanged {
                user_id: 5,
                presence: "in_match".into(),
            },
            Event::ChatMessage {
                from_user_id: 5,
                from_name: "ada".into(),
                to_user_id: Some(6),
                text: "gg".into(),
            },
            Event::ChatMessage {
                from_user_id: 5,
                from_name: "ada".into(),
                to_user_id: None,
                text: "hello all".into(),
            },
            Event::FriendChanged {
                change: "requested".into(),
                from_user_id: 5,
                from_name: "ada".into(),
                to_user_id: 6,
            },
            Event::ConnectionAlive {
                server: "conn-1".into(),
                boot: 7_336_115_207_210_631,
                online: 42,
            },
        ]
    }

    fn schema(event_type: &str) -> serde_json::Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/events")
            .join(format!("{event_type}.schema.json"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn every_event_type_matches_its_json_schema_and_round_trips() {
        for event in samples() {
            let env = event.envelope("test");
            let json: serde_json::Value = serde_json::from_str(&env.to_json()).unwrap();
            let validator = jsonschema::validator_for(&schema(event.event_type())).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&json)
                .map(|e| e.to_string())
                .collect();
            assert!(
                errors.is_empty(),
                "{}: {errors:?}\n{json}",
                event.event_type()
            );
            let back: Envelope = serde_json::from_value(json).unwrap();
            assert_eq!(back, env);
        }
    }

    #[test]
    fn every_type_has_a_sample_and_a_schema_file() {
        let mut sampled: Vec<&str> = samples().iter().map(|e| e.event_type()).collect();
        sampled.sort_unstable();
        sampled.dedup();
        let mut all = EVENT_TYPES.to_vec();
        all.sort_unstable();
        assert_eq!(sampled, all);
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/events");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(".schema.json").map(str::to_string)
            })
            .collect();
        files.sort_unstable();
        assert_eq!(files, all);
    }

    #[test]
    fn schemas_reject_wrong_events() {
        let env = Event::UserLogin { user_id: 7 }.envelope("test");
        let mut json: serde_json::Value = serde_json::from_str(&env.to_json()).unwrap();
        let validator = jsonschema::validator_for(&schema("user_login")).unwrap();
        json["payload"]["user_id"] = serde_json::json!("seven");
        assert!(!validator.is_valid(&json));
        json["payload"] = serde_json::json!({});
        assert!(!validator.is_valid(&json));
        // Another type's event against this schema.
        let other = Event::Notification { text: "x".into() }.envelope("test");
        let other: serde_json::Value = serde_json::from_str(&other.to_json()).unwrap();
        assert!(!validator.is_valid(&other));
    }

    #[test]
    fn ids_are_uuid_v7_in_creation_order_and_keys_follow_the_subject() {
        let a = Event::UserLogin { user_id: 1 }.envelope("auth");
        let b = Event::UserLogin { user_id: 1 }.envelope("auth");
        let ua = uuid::Uuid::parse_str(&a.event_id).unwrap();
        assert_eq!(ua.get_version_num(), 7);
        assert!(a.event_id < b.event_id);
        assert_eq!(a.key, "1");
        let row = Event::FriendRequest {
            from_user_id: 1,
            to_user_id: 2,
        }
        .outbox("connection");
        assert_eq!(
            (row.event_type.as_str(), row.key.as_str()),
            ("friend_request", "2")
        );
    }
}
