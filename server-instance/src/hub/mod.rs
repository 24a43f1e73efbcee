//! The common area: hub shards where online players see each other, walk (speed and bounds
//! checked here) and chat with the players near them.

pub mod book;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bevy::prelude::*;
use shared_net::RateWindow;
use shared_sim::hub::{self, HubPlayer};
use shared_sim::plugin::UserId;
use shared_sim::protocol::{ErrorCode, MAX_CHAT_CHARS, ServerMessage};

pub use book::{HubBook, KEEP_FOR};

/// Chat messages a player may send in the common area per 10 seconds, unless configured.
pub const DEFAULT_CHAT_PER_10S: u32 = 10;

/// The hubs' step of the simulation tick (`FixedUpdate`).
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HubSystems;

/// Hosts the common-area shards: a [`Hubs`] resource, its inbox and its outbox.
///
/// It runs the shards on the simulation tick from a [`HubInbox`] into a [`HubOutbox`]. Joining
/// and leaving are broadcast to the shard; moves are batched into one `HubMoves` every
/// `moves_every_ticks` ticks (so a faster simulation tick does not raise the common area's
/// packet rate).
pub struct HubPlugin {
    /// Chat messages a player may send per 10 seconds.
    pub chat_per_10s: u32,
    /// Ticks between two batches of moves (1: every tick).
    pub moves_every_ticks: u64,
}

impl Default for HubPlugin {
    fn default() -> Self {
        Self {
            chat_per_10s: DEFAULT_CHAT_PER_10S,
            moves_every_ticks: 1,
        }
    }
}

/// Batches of moves per second the common area sends at most (its rate at the 20 Hz tick).
pub const HUB_MOVES_HZ: u32 = 20;

impl HubPlugin {
    /// Ticks between batches of moves for a simulation at `tick_hz`.
    pub fn moves_every_ticks_at(tick_hz: u32) -> u64 {
        u64::from(tick_hz.div_ceil(HUB_MOVES_HZ).max(1))
    }
}

impl Plugin for HubPlugin {
    fn build(&self, app: &mut App) {
        app.insert_resource(Hubs {
            chat_per_10s: self.chat_per_10s,
            moves_every_ticks: self.moves_every_ticks.max(1),
            ..Default::default()
        })
        .init_resource::<HubInbox>()
        .init_resource::<HubOutbox>()
        .add_systems(FixedUpdate, hub_system.in_set(HubSystems));
    }
}

/// What the network side hands the hubs.
#[derive(Debug)]
pub enum HubInput {
    Joined {
        hub_id: u32,
        user: UserId,
    },
    Left {
        hub_id: u32,
        user: UserId,
    },
    Move {
        hub_id: u32,
        user: UserId,
        to: (i32, i32),
    },
    Chat {
        hub_id: u32,
        user: UserId,
        text: String,
    },
}

#[derive(Resource, Default, Debug)]
pub struct HubInbox(pub Vec<HubInput>);

/// What the hubs hand back.
#[derive(Debug, Clone, PartialEq)]
pub enum HubOutput {
    ToPlayer {
        user: UserId,
        message: ServerMessage,
    },
    /// One message for several players (encoded once).
    ToPlayers {
        users: Vec<UserId>,
        message: ServerMessage,
    },
    /// The player took the place kept for them.
    Arrived(UserId),
    /// The player left: their place is free.
    Released(UserId),
}

#[derive(Resource, Default, Debug)]
pub struct HubOutbox(pub Vec<HubOutput>);

impl HubOutbox {
    fn send(&mut self, user: UserId, message: ServerMessage) {
        self.0.push(HubOutput::ToPlayer { user, message });
    }

    fn broadcast(&mut self, shard: &Shard, message: ServerMessage) {
        let users: Vec<UserId> = shard.members.keys().copied().collect();
        if users.is_empty() {
            return;
        }
        self.0.push(HubOutput::ToPlayers { users, message });
    }
}

/// Times are the server's real time since start (`Time<Real>::elapsed`).
struct Member {
    name: String,
    pos: (i32, i32),
    /// Where and when the current interval of walking began: moves less than
    /// `MIN_MOVE_INTERVAL_MS` apart are all measured from there, so moves sent together share
    /// one interval's walking instead of each being credited with a whole one.
    anchor: ((i32, i32), Duration),
    /// Chat messages counted per 10 seconds.
    chat: RateWindow,
}

const CHAT_WINDOW: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Shard {
    members: HashMap<UserId, Member>,
    moved: Vec<(u64, i32, i32)>,
}

/// The hub shards this process hosts.
///
/// Matchmaking keeps a place with `POST /v1/hub` (the control API's [`HubBook`] picks the first
/// shard with room, or opens the next one: `--hub-capacity`, default 300 players), the player
/// connects with a Hub token naming that shard, and the place is freed when they leave.
#[derive(Resource)]
pub struct Hubs {
    /// Places kept for players on their way: (shard, user) -> (name, since).
    expected: HashMap<(u32, UserId), (String, Duration)>,
    shards: HashMap<u32, Shard>,
    chat_per_10s: u32,
    moves_every_ticks: u64,
    /// Ticks run, for the moves' cadence.
    ticks: u64,
}

impl Default for Hubs {
    fn default() -> Self {
        Self {
            expected: HashMap::new(),
            shards: HashMap::new(),
            chat_per_10s: DEFAULT_CHAT_PER_10S,
            moves_every_ticks: 1,
            ticks: 0,
        }
    }
}

impl Hubs {
    /// A place was kept for `user` in shard `hub_id` at `now`.
    pub fn expect(&mut self, hub_id: u32, user: UserId, name: String, now: Duration) {
        self.expected.insert((hub_id, user), (name, now));
    }

    /// Whether `user` may connect to shard `hub_id`.
    pub fn expects(&self, hub_id: u32, user: UserId) -> bool {
        self.expected.contains_key(&(hub_id, user))
    }

    pub fn players(&self) -> usize {
        self.shards.values().map(|s| s.members.len()).sum()
    }
}

fn player(user: UserId, m: &Member) -> HubPlayer {
    HubPlayer {
        user_id: user,
        name: m.name.clone(),
        x: m.pos.0,
        y: m.pos.1,
    }
}

/// Every simulation tick: arrivals, departures, moves, chat, then one batch of moves per shard.
fn hub_system(
    mut hubs: ResMut<Hubs>,
    mut inbox: ResMut<HubInbox>,
    mut outbox: ResMut<HubOutbox>,
    time: Res<Time<Real>>,
) {
    let hubs = &mut *hubs;
    let now = time.elapsed();
    hubs.expected
        .retain(|_, (_, since)| now.saturating_sub(*since) <= KEEP_FOR);
    for input in std::mem::take(&mut inbox.0) {
        match input {
            HubInput::Joined { hub_id, user } => {
                let Some((name, _)) = hubs.expected.remove(&(hub_id, user)) else {
                    continue;
                };
                let shard = hubs.shards.entry(hub_id).or_default();
                let member = Member {
                    name,
                    pos: hub::SPAWN,
                    anchor: (hub::SPAWN, now),
                    chat: RateWindow::new(now),
                };
                let you = player(user, &member);
                let players = shard.members.iter().map(|(u, m)| player(*u, m)).collect();
                outbox.send(
                    user,
                    ServerMessage::HubWelcome {
                        hub_id,
                        you: you.clone(),
                        players,
                    },
                );
                outbox.broadcast(shard, ServerMessage::HubJoined(you));
                shard.members.insert(user, member);
                outbox.0.push(HubOutput::Arrived(user));
                tracing::info!(user, hub_id, "player in the common area");
            }
            HubInput::Left { hub_id, user } => {
                if let Some(shard) = hubs.shards.get_mut(&hub_id)
                    && shard.members.remove(&user).is_some()
                {
                    shard.moved.retain(|(u, _, _)| *u != user);
                    outbox.broadcast(shard, ServerMessage::HubLeft { user_id: user });
                    if shard.members.is_empty() {
                        hubs.shards.remove(&hub_id);
                    }
                }
                outbox.0.push(HubOutput::Released(user));
            }
            HubInput::Move { hub_id, user, to } => {
                let Some(shard) = hubs.shards.get_mut(&hub_id) else {
                    continue;
                };
                let Some(m) = shard.members.get_mut(&user) else {
                    continue;
                };
                let (from, since) = m.anchor;
                let elapsed = now.saturating_sub(since).as_millis() as u64;
                match hub::check_move(from, to, elapsed) {
                    Ok(()) => {
                        m.pos = to;
                        if elapsed >= hub::MIN_MOVE_INTERVAL_MS {
                            m.anchor = (to, now);
                        }
                        shard.moved.push((user, to.0, to.1));
                    }
                    Err(error) => {
                        metrics::counter!("croft_instance_hub_moves_refused_total").increment(1);
                        let (x, y) = m.pos;
                        outbox.send(user, ServerMessage::HubMoveRejected { error, x, y });
                    }
                }
            }
            HubInput::Chat { hub_id, user, text } => {
                let limit = hubs.chat_per_10s;
                let Some(shard) = hubs.shards.get_mut(&hub_id) else {
                    continue;
                };
                let Some(m) = shard.members.get_mut(&user) else {
                    continue;
                };
                if !m.chat.allow(limit, CHAT_WINDOW, now) {
                    metrics::counter!("croft_instance_hub_chat_rate_limited_total").increment(1);
                    let message = format!("at most {limit} chat messages per 10 seconds");
                    let code = ErrorCode::RateLimited;
                    outbox.send(user, ServerMessage::Error { code, message });
                    continue;
                }
                chat(shard, user, &shard.members[&user], text, &mut outbox);
            }
        }
    }
    hubs.ticks += 1;
    let moves_due = hubs.ticks.is_multiple_of(hubs.moves_every_ticks);
    for shard in hubs.shards.values_mut() {
        if !moves_due || shard.moved.is_empty() {
            continue;
        }
        // The last position of each player since the last batch.
        let mut last: BTreeMap<u64, (i32, i32)> = BTreeMap::new();
        for (u, x, y) in shard.moved.drain(..) {
            last.insert(u, (x, y));
        }
        let moves = last.into_iter().map(|(u, (x, y))| (u, x, y)).collect();
        outbox.broadcast(shard, ServerMessage::HubMoves(moves));
    }
    metrics::gauge!("croft_instance_hub_players").set(hubs.players() as f64);
}

/// `text` from `m` to the players within chat range (them included), or an error to them.
fn chat(shard: &Shard, user: UserId, m: &Member, text: String, outbox: &mut HubOutbox) {
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_CHAT_CHARS || text.chars().any(|c| c.is_control() && c != '\n') {
        let message =
            format!("a chat message has 1 to {MAX_CHAT_CHARS} characters and no control codes");
        return outbox.send(
            user,
            ServerMessage::Error {
                code: ErrorCode::BadChat,
                message,
            },
        );
    }
    let message = ServerMessage::HubChat {
        from: user,
        name: m.name.clone(),
        text,
    };
    let users = shard
        .members
        .iter()
        .filter(|(_, o)| hub::within_chat(m.pos, o.pos))
        .map(|(u, _)| *u)
        .collect();
    outbox.0.push(HubOutput::ToPlayers { users, message });
}
