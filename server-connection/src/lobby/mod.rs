//! The Bevy side of the connection server: [`LobbyPlugin`] runs sessions, presence, friends,
//! chat and the matchmaking relay in four ordered sets; nothing here waits on the network.

mod chat;
mod messages;
mod presence;
mod relay;
mod replies;
pub mod transport;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bevy::prelude::*;
use shared_net::RateWindow;
use shared_net::{Bytes, ClientId};
use shared_sim::protocol::{ErrorCode, LobbyServerMessage, Presence, USER_DATA_BYTES};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::bridge::{Job, Reply, UserId};
pub use presence::presence_name;
pub use transport::LobbyNet;

/// The lobby's frame, in order. The transport systems (receive, read the messages, send) run
/// only where a [`LobbyNet`] exists, so tests drive the rules without sockets.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LobbySet {
    /// Read the sockets: connections, disconnections and the messages of loaded players.
    Receive,
    /// Apply what the async side answered and what the bus carried.
    Apply,
    /// Handle the players' messages.
    Handle,
    /// Write the outbox to the sockets and flush them.
    Send,
}

/// The connection server's lobby: sessions, presence, friends, chat and the matchmaking relay.
/// Needs a [`Lobby`] resource; a [`LobbyNet`] connects it to sockets.
pub struct LobbyPlugin;

impl Plugin for LobbyPlugin {
    fn build(&self, app: &mut App) {
        let has_net = resource_exists::<LobbyNet>;
        app.configure_sets(
            Update,
            (
                LobbySet::Receive,
                LobbySet::Apply,
                LobbySet::Handle,
                LobbySet::Send,
            )
                .chain(),
        )
        .add_systems(
            Update,
            (
                (
                    transport::receive.run_if(has_net),
                    transport::admit_and_drop,
                )
                    .chain()
                    .in_set(LobbySet::Receive),
                (replies::apply_replies, presence::keep_peers)
                    .chain()
                    .in_set(LobbySet::Apply),
                (
                    transport::read_messages.run_if(has_net),
                    messages::handle_messages,
                )
                    .chain()
                    .in_set(LobbySet::Handle),
                transport::send.in_set(LobbySet::Send).run_if(has_net),
            ),
        );
    }
}

/// The event bus as the lobby sees it: a producer that never blocks, and the name this
/// server's events carry (its own are skipped when they come back).
pub struct LobbyBus {
    pub producer: events::bus::BusProducer,
    pub me: String,
    pub counters: Arc<events::bus::ConsumerCounters>,
    /// This process's heartbeat identity (random per start).
    pub boot: u64,
}

impl LobbyBus {
    fn emit(&self, event: events::Event) {
        if let Err(e) = self.producer.emit(&event.envelope(&self.me)) {
            metrics::counter!("croft_connection_bus_dropped_total").increment(1);
            tracing::warn!(error = %e, event_type = event.event_type(), "cannot publish to the bus");
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub chat_per_10s: u32,
    pub max_messages_per_second: u32,
    pub bad_message_budget: u32,
    /// Frames between flushes of a client with nothing new.
    pub idle_flush_frames: u64,
}

#[derive(Debug)]
pub struct Session {
    pub shard: usize,
    pub tag: [u8; 16],
    /// Set once the account is loaded; until then messages wait in renet's queue.
    pub username: Option<String>,
    pub presence: Presence,
    /// Accepted friends.
    pub friends: HashSet<UserId>,
    pub match_id: Option<u64>,
    chat_window: RateWindow,
    msg_window: RateWindow,
    bad_messages: u32,
}

impl Session {
    fn loaded(&self) -> bool {
        self.username.is_some()
    }
}

/// What the transport saw happen to a client this frame.
#[derive(Debug, Clone)]
pub enum NetEvent {
    Connected {
        shard: usize,
        client: ClientId,
        /// The connect token's user data, as the transport authenticated it.
        user_data: Option<Box<[u8; USER_DATA_BYTES]>>,
    },
    Disconnected {
        shard: usize,
        client: ClientId,
        reason: String,
    },
}

/// What the lobby asks the transport to do, in order.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Message {
        shard: usize,
        client: ClientId,
        bytes: Bytes,
    },
    /// Flush what is queued for the client, then drop its connection.
    Disconnect { shard: usize, client: ClientId },
}

#[derive(Resource)]
pub struct Lobby {
    pub sessions: HashMap<UserId, Session>,
    pub jobs: UnboundedSender<Job>,
    pub replies: UnboundedReceiver<Reply>,
    /// Revoked session tags and when they were learned (pruned after ten minutes: connect
    /// tokens live one minute, so older revocations cannot be presented again).
    pub revoked: HashMap<[u8; 16], Duration>,
    pub limits: Limits,
    pub status: Arc<Mutex<contracts::connection::v1::Status>>,
    /// The bus, when Kafka is configured (several connection servers).
    pub bus: Option<LobbyBus>,
    /// Players online on other connection servers, as their events told: presence and the
    /// producer (server) it came from.
    pub remote: HashMap<UserId, (Presence, String)>,
    /// The other connection servers heard from: their last heartbeat and process.
    peers: HashMap<String, presence::Peer>,
    /// Players of servers whose heartbeats stopped, kept to show them again if the same
    /// process is heard from again (a partition rather than a death).
    lost: HashMap<String, (u64, Vec<(UserId, Presence)>)>,
    /// When this server next sends its heartbeat.
    next_beat: Duration,
    /// For each player, the local players who count them as an accepted friend.
    followers: HashMap<UserId, HashSet<UserId>>,
    /// From the transport: connections and disconnections, then messages of loaded players.
    pub arrivals: Vec<NetEvent>,
    pub inbox: Vec<(UserId, Bytes)>,
    /// To the transport.
    pub outbox: Vec<Outgoing>,
    /// Players loaded this frame, whose early messages waited in the transport.
    pub just_loaded: Vec<UserId>,
}

impl Lobby {
    pub fn new(
        jobs: UnboundedSender<Job>,
        replies: UnboundedReceiver<Reply>,
        limits: Limits,
        status: Arc<Mutex<contracts::connection::v1::Status>>,
    ) -> Self {
        Self {
            sessions: HashMap::new(),
            jobs,
            replies,
            revoked: HashMap::new(),
            limits,
            status,
            bus: None,
            remote: HashMap::new(),
            peers: HashMap::new(),
            lost: HashMap::new(),
            next_beat: Duration::ZERO,
            followers: HashMap::new(),
            arrivals: Vec::new(),
            inbox: Vec::new(),
            outbox: Vec::new(),
            just_loaded: Vec::new(),
        }
    }

    /// The session tag of a connected player (the connect token's), zeros for nobody.
    fn tag_of(&self, user: UserId) -> [u8; 16] {
        self.sessions.get(&user).map(|s| s.tag).unwrap_or_default()
    }

    fn job(&self, job: Job) {
        if self.jobs.send(job).is_err() {
            tracing::error!("the async side is gone");
        }
    }

    fn send_on(&mut self, shard: usize, client: ClientId, msg: &LobbyServerMessage) {
        self.outbox.push(Outgoing::Message {
            shard,
            client,
            bytes: Bytes::from(msg.encode()),
        });
    }

    /// Sends to a connected, loaded player.
    pub fn send(&mut self, user: UserId, msg: &LobbyServerMessage) -> bool {
        self.send_encoded(user, Bytes::from(msg.encode()))
    }

    /// As [`Self::send`] with the message already encoded (fan-out encodes once).
    fn send_encoded(&mut self, user: UserId, bytes: Bytes) -> bool {
        match self.sessions.get(&user) {
            Some(s) if s.loaded() => {
                let shard = s.shard;
                self.outbox.push(Outgoing::Message {
                    shard,
                    client: user,
                    bytes,
                });
                true
            }
            _ => false,
        }
    }

    /// Sends one message to every loaded player, encoded once.
    fn broadcast(&mut self, msg: &LobbyServerMessage) -> usize {
        let bytes = Bytes::from(msg.encode());
        let users: Vec<UserId> = self.sessions.keys().copied().collect();
        users
            .into_iter()
            .filter(|u| self.send_encoded(*u, bytes.clone()))
            .count()
    }

    fn error(&mut self, user: UserId, code: ErrorCode, message: impl Into<String>) {
        self.send(
            user,
            &LobbyServerMessage::Error {
                code,
                message: message.into(),
            },
        );
    }

    /// Sends an error, flushes it, and disconnects the client.
    fn refuse(&mut self, shard: usize, client: ClientId, code: ErrorCode, message: String) {
        metrics::counter!("croft_connection_refused_total", "code" => format!("{code:?}"))
            .increment(1);
        tracing::info!(client, ?code, %message, "disconnecting client");
        self.send_on(shard, client, &LobbyServerMessage::Error { code, message });
        self.outbox.push(Outgoing::Disconnect { shard, client });
    }

    /// Drops a session (already disconnected or being disconnected) and tells its friends.
    fn end_session(&mut self, user: UserId) {
        let Some(s) = self.sessions.remove(&user) else {
            return;
        };
        // Also when a FindMatch is still on its way: matchmaking calls run in order, so the
        // cancel lands after it. A match already being set up goes ahead (the no-show rule of
        // the instance server ends it).
        if s.presence != Presence::InMatch && s.loaded() {
            self.job(Job::CancelMatch { user, quiet: true });
        }
        if s.loaded() {
            self.tell_friends(user, &s.friends, Presence::Offline);
            self.publish_presence(user, Presence::Offline);
        }
        self.unfollow(user, &s.friends);
    }

    /// Forgets everyone (shutdown): withdraws their queue tickets and tells the other
    /// connection servers they are gone, waiting until the bus has it.
    pub fn end_all(&mut self) {
        let loaded: Vec<(UserId, Presence)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.loaded())
            .map(|(u, s)| (*u, s.presence))
            .collect();
        for &(user, presence) in &loaded {
            if presence != Presence::InMatch {
                self.job(Job::CancelMatch { user, quiet: true });
            }
        }
        for &(user, _) in &loaded {
            self.publish_presence(user, Presence::Offline);
        }
        self.sessions.clear();
        // At shutdown only: dropping the producer would discard what is still queued.
        if let Some(bus) = &self.bus
            && let Err(e) = bus.producer.flush(Duration::from_secs(5))
        {
            tracing::warn!(error = %e, "bus events not flushed at shutdown");
        }
    }
}

#[cfg(test)]
mod tests;
