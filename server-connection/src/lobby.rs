//! The Bevy side: netcode sockets, sessions, presence, chat, and applying what the async side
//! answered. Nothing here waits for the network or the database.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use base64::Engine;
use bevy::prelude::*;
use matchmaking::service::UpdateKind;
use renet::{ClientId, ServerEvent};
use shared_net::Shard;
use shared_sim::protocol::{
    Channel, ChatTarget, ErrorCode, FriendEntry, FriendState, LobbyClientMessage,
    LobbyServerMessage, MAX_CHAT_CHARS, Presence, QueueEnd, TokenKind, TokenUserData,
};
use tokio::sync::mpsc::UnboundedSender;

use crate::bridge::{Job, Reply, UserId};

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
    pub status: std::sync::Arc<std::sync::Mutex<serde_json::Value>>,
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
        status: std::sync::Arc<std::sync::Mutex<serde_json::Value>>,
    ) -> Self {
        Self {
            shards,
            sessions: HashMap::new(),
            jobs,
            replies,
            revoked: HashMap::new(),
            limits,
            status,
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
        }
    }

    fn presence_of(&self, user: UserId) -> Presence {
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
            *s = serde_json::json!({
                "connected": connected,
                "sessions": lobby.sessions.len(),
                "sockets": lobby.shards.iter().map(|s| s.public_addr.to_string()).collect::<Vec<_>>(),
            });
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
            s.friends = accepted.clone();
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
            if let Some(s) = lobby.sessions.get_mut(&user) {
                s.friends = accepted;
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
                if let Some(s) = lobby.sessions.get_mut(&me) {
                    s.friends.insert(them);
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
                if let Some(s) = lobby.sessions.get_mut(&me) {
                    s.friends.remove(&them);
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
            let recipients = lobby.broadcast(&LobbyServerMessage::Notification { text });
            tracing::info!(recipients, "broadcast a notification");
        }
    }
}

fn apply_update(lobby: &mut Lobby, update: matchmaking::service::Update) {
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
        } => {
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&connect_token) else {
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
    }
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
    match to {
        ChatTarget::User(target) => {
            if target == user || !lobby.send(target, &msg) {
                lobby.error(
                    user,
                    ErrorCode::UnknownUser,
                    format!("user {target} is not online"),
                );
            } else {
                metrics::counter!("croft_connection_chat_total", "channel" => "direct")
                    .increment(1);
            }
        }
        ChatTarget::Common => {
            metrics::counter!("croft_connection_chat_total", "channel" => "common").increment(1);
            lobby.broadcast(&msg);
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
    for shard in &mut lobby.shards {
        shard.transport.disconnect_all(&mut shard.server);
    }
    lobby.sessions.clear();
}
