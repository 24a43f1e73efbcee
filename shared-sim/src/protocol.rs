//! The wire protocol every server, bot and client SDK shares: message enums, channels, the
//! protocol id, the connect-token user data, and a codec that never panics on what it is given.

use std::time::Duration;

use renet::{ChannelConfig, ConnectionConfig, SendType};
use serde::{Deserialize, Serialize};

use crate::rules::{Action, ActionError, MatchEvent, Seat};
use crate::view::MatchSnapshot;

/// Bumped whenever any message layout changes.
///
/// Encoding is postcard (see `docs/PROTOCOL.md` for the byte layout). Any change to a message
/// type here, or to the types it carries from [`crate::rules`], must bump this.
pub const PROTOCOL_VERSION: u16 = 4;

/// The netcode protocol id: ASCII "CROFT" then the version, so that clients of another protocol
/// version are refused at the handshake instead of sending messages the server misreads.
pub const PROTOCOL_ID: u64 = 0x4352_4F46_5400_0000 | PROTOCOL_VERSION as u64;

/// The path of the servers' WebSocket endpoint (web clients; `docs/PROTOCOL.md` section 11).
pub const WS_PATH: &str = "/ws";

/// The WebSocket subprotocol of this protocol version: `croft.v{PROTOCOL_VERSION}`. A server
/// refuses an upgrade that does not offer it, so versions never mix.
pub fn ws_subprotocol() -> String {
    format!("croft.v{PROTOCOL_VERSION}")
}

/// The close codes WebSocket sessions end with (4000-4999 are the application's).
pub mod ws_close {
    /// The server ended the session; an `Error` message before the close says why.
    pub const CLOSED_BY_SERVER: u16 = 4000;
    /// The first frame was not a valid connect token, or the token was used before.
    pub const BAD_TOKEN: u16 = 4001;
    pub const EXPIRED_TOKEN: u16 = 4002;
    /// A newer WebSocket connection of the same user replaced this one.
    pub const ALREADY_CONNECTED: u16 = 4003;
    /// The token names other servers.
    pub const WRONG_SERVER: u16 = 4004;
    /// No token in time, nothing heard for too long, or messages not read fast enough.
    pub const TIMEOUT: u16 = 4005;
    /// The server is shutting down (the standard "going away").
    pub const GOING_AWAY: u16 = 1001;
}

/// Idle keep-alive interval on connection-server connections, each way: players sit idle
/// there for hours, so they send far less than netcode's default of 4 per second. Five of
/// them fit in the 15 s connection timeout, and the client core waits 10 s
/// (`croft_client::lobby::LOBBY_SILENCE`) before it counts a silent server as gone, so two
/// lost ones in a row drop nobody.
pub const LOBBY_KEEPALIVE: Duration = Duration::from_secs(3);

/// Client messages larger than this are rejected before decoding.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 1024;

/// The channels, in priority order. Channel ids go on the wire as their `u8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// Everything a match needs: reliable and ordered.
    Reliable = 0,
    /// Reserved for high-rate state that may be dropped (common-area movement).
    Unreliable = 1,
}

impl From<Channel> for u8 {
    fn from(c: Channel) -> u8 {
        c as u8
    }
}

impl Channel {
    pub fn channels_config() -> Vec<ChannelConfig> {
        vec![
            ChannelConfig {
                channel_id: Channel::Reliable.into(),
                max_memory_usage_bytes: 1024 * 1024,
                // Longer than the 250 ms within which both ends acknowledge messages, so that
                // only real losses are resent.
                send_type: SendType::ReliableOrdered {
                    resend_time: Duration::from_millis(600),
                },
            },
            ChannelConfig {
                channel_id: Channel::Unreliable.into(),
                max_memory_usage_bytes: 256 * 1024,
                send_type: SendType::Unreliable,
            },
        ]
    }
}

/// The renet configuration both ends must agree on.
pub fn connection_config() -> ConnectionConfig {
    ConnectionConfig {
        available_bytes_per_tick: 60_000,
        server_channels_config: Channel::channels_config(),
        client_channels_config: Channel::channels_config(),
    }
}

/// Messages a client sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// An action in the client's match. `seq` is chosen by the client and echoed in the answer.
    MatchAction { seq: u32, action: Action },
    /// Ask for a full [`ServerMessage::Snapshot`] (after a reconnect or if the client is unsure).
    RequestSnapshot,
    /// A farming action on the client's farm (farm connections only); answered by
    /// [`ServerMessage::FarmActionResult`] with the same `seq` once it is saved.
    FarmAction {
        seq: u32,
        action: crate::farm::FarmAction,
    },
    /// Walk to (`x`, `y`) in the common area (hub connections only).
    HubMove { x: i32, y: i32 },
    /// Say something to the players nearby in the common area.
    HubChat { text: String },
}

/// Why the server refuses a client or a message outside the match rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The bytes did not decode as a `ClientMessage`.
    Malformed,
    /// Larger than [`MAX_CLIENT_MESSAGE_BYTES`].
    TooLarge,
    /// The connect token's user data is not valid for this server.
    BadToken,
    /// The token names a match this server does not host or a player not in it.
    UnknownMatch,
    /// The message is not allowed in the client's current state.
    NotAllowed,
    /// Too many bad messages; the server disconnects the client.
    TooManyErrors,
    /// The server is shutting down.
    ShuttingDown,
    /// More messages per second than the server accepts from one client.
    RateLimited,
    /// The named user does not exist or is not reachable.
    UnknownUser,
    /// A chat message over [`MAX_CHAT_CHARS`] or empty.
    BadChat,
    /// A backing service (database, matchmaking) did not answer; try again.
    Unavailable,
    /// The session behind the connect token was revoked (logout, reuse detection, ban).
    SessionRevoked,
    /// The same account connected again elsewhere.
    Replaced,
    /// A recipe, item or card id the game data does not have.
    UnknownId,
    /// The inventory lacks what the action needs.
    NotEnoughItems,
    /// The inventory has no room for what the action makes.
    InventoryFull,
    /// The deck breaks the deck rules or uses cards the player does not own.
    InvalidDeck,
}

/// Messages the server sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// First message after the connection is accepted: who you are and where you sit.
    Welcome {
        user_id: u64,
        match_id: u64,
        seat: Seat,
    },
    /// The whole match as this player may see it (boxed: it is far larger than the other
    /// messages; the wire encoding is the same).
    Snapshot(Box<MatchSnapshot>),
    /// What happened since the last message, in order (redacted for this player).
    Events(Vec<MatchEvent>),
    ActionAccepted {
        seq: u32,
    },
    ActionRejected {
        seq: u32,
        reason: ActionError,
    },
    /// The opponent dropped; they forfeit unless they return within `grace_seconds`.
    OpponentLeft {
        grace_seconds: u32,
    },
    OpponentReturned,
    Error {
        code: ErrorCode,
        message: String,
    },
    /// The farm as it is now: its plots at farm tick `tick`, and the player's items.
    FarmState {
        tick: u64,
        plots: Vec<crate::farm::Plot>,
        items: Vec<(String, u32)>,
    },
    /// The answer to [`ClientMessage::FarmAction`] `seq`: `None` when it was applied (and, when
    /// it changed the inventory, saved).
    FarmActionResult {
        seq: u32,
        error: Option<crate::farm::FarmError>,
    },
    /// In the common area: who you are there and everyone present.
    HubWelcome {
        hub_id: u32,
        you: crate::hub::HubPlayer,
        players: Vec<crate::hub::HubPlayer>,
    },
    HubJoined(crate::hub::HubPlayer),
    HubLeft {
        user_id: u64,
    },
    /// Positions that changed since the last tick: (user, x, y).
    HubMoves(Vec<(u64, i32, i32)>),
    /// Your move was refused; you are at (`x`, `y`).
    HubMoveRejected {
        error: crate::hub::MoveError,
        x: i32,
        y: i32,
    },
    HubChat {
        from: u64,
        name: String,
        text: String,
    },
}

/// Where a player is, as their friends see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Presence {
    Offline,
    Online,
    InQueue,
    InMatch,
}

/// How a friend entry stands from the listing player's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FriendState {
    Accepted,
    /// They asked; the listing player may accept or decline.
    Incoming,
    /// The listing player asked; waiting for them.
    Outgoing,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FriendEntry {
    pub user_id: u64,
    pub username: String,
    pub state: FriendState,
    /// `Offline` unless `state` is `Accepted` and they are connected.
    pub presence: Presence,
}

/// A chat destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatTarget {
    /// A direct message to one user.
    User(u64),
    /// The common-area channel every connected player hears.
    Common,
}

/// Most characters in one chat message.
pub const MAX_CHAT_CHARS: usize = 256;

/// Messages a client sends to the connection server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LobbyClientMessage {
    /// Join the matchmaking queue. Idempotent: asking again while queued keeps the ticket.
    FindMatch,
    CancelMatch,
    Chat {
        to: ChatTarget,
        text: String,
    },
    FriendRequest {
        username: String,
    },
    FriendAccept {
        user_id: u64,
    },
    FriendDecline {
        user_id: u64,
    },
    FriendRemove {
        user_id: u64,
    },
    FriendList,
    /// A fresh connect token for the match the player is in (to reconnect after a drop).
    RejoinMatch,
    /// The player's items and cards ([`LobbyServerMessage::Inventory`]).
    Inventory,
    /// Open the player's farm: answered by [`LobbyServerMessage::FarmReady`].
    EnterFarm,
    /// Go to the common area: answered by [`LobbyServerMessage::HubReady`].
    EnterHub,
    /// Craft once by the recipe `recipe` (an id from `recipes.ron`).
    Craft {
        recipe: String,
    },
    /// The saved decks ([`LobbyServerMessage::Decks`]).
    Decks,
    /// Save (or replace) the deck in `slot` (below the rules' `deck_slots`).
    SaveDeck {
        slot: u8,
        name: String,
        cards: Vec<String>,
    },
    /// Queue with the deck in `slot` from now on (`None`: the starter deck).
    ChooseDeck {
        slot: Option<u8>,
    },
}

/// A saved deck.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeckEntry {
    pub slot: u8,
    pub name: String,
    pub cards: Vec<String>,
}

/// Most characters in a deck name.
pub const MAX_DECK_NAME_CHARS: usize = 32;

/// Why a queue entry ended without a match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueEnd {
    Cancelled,
    TimedOut,
    /// No instance server could take the match; queue again.
    NoCapacity,
}

/// Messages the connection server sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LobbyServerMessage {
    Welcome {
        user_id: u64,
        username: String,
    },
    Friends(Vec<FriendEntry>),
    FriendPresence {
        user_id: u64,
        presence: Presence,
    },
    FriendRequestReceived {
        user_id: u64,
        username: String,
    },
    /// A request this player sent was accepted (or a friendship ended: `accepted: false`).
    FriendUpdate {
        user_id: u64,
        accepted: bool,
    },
    Queued,
    QueueLeft {
        reason: QueueEnd,
    },
    /// Connect to `server_addr` with `connect_token` (netcode token bytes) to play.
    MatchFound {
        match_id: u64,
        server_addr: std::net::SocketAddr,
        connect_token: Vec<u8>,
        /// The same server's WebSocket endpoint (`ws://` or `wss://`), when it has one: web
        /// clients connect there with the same token.
        ws_url: Option<String>,
    },
    /// The match is over (normally or because its server failed): the player is free again.
    MatchEnded {
        match_id: u64,
        aborted: bool,
    },
    Chat {
        from: u64,
        from_name: String,
        to: ChatTarget,
        text: String,
    },
    /// An announcement to everyone.
    Notification {
        text: String,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    /// Items (id, amount) and cards (id, copies) the player owns.
    Inventory {
        items: Vec<(String, u32)>,
        cards: Vec<(String, u32)>,
    },
    /// A craft went through: `quantity` of `output` (a card or an item id) were added.
    Crafted {
        recipe: String,
        output: String,
        quantity: u32,
    },
    /// The player's farm is open: connect to `server_addr` with `connect_token`.
    FarmReady {
        server_addr: std::net::SocketAddr,
        connect_token: Vec<u8>,
        /// The server's WebSocket endpoint, when it has one (see `MatchFound`).
        ws_url: Option<String>,
    },
    /// A place in the common area is kept: connect to `server_addr` with `connect_token`.
    HubReady {
        server_addr: std::net::SocketAddr,
        connect_token: Vec<u8>,
        /// The server's WebSocket endpoint, when it has one (see `MatchFound`).
        ws_url: Option<String>,
    },
    /// The saved decks and the one the player queues with (`None`: the starter deck).
    Decks {
        decks: Vec<DeckEntry>,
        active: Option<u8>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

impl DecodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge(_) => ErrorCode::TooLarge,
            _ => ErrorCode::Malformed,
        }
    }
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], limit: usize) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain types into a Vec cannot fail: no maps with non-string keys, no
    // sequences of unknown length.
    postcard::to_allocvec(value).unwrap_or_default()
}

impl ClientMessage {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode(bytes, MAX_CLIENT_MESSAGE_BYTES)
    }

    /// Whether this message is legal on a session opened with a `kind` token: match messages in
    /// a match, farm messages on the player's farm, hub messages in the common area.
    pub fn verify(&self, kind: TokenKind) -> bool {
        let needs = match self {
            ClientMessage::MatchAction { .. } | ClientMessage::RequestSnapshot => {
                TokenKind::Instance
            }
            ClientMessage::FarmAction { .. } => TokenKind::Farm,
            ClientMessage::HubMove { .. } | ClientMessage::HubChat { .. } => TokenKind::Hub,
        };
        needs == kind
    }
}

impl LobbyClientMessage {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode(bytes, MAX_CLIENT_MESSAGE_BYTES)
    }
}

impl LobbyServerMessage {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode(bytes, usize::MAX)
    }
}

impl ServerMessage {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode(bytes, usize::MAX)
    }
}

/// Netcode carries 256 bytes of user data inside the encrypted connect token; servers trust it
/// because only the token service (holding the private key) can produce it.
pub const USER_DATA_BYTES: usize = 256;
const USER_DATA_FORMAT: u8 = 1;

/// Which kind of server a connect token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// A session on a connection server.
    Connection = 1,
    /// A seat in one match on an instance server.
    Instance = 2,
    /// The user's own farm on an instance server (`match_id` 0).
    Farm = 3,
    /// A place in one common-area shard (`match_id` is the hub shard id).
    Hub = 4,
}

/// What the token service binds into a connect token: the layout is byte 0 format (1), byte 1
/// kind, bytes 2..10 user id (u64 LE), bytes 10..18 match id (u64 LE, 0 for `Connection`),
/// bytes 18..34 session id, the rest zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenUserData {
    pub kind: TokenKind,
    pub user_id: u64,
    pub match_id: u64,
    pub session_id: [u8; 16],
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserDataError {
    #[error("unknown user-data format {0}")]
    Format(u8),
    #[error("unknown token kind {0}")]
    Kind(u8),
    #[error("user id is zero")]
    NoUser,
}

impl TokenUserData {
    pub fn to_bytes(&self) -> [u8; USER_DATA_BYTES] {
        let mut out = [0u8; USER_DATA_BYTES];
        out[0] = USER_DATA_FORMAT;
        out[1] = self.kind as u8;
        out[2..10].copy_from_slice(&self.user_id.to_le_bytes());
        out[10..18].copy_from_slice(&self.match_id.to_le_bytes());
        out[18..34].copy_from_slice(&self.session_id);
        out
    }

    pub fn from_bytes(bytes: &[u8; USER_DATA_BYTES]) -> Result<Self, UserDataError> {
        if bytes[0] != USER_DATA_FORMAT {
            return Err(UserDataError::Format(bytes[0]));
        }
        let kind = match bytes[1] {
            1 => TokenKind::Connection,
            2 => TokenKind::Instance,
            3 => TokenKind::Farm,
            4 => TokenKind::Hub,
            k => return Err(UserDataError::Kind(k)),
        };
        let mut u = [0u8; 8];
        u.copy_from_slice(&bytes[2..10]);
        let user_id = u64::from_le_bytes(u);
        if user_id == 0 {
            return Err(UserDataError::NoUser);
        }
        u.copy_from_slice(&bytes[10..18]);
        let match_id = u64::from_le_bytes(u);
        let mut session_id = [0u8; 16];
        session_id.copy_from_slice(&bytes[18..34]);
        Ok(Self {
            kind,
            user_id,
            match_id,
            session_id,
        })
    }
}

#[cfg(test)]
mod tests;
