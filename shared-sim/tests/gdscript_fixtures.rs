//! Byte fixtures for the pure-GDScript codec (`clients/godot/addons/croft/protocol.gd`).
//!
//! Builds at least one value of every variant of the four message enums and of every enum they
//! carry, encodes them with the real postcard encoding, and compares the result with the committed
//! `clients/godot/tests/fixtures.tsv`, which `clients/godot/tests/codec_test.gd` (run by
//! `scripts/godot-codec-test`) decodes and re-encodes in Godot. Run with `CROFT_BLESS=1` to
//! rewrite the file after a protocol change (then bump `PROTOCOL_VERSION` and update
//! `protocol.gd`).
//!
//! Each line is `kind<TAB>name<TAB>hex<TAB>expected`, where `kind` is `client`, `server`,
//! `lobby_client` or `lobby_server`, and `expected` is either `error` (the bytes must not decode)
//! or the decoded value in the GDScript dictionary form, as canonical JSON. That form is produced
//! here by a serde serializer (so field names come from the Rust types themselves):
//!
//! - structs are objects; enums that have a variant with data are objects with a `"type"` key
//!   (the variant name) plus the variant's fields; enums without data are the variant name as a
//!   string; newtype variants name their field as in [`newtype_field`];
//! - `Option` is `null` or the value; `Vec<u8>` is `"0x"` + lowercase hex; other sequences,
//!   tuples and fixed arrays are arrays; `SocketAddr` is its display string (`1.2.3.4:5`, `[::1]:5`);
//! - integers are decimal, `u64` as its two's-complement `i64` (GDScript ints are signed 64-bit);
//! - object keys are sorted by byte order, no whitespace; strings escape `"`, `\` and control
//!   characters below U+0020 as `\u00xx` and nothing else.
//!
//! Besides the values, the file holds hand-made invalid inputs and seeded one-byte mutations of
//! every fixture, with what Rust's decoder makes of them, so the GDScript decoder must accept
//! and reject exactly what the servers accept and reject.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Serialize, de, ser};
use shared_sim::data::Keyword;
use shared_sim::farm::{FarmAction, FarmError, Plot};
use shared_sim::hub::{HubPlayer, MoveError};
use shared_sim::protocol::{
    ChatTarget, ClientMessage, DeckEntry, ErrorCode, FriendEntry, FriendState, LobbyClientMessage,
    LobbyServerMessage, Presence, QueueEnd, ServerMessage,
};
use shared_sim::rules::{
    Action, ActionError, CreatureView, EndReason, MatchEvent, MatchResult, Seat, Target,
};
use shared_sim::view::{MatchSnapshot, PlayerView};

/// Enums with at least one variant that carries data: the GDScript form is always a dictionary.
const DATA_ENUMS: &[&str] = &[
    "ClientMessage",
    "ServerMessage",
    "LobbyClientMessage",
    "LobbyServerMessage",
    "Action",
    "Target",
    "ActionError",
    "MatchEvent",
    "FarmAction",
    "Plot",
    "ChatTarget",
];

/// The dictionary key of a newtype variant's value.
fn newtype_field(enum_name: &str, variant: &str) -> Option<&'static str> {
    Some(match (enum_name, variant) {
        ("ServerMessage", "Snapshot") => "snapshot",
        ("ServerMessage", "Events") => "events",
        ("ServerMessage", "HubJoined") => "player",
        ("ServerMessage", "HubMoves") => "moves",
        ("LobbyServerMessage", "Friends") => "friends",
        ("Target", "Hero") => "seat",
        ("Target", "Creature") => "id",
        ("ChatTarget", "User") => "user_id",
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// A serde serializer to the GDScript form, which also records every enum variant it sees.

#[derive(Debug)]
enum Fail {
    Msg(String),
    Variants(&'static str, &'static [&'static str]),
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fail::Msg(m) => f.write_str(m),
            Fail::Variants(name, _) => write!(f, "variants of {name}"),
        }
    }
}

impl std::error::Error for Fail {}

impl ser::Error for Fail {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Fail::Msg(msg.to_string())
    }
}

impl de::Error for Fail {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Fail::Msg(msg.to_string())
    }
}

#[derive(Clone, Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    /// A `u8`: a number, unless all elements of a non-empty sequence are bytes.
    Byte(u8),
    Str(String),
    Bytes(Vec<u8>),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

impl Json {
    fn render(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Json::Byte(b) => {
                let _ = write!(out, "{b}");
            }
            Json::Str(s) => render_str(s, out),
            Json::Bytes(b) => {
                out.push_str("\"0x");
                out.push_str(&hex(b));
                out.push('"');
            }
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.render(out);
                }
                out.push(']');
            }
            Json::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    render_str(k, out);
                    out.push(':');
                    v.render(out);
                }
                out.push('}');
            }
        }
    }
}

fn render_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

type Seen = BTreeSet<(&'static str, &'static str)>;

struct Ser<'a> {
    seen: &'a mut Seen,
}

struct SeqSer<'a> {
    seen: &'a mut Seen,
    items: Vec<Json>,
    bytes_if_all_u8: bool,
}

struct ObjSer<'a> {
    seen: &'a mut Seen,
    fields: BTreeMap<String, Json>,
}

fn unit_enum(seen: &mut Seen, name: &'static str, variant: &'static str) -> Json {
    seen.insert((name, variant));
    if DATA_ENUMS.contains(&name) {
        let mut fields = BTreeMap::new();
        fields.insert("type".to_owned(), Json::Str(variant.to_owned()));
        Json::Obj(fields)
    } else {
        Json::Str(variant.to_owned())
    }
}

fn data_enum(name: &'static str, variant: &'static str) -> Result<BTreeMap<String, Json>, Fail> {
    if !DATA_ENUMS.contains(&name) {
        return Err(Fail::Msg(format!(
            "enum {name} has a variant with data ({variant}): add it to DATA_ENUMS here and \
             give it a dictionary codec in protocol.gd"
        )));
    }
    let mut fields = BTreeMap::new();
    fields.insert("type".to_owned(), Json::Str(variant.to_owned()));
    Ok(fields)
}

impl<'a> ser::Serializer for Ser<'a> {
    type Ok = Json;
    type Error = Fail;
    type SerializeSeq = SeqSer<'a>;
    type SerializeTuple = SeqSer<'a>;
    type SerializeTupleStruct = SeqSer<'a>;
    type SerializeTupleVariant = SeqSer<'a>;
    type SerializeMap = ser::Impossible<Json, Fail>;
    type SerializeStruct = ObjSer<'a>;
    type SerializeStructVariant = ObjSer<'a>;

    fn is_human_readable(&self) -> bool {
        // So that `SocketAddr` is its display string, as in protocol.gd.
        true
    }

    fn serialize_bool(self, v: bool) -> Result<Json, Fail> {
        Ok(Json::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Json, Fail> {
        Ok(Json::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Json, Fail> {
        Ok(Json::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Json, Fail> {
        Ok(Json::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Json, Fail> {
        Ok(Json::Int(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Json, Fail> {
        Ok(Json::Byte(v))
    }
    fn serialize_u16(self, v: u16) -> Result<Json, Fail> {
        Ok(Json::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Json, Fail> {
        Ok(Json::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Json, Fail> {
        // GDScript ints are i64: a u64 above i64::MAX reads as its two's complement.
        Ok(Json::Int(v as i64))
    }
    fn serialize_f32(self, _v: f32) -> Result<Json, Fail> {
        Err(Fail::Msg("floats are not in the protocol".into()))
    }
    fn serialize_f64(self, _v: f64) -> Result<Json, Fail> {
        Err(Fail::Msg("floats are not in the protocol".into()))
    }
    fn serialize_char(self, v: char) -> Result<Json, Fail> {
        Ok(Json::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Json, Fail> {
        Ok(Json::Str(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Json, Fail> {
        Ok(Json::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Json, Fail> {
        Ok(Json::Null)
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<Json, Fail> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Json, Fail> {
        Ok(Json::Null)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Json, Fail> {
        Ok(Json::Null)
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Json, Fail> {
        Ok(unit_enum(self.seen, name, variant))
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Json, Fail> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Json, Fail> {
        self.seen.insert((name, variant));
        let mut fields = data_enum(name, variant)?;
        let key = newtype_field(name, variant).ok_or_else(|| {
            Fail::Msg(format!(
                "newtype variant {name}::{variant} has no field name: add it to newtype_field \
                 here and to protocol.gd"
            ))
        })?;
        let inner = value.serialize(Ser {
            seen: &mut *self.seen,
        })?;
        fields.insert(key.to_owned(), inner);
        Ok(Json::Obj(fields))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqSer<'a>, Fail> {
        Ok(SeqSer {
            seen: self.seen,
            items: Vec::with_capacity(len.unwrap_or(0)),
            bytes_if_all_u8: true,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqSer<'a>, Fail> {
        Ok(SeqSer {
            seen: self.seen,
            items: Vec::with_capacity(len),
            bytes_if_all_u8: false,
        })
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<SeqSer<'a>, Fail> {
        self.serialize_tuple(len)
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<SeqSer<'a>, Fail> {
        Err(Fail::Msg(format!(
            "tuple variant {name}::{variant}: not in the GDScript form yet"
        )))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Fail> {
        Err(Fail::Msg("maps are not in the protocol".into()))
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<ObjSer<'a>, Fail> {
        Ok(ObjSer {
            seen: self.seen,
            fields: BTreeMap::new(),
        })
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<ObjSer<'a>, Fail> {
        self.seen.insert((name, variant));
        let fields = data_enum(name, variant)?;
        Ok(ObjSer {
            seen: self.seen,
            fields,
        })
    }
}

impl SeqSer<'_> {
    fn push<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Fail> {
        let item = value.serialize(Ser {
            seen: &mut *self.seen,
        })?;
        self.items.push(item);
        Ok(())
    }

    fn finish(self) -> Json {
        let all_bytes = self.items.iter().all(|j| matches!(j, Json::Byte(_)));
        if self.bytes_if_all_u8 && all_bytes && !self.items.is_empty() {
            Json::Bytes(
                self.items
                    .iter()
                    .map(|j| match j {
                        Json::Byte(b) => *b,
                        _ => 0,
                    })
                    .collect(),
            )
        } else {
            Json::Arr(self.items)
        }
    }
}

impl ser::SerializeSeq for SeqSer<'_> {
    type Ok = Json;
    type Error = Fail;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Fail> {
        self.push(value)
    }
    fn end(self) -> Result<Json, Fail> {
        Ok(self.finish())
    }
}

impl ser::SerializeTuple for SeqSer<'_> {
    type Ok = Json;
    type Error = Fail;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Fail> {
        self.push(value)
    }
    fn end(self) -> Result<Json, Fail> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleStruct for SeqSer<'_> {
    type Ok = Json;
    type Error = Fail;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Fail> {
        self.push(value)
    }
    fn end(self) -> Result<Json, Fail> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleVariant for SeqSer<'_> {
    type Ok = Json;
    type Error = Fail;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Fail> {
        self.push(value)
    }
    fn end(self) -> Result<Json, Fail> {
        Ok(self.finish())
    }
}

impl ObjSer<'_> {
    fn field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result<(), Fail> {
        let item = value.serialize(Ser {
            seen: &mut *self.seen,
        })?;
        if self.fields.insert(key.to_owned(), item).is_some() {
            return Err(Fail::Msg(format!("field {key} twice (or named \"type\")")));
        }
        Ok(())
    }
}

impl ser::SerializeStruct for ObjSer<'_> {
    type Ok = Json;
    type Error = Fail;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Fail> {
        self.field(key, value)
    }
    fn end(self) -> Result<Json, Fail> {
        Ok(Json::Obj(self.fields))
    }
}

impl ser::SerializeStructVariant for ObjSer<'_> {
    type Ok = Json;
    type Error = Fail;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Fail> {
        self.field(key, value)
    }
    fn end(self) -> Result<Json, Fail> {
        Ok(Json::Obj(self.fields))
    }
}

fn to_json<T: Serialize>(value: &T, seen: &mut Seen) -> String {
    let json = value.serialize(Ser { seen }).unwrap_or_else(|e| {
        panic!(
            "cannot express {} in the GDScript form: {e}",
            type_name(value)
        )
    });
    let mut out = String::new();
    json.render(&mut out);
    out
}

fn type_name<T>(_: &T) -> &'static str {
    std::any::type_name::<T>()
}

// ---------------------------------------------------------------------------------------------
// The variant names of an enum, straight from its derived `Deserialize`.

struct Probe;

impl<'de> de::Deserializer<'de> for Probe {
    type Error = Fail;

    fn deserialize_any<V: de::Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Fail> {
        Err(Fail::Msg("not an enum".into()))
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Fail> {
        Err(Fail::Variants(name, variants))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

fn variants_of<T: DeserializeOwned>() -> (&'static str, &'static [&'static str]) {
    match T::deserialize(Probe) {
        Err(Fail::Variants(name, variants)) => (name, variants),
        other => panic!(
            "{} is not an enum: {:?}",
            std::any::type_name::<T>(),
            other.err()
        ),
    }
}

/// Every enum a message can carry (`SocketAddr` aside: its GDScript form is a string).
fn all_enums() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        variants_of::<ClientMessage>(),
        variants_of::<ServerMessage>(),
        variants_of::<LobbyClientMessage>(),
        variants_of::<LobbyServerMessage>(),
        variants_of::<Action>(),
        variants_of::<Target>(),
        variants_of::<Seat>(),
        variants_of::<ActionError>(),
        variants_of::<MatchEvent>(),
        variants_of::<EndReason>(),
        variants_of::<Keyword>(),
        variants_of::<ErrorCode>(),
        variants_of::<FarmAction>(),
        variants_of::<Plot>(),
        variants_of::<FarmError>(),
        variants_of::<MoveError>(),
        variants_of::<Presence>(),
        variants_of::<FriendState>(),
        variants_of::<ChatTarget>(),
        variants_of::<QueueEnd>(),
    ]
}

// ---------------------------------------------------------------------------------------------
// The values.

fn creature(id: u32, card: &str, keywords: Vec<Keyword>) -> CreatureView {
    CreatureView {
        id,
        card: card.into(),
        attack: 3,
        health: -2,
        max_health: 255,
        keywords,
        can_attack: true,
        shield: false,
    }
}

fn player(user_id: u64, name: &str, x: i32, y: i32) -> HubPlayer {
    HubPlayer {
        user_id,
        name: name.into(),
        x,
        y,
    }
}

fn token(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 37 + 11) as u8).collect()
}

const V4: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 5000));

fn v6(segments: [u16; 8], port: u16) -> SocketAddr {
    let [a, b, c, d, e, f, g, h] = segments;
    SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::new(a, b, c, d, e, f, g, h),
        port,
        0,
        0,
    ))
}

fn client_messages() -> Vec<(String, ClientMessage)> {
    use ClientMessage as M;
    let act = |seq, action| M::MatchAction { seq, action };
    vec![
        (
            "MatchAction.PlayCard".into(),
            act(
                1,
                Action::PlayCard {
                    card: "ab".into(),
                    target: None,
                },
            ),
        ),
        (
            "MatchAction.PlayCard.target".into(),
            act(
                9,
                Action::PlayCard {
                    card: "bolt".into(),
                    target: Some(Target::Creature(12)),
                },
            ),
        ),
        (
            "MatchAction.Attack".into(),
            act(
                300,
                Action::Attack {
                    attacker: 5,
                    target: Target::Hero(Seat::Second),
                },
            ),
        ),
        (
            "MatchAction.Attack.max".into(),
            act(
                u32::MAX,
                Action::Attack {
                    attacker: u32::MAX,
                    target: Target::Creature(u32::MAX),
                },
            ),
        ),
        ("MatchAction.EndTurn".into(), act(10, Action::EndTurn)),
        ("MatchAction.Concede".into(), act(0, Action::Concede)),
        ("RequestSnapshot".into(), M::RequestSnapshot),
        (
            "FarmAction.Plant".into(),
            M::FarmAction {
                seq: 128,
                action: FarmAction::Plant {
                    plot: 3,
                    seed: "wheat_seed".into(),
                },
            },
        ),
        (
            "FarmAction.Water".into(),
            M::FarmAction {
                seq: 2,
                action: FarmAction::Water { plot: 0 },
            },
        ),
        (
            "FarmAction.Harvest".into(),
            M::FarmAction {
                seq: 3,
                action: FarmAction::Harvest { plot: 255 },
            },
        ),
        (
            "FarmAction.Clear".into(),
            M::FarmAction {
                seq: 4,
                action: FarmAction::Clear { plot: 7 },
            },
        ),
        ("HubMove".into(), M::HubMove { x: 10_000, y: -5 }),
        (
            "HubMove.extremes".into(),
            M::HubMove {
                x: i32::MIN,
                y: i32::MAX,
            },
        ),
        (
            "HubChat".into(),
            M::HubChat {
                text: "hello \u{1F331} \"quoted\" \\ tab\tnewline\n\u{e9}".into(),
            },
        ),
        (
            "HubChat.utf8_edges".into(),
            M::HubChat {
                text: "\u{7f}\u{80}\u{7ff}\u{800}\u{d7ff}\u{e000}\u{fffd}\u{ffff}\u{10000}\u{10ffff}\u{1}".into(),
            },
        ),
        (
            "HubChat.empty".into(),
            M::HubChat {
                text: String::new(),
            },
        ),
    ]
}

fn documented_snapshot() -> MatchSnapshot {
    MatchSnapshot {
        match_id: 7,
        you: Seat::Second,
        turn: 1,
        active: Seat::First,
        seconds_left: 30,
        players: [
            PlayerView {
                life: 20,
                max_mana: 1,
                mana: 1,
                deck_count: 16,
                hand: vec![],
                hand_count: 4,
                board: vec![],
            },
            PlayerView {
                life: 20,
                max_mana: 0,
                mana: 0,
                deck_count: 16,
                hand: vec![
                    "barn_owl".into(),
                    "kindling".into(),
                    "field_mouse".into(),
                    "spark_seed".into(),
                ],
                hand_count: 4,
                board: vec![],
            },
        ],
        result: None,
    }
}

fn match_events() -> Vec<MatchEvent> {
    use MatchEvent as E;
    vec![
        E::TurnStarted {
            seat: Seat::Second,
            turn: 2,
            max_mana: 1,
            seconds: 30,
        },
        E::CardDrawn {
            seat: Seat::First,
            card: Some("ember_fox".into()),
        },
        E::CardBurned {
            seat: Seat::Second,
            card: "barn_owl".into(),
        },
        E::Fatigue {
            seat: Seat::First,
            damage: 3,
        },
        E::CardPlayed {
            seat: Seat::First,
            card: "bolt".into(),
            mana_left: 0,
            target: Some(Target::Hero(Seat::Second)),
        },
        E::CreatureSummoned {
            seat: Seat::Second,
            creature: creature(
                4,
                "stone_guard",
                vec![
                    Keyword::Haste,
                    Keyword::Guard,
                    Keyword::Lifesteal,
                    Keyword::Shield,
                ],
            ),
        },
        E::Attacked {
            attacker: 4,
            target: Target::Creature(9),
        },
        E::Damaged {
            target: Target::Creature(3),
            amount: 4,
            remaining: -1,
        },
        E::Healed {
            target: Target::Hero(Seat::First),
            amount: 2,
            remaining: i16::MAX,
        },
        E::ShieldBroken { creature: 200 },
        E::CreatureDied { creature: 70_000 },
        E::TurnEnded {
            seat: Seat::Second,
            timed_out: true,
        },
        E::MatchEnded {
            result: MatchResult {
                winner: Some(Seat::First),
                reason: EndReason::HeroDied,
            },
        },
    ]
}

fn variant_name<T: Serialize>(value: &T) -> String {
    let mut seen = Seen::new();
    let json = value.serialize(Ser { seen: &mut seen });
    match json {
        Ok(Json::Obj(fields)) => match fields.get("type") {
            Some(Json::Str(s)) => s.clone(),
            _ => "?".into(),
        },
        Ok(Json::Str(s)) => s,
        _ => "?".into(),
    }
}

fn server_messages() -> Vec<(String, ServerMessage)> {
    use ServerMessage as M;
    let mut out: Vec<(String, ServerMessage)> = vec![
        (
            "Welcome".into(),
            M::Welcome {
                user_id: 42,
                match_id: 7,
                seat: Seat::Second,
            },
        ),
        (
            "Welcome.max".into(),
            M::Welcome {
                user_id: u64::MAX,
                match_id: 1 << 63,
                seat: Seat::First,
            },
        ),
        (
            "Snapshot.documented".into(),
            M::Snapshot(Box::new(documented_snapshot())),
        ),
    ];
    let mut ended = documented_snapshot();
    ended.you = Seat::First;
    ended.players[0].board = vec![
        creature(1, "ember_fox", vec![Keyword::Haste]),
        creature(2, "stone_guard", vec![]),
    ];
    ended.players[0].life = -3;
    ended.result = Some(MatchResult {
        winner: None,
        reason: EndReason::TurnLimit,
    });
    out.push(("Snapshot.ended".into(), M::Snapshot(Box::new(ended))));
    for (reason, winner) in [
        (EndReason::Concede, Some(Seat::Second)),
        (EndReason::Forfeit, Some(Seat::First)),
        (EndReason::Aborted, None),
    ] {
        out.push((
            format!("Events.MatchEnded.{reason:?}"),
            M::Events(vec![MatchEvent::MatchEnded {
                result: MatchResult { winner, reason },
            }]),
        ));
    }
    out.push(("Events.empty".into(), M::Events(vec![])));
    out.push(("Events.all".into(), M::Events(match_events())));
    for e in match_events() {
        out.push((format!("Events.{}", variant_name(&e)), M::Events(vec![e])));
    }
    out.push((
        "Events.documented".into(),
        M::Events(vec![
            MatchEvent::TurnStarted {
                seat: Seat::Second,
                turn: 2,
                max_mana: 1,
                seconds: 30,
            },
            MatchEvent::CardDrawn {
                seat: Seat::Second,
                card: None,
            },
        ]),
    ));
    out.push(("ActionAccepted".into(), M::ActionAccepted { seq: 16_384 }));
    let errors = vec![
        ActionError::MatchOver,
        ActionError::NotYourTurn,
        ActionError::CardNotInHand,
        ActionError::NotEnoughMana { have: 2, need: 3 },
        ActionError::BoardFull,
        ActionError::TargetRequired,
        ActionError::TargetNotAllowed,
        ActionError::InvalidTarget,
        ActionError::UnknownCreature,
        ActionError::CreatureCannotAttack,
        ActionError::MustAttackGuard,
    ];
    for (i, reason) in errors.into_iter().enumerate() {
        out.push((
            format!("ActionRejected.{}", variant_name(&reason)),
            M::ActionRejected {
                seq: i as u32 + 7,
                reason,
            },
        ));
    }
    out.push(("OpponentLeft".into(), M::OpponentLeft { grace_seconds: 30 }));
    out.push(("OpponentReturned".into(), M::OpponentReturned));
    let codes = [
        ErrorCode::Malformed,
        ErrorCode::TooLarge,
        ErrorCode::BadToken,
        ErrorCode::UnknownMatch,
        ErrorCode::NotAllowed,
        ErrorCode::TooManyErrors,
        ErrorCode::ShuttingDown,
        ErrorCode::RateLimited,
        ErrorCode::UnknownUser,
        ErrorCode::BadChat,
        ErrorCode::Unavailable,
        ErrorCode::SessionRevoked,
        ErrorCode::Replaced,
        ErrorCode::UnknownId,
        ErrorCode::NotEnoughItems,
        ErrorCode::InventoryFull,
        ErrorCode::InvalidDeck,
    ];
    for code in codes {
        out.push((
            format!("Error.{code:?}"),
            M::Error {
                code,
                message: if code == ErrorCode::TooLarge {
                    "too big".into()
                } else {
                    format!("{code:?} happened")
                },
            },
        ));
    }
    out.push((
        "FarmState".into(),
        M::FarmState {
            tick: 1_767_225_600,
            plots: vec![
                Plot::Empty,
                Plot::Growing {
                    crop: "wheat".into(),
                    stage: 1,
                    progress: 300,
                    water: 2,
                    neglect: 0,
                },
                Plot::Ripe {
                    crop: "carrot".into(),
                    neglect: 86_400,
                },
                Plot::Withered {
                    crop: "pumpkin".into(),
                },
            ],
            items: vec![("carrot_seed".into(), 5), ("wheat".into(), 1_000_000)],
        },
    ));
    out.push((
        "FarmState.empty".into(),
        M::FarmState {
            tick: 0,
            plots: vec![],
            items: vec![],
        },
    ));
    out.push((
        "FarmActionResult.ok".into(),
        M::FarmActionResult {
            seq: 5,
            error: None,
        },
    ));
    let farm_errors = [
        FarmError::NoSuchPlot,
        FarmError::PlotNotEmpty,
        FarmError::NotASeed,
        FarmError::MissingSeed,
        FarmError::NothingGrowing,
        FarmError::AlreadyWatered,
        FarmError::NotRipe,
        FarmError::NotWithered,
        FarmError::InventoryFull,
        FarmError::Busy,
        FarmError::Unavailable,
    ];
    for (i, error) in farm_errors.into_iter().enumerate() {
        out.push((
            format!("FarmActionResult.{error:?}"),
            M::FarmActionResult {
                seq: i as u32,
                error: Some(error),
            },
        ));
    }
    out.push((
        "HubWelcome".into(),
        M::HubWelcome {
            hub_id: 1,
            you: player(1001, "ann", 10_000, 10_000),
            players: vec![player(1002, "bob", 0, 20_000), player(7, "", -1, 1)],
        },
    ));
    out.push((
        "HubWelcome.alone".into(),
        M::HubWelcome {
            hub_id: u32::MAX,
            you: player(1, "solo", 5, 5),
            players: vec![],
        },
    ));
    out.push((
        "HubJoined".into(),
        M::HubJoined(player(1003, "c\u{e9}dric", 9_999, 10_001)),
    ));
    out.push(("HubLeft".into(), M::HubLeft { user_id: 1003 }));
    out.push((
        "HubMoves".into(),
        M::HubMoves(vec![(1001, 10_300, 10_000), (1002, -64, 64)]),
    ));
    out.push(("HubMoves.empty".into(), M::HubMoves(vec![])));
    for (error, x, y) in [
        (MoveError::OutOfBounds, 0, 20_000),
        (MoveError::TooFast, 10_000, 9_700),
    ] {
        out.push((
            format!("HubMoveRejected.{error:?}"),
            M::HubMoveRejected { error, x, y },
        ));
    }
    out.push((
        "HubChat".into(),
        M::HubChat {
            from: 1002,
            name: "bob".into(),
            text: "hi there\nsecond line".into(),
        },
    ));
    out
}

fn lobby_client_messages() -> Vec<(String, LobbyClientMessage)> {
    use LobbyClientMessage as M;
    vec![
        ("FindMatch".into(), M::FindMatch),
        ("CancelMatch".into(), M::CancelMatch),
        (
            "Chat.User".into(),
            M::Chat {
                to: ChatTarget::User(1002),
                text: "gg".into(),
            },
        ),
        (
            "Chat.Common".into(),
            M::Chat {
                to: ChatTarget::Common,
                text: "hello everyone \u{1F44B}".into(),
            },
        ),
        (
            "FriendRequest".into(),
            M::FriendRequest {
                username: "bob".into(),
            },
        ),
        ("FriendAccept".into(), M::FriendAccept { user_id: 1002 }),
        ("FriendDecline".into(), M::FriendDecline { user_id: 3 }),
        (
            "FriendRemove".into(),
            M::FriendRemove {
                user_id: u64::MAX - 1,
            },
        ),
        ("FriendList".into(), M::FriendList),
        ("RejoinMatch".into(), M::RejoinMatch),
        ("Inventory".into(), M::Inventory),
        ("EnterFarm".into(), M::EnterFarm),
        ("EnterHub".into(), M::EnterHub),
        (
            "Craft".into(),
            M::Craft {
                recipe: "bread".into(),
            },
        ),
        ("Decks".into(), M::Decks),
        (
            "SaveDeck".into(),
            M::SaveDeck {
                slot: 2,
                name: "Grove rush".into(),
                cards: vec!["ember_fox".into(), "ember_fox".into(), "bolt".into()],
            },
        ),
        (
            "SaveDeck.empty".into(),
            M::SaveDeck {
                slot: 255,
                name: String::new(),
                cards: vec![],
            },
        ),
        ("ChooseDeck.slot".into(), M::ChooseDeck { slot: Some(2) }),
        ("ChooseDeck.starter".into(), M::ChooseDeck { slot: None }),
    ]
}

fn lobby_server_messages() -> Vec<(String, LobbyServerMessage)> {
    use LobbyServerMessage as M;
    let mut out: Vec<(String, LobbyServerMessage)> = vec![
        (
            "Welcome".into(),
            M::Welcome {
                user_id: 1001,
                username: "ann".into(),
            },
        ),
        (
            "Friends".into(),
            M::Friends(vec![
                FriendEntry {
                    user_id: 1002,
                    username: "bob".into(),
                    state: FriendState::Accepted,
                    presence: Presence::InMatch,
                },
                FriendEntry {
                    user_id: 1003,
                    username: "cy".into(),
                    state: FriendState::Incoming,
                    presence: Presence::Offline,
                },
                FriendEntry {
                    user_id: 1004,
                    username: "dee".into(),
                    state: FriendState::Outgoing,
                    presence: Presence::Offline,
                },
            ]),
        ),
        ("Friends.none".into(), M::Friends(vec![])),
    ];
    for presence in [
        Presence::Offline,
        Presence::Online,
        Presence::InQueue,
        Presence::InMatch,
    ] {
        out.push((
            format!("FriendPresence.{presence:?}"),
            M::FriendPresence {
                user_id: 1002,
                presence,
            },
        ));
    }
    out.push((
        "FriendRequestReceived".into(),
        M::FriendRequestReceived {
            user_id: 1005,
            username: "eve".into(),
        },
    ));
    out.push((
        "FriendUpdate.accepted".into(),
        M::FriendUpdate {
            user_id: 1005,
            accepted: true,
        },
    ));
    out.push((
        "FriendUpdate.ended".into(),
        M::FriendUpdate {
            user_id: 1005,
            accepted: false,
        },
    ));
    out.push(("Queued".into(), M::Queued));
    for reason in [
        QueueEnd::Cancelled,
        QueueEnd::TimedOut,
        QueueEnd::NoCapacity,
    ] {
        out.push((format!("QueueLeft.{reason:?}"), M::QueueLeft { reason }));
    }
    out.push((
        "MatchFound".into(),
        M::MatchFound {
            match_id: 7,
            server_addr: V4,
            connect_token: token(40),
            ws_url: Some("ws://127.0.0.1:7100/ws".into()),
        },
    ));
    out.push((
        "MatchFound.v6.full_token".into(),
        M::MatchFound {
            match_id: 1 << 40,
            server_addr: v6([0, 0, 0, 0, 0, 0, 0, 1], 65_535),
            connect_token: token(1172),
            ws_url: None,
        },
    ));
    out.push((
        "MatchEnded".into(),
        M::MatchEnded {
            match_id: 7,
            aborted: false,
        },
    ));
    out.push((
        "MatchEnded.aborted".into(),
        M::MatchEnded {
            match_id: 8,
            aborted: true,
        },
    ));
    out.push((
        "Chat.User".into(),
        M::Chat {
            from: 1002,
            from_name: "bob".into(),
            to: ChatTarget::User(1001),
            text: "gg".into(),
        },
    ));
    out.push((
        "Chat.Common".into(),
        M::Chat {
            from: 1003,
            from_name: "cy".into(),
            to: ChatTarget::Common,
            text: "anyone for a match?".into(),
        },
    ));
    out.push((
        "Notification".into(),
        M::Notification {
            text: "Maintenance at 04:00 UTC".into(),
        },
    ));
    out.push((
        "Error".into(),
        M::Error {
            code: ErrorCode::NotAllowed,
            message: "already in a match".into(),
        },
    ));
    out.push((
        "Inventory".into(),
        M::Inventory {
            items: vec![("bread".into(), 2), ("wheat_seed".into(), 10)],
            cards: vec![("bolt".into(), 2), ("ember_fox".into(), 3)],
        },
    ));
    out.push((
        "Inventory.empty".into(),
        M::Inventory {
            items: vec![],
            cards: vec![],
        },
    ));
    out.push((
        "Crafted".into(),
        M::Crafted {
            recipe: "bread".into(),
            output: "bread".into(),
            quantity: 1,
        },
    ));
    out.push((
        "FarmReady".into(),
        M::FarmReady {
            server_addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 1, 255, 0), 5001)),
            connect_token: token(3),
            ws_url: Some("wss://game.example.org/ws".into()),
        },
    ));
    out.push((
        "FarmReady.v6".into(),
        M::FarmReady {
            server_addr: v6([0x2001, 0xdb8, 0, 0, 1, 0, 0, 0xabcd], 443),
            connect_token: token(1),
            ws_url: None,
        },
    ));
    out.push((
        "HubReady".into(),
        M::HubReady {
            server_addr: V4,
            connect_token: token(128),
            ws_url: Some(String::new()),
        },
    ));
    out.push((
        "HubReady.v6".into(),
        M::HubReady {
            server_addr: v6([0xfe80, 0, 0, 0, 0, 0xffff, 0xc0a8, 0x0101], 1),
            connect_token: token(2),
            ws_url: None,
        },
    ));
    out.push((
        "HubReady.v6_mapped".into(),
        M::HubReady {
            server_addr: v6([0, 0, 0, 0, 0, 0xffff, 0xc0a8, 0x0101], 7100),
            connect_token: token(2),
            ws_url: None,
        },
    ));
    out.push((
        "Decks".into(),
        M::Decks {
            decks: vec![
                DeckEntry {
                    slot: 0,
                    name: "Grove".into(),
                    cards: vec!["barn_owl".into(), "field_mouse".into()],
                },
                DeckEntry {
                    slot: 7,
                    name: "Ember".into(),
                    cards: vec![],
                },
            ],
            active: Some(7),
        },
    ));
    out.push((
        "Decks.none".into(),
        M::Decks {
            decks: vec![],
            active: None,
        },
    ));
    out
}

// ---------------------------------------------------------------------------------------------
// The file.

struct Line {
    kind: &'static str,
    name: String,
    bytes: Vec<u8>,
    /// The GDScript form as canonical JSON, or `None` when the bytes must not decode.
    expected: Option<String>,
}

/// Decodes `bytes` as the message set `kind` and gives the JSON form (None when Rust refuses it).
fn rust_decode(kind: &str, bytes: &[u8], seen: &mut Seen) -> Option<String> {
    match kind {
        "client" => ClientMessage::decode(bytes).ok().map(|m| to_json(&m, seen)),
        "server" => ServerMessage::decode(bytes).ok().map(|m| to_json(&m, seen)),
        "lobby_client" => LobbyClientMessage::decode(bytes)
            .ok()
            .map(|m| to_json(&m, seen)),
        "lobby_server" => LobbyServerMessage::decode(bytes)
            .ok()
            .map(|m| to_json(&m, seen)),
        _ => unreachable!("unknown kind {kind}"),
    }
}

fn rust_encode_again(kind: &str, bytes: &[u8]) -> Option<Vec<u8>> {
    match kind {
        "client" => ClientMessage::decode(bytes).ok().map(|m| m.encode()),
        "server" => ServerMessage::decode(bytes).ok().map(|m| m.encode()),
        "lobby_client" => LobbyClientMessage::decode(bytes).ok().map(|m| m.encode()),
        "lobby_server" => LobbyServerMessage::decode(bytes).ok().map(|m| m.encode()),
        _ => None,
    }
}

/// Inputs Rust must refuse; the GDScript decoder must refuse them too.
fn rejects() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let table: &[(&str, &str, &str)] = &[
        ("client", "empty", ""),
        ("client", "garbage_ff", "ffffffffffff"),
        ("client", "unknown_variant", "05"),
        ("client", "unknown_variant_varint", "8001"),
        ("client", "truncated_seq", "0001"),
        ("client", "trailing_byte", "0100"),
        // A string length far past the end (as in protocol.rs).
        ("client", "string_past_end", "000100ffff0361"),
        ("client", "bad_utf8", "040361c328"),
        ("client", "utf8_surrogate", "0403eda080"),
        ("client", "utf8_overlong", "0402c0af"),
        ("client", "utf8_overlong3", "0403e08080"),
        ("client", "utf8_overlong4", "0404f0808080"),
        ("client", "utf8_above_10ffff", "0404f4908080"),
        ("client", "utf8_f5", "0404f5808080"),
        ("client", "utf8_lone_continuation", "040180"),
        ("client", "utf8_cut_short", "0402e282"),
        ("client", "utf8_bad_continuation", "0402c3c3"),
        ("client", "bad_option", "0001000002"),
        // u32 varints: at most 5 bytes, the 5th at most 0x0f.
        ("client", "u32_too_long", "00808080801002"),
        ("client", "u32_six_bytes", "0080808080800002"),
        ("client", "i32_too_long", "03ffffffff1f00"),
        ("server", "empty", ""),
        ("server", "unknown_variant", "10"),
        ("server", "bad_seat", "00010202"),
        ("server", "events_len_huge", "02ffffffff0f"),
        ("server", "events_len_past_end", "02020b01"),
        // u64 varints: at most 10 bytes, the 10th at most 0x01.
        ("server", "u64_eleven_bytes", "008080808080808080808001"),
        ("server", "u64_last_byte_too_big", "0cffffffffffffffffff02"),
        // u16/i16 varints: at most 3 bytes, the 3rd at most 0x03.
        ("server", "i16_too_long", "020107000004ffff04"),
        ("server", "bad_bool", "02010b0002"),
        ("server", "unknown_event", "02010d"),
        ("server", "unknown_error_code", "071100"),
        ("server", "snapshot_truncated", "01070101001e28"),
        ("lobby_client", "empty", ""),
        ("lobby_client", "unknown_variant", "10"),
        ("lobby_client", "bad_chat_target", "020200"),
        ("lobby_client", "choose_deck_bad_option", "0f05"),
        ("lobby_server", "empty", ""),
        ("lobby_server", "unknown_variant", "11"),
        ("lobby_server", "bad_socket_addr_kind", "0e0201020304050000"),
        ("lobby_server", "socket_addr_truncated", "0e007f0000"),
        ("lobby_server", "token_past_end", "0e007f00000105100102"),
        ("lobby_server", "port_too_big", "0e007f000001ffff040000"),
        ("lobby_server", "bad_presence", "020104"),
        ("lobby_server", "bad_queue_end", "0603"),
        ("lobby_server", "inventory_trailing", "0c000000"),
    ];
    table
        .iter()
        .map(|(kind, name, h)| (*kind, *name, unhex(h)))
        .collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A small deterministic PRNG (xorshift64*), so the mutations are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

const MUTANTS_PER_FIXTURE: usize = 3;

fn build() -> (Vec<Line>, Seen) {
    let mut seen = Seen::new();
    let mut lines = Vec::new();
    for (name, m) in client_messages() {
        let json = to_json(&m, &mut seen);
        lines.push(("client", name, m.encode(), json));
    }
    for (name, m) in server_messages() {
        let json = to_json(&m, &mut seen);
        lines.push(("server", name, m.encode(), json));
    }
    for (name, m) in lobby_client_messages() {
        let json = to_json(&m, &mut seen);
        lines.push(("lobby_client", name, m.encode(), json));
    }
    for (name, m) in lobby_server_messages() {
        let json = to_json(&m, &mut seen);
        lines.push(("lobby_server", name, m.encode(), json));
    }
    let mut out: Vec<Line> = Vec::new();
    let mut names = BTreeSet::new();
    for (kind, name, bytes, json) in &lines {
        assert!(
            names.insert((*kind, name.clone())),
            "duplicate fixture {kind} {name}"
        );
        // The value decodes back to itself (and so to the same form).
        let mut ignore = Seen::new();
        assert_eq!(
            rust_decode(kind, bytes, &mut ignore).as_ref(),
            Some(json),
            "{kind} {name} does not round-trip in Rust"
        );
        out.push(Line {
            kind,
            name: name.clone(),
            bytes: bytes.clone(),
            expected: Some(json.clone()),
        });
    }
    for (kind, name, bytes) in rejects() {
        let mut ignore = Seen::new();
        let got = rust_decode(kind, &bytes, &mut ignore);
        assert!(
            got.is_none(),
            "reject {kind} {name} decodes in Rust: {got:?}"
        );
        out.push(Line {
            kind,
            name: format!("reject.{name}"),
            bytes,
            expected: None,
        });
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for (kind, name, bytes, _) in &lines {
        let mut made = 0;
        let mut tries = 0;
        while made < MUTANTS_PER_FIXTURE && tries < 50 {
            tries += 1;
            let mut m = bytes.clone();
            let pos = (rng.next() % m.len() as u64) as usize;
            let value = (rng.next() % 256) as u8;
            if m[pos] == value {
                continue;
            }
            m[pos] = value;
            let mut ignore = Seen::new();
            let expected = rust_decode(kind, &m, &mut ignore);
            if let Some(json) = &expected {
                // Godot strings cannot hold U+0000 (protocol.gd refuses such strings), and a
                // non-canonical encoding that Rust accepts would not re-encode to the same bytes.
                if json.contains("\\u0000") || rust_encode_again(kind, &m).as_ref() != Some(&m) {
                    continue;
                }
            }
            out.push(Line {
                kind,
                name: format!("mutant.{name}.{made}"),
                bytes: m,
                expected,
            });
            made += 1;
        }
    }
    (out, seen)
}

fn render_file(lines: &[Line]) -> String {
    let mut s = String::new();
    s.push_str(
        "# Generated by shared-sim/tests/gdscript_fixtures.rs; do not edit. Rewrite with\n\
         # CROFT_BLESS=1 cargo test -p shared-sim --test gdscript_fixtures\n\
         # kind<TAB>name<TAB>hex<TAB>expected (canonical JSON of the GDScript form, or `error`)\n",
    );
    let _ = writeln!(
        s,
        "# protocol_version\t{}",
        shared_sim::protocol::PROTOCOL_VERSION
    );
    for l in lines {
        let _ = writeln!(
            s,
            "{}\t{}\t{}\t{}",
            l.kind,
            l.name,
            hex(&l.bytes),
            l.expected.as_deref().unwrap_or("error")
        );
    }
    s
}

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/godot/tests/fixtures.tsv")
}

#[test]
fn every_variant_has_a_fixture() {
    let (_, seen) = build();
    let enums = all_enums();
    let known: BTreeSet<&str> = enums.iter().map(|(n, _)| *n).collect();
    for (enum_name, variant) in &seen {
        assert!(
            known.contains(enum_name),
            "enum {enum_name} (variant {variant}) is carried by a message but not listed in \
             all_enums(): add it there and give it a codec in protocol.gd"
        );
    }
    let mut missing = Vec::new();
    for (enum_name, variants) in &enums {
        for v in *variants {
            if !seen.contains(&(*enum_name, *v)) {
                missing.push(format!("{enum_name}::{v}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "variants without a fixture (add one to this file and a codec to protocol.gd): {}",
        missing.join(", ")
    );
}

#[test]
fn documented_bytes_match() {
    // The byte examples in docs/PROTOCOL.md section 3.1 that protocol.rs does not assert.
    let play = ClientMessage::MatchAction {
        seq: 9,
        action: Action::PlayCard {
            card: "bolt".into(),
            target: Some(Target::Creature(12)),
        },
    };
    assert_eq!(hex(&play.encode()), "00090004626f6c7401010c");
    let end = ClientMessage::MatchAction {
        seq: 10,
        action: Action::EndTurn,
    };
    assert_eq!(hex(&end.encode()), "000a02");
    let welcome = ServerMessage::Welcome {
        user_id: 42,
        match_id: 7,
        seat: Seat::Second,
    };
    assert_eq!(hex(&welcome.encode()), "002a0701");
    let rejected = ServerMessage::ActionRejected {
        seq: 7,
        reason: ActionError::NotEnoughMana { have: 2, need: 3 },
    };
    assert_eq!(hex(&rejected.encode()), "0407030203");
    let error = ServerMessage::Error {
        code: ErrorCode::TooLarge,
        message: "too big".into(),
    };
    assert_eq!(hex(&error.encode()), "070107746f6f20626967");
    let events = ServerMessage::Events(vec![
        MatchEvent::TurnStarted {
            seat: Seat::Second,
            turn: 2,
            max_mana: 1,
            seconds: 30,
        },
        MatchEvent::CardDrawn {
            seat: Seat::Second,
            card: None,
        },
    ]);
    assert_eq!(hex(&events.encode()), "0202000102011e010100");
    let summon = ServerMessage::Events(vec![
        MatchEvent::CardPlayed {
            seat: Seat::First,
            card: "ember_fox".into(),
            mana_left: 0,
            target: None,
        },
        MatchEvent::CreatureSummoned {
            seat: Seat::First,
            creature: CreatureView {
                id: 1,
                card: "ember_fox".into(),
                attack: 1,
                health: 2,
                max_health: 2,
                keywords: vec![Keyword::Haste],
                can_attack: true,
                shield: false,
            },
        },
    ]);
    assert_eq!(
        hex(&summon.encode()),
        // CardPlayed First "ember_fox" mana_left 0 target None; CreatureSummoned First, id 1,
        // "ember_fox", attack 1, health 4 = zigzag(2), max_health 2, [Haste], can_attack, no shield.
        "0202040009656d6265725f666f780000\
         05000109656d6265725f666f7801040201000100"
    );
    let damaged = ServerMessage::Events(vec![MatchEvent::Damaged {
        target: Target::Creature(3),
        amount: 4,
        remaining: -1,
    }]);
    assert_eq!(hex(&damaged.encode()), "02010701030401");
    let ended = ServerMessage::Events(vec![MatchEvent::MatchEnded {
        result: MatchResult {
            winner: Some(Seat::First),
            reason: EndReason::HeroDied,
        },
    }]);
    assert_eq!(hex(&ended.encode()), "02010c010000");
    let snapshot = ServerMessage::Snapshot(Box::new(documented_snapshot()));
    // Snapshot, match_id 7, you Second, turn 1, active First, seconds_left 30; players[0]: life
    // 20, mana 1/1, deck 16, hand [], hand_count 4, board []; players[1]: life 20, mana 0/0,
    // deck 16, four card ids, hand_count 4, board []; result None.
    let mut want = String::from("01070101001e") + "28010110000400" + "2800001004";
    for id in ["barn_owl", "kindling", "field_mouse", "spark_seed"] {
        let _ = write!(want, "{:02x}{}", id.len(), hex(id.as_bytes()));
    }
    want.push_str("0400");
    want.push_str("00");
    assert_eq!(hex(&snapshot.encode()), want);
    // SocketAddr is serde's enum: V4 = 0, four raw octets, port varint.
    let found = LobbyServerMessage::MatchFound {
        match_id: 7,
        server_addr: V4,
        connect_token: vec![0xaa],
        ws_url: None,
    };
    assert_eq!(hex(&found.encode()), "0707007f000001882701aa00");
}

#[test]
fn fixtures_file_is_current() {
    let (lines, _) = build();
    let want = render_file(&lines);
    let path = fixture_path();
    if std::env::var_os("CROFT_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &want)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have == want {
        return;
    }
    let have_lines: Vec<&str> = have.lines().collect();
    let want_lines: Vec<&str> = want.lines().collect();
    let mut diffs = Vec::new();
    for i in 0..have_lines.len().max(want_lines.len()) {
        let h = have_lines.get(i).copied().unwrap_or("<missing>");
        let w = want_lines.get(i).copied().unwrap_or("<missing>");
        if h != w {
            diffs.push(format!("line {}:\n  file: {h}\n  want: {w}", i + 1));
        }
        if diffs.len() >= 5 {
            break;
        }
    }
    panic!(
        "{} is out of date ({} lines in the file, {} expected). The wire encoding of a message \
         changed: bump PROTOCOL_VERSION, update clients/godot/addons/croft/protocol.gd, then \
         rewrite the fixtures with `CROFT_BLESS=1 cargo test -p shared-sim --test \
         gdscript_fixtures` and run scripts/godot-codec-test. First differences:\n{}",
        path.display(),
        have_lines.len(),
        want_lines.len(),
        diffs.join("\n")
    );
}
