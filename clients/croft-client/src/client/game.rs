//! The match connection of the facade: a session on an instance server for one match. Nothing
//! blocks: call [`MatchSession::poll`] every frame.

use renet_netcode::ConnectToken;
use shared_sim::protocol::{ClientMessage, ErrorCode, ServerMessage};
use shared_sim::rules::{Action, ActionError, MatchEvent, MatchResult, Seat};
use shared_sim::view::MatchSnapshot;

use crate::{ClientError, Connection, Route};

/// A connected match whose instance was not heard from for this long is lost (it sends an
/// idle client a keep-alive every second): the client rejoins, or reports the match lost.
pub const MATCH_SILENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// What happened in the match since the last poll, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchUpdate {
    /// Admitted (again, after a reconnect): `seat` is ours.
    Joined {
        match_id: u64,
        seat: Seat,
    },
    /// The view was replaced by a snapshot (see [`MatchSession::view`]).
    Snapshot,
    /// These events were applied to the view, in order.
    Events(Vec<MatchEvent>),
    /// The answer to action `seq`: `None` when accepted.
    ActionResult {
        seq: u32,
        error: Option<ActionError>,
    },
    OpponentLeft {
        grace_seconds: u32,
    },
    OpponentReturned,
    /// The match is over (once per session).
    Ended(MatchResult),
    /// The server refused something outside the match rules, or a message did not decode (a
    /// fresh snapshot has been asked for then).
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// One match, over an Instance token from `MatchFound`.
///
/// It keeps the player's view current from the server's snapshot and events
/// (`MatchSnapshot::apply`, PROTOCOL.md 5.3).
pub struct MatchSession {
    conn: Connection,
    pub match_id: u64,
    pub seat: Option<Seat>,
    /// The match as this player sees it, once the server sent a snapshot.
    pub view: Option<MatchSnapshot>,
    /// The match's result, once it ended.
    pub result: Option<MatchResult>,
    next_seq: u32,
    /// The last answer to one of our actions was a rejection.
    pub last_rejected: bool,
    /// Actions sent and not answered yet.
    pub in_flight: usize,
    /// An action was accepted and its events (in the tick's `Events`, right after the answer)
    /// have not arrived yet: the view is not current until they do. Over UDP they usually come
    /// in the same packet; over WebSocket they are separate frames.
    pub awaiting_events: bool,
    /// Reconnects in a row that have not got in yet (the facade's rejoin budget).
    pub failed_rejoins: u32,
}

impl MatchSession {
    pub fn connect(match_id: u64, token: ConnectToken) -> Result<Self, ClientError> {
        Self::connect_by(&Route::Udp, match_id, token)
    }

    /// Connects by `route` (UDP, or `MatchFound`'s WebSocket URL).
    pub fn connect_by(
        route: &Route,
        match_id: u64,
        token: ConnectToken,
    ) -> Result<Self, ClientError> {
        let mut conn = Connection::connect_by(route, token)?;
        // A killed instance is noticed in 5 s, not netcode's 15.
        conn.set_silence_limit(MATCH_SILENCE);
        Ok(Self {
            conn,
            match_id,
            seat: None,
            view: None,
            result: None,
            next_seq: 0,
            last_rejected: false,
            in_flight: 0,
            awaiting_events: false,
            failed_rejoins: 0,
        })
    }

    /// Sends an action now; its answer comes as [`MatchUpdate::ActionResult`] with this `seq`.
    pub fn act(&mut self, action: Action) -> u32 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.conn.send(&ClientMessage::MatchAction {
            seq: self.next_seq,
            action,
        });
        self.in_flight += 1;
        let _ = self.conn.flush_if_due(true);
        self.next_seq
    }

    /// Sends raw bytes as a message now (tests of the server's decoding use this).
    pub fn send_raw(&mut self, bytes: Vec<u8>) {
        self.conn.send_raw(bytes);
        let _ = self.conn.flush();
    }

    /// Asks for a fresh snapshot (PROTOCOL.md 5.4).
    pub fn request_snapshot(&mut self) {
        self.conn.send(&ClientMessage::RequestSnapshot);
        let _ = self.conn.flush_if_due(true);
    }

    pub fn is_ended(&self) -> bool {
        self.result.is_some()
    }

    pub fn is_connected(&self) -> bool {
        self.conn.is_connected()
    }

    /// Reads what arrived. The error is set once the connection is gone (or the instance has
    /// been silent for [`MATCH_SILENCE`]); updates that came
    /// with the disconnect are returned too.
    pub fn poll(&mut self) -> (Vec<MatchUpdate>, Option<ClientError>) {
        let updated = self.conn.update();
        let mut out = Vec::new();
        let mut resync = false;
        while let Some(m) = self.conn.receive() {
            match m {
                Ok(m) => self.handle(m, &mut out),
                Err(e) => {
                    resync = true;
                    out.push(MatchUpdate::Error {
                        code: e.code(),
                        message: e.to_string(),
                    });
                }
            }
        }
        if let Err(e) = updated {
            return (out, Some(e));
        }
        if resync {
            self.request_snapshot();
        }
        let gone = self.conn.flush_if_due(false).err();
        (out, gone)
    }

    fn ended(&mut self, result: MatchResult, out: &mut Vec<MatchUpdate>) {
        if self.result.is_none() {
            self.result = Some(result);
            out.push(MatchUpdate::Ended(result));
        }
    }

    /// Applies one server message (public for tests of the facade's mapping).
    pub fn handle(&mut self, msg: ServerMessage, out: &mut Vec<MatchUpdate>) {
        match msg {
            ServerMessage::Welcome { match_id, seat, .. } => {
                self.match_id = match_id;
                self.seat = Some(seat);
                self.failed_rejoins = 0;
                out.push(MatchUpdate::Joined { match_id, seat });
            }
            ServerMessage::Snapshot(s) => {
                let result = s.result;
                self.view = Some(*s);
                // A fresh view (after a join or a resync): nothing is waiting for an answer.
                self.in_flight = 0;
                self.awaiting_events = false;
                out.push(MatchUpdate::Snapshot);
                if let Some(r) = result {
                    self.ended(r, out);
                }
            }
            ServerMessage::Events(events) => {
                self.awaiting_events = false;
                let mut result = None;
                if let Some(view) = self.view.as_mut() {
                    for e in &events {
                        view.apply(e);
                    }
                }
                for e in &events {
                    if let MatchEvent::MatchEnded { result: r } = e {
                        result = Some(*r);
                    }
                    if let MatchEvent::TurnStarted { seat, .. } = e
                        && Some(*seat) == self.seat
                    {
                        self.last_rejected = false;
                    }
                }
                out.push(MatchUpdate::Events(events));
                if let Some(r) = result {
                    self.ended(r, out);
                }
            }
            ServerMessage::ActionAccepted { seq } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.awaiting_events = true;
                self.last_rejected = false;
                out.push(MatchUpdate::ActionResult { seq, error: None });
            }
            ServerMessage::ActionRejected { seq, reason } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.last_rejected = true;
                out.push(MatchUpdate::ActionResult {
                    seq,
                    error: Some(reason),
                });
            }
            ServerMessage::OpponentLeft { grace_seconds } => {
                out.push(MatchUpdate::OpponentLeft { grace_seconds })
            }
            ServerMessage::OpponentReturned => out.push(MatchUpdate::OpponentReturned),
            ServerMessage::Error { code, message } => {
                // Some refusals of an action come as `Error` (rate limit, malformed, not on
                // this connection) rather than `ActionRejected`: do not wait for an answer
                // that will not come.
                self.in_flight = 0;
                out.push(MatchUpdate::Error { code, message })
            }
            // Farm and common-area messages never come on a match connection.
            ServerMessage::FarmState { .. }
            | ServerMessage::FarmActionResult { .. }
            | ServerMessage::HubWelcome { .. }
            | ServerMessage::HubJoined(_)
            | ServerMessage::HubLeft { .. }
            | ServerMessage::HubMoves(_)
            | ServerMessage::HubMoveRejected { .. }
            | ServerMessage::HubChat { .. } => {}
        }
    }

    /// Leaves the match connection (with a Disconnect packet, so a reconnect is answered at once).
    pub fn leave(&mut self) {
        let _ = self.conn.flush();
        self.conn.disconnect();
    }
}
