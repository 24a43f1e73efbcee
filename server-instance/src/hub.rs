//! The common area: hub shards where online players see each other, walk (speed and bounds
//! checked here) and chat with the players near them. Joining and leaving are broadcast to the
//! shard; moves are batched into one `HubMoves` per tick.
//!
//! Matchmaking keeps a place with `POST /v1/hub` (the control API picks the first shard with
//! room, or opens the next one: `--hub-capacity`, default 300 players), the player connects with
//! a Hub token naming that shard, and the place is freed when they leave.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bevy::prelude::*;
use shared_sim::hub::{self, HubPlayer};
use shared_sim::plugin::UserId;
use shared_sim::protocol::{ErrorCode, MAX_CHAT_CHARS, ServerMessage};

use crate::net::NetServer;

/// A kept place nobody claimed is given up after this long (a connect token's lifetime, and
/// then some).
pub const KEEP_FOR: Duration = Duration::from_secs(90);

/// The places the control API handed out, by shard (kept under the control lock).
#[derive(Debug, Default)]
pub struct HubBook {
    /// Places per shard.
    pub shards: BTreeMap<u32, usize>,
    /// Where each player has a place, since when, and whether they arrived.
    pub members: HashMap<UserId, (u32, Instant, bool)>,
}

impl HubBook {
    /// A place for `user` (the one they have, else the first shard with room, else a new
    /// shard): the shard id.
    pub fn keep(&mut self, user: UserId, capacity: usize, now: Instant) -> u32 {
        self.expire(now);
        if let Some((hub, at, _)) = self.members.get_mut(&user) {
            *at = now;
            return *hub;
        }
        let hub = self
            .shards
            .iter()
            .find(|(_, n)| **n < capacity.max(1))
            .map(|(h, _)| *h)
            .unwrap_or_else(|| {
                // The lowest free id, so shard ids stay small as shards empty and refill.
                (1..).find(|h| !self.shards.contains_key(h)).unwrap_or(1)
            });
        *self.shards.entry(hub).or_default() += 1;
        self.members.insert(user, (hub, now, false));
        hub
    }

    pub fn arrived(&mut self, user: UserId) {
        if let Some(m) = self.members.get_mut(&user) {
            m.2 = true;
        }
    }

    pub fn release(&mut self, user: UserId) {
        if let Some((hub, _, _)) = self.members.remove(&user)
            && let Some(n) = self.shards.get_mut(&hub)
        {
            *n -= 1;
            if *n == 0 {
                self.shards.remove(&hub);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        let stale: Vec<UserId> = self
            .members
            .iter()
            .filter(|(_, (_, at, arrived))| !arrived && now.duration_since(*at) > KEEP_FOR)
            .map(|(u, _)| *u)
            .collect();
        for u in stale {
            self.release(u);
        }
    }

    pub fn players(&self) -> usize {
        self.members.len()
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

struct Member {
    name: String,
    pos: (i32, i32),
    last_move: Instant,
}

#[derive(Default)]
struct Shard {
    members: HashMap<UserId, Member>,
    moved: Vec<(u64, i32, i32)>,
}

/// The hub shards this process hosts.
#[derive(Resource, Default)]
pub struct Hubs {
    /// Places kept for players on their way: (shard, user) -> (name, since).
    expected: HashMap<(u32, UserId), (String, Instant)>,
    shards: HashMap<u32, Shard>,
    pub inbox: Vec<HubInput>,
}

impl Hubs {
    /// A place was kept for `user` in shard `hub_id`.
    pub fn expect(&mut self, hub_id: u32, user: UserId, name: String) {
        self.expected.insert((hub_id, user), (name, Instant::now()));
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

fn broadcast(net: &mut NetServer, shard: &Shard, except: Option<UserId>, msg: &ServerMessage) {
    for user in shard.members.keys() {
        if Some(*user) != except {
            net.send(*user, msg);
        }
    }
}

/// Runs every tick: arrivals, departures, moves, chat, then one batch of moves per shard.
pub(crate) fn hub_system(
    mut hubs: ResMut<Hubs>,
    mut net: ResMut<NetServer>,
    control: Res<crate::Control>,
) {
    let hubs = &mut *hubs;
    let now = Instant::now();
    hubs.expected
        .retain(|_, (_, since)| now.duration_since(*since) <= KEEP_FOR);
    for input in std::mem::take(&mut hubs.inbox) {
        match input {
            HubInput::Joined { hub_id, user } => {
                let Some((name, _)) = hubs.expected.remove(&(hub_id, user)) else {
                    continue;
                };
                let shard = hubs.shards.entry(hub_id).or_default();
                let member = Member {
                    name,
                    pos: hub::SPAWN,
                    last_move: now,
                };
                let you = player(user, &member);
                let players = shard.members.iter().map(|(u, m)| player(*u, m)).collect();
                net.send(
                    user,
                    &ServerMessage::HubWelcome {
                        hub_id,
                        you: you.clone(),
                        players,
                    },
                );
                broadcast(&mut net, shard, None, &ServerMessage::HubJoined(you));
                shard.members.insert(user, member);
                if let Ok(mut book) = control.shared.hub_book.lock() {
                    book.arrived(user);
                }
                tracing::info!(user, hub_id, "player in the common area");
            }
            HubInput::Left { hub_id, user } => {
                if let Some(shard) = hubs.shards.get_mut(&hub_id)
                    && shard.members.remove(&user).is_some()
                {
                    shard.moved.retain(|(u, _, _)| *u != user);
                    broadcast(
                        &mut net,
                        shard,
                        None,
                        &ServerMessage::HubLeft { user_id: user },
                    );
                    if shard.members.is_empty() {
                        hubs.shards.remove(&hub_id);
                    }
                }
                if let Ok(mut book) = control.shared.hub_book.lock() {
                    book.release(user);
                }
            }
            HubInput::Move { hub_id, user, to } => {
                let Some(shard) = hubs.shards.get_mut(&hub_id) else {
                    continue;
                };
                let Some(m) = shard.members.get_mut(&user) else {
                    continue;
                };
                let elapsed = now.duration_since(m.last_move).as_millis() as u64;
                match hub::check_move(m.pos, to, elapsed) {
                    Ok(()) => {
                        m.pos = to;
                        m.last_move = now;
                        shard.moved.push((user, to.0, to.1));
                    }
                    Err(error) => {
                        metrics::counter!("croft_instance_hub_moves_refused_total").increment(1);
                        net.send(
                            user,
                            &ServerMessage::HubMoveRejected {
                                error,
                                x: m.pos.0,
                                y: m.pos.1,
                            },
                        );
                    }
                }
            }
            HubInput::Chat { hub_id, user, text } => {
                let Some(shard) = hubs.shards.get(&hub_id) else {
                    continue;
                };
                let Some(m) = shard.members.get(&user) else {
                    continue;
                };
                let chars = text.chars().count();
                if chars == 0
                    || chars > MAX_CHAT_CHARS
                    || text.chars().any(|c| c.is_control() && c != '\n')
                {
                    net.send(
                        user,
                        &ServerMessage::Error {
                            code: ErrorCode::BadChat,
                            message: format!(
                                "a chat message has 1 to {MAX_CHAT_CHARS} characters and no control codes"
                            ),
                        },
                    );
                    continue;
                }
                let msg = ServerMessage::HubChat {
                    from: user,
                    name: m.name.clone(),
                    text,
                };
                let from = m.pos;
                for (other, o) in &shard.members {
                    if hub::within_chat(from, o.pos) {
                        net.send(*other, &msg);
                    }
                }
            }
        }
    }
    for shard in hubs.shards.values_mut() {
        if shard.moved.is_empty() {
            continue;
        }
        // The last position of each player this tick.
        let mut last: BTreeMap<u64, (i32, i32)> = BTreeMap::new();
        for (u, x, y) in shard.moved.drain(..) {
            last.insert(u, (x, y));
        }
        let moves = last.into_iter().map(|(u, (x, y))| (u, x, y)).collect();
        broadcast(&mut net, shard, None, &ServerMessage::HubMoves(moves));
    }
    metrics::gauge!("croft_instance_hub_players").set(hubs.players() as f64);
}
