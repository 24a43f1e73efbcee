//! Sessions on an instance server outside matches: the player's farm and the common area.
//! Nothing blocks: call `poll` every frame.

use std::collections::BTreeMap;

use renet_netcode::ConnectToken;
use shared_sim::farm::{FarmAction, FarmError, Plot};
use shared_sim::hub::{HubPlayer, MoveError};
use shared_sim::protocol::{ClientMessage, ErrorCode, ServerMessage};

use crate::{ClientError, Connection, Route};

/// What happened on the farm since the last poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FarmEvent {
    /// New plots or items (see [`FarmSession::plots`], [`FarmSession::items`]).
    State,
    /// The answer to action `seq`: `None` when it was applied (and saved).
    Result { seq: u32, error: Option<FarmError> },
    /// The server refused something outside the farm rules (a bad message, a bad token).
    Error { code: ErrorCode, message: String },
}

/// The player's farm, over a Farm token from `FarmReady`.
///
/// It keeps what the server last said (plots and items) and turns the server's messages into
/// events for the game to show.
pub struct FarmSession {
    conn: Connection,
    /// The plots, once the server has sent them.
    pub plots: Option<Vec<Plot>>,
    /// The player's items (id, count).
    pub items: Vec<(String, u32)>,
    /// The farm tick of `plots`.
    pub tick: u64,
    next_seq: u32,
}

impl FarmSession {
    pub fn connect(token: ConnectToken) -> Result<Self, ClientError> {
        Self::connect_by(&Route::Udp, token)
    }

    /// Connects by `route` (UDP, or `FarmReady`'s WebSocket URL).
    pub fn connect_by(route: &Route, token: ConnectToken) -> Result<Self, ClientError> {
        Ok(Self {
            conn: Connection::connect_by(route, token)?,
            plots: None,
            items: Vec::new(),
            tick: 0,
            next_seq: 0,
        })
    }

    /// Sends an action; its answer comes as [`FarmEvent::Result`] with the returned `seq`.
    pub fn act(&mut self, action: FarmAction) -> u32 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.conn.send(&ClientMessage::FarmAction {
            seq: self.next_seq,
            action,
        });
        let _ = self.conn.flush();
        self.next_seq
    }

    /// How many of an item the player has.
    pub fn count(&self, item: &str) -> u32 {
        self.items
            .iter()
            .find(|(i, _)| i == item)
            .map_or(0, |(_, n)| *n)
    }

    /// Reads what arrived. `Err` when the connection is gone.
    pub fn poll(&mut self) -> Result<Vec<FarmEvent>, ClientError> {
        let updated = self.conn.update();
        let mut events = Vec::new();
        while let Some(m) = self.conn.receive() {
            match m {
                Ok(ServerMessage::FarmState { tick, plots, items }) => {
                    self.tick = tick;
                    self.plots = Some(plots);
                    self.items = items;
                    events.push(FarmEvent::State);
                }
                Ok(ServerMessage::FarmActionResult { seq, error }) => {
                    events.push(FarmEvent::Result { seq, error })
                }
                Ok(ServerMessage::Error { code, message }) => {
                    events.push(FarmEvent::Error { code, message })
                }
                Ok(_) => {}
                Err(e) => events.push(FarmEvent::Error {
                    code: ErrorCode::Malformed,
                    message: e.to_string(),
                }),
            }
        }
        updated?;
        let _ = self.conn.flush_if_due(false);
        Ok(events)
    }

    /// Leaves the farm (the server writes it and closes it a little later).
    pub fn leave(&mut self) {
        let _ = self.conn.flush();
        self.conn.disconnect();
    }
}

/// What happened in the common area since the last poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubEvent {
    /// In: [`HubSession::me`] and [`HubSession::players`] are filled.
    Welcome {
        hub_id: u32,
    },
    Joined(HubPlayer),
    Left {
        user_id: u64,
    },
    /// Positions that changed (already applied to `players` and `me`).
    Moved(Vec<(u64, i32, i32)>),
    /// A move was refused; you are back at (`x`, `y`).
    MoveRefused {
        error: MoveError,
        x: i32,
        y: i32,
    },
    Chat {
        from: u64,
        name: String,
        text: String,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// A place in the common area, over a Hub token from `HubReady`.
///
/// It keeps what the server last said (who is where) and turns the server's messages into
/// events for the game to show.
pub struct HubSession {
    conn: Connection,
    pub hub_id: Option<u32>,
    /// You, as the server has you.
    pub me: Option<HubPlayer>,
    /// Everyone else in the shard, by user id.
    pub players: BTreeMap<u64, HubPlayer>,
}

impl HubSession {
    pub fn connect(token: ConnectToken) -> Result<Self, ClientError> {
        Self::connect_by(&Route::Udp, token)
    }

    /// Connects by `route` (UDP, or `HubReady`'s WebSocket URL).
    pub fn connect_by(route: &Route, token: ConnectToken) -> Result<Self, ClientError> {
        Ok(Self {
            conn: Connection::connect_by(route, token)?,
            hub_id: None,
            me: None,
            players: BTreeMap::new(),
        })
    }

    /// Walks to (`x`, `y`); the server checks speed and bounds.
    pub fn walk_to(&mut self, x: i32, y: i32) {
        self.conn.send(&ClientMessage::HubMove { x, y });
        let _ = self.conn.flush();
    }

    /// Says something to the players nearby.
    pub fn say(&mut self, text: &str) {
        self.conn.send(&ClientMessage::HubChat {
            text: text.to_string(),
        });
        let _ = self.conn.flush();
    }

    /// Reads what arrived. `Err` when the connection is gone.
    pub fn poll(&mut self) -> Result<Vec<HubEvent>, ClientError> {
        let updated = self.conn.update();
        let mut events = Vec::new();
        while let Some(m) = self.conn.receive() {
            let event = match m {
                Ok(ServerMessage::HubWelcome {
                    hub_id,
                    you,
                    players,
                }) => {
                    self.hub_id = Some(hub_id);
                    self.me = Some(you);
                    self.players = players.into_iter().map(|p| (p.user_id, p)).collect();
                    HubEvent::Welcome { hub_id }
                }
                Ok(ServerMessage::HubJoined(p)) => {
                    self.players.insert(p.user_id, p.clone());
                    HubEvent::Joined(p)
                }
                Ok(ServerMessage::HubLeft { user_id }) => {
                    self.players.remove(&user_id);
                    HubEvent::Left { user_id }
                }
                Ok(ServerMessage::HubMoves(moves)) => {
                    for (u, x, y) in &moves {
                        let p = match self.me.as_mut() {
                            Some(me) if me.user_id == *u => Some(me),
                            _ => self.players.get_mut(u),
                        };
                        if let Some(p) = p {
                            p.x = *x;
                            p.y = *y;
                        }
                    }
                    HubEvent::Moved(moves)
                }
                Ok(ServerMessage::HubMoveRejected { error, x, y }) => {
                    if let Some(me) = self.me.as_mut() {
                        me.x = x;
                        me.y = y;
                    }
                    HubEvent::MoveRefused { error, x, y }
                }
                Ok(ServerMessage::HubChat { from, name, text }) => {
                    HubEvent::Chat { from, name, text }
                }
                Ok(ServerMessage::Error { code, message }) => HubEvent::Error { code, message },
                Ok(_) => continue,
                Err(e) => HubEvent::Error {
                    code: ErrorCode::Malformed,
                    message: e.to_string(),
                },
            };
            events.push(event);
        }
        updated?;
        let _ = self.conn.flush_if_due(false);
        Ok(events)
    }

    pub fn leave(&mut self) {
        let _ = self.conn.flush();
        self.conn.disconnect();
    }
}
