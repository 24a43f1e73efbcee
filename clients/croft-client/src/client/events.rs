//! What the client reports: [`ClientEvent`]s as they arrive, and how a match ended for the
//! player.

use shared_sim::farm::{FarmError, Plot};
use shared_sim::protocol::{ChatTarget, DeckEntry, ErrorCode, FriendEntry, Presence, QueueEnd};
use shared_sim::rules::{ActionError, EndReason, MatchEvent, MatchResult, Seat};
use shared_sim::view::MatchSnapshot;

use crate::HubEvent;

/// How a match ended for this player.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOutcome {
    Won,
    Lost,
    Draw,
    /// The lobby closed the match before its end reached us (its server was lost, or our
    /// connection was).
    Unknown,
}

impl MatchOutcome {
    pub fn of(result: &MatchResult, seat: Option<Seat>) -> Self {
        match (result.winner, seat) {
            (None, _) => MatchOutcome::Draw,
            (Some(w), Some(s)) if w == s => MatchOutcome::Won,
            (Some(_), Some(_)) => MatchOutcome::Lost,
            (Some(_), None) => MatchOutcome::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MatchOutcome::Won => "won",
            MatchOutcome::Lost => "lost",
            MatchOutcome::Draw => "draw",
            MatchOutcome::Unknown => "unknown",
        }
    }
}

/// Everything a game shows, as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Connected to the connection server and welcomed.
    LoggedIn {
        user_id: u64,
        username: String,
    },
    /// The login (REST or the first lobby connection) failed.
    LoginFailed(String),
    /// [`Client::logout`] ended the session.
    LoggedOut,
    /// The lobby connection is gone (the match connection, if any, goes on).
    Disconnected(String),
    /// The whole friends list (after login, after `friend_list`, after any change).
    Friends(Vec<FriendEntry>),
    FriendPresence {
        user_id: u64,
        username: String,
        presence: Presence,
        /// What it was before (Offline when unknown).
        was: Presence,
    },
    FriendRequest {
        user_id: u64,
        username: String,
    },
    FriendUpdate {
        user_id: u64,
        accepted: bool,
    },
    ChatReceived {
        from: u64,
        from_name: String,
        to: ChatTarget,
        text: String,
    },
    Notification(String),
    Queued,
    QueueLeft {
        reason: QueueEnd,
    },
    /// A new match: the client connects to its instance server by itself.
    MatchFound {
        match_id: u64,
    },
    /// Admitted to the match (again, after a reconnect).
    MatchJoined {
        match_id: u64,
        seat: Seat,
    },
    /// The whole view, after a snapshot and after every batch of events.
    MatchState(Box<MatchSnapshot>),
    /// What happened (already applied to the view), in order: the animation cues. `you` is
    /// our seat (targets in [`ClientEvent::signals`] are relative to it).
    MatchEvents {
        you: Seat,
        events: Vec<MatchEvent>,
    },
    ActionResult {
        seq: u32,
        error: Option<ActionError>,
    },
    OpponentLeft {
        grace_seconds: u32,
    },
    OpponentReturned,
    /// The match connection dropped before the end; when `retrying`, the client is getting a
    /// fresh token from the lobby and connecting again.
    MatchConnectionLost {
        match_id: u64,
        reason: String,
        retrying: bool,
    },
    /// The match is over for this player (once per match).
    MatchEnded {
        match_id: u64,
        outcome: MatchOutcome,
        reason: Option<EndReason>,
    },
    /// The lobby closed the match: the player may queue again.
    MatchClosed {
        match_id: u64,
        aborted: bool,
    },
    Inventory {
        items: Vec<(String, u32)>,
        cards: Vec<(String, u32)>,
    },
    Crafted {
        recipe: String,
        output: String,
        quantity: u32,
    },
    Decks {
        decks: Vec<DeckEntry>,
        active: Option<u8>,
    },
    /// Connected to the farm; its state follows.
    FarmReady,
    FarmState {
        tick: u64,
        plots: Vec<Plot>,
        items: Vec<(String, u32)>,
    },
    FarmResult {
        seq: u32,
        error: Option<FarmError>,
    },
    FarmLeft(String),
    /// Connected to the common area; a `Hub(Welcome)` follows.
    HubReady,
    Hub(HubEvent),
    HubLeft(String),
    /// A refusal from a server (`code` set) or from this client (`None`: not logged in, no
    /// match, a bad argument ...).
    Error {
        code: Option<ErrorCode>,
        message: String,
    },
}
