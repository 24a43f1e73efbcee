//! The Bevy side: netcode sockets, sessions, presence, chat, and applying what the async side
//! answered. Nothing here waits for the network or the database.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bevy::prelude::*;
use contracts::matchmaking::v1::UpdateKind;
use renet::{ClientId, ServerEvent};
use shared_net::Shard;
use shared_sim::protocol::{
    Channel, ChatTarget, ErrorCode, FriendEntry, FriendState, LobbyClientMessage,
    LobbyServerMessage, MAX_CHAT_CHARS, Presence, QueueEnd, TokenKind, TokenUserData,
};
use tokio::sync::mpsc::UnboundedSender;

use crate::bridge::{Job, Reply, UserId};
use crate::game::GameRequest;

/// Chat and notifications older than this when they arrive over the bus are not delivered
/// (a server that joins late reads the topics from their start to rebuild presence).
const BUS_STALE_MS: i64 = 30_000;

/// The event bus as the lobby sees it: a producer that never blocks, and the name this
/// server's events carry (its own are skipped when they come back).
pub struct LobbyBus {
    pub producer: events::bus::BusProducer,
    pub me: String,
    pub counters: std::sync::Arc<events::bus::ConsumerCounters>,
}

impl LobbyBus {
    fn emit(&self, event: events::Event) {
        if let Err(e) = self.producer.emit(&event.envelope(&self.me)) {
            metrics::counter!("croft_connection_bus_dropped_total").increment(1);
            tracing::warn!(error = %e, event_type = event.event_type(), "cannot publish to the bus");
        }
    }
}

pub fn presence_name(p: Presence) -> &'static str {
    match p {
        Presence::Online => "online",
        Presence::InQueue => "in_queue",
        Presence::InMatch => "in_match",
        Presence::Offline => "offline",
    }
}

fn presence_from(name: &str) -> Option<Presence> {
    Some(match name {
        "online" => Presence::Online,
        "in_queue" => Presence::InQueue,
        "in_match" => Presence::InMatch,
        "offline" => Presence::Offline,
        _ => return None,
    })
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
    chat_window: (Instant, u32),
    msg_window: (Instant, u32),
    bad_messages: u32,
}

#[derive(Resource)]
pub struct Lobby {
    pub shards: Vec<Shard>,
    pub sessions: HashMap<UserId, Session>,
    pub jobs: UnboundedSender<Job>,
    pub replies: tokio::sync::mpsc::UnboundedReceiver<Reply>,
    /// Revoked session tags and when they were learned (pruned after ten minutes: connect
    /// tokens live one minute, so older revocations cannot be presented again).
    pub revoked: HashMap<[u8; 16], Instant>,
    pub limits: Limits,
    pub status: std::sync::Arc<std::sync::Mutex<contracts::connection::v1::Status>>,
    /// The bus, when Kafka is configured (several connection servers).
    pub bus: Option<LobbyBus>,
    /// Players online on other connection servers, as their events told: presence and the
    /// producer (server) it came from.
    pub remote: HashMap<UserId, (Presence, String)>,
    /// For each player, the local players who count them as an accepted friend.
    followers: HashMap<UserId, HashSet<UserId>>,
    dirty: HashSet<ClientId>,
    /// Clients whose messages arrived this frame: acknowledged at once rather than at the
    /// idle cadence, so their reliable messages are not resent.
    ack_now: HashSet<ClientId>,
    /// Clients that may have messages waiting.
    to_read: HashSet<ClientId>,
    frame: u64,
    last: Instant,
}

impl Lobby {
    pub fn new(
        shards: Vec<Shard>,
        jobs: UnboundedSender<Job>,
        replies: tokio::sync::mpsc::UnboundedReceiver<Reply>,
        limits: Limits,
        status: std::sync::Arc<std::sync::Mutex<contracts::connection::v1::Status>>,
    ) -> Self {
        Self {
            shards,
            sessions: HashMap::new(),
            jobs,
            replies,
            revoked: HashMap::new(),
            limits,
            status,
            bus: None,
            remote: HashMap::new(),
            followers: HashMap::new(),
            dirty: HashSet::new(),
            ack_now: HashSet::new(),
            to_read: HashSet::new(),
            frame: 0,
            last: Instant::now(),
        }
    }

    fn job(&self, job: Job) {
        if self.jobs.send(job).is_err() {
            tracing::error!("the async side is gone");
        }
    }

    fn send_on(&mut self, shard: usize, client: ClientId, msg: &LobbyServerMessage) {
        self.shards[shard]
            .server
            .send_message(client, Channel::Reliable, msg.encode());
        self.dirty.insert(client);
        metrics::counter!("croft_connection_messages_sent_total").increment(1);
    }

    /// Sends to a connected, loaded player.
    pub fn send(&mut self, user: UserId, msg: &LobbyServerMessage) -> bool {
        self.send_encoded(user, renet::Bytes::from(msg.encode()))
    }

    /// As [`Self::send`] with the message already encoded (fan-out encodes once).
    fn send_encoded(&mut self, user: UserId, bytes: renet::Bytes) -> bool {
        match self.sessions.get(&user) {
            Some(s) if s.username.is_some() => {
                let shard = s.shard;
                self.shards[shard]
                    .server
                    .send_message(user, Channel::Reliable, bytes);
                self.dirty.insert(user);
                metrics::counter!("croft_connection_messages_sent_total").increment(1);
                true
            }
            _ => false,
        }
    }

    /// Sends one message to every loaded player, encoded once.
    fn broadcast(&mut self, msg: &LobbyServerMessage) -> usize {
        let bytes = renet::Bytes::from(msg.encode());
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
        let s = &mut self.shards[shard];
        s.transport.flush_client(&mut s.server, client);
        s.server.disconnect(client);
    }

    /// Drops a session (already disconnected or being disconnected) and tells its friends.
    fn end_session(&mut self, user: UserId) {
        let Some(s) = self.sessions.remove(&user) else {
            return;
        };
        // Also when a FindMatch is still on its way: matchmaking calls run in order, so the
        // cancel lands after it. A match already being set up goes ahead (the no-show rule of
        // the instance server ends it).
        if s.presence != Presence::InMatch && s.username.is_some() {
            self.job(Job::CancelMatch { user, quiet: true });
        }
        if s.username.is_some() {
            self.tell_friends(user, &s.friends, Presence::Offline);
            self.publish_presence(user, Presence::Offline);
        }
        self.unfollow(user, &s.friends);
    }

    /// Replaces a session's accepted friends, keeping `followers` in step.
    fn set_friends(&mut self, user: UserId, friends: HashSet<UserId>) {
        let Some(s) = self.sessions.get_mut(&user) else {
            return;
        };
        let old = std::mem::replace(&mut s.friends, friends.clone());
        self.unfollow(user, &old);
        for f in friends {
            self.followers.entry(f).or_default().insert(user);
        }
    }

    fn unfollow(&mut self, user: UserId, friends: &HashSet<UserId>) {
        for f in friends {
            if let Some(set) = self.followers.get_mut(f) {
                set.remove(&user);
                if set.is_empty() {
                    self.followers.remove(f);
                }
            }
        }
    }

    fn publish_presence(&self, user: UserId, presence: Presence) {
        if let Some(bus) = &self.bus {
            bus.emit(events::Event::PresenceChanged {
                user_id: user,
                presence: presence_name(presence).to_string(),
            });
        }
    }

    fn tell_friends(&mut self, user: UserId, friends: &HashSet<UserId>, presence: Presence) {
        for f in friends.clone() {
            self.send(
                f,
                &LobbyServerMessage::FriendPresence {
                    user_id: user,
                    presence,
                },
            );
        }
    }

    fn set_presence(&mut self, user: UserId, presence: Presence) {
        let Some(s) = self.sessions.get_mut(&user) else {
            return;
        };
        if s.presence == presence {
            return;
        }
        s.presence = presence;
        let friends = s.friends.clone();
        if s.username.is_some() {
            self.tell_friends(user, &friends, presence);
            self.publish_presence(user, presence);
        }
    }

    /// Presence here, else on another connection server (from the bus), else offline.
    fn presence_of(&self, user: UserId) -> Presence {
        match self.sessions.get(&user) {
            Some(s) if s.username.is_some() => s.presence,
            _ => self
                .remote
                .get(&user)
                .map(|(p, _)| *p)
                .unwrap_or(Presence::Offline),
        }
    }

    /// Presence of a player on this server (not what the bus says).
    fn local_presence(&self, user: UserId) -> Presence {
        match self.sessions.get(&user) {
            Some(s) if s.username.is_some() => s.presence,
            _ => Presence::Offline,
        }
    }

    fn friend_entries(&self, friends: &[store::Friend]) -> Vec<FriendEntry> {
        friends
            .iter()
            .map(|f| {
                let state = match f.state {
                    store::FriendState::Accepted => FriendState::Accepted,
                    store::FriendState::Incoming => FriendState::Incoming,
                    store::FriendState::Outgoing => FriendState::Outgoing,
                };
                let presence = if state == FriendState::Accepted {
                    self.presence_of(f.user_id as u64)
                } else {
                    Presence::Offline
                };
                FriendEntry {
                    user_id: f.user_id as u64,
                    username: f.username.clone(),
                    state,
                    presence,
                }
            })
            .collect()
    }

    fn accepted(friends: &[store::Friend]) -> HashSet<UserId> {
        friends
            .iter()
            .filter(|f| f.state == store::FriendState::Accepted)
            .map(|f| f.user_id as u64)
            .collect()
    }
}

/// Every frame: read the sockets, admit and drop clients, apply replies, read messages, flush.
pub fn lobby_frame(mut lobby: ResMut<Lobby>) {
    let lobby = &mut *lobby;
    let now = Instant::now();
    let dt = now - lobby.last;
    lobby.last = now;
    lobby.frame += 1;
    let mut events = Vec::new();
    for (i, shard) in lobby.shards.iter_mut().enumerate() {
        if let Err(e) = shard.transport.receive(dt, &mut shard.server) {
            metrics::counter!("croft_connection_transport_errors_total").increment(1);
            tracing::warn!(shard = i, error = %e, "netcode transport error");
        }
        shard.server.update(dt);
        while let Some(event) = shard.server.get_event() {
            events.push((i, event));
        }
        lobby.to_read.extend(shard.transport.take_active());
    }
    for (shard, event) in events {
        match event {
            ServerEvent::ClientConnected { client_id } => admit(lobby, shard, client_id),
            ServerEvent::ClientDisconnected { client_id, reason } => {
                if lobby
                    .sessions
                    .get(&client_id)
                    .is_some_and(|s| s.shard == shard)
                {
                    tracing::info!(user = client_id, %reason, "player disconnected");
                    lobby.end_session(client_id);
                }
            }
        }
    }
    while let Ok(reply) = lobby.replies.try_recv() {
        apply_reply(lobby, reply);
    }
    read_messages(lobby);
    let (idle, frame) = (lobby.limits.idle_flush_frames.max(1), lobby.frame);
    let dirty = std::mem::take(&mut lobby.dirty);
    for user in std::mem::take(&mut lobby.ack_now) {
        if let Some(shard) = lobby.sessions.get(&user).map(|s| s.shard) {
            let s = &mut lobby.shards[shard];
            s.transport.flush_client(&mut s.server, user);
        }
    }
    for shard in &mut lobby.shards {
        shard
            .transport
            .flush(&mut shard.server, frame, idle, |c| dirty.contains(&c));
        // After the flush, in the same phase: a client that just got its periodic ack packet
        // needs no netcode keep-alive on top of it.
        shard.transport.maintain(&mut shard.server, frame);
    }
    if lobby.frame.is_multiple_of(50) {
        let connected: usize = lobby
            .shards
            .iter()
            .map(|s| s.server.connected_clients())
            .sum();
        metrics::gauge!("croft_connection_clients_connected").set(connected as f64);
        if let Ok(mut s) = lobby.status.lock() {
            *s = contracts::connection::v1::Status {
                connected,
                sessions: lobby.sessions.len(),
                sockets: lobby
                    .shards
                    .iter()
                    .map(|s| s.public_addr.to_string())
                    .collect(),
                remote_players: lobby.remote.len(),
                bus: lobby
                    .bus
                    .as_ref()
                    .map(|b| b.counters.snapshot())
                    .unwrap_or_default(),
            };
        }
    }
}

fn admit(lobby: &mut Lobby, shard: usize, client: ClientId) {
    let data = lobby.shards[shard]
        .transport
        .user_data(client)
        .map(|d| TokenUserData::from_bytes(&d));
    let data = match data {
        Some(Ok(d)) if d.kind == TokenKind::Connection && d.user_id == client => d,
        Some(Ok(_)) => {
            return lobby.refuse(
                shard,
                client,
                ErrorCode::BadToken,
                "this token is not for a connection server".into(),
            );
        }
        Some(Err(e)) => return lobby.refuse(shard, client, ErrorCode::BadToken, e.to_string()),
        None => {
            return lobby.refuse(shard, client, ErrorCode::BadToken, "no user data".into());
        }
    };
    if lobby.revoked.contains_key(&data.session_id) {
        return lobby.refuse(
            shard,
            client,
            ErrorCode::SessionRevoked,
            "this session has ended; log in again".into(),
        );
    }
    // The same account on another socket: the newer connection wins.
    if let Some(old) = lobby.sessions.get(&client).map(|s| s.shard) {
        lobby.refuse(
            old,
            client,
            ErrorCode::Replaced,
            "logged in from another connection".into(),
        );
        lobby.end_session(client);
    }
    let now = Instant::now();
    lobby.sessions.insert(
        client,
        Session {
            shard,
            tag: data.session_id,
            username: None,
            presence: Presence::Online,
            friends: HashSet::new(),
            match_id: None,
            chat_window: (now, 0),
            msg_window: (now, 0),
            bad_messages: 0,
        },
    );
    metrics::counter!("croft_connection_logins_total").increment(1);
    lobby.job(Job::Load {
        user: client,
        tag: data.session_id,
    });
}

fn apply_reply(lobby: &mut Lobby, reply: Reply) {
    match reply {
        Reply::Loaded {
            user,
            username,
            friends,
        } => {
            let entries = lobby.friend_entries(&friends);
            let accepted = Lobby::accepted(&friends);
            let Some(s) = lobby.sessions.get_mut(&user) else {
                return;
            };
            s.username = Some(username.clone());
            lobby.set_friends(user, accepted.clone());
            lobby.to_read.insert(user);
            tracing::info!(user, %username, friends = accepted.len(), "player online");
            lobby.send(
                user,
                &LobbyServerMessage::Welcome {
                    user_id: user,
                    username,
                },
            );
            lobby.send(user, &LobbyServerMessage::Friends(entries));
            lobby.tell_friends(user, &accepted, Presence::Online);
            lobby.publish_presence(user, Presence::Online);
        }
        Reply::LoadFailed { user, tag, message } => {
            // Only the session it was loading for (not a newer one of the same account).
            let current = lobby.sessions.get(&user).filter(|s| s.tag == tag);
            if let Some(shard) = current.map(|s| s.shard) {
                lobby.sessions.remove(&user);
                lobby.refuse(shard, user, ErrorCode::Unavailable, message);
            }
        }
        Reply::Friends { user, friends } => {
            let entries = lobby.friend_entries(&friends);
            let accepted = Lobby::accepted(&friends);
            if lobby.sessions.contains_key(&user) {
                lobby.set_friends(user, accepted);
                lobby.send(user, &LobbyServerMessage::Friends(entries));
            }
        }
        Reply::FriendsChanged { users } => {
            for u in users {
                if lobby.sessions.contains_key(&u) {
                    lobby.job(Job::Friends { user: u });
                }
            }
        }
        Reply::FriendRequestReceived {
            to,
            from,
            from_name,
        } => {
            lobby.send(
                to,
                &LobbyServerMessage::FriendRequestReceived {
                    user_id: from,
                    username: from_name,
                },
            );
        }
        Reply::FriendAccepted { users: [a, b] } => {
            for (me, them) in [(a, b), (b, a)] {
                if let Some(mut friends) = lobby.sessions.get(&me).map(|s| s.friends.clone()) {
                    friends.insert(them);
                    lobby.set_friends(me, friends);
                }
                lobby.send(
                    me,
                    &LobbyServerMessage::FriendUpdate {
                        user_id: them,
                        accepted: true,
                    },
                );
                let presence = lobby.presence_of(them);
                lobby.send(
                    me,
                    &LobbyServerMessage::FriendPresence {
                        user_id: them,
                        presence,
                    },
                );
            }
        }
        Reply::FriendRemoved { users: [a, b] } => {
            for (me, them) in [(a, b), (b, a)] {
                if let Some(mut friends) = lobby.sessions.get(&me).map(|s| s.friends.clone()) {
                    friends.remove(&them);
                    lobby.set_friends(me, friends);
                }
                lobby.send(
                    me,
                    &LobbyServerMessage::FriendUpdate {
                        user_id: them,
                        accepted: false,
                    },
                );
            }
        }
        Reply::Queued { user } => {
            if lobby.presence_of(user) == Presence::Online {
                lobby.set_presence(user, Presence::InQueue);
            }
            lobby.send(user, &LobbyServerMessage::Queued);
        }
        Reply::Cancelled { user } => {
            if lobby.presence_of(user) == Presence::InQueue {
                lobby.set_presence(user, Presence::Online);
            }
            lobby.send(
                user,
                &LobbyServerMessage::QueueLeft {
                    reason: QueueEnd::Cancelled,
                },
            );
        }
        Reply::Matchmaking(update) => apply_update(lobby, update),
        Reply::Failed {
            user,
            code,
            message,
        } => lobby.error(user, code, message),
        Reply::Send { user, message } => {
            if lobby.sessions.contains_key(&user) {
                lobby.send(user, &message);
            }
        }
        Reply::Revoked(tags) => {
            let hit: Vec<(UserId, usize)> = lobby
                .sessions
                .iter()
                .filter(|(_, s)| tags.contains(&s.tag))
                .map(|(u, s)| (*u, s.shard))
                .collect();
            let now = Instant::now();
            lobby
                .revoked
                .retain(|_, at| now.duration_since(*at) < Duration::from_secs(600));
            lobby.revoked.extend(tags.into_iter().map(|t| (t, now)));
            for (user, shard) in hit {
                lobby.refuse(
                    shard,
                    user,
                    ErrorCode::SessionRevoked,
                    "this session has ended; log in again".into(),
                );
                lobby.end_session(user);
            }
        }
        Reply::Broadcast(text) => {
            metrics::counter!("croft_connection_notifications_total").increment(1);
            if let Some(bus) = &lobby.bus {
                bus.emit(events::Event::Notification { text: text.clone() });
            }
            let recipients = lobby.broadcast(&LobbyServerMessage::Notification { text });
            tracing::info!(recipients, "broadcast a notification");
        }
        Reply::Bus(env) => apply_bus_event(lobby, env),
    }
}

/// An event from another server (or the outbox) arrived over the bus.
fn apply_bus_event(lobby: &mut Lobby, env: events::Envelope) {
    let age_ms = store::now_ms() - env.occurred_at_ms;
    match env.event {
        events::Event::PresenceChanged { user_id, presence } => {
            let Some(presence) = presence_from(&presence) else {
                tracing::warn!(%presence, "unknown presence on the bus");
                return;
            };
            let before = lobby.presence_of(user_id);
            if presence == Presence::Offline {
                // Only the server that reported the player online may take them offline (a
                // player who moved servers goes offline on the old one after the new one
                // said online).
                if lobby
                    .remote
                    .get(&user_id)
                    .is_some_and(|(_, from)| *from == env.producer)
                {
                    lobby.remote.remove(&user_id);
                }
            } else {
                lobby.remote.insert(user_id, (presence, env.producer));
            }
            let after = lobby.presence_of(user_id);
            // A player on this server is reported by this server.
            if after != before && lobby.local_presence(user_id) == Presence::Offline {
                let followers: Vec<UserId> = lobby
                    .followers
                    .get(&user_id)
                    .map(|f| f.iter().copied().collect())
                    .unwrap_or_default();
                let msg = LobbyServerMessage::FriendPresence {
                    user_id,
                    presence: after,
                };
                let bytes = renet::Bytes::from(msg.encode());
                for f in followers {
                    lobby.send_encoded(f, bytes.clone());
                }
            }
        }
        events::Event::ChatMessage {
            from_user_id,
            from_name,
            to_user_id,
            text,
        } => {
            if age_ms > BUS_STALE_MS {
                metrics::counter!("croft_connection_bus_stale_total").increment(1);
                return;
            }
            let msg = LobbyServerMessage::Chat {
                from: from_user_id,
                from_name,
                to: to_user_id.map_or(ChatTarget::Common, ChatTarget::User),
                text,
            };
            match to_user_id {
                Some(to) => {
                    lobby.send(to, &msg);
                }
                None => {
                    lobby.broadcast(&msg);
                }
            }
        }
        events::Event::Notification { text } => {
            if age_ms > BUS_STALE_MS {
                metrics::counter!("croft_connection_bus_stale_total").increment(1);
                return;
            }
            metrics::counter!("croft_connection_notifications_total").increment(1);
            let recipients = lobby.broadcast(&LobbyServerMessage::Notification { text });
            tracing::info!(recipients, from = %env.producer, "broadcast a notification from the bus");
        }
        _ => {}
    }
}

fn apply_update(lobby: &mut Lobby, update: contracts::matchmaking::v1::Update) {
    let user = update.user_id;
    match update.kind {
        UpdateKind::QueueLeft { reason } => {
            let reason = match reason.as_str() {
                "timed_out" => QueueEnd::TimedOut,
                "no_capacity" => QueueEnd::NoCapacity,
                _ => QueueEnd::Cancelled,
            };
            if lobby.presence_of(user) == Presence::InQueue {
                lobby.set_presence(user, Presence::Online);
            }
            lobby.send(user, &LobbyServerMessage::QueueLeft { reason });
        }
        UpdateKind::MatchFound {
            match_id,
            server_addr,
            connect_token,
            ws_url,
        } => {
            let Some(bytes) = crate::bridge::token_bytes(&connect_token) else {
                tracing::error!(user, "matchmaking sent an undecodable token");
                return;
            };
            if let Some(s) = lobby.sessions.get_mut(&user) {
                s.match_id = Some(match_id);
            }
            lobby.set_presence(user, Presence::InMatch);
            lobby.send(
                user,
                &LobbyServerMessage::MatchFound {
                    match_id,
                    server_addr,
                    connect_token: bytes,
                    ws_url,
                },
            );
        }
        UpdateKind::MatchEnded { match_id, aborted } => {
            // An older match's end must not free a player who is in a newer one.
            let current = lobby
                .sessions
                .get(&user)
                .is_some_and(|s| s.match_id.is_none_or(|m| m == match_id));
            if current {
                if let Some(s) = lobby.sessions.get_mut(&user) {
                    s.match_id = None;
                }
                if lobby.presence_of(user) == Presence::InMatch {
                    lobby.set_presence(user, Presence::Online);
                }
            }
            lobby.send(user, &LobbyServerMessage::MatchEnded { match_id, aborted });
        }
    }
}

/// A sliding-ish window: `limit` events per `span`.
fn allow(window: &mut (Instant, u32), limit: u32, span: Duration, now: Instant) -> bool {
    if now.duration_since(window.0) >= span {
        *window = (now, 0);
    }
    window.1 += 1;
    window.1 <= limit
}

/// Reads the messages of the clients that sent something (and of players just loaded, whose
/// early messages waited): with thousands of idle clients, only these can have any.
fn read_messages(lobby: &mut Lobby) {
    let users: Vec<(UserId, usize)> = std::mem::take(&mut lobby.to_read)
        .into_iter()
        .filter_map(|u| {
            let s = lobby.sessions.get(&u)?;
            s.username.is_some().then_some((u, s.shard))
        })
        .collect();
    let now = Instant::now();
    for (user, shard) in users {
        loop {
            let Some(bytes) = lobby.shards[shard]
                .server
                .receive_message(user, Channel::Reliable)
                .or_else(|| {
                    lobby.shards[shard]
                        .server
                        .receive_message(user, Channel::Unreliable)
                })
            else {
                break;
            };
            metrics::counter!("croft_connection_messages_received_total").increment(1);
            let limits = lobby.limits;
            let Some(s) = lobby.sessions.get_mut(&user) else {
                break;
            };
            let decoded = if allow(
                &mut s.msg_window,
                limits.max_messages_per_second,
                Duration::from_secs(1),
                now,
            ) {
                LobbyClientMessage::decode(&bytes).map_err(|e| (e.code(), e.to_string()))
            } else {
                Err((
                    ErrorCode::RateLimited,
                    format!(
                        "more than {} messages in a second",
                        limits.max_messages_per_second
                    ),
                ))
            };
            lobby.ack_now.insert(user);
            match decoded {
                Ok(msg) => handle(lobby, user, msg, now),
                Err((code, message)) => {
                    metrics::counter!("croft_connection_bad_messages_total").increment(1);
                    s.bad_messages += 1;
                    if s.bad_messages > limits.bad_message_budget {
                        lobby.refuse(
                            shard,
                            user,
                            ErrorCode::TooManyErrors,
                            "too many bad messages".into(),
                        );
                        lobby.end_session(user);
                        break;
                    }
                    lobby.error(user, code, message);
                }
            }
        }
    }
}

fn handle(lobby: &mut Lobby, user: UserId, msg: LobbyClientMessage, now: Instant) {
    match msg {
        LobbyClientMessage::FindMatch => match lobby.presence_of(user) {
            Presence::InMatch => lobby.error(user, ErrorCode::NotAllowed, "already in a match"),
            _ => lobby.job(Job::FindMatch { user }),
        },
        LobbyClientMessage::CancelMatch => lobby.job(Job::CancelMatch { user, quiet: false }),
        LobbyClientMessage::RejoinMatch => lobby.job(Job::Rejoin { user }),
        LobbyClientMessage::Chat { to, text } => chat(lobby, user, to, text, now),
        LobbyClientMessage::FriendRequest { username } => {
            if username.trim().is_empty() || username.len() > 64 {
                lobby.error(user, ErrorCode::UnknownUser, "no such user");
            } else {
                lobby.job(Job::FriendRequest { user, username });
            }
        }
        LobbyClientMessage::FriendAccept { user_id } => lobby.job(Job::FriendAccept {
            user,
            other: user_id,
        }),
        LobbyClientMessage::FriendDecline { user_id } => lobby.job(Job::FriendDecline {
            user,
            other: user_id,
        }),
        LobbyClientMessage::FriendRemove { user_id } => lobby.job(Job::FriendRemove {
            user,
            other: user_id,
        }),
        LobbyClientMessage::FriendList => lobby.job(Job::Friends { user }),
        LobbyClientMessage::Inventory => game(lobby, user, GameRequest::Inventory),
        LobbyClientMessage::EnterFarm => game(lobby, user, GameRequest::EnterFarm),
        LobbyClientMessage::EnterHub => game(lobby, user, GameRequest::EnterHub),
        LobbyClientMessage::Craft { recipe } => game(lobby, user, GameRequest::Craft(recipe)),
        LobbyClientMessage::Decks => game(lobby, user, GameRequest::Decks),
        LobbyClientMessage::SaveDeck { slot, name, cards } => {
            game(lobby, user, GameRequest::SaveDeck { slot, name, cards })
        }
        LobbyClientMessage::ChooseDeck { slot } => game(lobby, user, GameRequest::ChooseDeck(slot)),
    }
}

fn game(lobby: &mut Lobby, user: UserId, request: GameRequest) {
    lobby.job(Job::Game { user, request });
}

fn chat(lobby: &mut Lobby, user: UserId, to: ChatTarget, text: String, now: Instant) {
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_CHAT_CHARS || text.chars().any(|c| c.is_control() && c != '\n') {
        return lobby.error(
            user,
            ErrorCode::BadChat,
            format!("a chat message has 1 to {MAX_CHAT_CHARS} characters and no control codes"),
        );
    }
    let limit = lobby.limits.chat_per_10s;
    let Some(s) = lobby.sessions.get_mut(&user) else {
        return;
    };
    if !allow(&mut s.chat_window, limit, Duration::from_secs(10), now) {
        metrics::counter!("croft_connection_chat_rate_limited_total").increment(1);
        return lobby.error(
            user,
            ErrorCode::RateLimited,
            format!("at most {limit} chat messages per 10 seconds"),
        );
    }
    let from_name = s.username.clone().unwrap_or_default();
    let msg = LobbyServerMessage::Chat {
        from: user,
        from_name,
        to: to.clone(),
        text,
    };
    let LobbyServerMessage::Chat {
        from_name, text, ..
    } = &msg
    else {
        return;
    };
    let crossing = events::Event::ChatMessage {
        from_user_id: user,
        from_name: from_name.clone(),
        to_user_id: match to {
            ChatTarget::User(t) => Some(t),
            ChatTarget::Common => None,
        },
        text: text.clone(),
    };
    match to {
        ChatTarget::User(target) => {
            let sent = target != user
                && (lobby.send(target, &msg)
                    || (lobby.remote.contains_key(&target) && lobby.bus.is_some()));
            if !sent {
                lobby.error(
                    user,
                    ErrorCode::UnknownUser,
                    format!("user {target} is not online"),
                );
                return;
            }
            metrics::counter!("croft_connection_chat_total", "channel" => "direct").increment(1);
            // Online on another connection server: the bus carries it there.
            if lobby.local_presence(target) == Presence::Offline
                && let Some(bus) = &lobby.bus
            {
                bus.emit(crossing);
            }
        }
        ChatTarget::Common => {
            metrics::counter!("croft_connection_chat_total", "channel" => "common").increment(1);
            lobby.broadcast(&msg);
            if let Some(bus) = &lobby.bus {
                bus.emit(crossing);
            }
        }
    }
}

/// Disconnects everyone (shutdown), withdrawing their queue tickets.
pub fn disconnect_all(lobby: &mut Lobby) {
    let queued: Vec<UserId> = lobby
        .sessions
        .iter()
        .filter(|(_, s)| s.presence != Presence::InMatch && s.username.is_some())
        .map(|(u, _)| *u)
        .collect();
    for user in queued {
        lobby.job(Job::CancelMatch { user, quiet: true });
    }
    // The other connection servers hear that these players are gone.
    let loaded: Vec<UserId> = lobby
        .sessions
        .iter()
        .filter(|(_, s)| s.username.is_some())
        .map(|(u, _)| *u)
        .collect();
    for user in loaded {
        lobby.publish_presence(user, Presence::Offline);
    }
    for shard in &mut lobby.shards {
        shard.transport.disconnect_all(&mut shard.server);
    }
    lobby.sessions.clear();
    // Wait (at shutdown only) until the bus has them: dropping the producer would discard
    // what is still queued.
    if let Some(bus) = &lobby.bus
        && let Err(e) = bus.producer.flush(Duration::from_secs(5))
    {
        tracing::warn!(error = %e, "bus events not flushed at shutdown");
    }
}
