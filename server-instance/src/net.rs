//! Secure netcode sockets and player sessions: accepts connect tokens, binds each client to its
//! place through [`Places`], checks every message, and sends what the places produced.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bevy::prelude::*;
use shared_net::{ClientId, ServerEvent};
use shared_sim::plugin::{MatchClock, MatchId, UserId};
use shared_sim::protocol::{Channel, ClientMessage, ErrorCode, ServerMessage, TokenUserData};

use crate::places::{Place, Places, Refusal};

/// Network systems, around the match simulation.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetSystems {
    /// PreUpdate: drain the sockets into the link servers, every frame.
    Receive,
    /// FixedUpdate, before the places: admit clients, decode messages into the places' inboxes.
    Deliver,
    /// PostUpdate: write sockets (after the outboxes were routed).
    Send,
}

pub use shared_net::{BindError as NetError, Shard};

/// How much a client may get away with, and how often idle clients are flushed.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub bad_message_budget: u32,
    pub max_messages_per_second: u32,
    /// Ticks between flushes of a client with nothing new (acks, keep-alive).
    pub idle_flush_ticks: u64,
}

/// The place a connected client holds.
#[derive(Debug, Clone, Copy)]
pub struct PlayerSession {
    pub shard: usize,
    pub place: Place,
    /// The tag of the player's login session (zeros: none), from the connect token.
    pub tag: [u8; 16],
    pub bad_messages: u32,
    /// The second (in simulation time) `messages` counts in.
    pub window: u64,
    pub messages: u32,
}

/// The instance's netcode sockets and player sessions.
///
/// Every message is decoded, rate-limited and verified before the place gets it.
///
/// One netcode server holds at most 1024 clients, so the instance opens several sockets
/// ("shards") and keeps their link servers ([`shared_net::LinkServer`], renet's wire protocol)
/// side by side.
#[derive(Resource)]
pub struct NetServer {
    pub shards: Vec<Shard>,
    /// Connected and admitted clients; the client id is the user id.
    pub sessions: HashMap<ClientId, PlayerSession>,
    pub bad_message_budget: u32,
    /// Messages a client may send per second; more count as bad messages and are dropped.
    pub max_messages_per_second: u32,
    /// Clients with messages queued since the last flush.
    dirty: HashSet<ClientId>,
    /// Players of ended matches, disconnected once their last messages had time to arrive, so
    /// that a client that never says goodbye does not hold a netcode slot until it times out.
    closing: Vec<(Instant, MatchId, UserId)>,
    /// Ticks between flushes of a client with nothing new.
    idle_flush_ticks: u64,
    last_update: Instant,
    last_tick_update: Instant,
    /// Revoked session tags and when they were learned: refused at admission, and dropped at
    /// the next tick if connected (pruned after ten minutes, past any token's lifetime).
    revoked: HashMap<[u8; 16], Duration>,
    /// Tags revoked since the last tick, whose players are dropped then.
    revoked_new: Vec<[u8; 16]>,
    /// Counters bumped per message, registered once: `metrics::counter!` looks its key up in
    /// the registry on every call (4-5% of the server's CPU at 1,000 matches, issue 19).
    messages_sent: metrics::Counter,
    messages_received: metrics::Counter,
}

/// How long a revoked tag is remembered: connect tokens live a minute, so no older one can be
/// presented again.
const REVOKED_KEPT: Duration = Duration::from_secs(600);

impl NetServer {
    /// Binds `shards` sockets from `first` (consecutive ports, or ephemeral ports for port 0).
    pub fn bind(
        first: SocketAddr,
        public_ip: Option<std::net::IpAddr>,
        public_port: Option<u16>,
        shards: usize,
        private_key: [u8; 32],
        limits: SessionLimits,
    ) -> Result<Self, NetError> {
        Ok(Self {
            shards: shared_net::bind_shards(first, public_ip, public_port, shards, private_key)?,
            sessions: HashMap::new(),
            bad_message_budget: limits.bad_message_budget,
            max_messages_per_second: limits.max_messages_per_second,
            dirty: HashSet::new(),
            closing: Vec::new(),
            idle_flush_ticks: limits.idle_flush_ticks.max(1),
            last_update: Instant::now(),
            last_tick_update: Instant::now(),
            revoked: HashMap::new(),
            revoked_new: Vec::new(),
            messages_sent: metrics::counter!("croft_instance_messages_sent_total"),
            messages_received: metrics::counter!("croft_instance_messages_received_total"),
        })
    }

    /// The auth service revoked `tags` (learned at `now`): their players are dropped at the
    /// next tick, and the tags refused from then on.
    pub fn revoke(&mut self, tags: Vec<[u8; 16]>, now: Duration) {
        self.revoked
            .retain(|_, at| now.saturating_sub(*at) < REVOKED_KEPT);
        for t in tags {
            if t != [0; 16] {
                self.revoked.insert(t, now);
                self.revoked_new.push(t);
            }
        }
    }

    /// Disconnects `user` after `delay` if they are still bound to `match_id` then.
    pub fn close_later(&mut self, match_id: MatchId, user: UserId, delay: Duration) {
        self.closing.push((Instant::now() + delay, match_id, user));
    }

    fn close_due(&mut self, now: Instant) {
        let due: Vec<(Instant, MatchId, UserId)> = self
            .closing
            .extract_if(.., |(at, _, _)| *at <= now)
            .collect();
        for (_, match_id, user) in due {
            let Some(session) = self.sessions.get(&user).copied() else {
                continue;
            };
            if session.place.match_id() == Some(match_id) {
                self.sessions.remove(&user);
                self.shards[session.shard].server.disconnect(user);
            }
        }
    }

    /// The UDP sockets' addresses (the ones connect tokens name).
    pub fn public_addrs(&self) -> Vec<SocketAddr> {
        self.shards
            .iter()
            .filter(|s| !s.is_websocket())
            .map(|s| s.public_addr)
            .collect()
    }

    /// Takes WebSocket clients too, through `shard` (after the UDP shards).
    pub fn add_websocket(&mut self, shard: Shard) {
        self.shards.push(shard);
    }

    pub fn connected(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.server.connected_clients())
            .sum()
    }

    /// Sends to `user` only if their connection is bound to `match_id`.
    pub fn send_in_match(
        &mut self,
        match_id: MatchId,
        user: UserId,
        message: &ServerMessage,
    ) -> bool {
        self.send_if(user, |p| p.match_id() == Some(match_id), message)
    }

    /// Sends to `user` only if their connection's place passes `fits`.
    pub fn send_if(
        &mut self,
        user: UserId,
        fits: impl Fn(&Place) -> bool,
        message: &ServerMessage,
    ) -> bool {
        match self.sessions.get(&user) {
            Some(s) if fits(&s.place) => self.send_bytes(user, message.encode().into()),
            _ => false,
        }
    }

    /// Sends encoded bytes (shared by every receiver of a broadcast) to a connected `user`.
    pub fn send_bytes(&mut self, user: UserId, bytes: shared_net::Bytes) -> bool {
        let Some(session) = self.sessions.get(&user) else {
            return false;
        };
        let shard = &mut self.shards[session.shard];
        shard.server.send_message(user, Channel::Reliable, bytes);
        self.dirty.insert(user);
        self.messages_sent.increment(1);
        true
    }

    fn send(&mut self, user: UserId, message: &ServerMessage) -> bool {
        self.send_bytes(user, message.encode().into())
    }

    fn send_on(&mut self, shard: usize, client: ClientId, message: &ServerMessage) {
        self.shards[shard]
            .server
            .send_message(client, Channel::Reliable, message.encode());
        self.dirty.insert(client);
        self.messages_sent.increment(1);
    }

    /// Sends `user` an error and disconnects them (their session ends here; the caller has
    /// already dealt with their place).
    pub fn kick(&mut self, user: UserId, refusal: Refusal) {
        if let Some(session) = self.sessions.remove(&user) {
            self.refuse(session.shard, user, refusal);
        }
    }

    /// Sends an error, then disconnects the client once the message is flushed. Session
    /// bookkeeping is the caller's: a client id may hold a session on another shard.
    fn refuse(&mut self, shard: usize, client: ClientId, refusal: Refusal) {
        let Refusal {
            code,
            message,
            reason,
        } = refusal;
        metrics::counter!("croft_instance_connections_refused_total", "reason" => reason)
            .increment(1);
        tracing::info!(client, reason, "refusing client");
        self.send_on(shard, client, &ServerMessage::Error { code, message });
        // Flush the error before the disconnect packet goes out.
        let s = &mut self.shards[shard];
        s.transport.flush_client(&mut s.server, client);
        s.server.disconnect(client);
    }
}

/// Time step since the last receive.
fn elapsed(net: &mut NetServer) -> Duration {
    let now = Instant::now();
    let dt = now - net.last_update;
    net.last_update = now;
    dt
}

/// Every frame: drain the sockets, so the kernel's receive buffer never overflows.
pub fn drain_sockets(mut net: ResMut<NetServer>) {
    let dt = elapsed(&mut net);
    for (i, shard) in net.shards.iter_mut().enumerate() {
        if let Err(e) = shard.transport.receive(dt, &mut shard.server) {
            metrics::counter!("croft_instance_transport_errors_total").increment(1);
            tracing::warn!(shard = i, error = %e, "netcode transport error");
        }
    }
}

/// Once per simulation tick, right before the places run: the links' clock and netcode upkeep,
/// admissions and departures, and decoding messages into the places' inboxes.
pub fn deliver_messages(mut net: ResMut<NetServer>, clock: Res<MatchClock>, mut places: Places) {
    let now = Instant::now();
    net.close_due(now);
    let since_tick = now - net.last_tick_update;
    net.last_tick_update = now;
    let mut events = Vec::new();
    // Only clients whose packets carried payload since the last tick can have messages
    // waiting; with thousands of connected players most ticks have a few dozen of them.
    let mut active = Vec::new();
    for (i, shard) in net.shards.iter_mut().enumerate() {
        shard.server.update(since_tick);
        shard.transport.maintain(&mut shard.server, clock.tick);
        while let Some(event) = shard.server.get_event() {
            events.push((i, event));
        }
        active.extend(shard.transport.take_active());
    }
    for (shard, event) in events {
        match event {
            ServerEvent::ClientConnected { client_id } => {
                admit(&mut net, shard, client_id, &mut places);
            }
            ServerEvent::ClientDisconnected { client_id, reason } => {
                tracing::info!(client_id, %reason, "client disconnected");
                if net
                    .sessions
                    .get(&client_id)
                    .is_some_and(|s| s.shard == shard)
                    && let Some(session) = net.sessions.remove(&client_id)
                {
                    places.left(client_id, session.place);
                }
            }
        }
    }
    drop_revoked(&mut net, &mut places);
    read_messages(&mut net, &clock, &mut places, active);
}

/// Players whose session the auth service revoked leave now: a match is forfeited at once
/// (no grace), a farm is saved and closed, a place in the common area is given up.
fn drop_revoked(net: &mut NetServer, places: &mut Places) {
    if net.revoked_new.is_empty() {
        return;
    }
    let tags = std::mem::take(&mut net.revoked_new);
    let hit: Vec<ClientId> = net
        .sessions
        .iter()
        .filter(|(_, s)| tags.contains(&s.tag))
        .map(|(c, _)| *c)
        .collect();
    for client in hit {
        let Some(session) = net.sessions.remove(&client) else {
            continue;
        };
        metrics::counter!("croft_instance_sessions_revoked_total").increment(1);
        tracing::info!(client, "session revoked: player dropped");
        let refusal = Refusal::new(
            ErrorCode::SessionRevoked,
            "this session has ended; log in again",
            "revoked",
        );
        net.refuse(session.shard, client, refusal);
        places.revoked(client, session.place);
    }
}

fn admit(net: &mut NetServer, shard: usize, client_id: ClientId, places: &mut Places) {
    if net.sessions.contains_key(&client_id) {
        // Already seated through another socket: one connection per user per instance.
        let refusal = Refusal::new(ErrorCode::NotAllowed, "already connected", "duplicate");
        return net.refuse(shard, client_id, refusal);
    }
    let user_data = net.shards[shard].transport.user_data(client_id);
    let token = match user_data.map(|d| TokenUserData::from_bytes(&d)) {
        Some(Ok(d)) if d.user_id == client_id => d,
        Some(Ok(_)) => {
            let refusal = Refusal::new(
                ErrorCode::BadToken,
                "the token's user is not its client",
                "user_data",
            );
            return net.refuse(shard, client_id, refusal);
        }
        Some(Err(e)) => {
            let refusal = Refusal::new(ErrorCode::BadToken, e.to_string(), "user_data");
            return net.refuse(shard, client_id, refusal);
        }
        None => {
            let refusal = Refusal::new(ErrorCode::BadToken, "no user data", "user_data");
            return net.refuse(shard, client_id, refusal);
        }
    };
    if net.revoked.contains_key(&token.session_id) {
        let refusal = Refusal::new(
            ErrorCode::SessionRevoked,
            "this session has ended; log in again",
            "revoked",
        );
        return net.refuse(shard, client_id, refusal);
    }
    match places.admit(&token) {
        Ok(place) => {
            let session = PlayerSession {
                shard,
                place,
                tag: token.session_id,
                bad_messages: 0,
                window: 0,
                messages: 0,
            };
            net.sessions.insert(client_id, session);
        }
        Err(refusal) => net.refuse(shard, client_id, refusal),
    }
}

/// Why a message is not delivered: the error the client gets, and the metric label.
fn check(
    session: &mut PlayerSession,
    bytes: &[u8],
    window: u64,
    limit: u32,
) -> Result<ClientMessage, Refusal> {
    if session.window != window {
        session.window = window;
        session.messages = 0;
    }
    session.messages += 1;
    if session.messages > limit {
        return Err(Refusal::new(
            ErrorCode::RateLimited,
            format!("more than {limit} messages in a second"),
            "rate_limited",
        ));
    }
    let message = ClientMessage::decode(bytes).map_err(|e| {
        let reason = match e.code() {
            ErrorCode::TooLarge => "too_large",
            _ => "malformed",
        };
        Refusal::new(e.code(), e.to_string(), reason)
    })?;
    if !message.verify(session.place.token_kind()) {
        return Err(Refusal::new(
            ErrorCode::NotAllowed,
            "not on this connection",
            "wrong_place",
        ));
    }
    Ok(message)
}

/// Reads every waiting message of `clients` (those that sent payload since the last tick).
fn read_messages(
    net: &mut NetServer,
    clock: &MatchClock,
    places: &mut Places,
    clients: Vec<ClientId>,
) {
    let window = clock.tick / u64::from(clock.tick_hz.max(1));
    for client in clients {
        while let Some(s) = net.sessions.get(&client) {
            let shard = &mut net.shards[s.shard];
            let Some(bytes) = shard
                .server
                .receive_message(client, Channel::Reliable)
                .or_else(|| shard.server.receive_message(client, Channel::Unreliable))
            else {
                break;
            };
            net.messages_received.increment(1);
            let limit = net.max_messages_per_second;
            let Some(s) = net.sessions.get_mut(&client) else {
                break;
            };
            let place = s.place;
            let Refusal {
                code,
                message,
                reason,
            } = match check(s, &bytes, window, limit) {
                Ok(m) => {
                    places.deliver(client, place, m);
                    continue;
                }
                Err(refusal) => refusal,
            };
            metrics::counter!("croft_instance_bad_messages_total", "reason" => reason).increment(1);
            s.bad_messages += 1;
            if s.bad_messages > net.bad_message_budget {
                let shard = s.shard;
                let refusal = Refusal::new(
                    ErrorCode::TooManyErrors,
                    "too many bad messages",
                    "bad_messages",
                );
                net.refuse(shard, client, refusal);
                // Kicked like a drop: the grace period and forfeit rules apply.
                if let Some(session) = net.sessions.remove(&client) {
                    places.left(client, session.place);
                }
                break;
            }
            net.send(client, &ServerMessage::Error { code, message });
        }
    }
}

/// Flushes packets once per simulation tick: renet's protocol repeats pending acks on every
/// flush, so flushing on every (more frequent) receive frame would multiply packets without news.
pub fn send_system(mut net: ResMut<NetServer>, clock: Res<MatchClock>, mut last_tick: Local<u64>) {
    if clock.tick == *last_tick {
        return;
    }
    *last_tick = clock.tick;
    let net = &mut *net;
    let (idle, dirty) = (net.idle_flush_ticks, &net.dirty);
    for shard in &mut net.shards {
        shard
            .transport
            .flush(&mut shard.server, clock.tick, idle, dirty);
    }
    net.dirty.clear();
    let connected = net.connected();
    metrics::gauge!("croft_instance_clients_connected").set(connected as f64);
}

/// Disconnects everyone (shutdown): they get the netcode disconnect packet right away.
pub fn disconnect_all(net: &mut NetServer) {
    for shard in &mut net.shards {
        shard.transport.disconnect_all(&mut shard.server);
    }
    net.sessions.clear();
}
