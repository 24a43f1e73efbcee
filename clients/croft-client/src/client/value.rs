//! Engine-neutral values for engine signals: each [`ClientEvent`] becomes one or more named
//! signals whose arguments are [`Value`]s.

use shared_sim::data::{Card, CardKind};
use shared_sim::farm::Plot;
use shared_sim::protocol::{ChatTarget, DeckEntry, FriendEntry};
use shared_sim::rules::{Action, CreatureView, MatchEvent, MatchResult, Seat, Target};
use shared_sim::view::{MatchSnapshot, PlayerView};

use super::{ClientEvent, target_text};
use crate::HubEvent;

/// A signal argument: nil, bools, ints, strings, lists and string-keyed maps, which a binding
/// turns into its engine's variants in a few lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<Value>),
    /// A dictionary with string keys, in this order.
    Map(Vec<(String, Value)>),
}

impl Value {
    pub fn map<const N: usize>(pairs: [(&str, Value); N]) -> Value {
        Value::Map(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    /// A field of a map (tests and bindings).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}

impl From<u64> for Value {
    /// Ids above `i64::MAX` do not occur (database ids); they saturate.
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::Int(i64::from(v))
            }
        }
    )*};
}
int_value!(i64, u32, i32, u16, i16, u8);

impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::List(v.into_iter().map(Into::into).collect())
    }
}

/// Every signal a binding declares, with its argument names (in order).
///
/// The signal names and payloads are the same in every binding; `clients/godot/README.md`
/// lists them.
pub const SIGNALS: &[(&str, &[&str])] = &[
    ("logged_in", &["user_id", "username"]),
    ("login_failed", &["reason"]),
    ("logged_out", &[]),
    ("disconnected", &["reason"]),
    ("friends", &["friends"]),
    ("friend_presence", &["user_id", "username", "presence"]),
    ("friend_online", &["user_id", "username"]),
    ("friend_offline", &["user_id", "username"]),
    ("friend_request_received", &["user_id", "username"]),
    ("friend_update", &["user_id", "accepted"]),
    ("chat_received", &["from", "from_name", "channel", "text"]),
    ("notification_received", &["text"]),
    ("queued", &[]),
    ("queue_left", &["reason"]),
    ("match_found", &["match_id"]),
    ("match_joined", &["match_id", "seat"]),
    ("match_state", &["state"]),
    ("match_events", &["events"]),
    ("action_result", &["seq", "error", "message"]),
    ("opponent_left", &["grace_seconds"]),
    ("opponent_returned", &[]),
    ("match_connection_lost", &["match_id", "reason", "retrying"]),
    ("match_ended", &["match_id", "outcome", "reason"]),
    ("match_closed", &["match_id", "aborted"]),
    ("inventory_received", &["items", "cards"]),
    ("crafted", &["recipe", "output", "quantity"]),
    ("decks_received", &["decks", "active"]),
    ("farm_ready", &[]),
    ("farm_state", &["tick", "plots", "items"]),
    ("farm_result", &["seq", "error", "message"]),
    ("farm_left", &["reason"]),
    ("hub_ready", &[]),
    ("hub_event", &["event"]),
    ("hub_left", &["reason"]),
    ("error", &["code", "message"]),
];

/// The variant name of a value's `Debug` form (`NotEnoughMana { .. }` → `NotEnoughMana`).
pub fn variant_name<T: std::fmt::Debug>(v: &T) -> String {
    let text = format!("{v:?}");
    text.split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn seat(s: Seat) -> Value {
    Value::Int(s.index() as i64)
}

fn counts(list: &[(String, u32)]) -> Value {
    Value::Map(
        list.iter()
            .map(|(id, n)| (id.clone(), Value::from(*n)))
            .collect(),
    )
}

pub fn creature_value(c: &CreatureView) -> Value {
    Value::map([
        ("id", c.id.into()),
        ("card", c.card.as_str().into()),
        ("attack", c.attack.into()),
        ("health", c.health.into()),
        ("max_health", c.max_health.into()),
        (
            "keywords",
            Value::List(c.keywords.iter().map(|k| variant_name(k).into()).collect()),
        ),
        ("can_attack", c.can_attack.into()),
        ("shield", c.shield.into()),
    ])
}

pub fn player_value(p: &PlayerView) -> Value {
    Value::map([
        ("life", p.life.into()),
        ("max_mana", p.max_mana.into()),
        ("mana", p.mana.into()),
        ("deck_count", p.deck_count.into()),
        ("hand", p.hand.clone().into()),
        ("hand_count", p.hand_count.into()),
        (
            "board",
            Value::List(p.board.iter().map(creature_value).collect()),
        ),
    ])
}

pub fn result_value(r: &Option<MatchResult>) -> Value {
    match r {
        None => Value::Nil,
        Some(r) => Value::map([
            ("winner", r.winner.map_or(Value::Int(-1), seat)),
            ("reason", variant_name(&r.reason).into()),
        ]),
    }
}

/// The match view: `me` and `opponent` are the two players from our side.
pub fn snapshot_value(s: &MatchSnapshot) -> Value {
    Value::map([
        ("match_id", s.match_id.into()),
        ("you", seat(s.you)),
        ("turn", s.turn.into()),
        ("active", seat(s.active)),
        ("my_turn", s.is_my_turn().into()),
        ("seconds_left", s.seconds_left.into()),
        ("me", player_value(s.me())),
        ("opponent", player_value(s.opponent())),
        ("result", result_value(&s.result)),
    ])
}

fn target(t: &Target, you: Seat) -> Value {
    target_text(Some(*t), you).into()
}

/// One match event: `type` is the variant name; targets are `"me"`, `"enemy"` or a creature id
/// as text (as [`super::parse_target`] reads them).
pub fn event_value(e: &MatchEvent, you: Seat) -> Value {
    let kind = ("type", Value::from(variant_name(e)));
    match e {
        MatchEvent::TurnStarted {
            seat: s,
            turn,
            max_mana,
            seconds,
        } => Value::map([
            kind,
            ("seat", seat(*s)),
            ("turn", (*turn).into()),
            ("max_mana", (*max_mana).into()),
            ("seconds", (*seconds).into()),
        ]),
        MatchEvent::CardDrawn { seat: s, card } => Value::map([
            kind,
            ("seat", seat(*s)),
            ("card", card.clone().map_or(Value::Nil, Value::from)),
        ]),
        MatchEvent::CardBurned { seat: s, card } => {
            Value::map([kind, ("seat", seat(*s)), ("card", card.as_str().into())])
        }
        MatchEvent::Fatigue { seat: s, damage } => {
            Value::map([kind, ("seat", seat(*s)), ("damage", (*damage).into())])
        }
        MatchEvent::CardPlayed {
            seat: s,
            card,
            mana_left,
            target: t,
        } => Value::map([
            kind,
            ("seat", seat(*s)),
            ("card", card.as_str().into()),
            ("mana_left", (*mana_left).into()),
            ("target", target_text(*t, you).into()),
        ]),
        MatchEvent::CreatureSummoned { seat: s, creature } => Value::map([
            kind,
            ("seat", seat(*s)),
            ("creature", creature_value(creature)),
        ]),
        MatchEvent::Attacked {
            attacker,
            target: t,
        } => Value::map([
            kind,
            ("attacker", (*attacker).into()),
            ("target", target(t, you)),
        ]),
        MatchEvent::Damaged {
            target: t,
            amount,
            remaining,
        }
        | MatchEvent::Healed {
            target: t,
            amount,
            remaining,
        } => Value::map([
            kind,
            ("target", target(t, you)),
            ("amount", (*amount).into()),
            ("remaining", (*remaining).into()),
        ]),
        MatchEvent::ShieldBroken { creature } | MatchEvent::CreatureDied { creature } => {
            Value::map([kind, ("creature", (*creature).into())])
        }
        MatchEvent::TurnEnded { seat: s, timed_out } => {
            Value::map([kind, ("seat", seat(*s)), ("timed_out", (*timed_out).into())])
        }
        MatchEvent::MatchEnded { result } => {
            Value::map([kind, ("result", result_value(&Some(*result)))])
        }
    }
}

/// An action as a dictionary: `type` is `play_card`, `attack`, `end_turn` or `concede`.
pub fn action_value(a: &Action, you: Seat) -> Value {
    match a {
        Action::PlayCard { card, target: t } => Value::map([
            ("type", "play_card".into()),
            ("card", card.as_str().into()),
            ("target", target_text(*t, you).into()),
        ]),
        Action::Attack {
            attacker,
            target: t,
        } => Value::map([
            ("type", "attack".into()),
            ("attacker", (*attacker).into()),
            ("target", target(t, you)),
        ]),
        Action::EndTurn => Value::map([("type", "end_turn".into())]),
        Action::Concede => Value::map([("type", "concede".into())]),
    }
}

/// A card: `id`, `name`, `cost`, `text`, `kind` (`creature` or `spell`), and for creatures
/// `attack`, `health` and `keywords`, for spells `target` (a `SpellTarget` name).
pub fn card_value(c: &Card) -> Value {
    let mut out = vec![
        ("id".to_string(), Value::from(c.id.as_str())),
        ("name".to_string(), c.name.as_str().into()),
        ("cost".to_string(), c.cost.into()),
        ("text".to_string(), c.text.as_str().into()),
    ];
    match &c.kind {
        CardKind::Creature {
            attack,
            health,
            keywords,
        } => out.extend([
            ("kind".to_string(), "creature".into()),
            ("attack".to_string(), (*attack).into()),
            ("health".to_string(), (*health).into()),
            (
                "keywords".to_string(),
                Value::List(keywords.iter().map(|k| variant_name(k).into()).collect()),
            ),
        ]),
        CardKind::Spell { target, .. } => out.extend([
            ("kind".to_string(), "spell".into()),
            ("target".to_string(), variant_name(target).into()),
        ]),
    }
    Value::Map(out)
}

pub fn friend_value(f: &FriendEntry) -> Value {
    Value::map([
        ("user_id", f.user_id.into()),
        ("username", f.username.as_str().into()),
        ("state", variant_name(&f.state).into()),
        ("presence", variant_name(&f.presence).into()),
    ])
}

pub fn deck_value(d: &DeckEntry) -> Value {
    Value::map([
        ("slot", d.slot.into()),
        ("name", d.name.as_str().into()),
        ("cards", d.cards.clone().into()),
    ])
}

pub fn plot_value(p: &Plot) -> Value {
    let state = ("state", Value::from(variant_name(p)));
    match p {
        Plot::Empty => Value::map([state]),
        Plot::Growing {
            crop, stage, water, ..
        } => Value::map([
            state,
            ("crop", crop.as_str().into()),
            ("stage", (*stage).into()),
            ("water", (*water).into()),
        ]),
        Plot::Ripe { crop, .. } | Plot::Withered { crop } => {
            Value::map([state, ("crop", crop.as_str().into())])
        }
    }
}

pub fn hub_event_value(e: &HubEvent) -> Value {
    let kind = ("type", Value::from(variant_name(e)));
    let player = |p: &shared_sim::hub::HubPlayer| {
        Value::map([
            ("user_id", p.user_id.into()),
            ("name", p.name.as_str().into()),
            ("x", p.x.into()),
            ("y", p.y.into()),
        ])
    };
    match e {
        HubEvent::Welcome { hub_id } => Value::map([kind, ("hub_id", (*hub_id).into())]),
        HubEvent::Joined(p) => Value::map([kind, ("player", player(p))]),
        HubEvent::Left { user_id } => Value::map([kind, ("user_id", (*user_id).into())]),
        HubEvent::Moved(moves) => Value::map([
            kind,
            (
                "moves",
                Value::List(
                    moves
                        .iter()
                        .map(|(u, x, y)| {
                            Value::map([
                                ("user_id", (*u).into()),
                                ("x", (*x).into()),
                                ("y", (*y).into()),
                            ])
                        })
                        .collect(),
                ),
            ),
        ]),
        HubEvent::MoveRefused { error, x, y } => Value::map([
            kind,
            ("error", variant_name(error).into()),
            ("x", (*x).into()),
            ("y", (*y).into()),
        ]),
        HubEvent::Chat { from, name, text } => Value::map([
            kind,
            ("from", (*from).into()),
            ("name", name.as_str().into()),
            ("text", text.as_str().into()),
        ]),
        HubEvent::Error { code, message } => Value::map([
            kind,
            ("code", variant_name(code).into()),
            ("message", message.as_str().into()),
        ]),
    }
}

fn error_text<E: std::fmt::Debug + std::fmt::Display>(e: &Option<E>) -> (Value, Value) {
    match e {
        None => ("".into(), "".into()),
        Some(e) => (variant_name(e).into(), e.to_string().into()),
    }
}

impl ClientEvent {
    /// The signals this event raises, by name, with their arguments (see [`SIGNALS`]).
    pub fn signals(&self) -> Vec<(&'static str, Vec<Value>)> {
        use ClientEvent as E;
        let one = |name: &'static str, args: Vec<Value>| vec![(name, args)];
        match self {
            E::LoggedIn { user_id, username } => one(
                "logged_in",
                vec![(*user_id).into(), username.as_str().into()],
            ),
            E::LoginFailed(why) => one("login_failed", vec![why.as_str().into()]),
            E::LoggedOut => one("logged_out", vec![]),
            E::Disconnected(why) => one("disconnected", vec![why.as_str().into()]),
            E::Friends(list) => one(
                "friends",
                vec![Value::List(list.iter().map(friend_value).collect())],
            ),
            E::FriendPresence {
                user_id,
                username,
                presence,
                was,
            } => {
                use shared_sim::protocol::Presence::Offline;
                let (id, name) = (Value::from(*user_id), Value::from(username.as_str()));
                let mut out = vec![(
                    "friend_presence",
                    vec![id.clone(), name.clone(), variant_name(presence).into()],
                )];
                if *presence == Offline && *was != Offline {
                    out.push(("friend_offline", vec![id, name]));
                } else if *presence != Offline && *was == Offline {
                    out.push(("friend_online", vec![id, name]));
                }
                out
            }
            E::FriendRequest { user_id, username } => one(
                "friend_request_received",
                vec![(*user_id).into(), username.as_str().into()],
            ),
            E::FriendUpdate { user_id, accepted } => {
                one("friend_update", vec![(*user_id).into(), (*accepted).into()])
            }
            E::ChatReceived {
                from,
                from_name,
                to,
                text,
            } => one(
                "chat_received",
                vec![
                    (*from).into(),
                    from_name.as_str().into(),
                    match to {
                        ChatTarget::User(_) => "direct",
                        ChatTarget::Common => "common",
                    }
                    .into(),
                    text.as_str().into(),
                ],
            ),
            E::Notification(text) => one("notification_received", vec![text.as_str().into()]),
            E::Queued => one("queued", vec![]),
            E::QueueLeft { reason } => one("queue_left", vec![variant_name(reason).into()]),
            E::MatchFound { match_id } => one("match_found", vec![(*match_id).into()]),
            E::MatchJoined { match_id, seat: s } => {
                one("match_joined", vec![(*match_id).into(), seat(*s)])
            }
            E::MatchState(s) => one("match_state", vec![snapshot_value(s)]),
            E::MatchEvents { you, events } => one(
                "match_events",
                vec![Value::List(
                    events.iter().map(|e| event_value(e, *you)).collect(),
                )],
            ),
            E::ActionResult { seq, error } => {
                let (code, message) = error_text(error);
                one("action_result", vec![(*seq).into(), code, message])
            }
            E::OpponentLeft { grace_seconds } => {
                one("opponent_left", vec![(*grace_seconds).into()])
            }
            E::OpponentReturned => one("opponent_returned", vec![]),
            E::MatchConnectionLost {
                match_id,
                reason,
                retrying,
            } => one(
                "match_connection_lost",
                vec![
                    (*match_id).into(),
                    reason.as_str().into(),
                    (*retrying).into(),
                ],
            ),
            E::MatchEnded {
                match_id,
                outcome,
                reason,
            } => one(
                "match_ended",
                vec![
                    (*match_id).into(),
                    outcome.name().into(),
                    reason.map_or(String::new(), |r| variant_name(&r)).into(),
                ],
            ),
            E::MatchClosed { match_id, aborted } => {
                one("match_closed", vec![(*match_id).into(), (*aborted).into()])
            }
            E::Inventory { items, cards } => {
                one("inventory_received", vec![counts(items), counts(cards)])
            }
            E::Crafted {
                recipe,
                output,
                quantity,
            } => one(
                "crafted",
                vec![
                    recipe.as_str().into(),
                    output.as_str().into(),
                    (*quantity).into(),
                ],
            ),
            E::Decks { decks, active } => one(
                "decks_received",
                vec![
                    Value::List(decks.iter().map(deck_value).collect()),
                    active.map_or(Value::Int(-1), Value::from),
                ],
            ),
            E::FarmReady => one("farm_ready", vec![]),
            E::FarmState { tick, plots, items } => one(
                "farm_state",
                vec![
                    (*tick).into(),
                    Value::List(plots.iter().map(plot_value).collect()),
                    counts(items),
                ],
            ),
            E::FarmResult { seq, error } => {
                let (code, message) = error_text(error);
                one("farm_result", vec![(*seq).into(), code, message])
            }
            E::FarmLeft(why) => one("farm_left", vec![why.as_str().into()]),
            E::HubReady => one("hub_ready", vec![]),
            E::Hub(e) => one("hub_event", vec![hub_event_value(e)]),
            E::HubLeft(why) => one("hub_left", vec![why.as_str().into()]),
            E::Error { code, message } => one(
                "error",
                vec![
                    code.map_or("ClientError".to_string(), |c| variant_name(&c))
                        .into(),
                    message.as_str().into(),
                ],
            ),
        }
    }
}
