//! Secure netcode sockets and player sessions: accepts connect tokens, binds each client to its
//! seat, decodes and checks every message before it reaches the match, and sends what the
//! matches produced.
//!
//! One netcode server holds at most 1024 clients, so the instance opens several sockets
//! ("shards") and keeps their renet servers side by side; bevy_renet's single-resource adapter
//! cannot hold more than one, which is why this module drives renet directly.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bevy::prelude::*;
use renet::{ClientId, ServerEvent};
use shared_sim::plugin::{
    CardMatch, CommandKind, MatchClock, MatchCommand, MatchId, MatchInbox, MatchIndex, UserId,
};
use shared_sim::protocol::{
    Channel, ClientMessage, ErrorCode, ServerMessage, TokenKind, TokenUserData,
};
use shared_sim::rules::Seat;

use crate::farm::{FarmInput, Farms};
use crate::hub::{HubInput, Hubs};

/// Network systems, around the match simulation.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetSystems {
    /// PreUpdate: drain the sockets into renet, every frame.
    Receive,
    /// FixedUpdate, before the matches: admit clients, decode messages into the match inbox.
    Deliver,
    /// PostUpdate: encode the match outbox and write sockets.
    Send,
}

pub use shared_net::{BindError as NetError, Shard};

/// How much a client may get away with, and how often idle clients are flushed.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Time a dropped player has to come back.
    pub grace: Duration,
    pub bad_message_budget: u32,
    pub max_messages_per_second: u32,
    /// Ticks between flushes of a client with nothing new (acks, keep-alive).
    pub idle_flush_ticks: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Away {
    pub until: Instant,
    /// False until the player first joins: their arrival is not a "return".
    pub joined_before: bool,
}

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Match,
    /// The player's own farm.
    Farm,
    /// A common-area shard.
    Hub(u32),
}

/// The farms and hubs a connection may be for, besides matches.
pub(crate) struct Places<'a> {
    pub farms: &'a mut Farms,
    pub hubs: &'a mut Hubs,
}

/// The seat a connected client holds.
#[derive(Debug, Clone, Copy)]
pub struct PlayerSession {
    pub shard: usize,
    /// A match seat, the player's farm or a place in the hub (`match_id` 0 but for matches).
    pub place: Place,
    pub match_id: MatchId,
    pub seat: Seat,
    pub bad_messages: u32,
    /// The second (in simulation time) `messages` counts in.
    pub window: u64,
    pub messages: u32,
}

#[derive(Resource)]
pub struct NetServer {
    pub shards: Vec<Shard>,
    /// Connected and admitted clients; the client id is the user id.
    pub sessions: HashMap<ClientId, PlayerSession>,
    /// Players not connected to their running match: dropped ones until their grace period
    /// ends, and ones who have not joined yet until the grace plus a token's lifetime.
    pub away: HashMap<(MatchId, UserId), Away>,
    pub grace: Duration,
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
}

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
            away: HashMap::new(),
            grace: limits.grace,
            bad_message_budget: limits.bad_message_budget,
            max_messages_per_second: limits.max_messages_per_second,
            dirty: HashSet::new(),
            closing: Vec::new(),
            idle_flush_ticks: limits.idle_flush_ticks.max(1),
            last_update: Instant::now(),
            last_tick_update: Instant::now(),
        })
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
            if session.match_id == match_id {
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
        match self.sessions.get(&user) {
            Some(s) if s.match_id == match_id => self.send(user, message),
            _ => false,
        }
    }

    pub fn send(&mut self, user: UserId, message: &ServerMessage) -> bool {
        let Some(session) = self.sessions.get(&user) else {
            return false;
        };
        let shard = &mut self.shards[session.shard];
        shard
            .server
            .send_message(user, Channel::Reliable, message.encode());
        self.dirty.insert(user);
        metrics::counter!("croft_instance_messages_sent_total").increment(1);
        true
    }

    fn send_on(&mut self, shard: usize, client: ClientId, message: &ServerMessage) {
        self.shards[shard]
            .server
            .send_message(client, Channel::Reliable, message.encode());
        self.dirty.insert(client);
        metrics::counter!("croft_instance_messages_sent_total").increment(1);
    }

    /// Sends an error, then disconnects the client once the message is flushed. Session
    /// bookkeeping is the caller's: a client id may hold a session on another shard.
    fn refuse(
        &mut self,
        shard: usize,
        client: ClientId,
        code: ErrorCode,
        message: String,
        reason: &'static str,
    ) {
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

/// Renet time step since the last receive.
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

/// Once per simulation tick, right before the matches run: renet's per-connection upkeep,
/// admissions and departures, grace expiry, and decoding messages into the match inbox.
pub fn deliver_messages(
    mut net: ResMut<NetServer>,
    clock: Res<MatchClock>,
    index: Res<MatchIndex>,
    matches: Query<&CardMatch>,
    mut inbox: ResMut<MatchInbox>,
    mut farms: ResMut<Farms>,
    mut hubs: ResMut<Hubs>,
) {
    let mut places = Places {
        farms: &mut farms,
        hubs: &mut hubs,
    };
    let now = Instant::now();
    net.close_due(now);
    let since_tick = now - net.last_tick_update;
    net.last_tick_update = now;
    let mut events = Vec::new();
    for (i, shard) in net.shards.iter_mut().enumerate() {
        shard.server.update(since_tick);
        shard.transport.maintain(&mut shard.server, clock.tick);
        while let Some(event) = shard.server.get_event() {
            events.push((i, event));
        }
    }
    for (shard, event) in events {
        match event {
            ServerEvent::ClientConnected { client_id } => {
                admit(
                    &mut net,
                    shard,
                    client_id,
                    &clock,
                    &index,
                    &matches,
                    &mut places,
                );
            }
            ServerEvent::ClientDisconnected { client_id, reason } => {
                tracing::info!(client_id, %reason, "client disconnected");
                if net
                    .sessions
                    .get(&client_id)
                    .is_some_and(|s| s.shard == shard)
                    && let Some(session) = net.sessions.remove(&client_id)
                {
                    left(&mut net, session, client_id, &index, &matches, &mut places);
                }
            }
        }
    }
    // Players whose grace period ran out forfeit.
    let now = Instant::now();
    let expired: Vec<(MatchId, UserId)> = net
        .away
        .iter()
        .filter(|(_, away)| away.until <= now)
        .map(|(k, _)| *k)
        .collect();
    for (match_id, user_id) in expired {
        net.away.remove(&(match_id, user_id));
        tracing::info!(match_id, user_id, "reconnect grace over: forfeit");
        inbox.0.push(MatchCommand {
            match_id,
            user_id,
            kind: CommandKind::Forfeit,
        });
    }
    read_messages(&mut net, &clock, &index, &matches, &mut inbox, &mut places);
}

fn admit(
    net: &mut NetServer,
    shard: usize,
    client_id: ClientId,
    clock: &MatchClock,
    index: &MatchIndex,
    matches: &Query<&CardMatch>,
    places: &mut Places<'_>,
) {
    if net.sessions.contains_key(&client_id) {
        // Already seated through another socket: one connection per user per instance.
        return net.refuse(
            shard,
            client_id,
            ErrorCode::NotAllowed,
            "already connected".into(),
            "duplicate",
        );
    }
    let user_data = net.shards[shard].transport.user_data(client_id);
    let parsed = user_data.map(|d| TokenUserData::from_bytes(&d));
    let data = match parsed {
        Some(Ok(d)) if d.kind == TokenKind::Farm && d.user_id == client_id => {
            if !places.farms.hosts(d.user_id) {
                return net.refuse(
                    shard,
                    client_id,
                    ErrorCode::UnknownMatch,
                    "your farm is not open on this server".into(),
                    "unknown_farm",
                );
            }
            net.sessions.insert(
                client_id,
                PlayerSession {
                    shard,
                    place: Place::Farm,
                    match_id: 0,
                    seat: Seat::First,
                    bad_messages: 0,
                    window: 0,
                    messages: 0,
                },
            );
            tracing::info!(user_id = d.user_id, "player on their farm");
            places.farms.inbox.push(FarmInput::Joined(d.user_id));
            return;
        }
        Some(Ok(d)) if d.kind == TokenKind::Hub && d.user_id == client_id => {
            let hub_id = d.match_id as u32;
            if !places.hubs.expects(hub_id, d.user_id) {
                return net.refuse(
                    shard,
                    client_id,
                    ErrorCode::UnknownMatch,
                    "no place kept for you in this hub".into(),
                    "unknown_hub",
                );
            }
            net.sessions.insert(
                client_id,
                PlayerSession {
                    shard,
                    place: Place::Hub(hub_id),
                    match_id: 0,
                    seat: Seat::First,
                    bad_messages: 0,
                    window: 0,
                    messages: 0,
                },
            );
            places.hubs.inbox.push(HubInput::Joined {
                hub_id,
                user: d.user_id,
            });
            return;
        }
        Some(Ok(d)) if d.kind == TokenKind::Instance && d.user_id == client_id => d,
        Some(Ok(_)) => {
            return net.refuse(
                shard,
                client_id,
                ErrorCode::BadToken,
                "this token is not for an instance server".into(),
                "token_kind",
            );
        }
        Some(Err(e)) => {
            return net.refuse(
                shard,
                client_id,
                ErrorCode::BadToken,
                e.to_string(),
                "user_data",
            );
        }
        None => {
            return net.refuse(
                shard,
                client_id,
                ErrorCode::BadToken,
                "no user data".into(),
                "user_data",
            );
        }
    };
    let found = index
        .0
        .get(&data.match_id)
        .and_then(|e| matches.get(*e).ok());
    let Some(m) = found else {
        return net.refuse(
            shard,
            client_id,
            ErrorCode::UnknownMatch,
            format!("match {} is not hosted here", data.match_id),
            "unknown_match",
        );
    };
    let Some(seat) = m.seat_of(data.user_id) else {
        return net.refuse(
            shard,
            client_id,
            ErrorCode::UnknownMatch,
            "you are not a player of this match".into(),
            "not_a_player",
        );
    };
    net.sessions.insert(
        client_id,
        PlayerSession {
            shard,
            place: Place::Match,
            match_id: m.id,
            seat,
            bad_messages: 0,
            window: 0,
            messages: 0,
        },
    );
    let returning = net
        .away
        .remove(&(m.id, data.user_id))
        .is_some_and(|a| a.joined_before);
    tracing::info!(
        user_id = data.user_id,
        match_id = m.id,
        ?seat,
        returning,
        "player joined"
    );
    net.send_on(
        shard,
        client_id,
        &ServerMessage::Welcome {
            user_id: data.user_id,
            match_id: m.id,
            seat,
        },
    );
    net.send_on(
        shard,
        client_id,
        &ServerMessage::Snapshot(Box::new(m.snapshot_for(seat, clock))),
    );
    if returning {
        let opponent = m.players[seat.other().index()];
        net.send_in_match(m.id, opponent, &ServerMessage::OpponentReturned);
    }
}

fn left(
    net: &mut NetServer,
    session: PlayerSession,
    user: UserId,
    index: &MatchIndex,
    matches: &Query<&CardMatch>,
    places: &mut Places<'_>,
) {
    match session.place {
        Place::Farm => return places.farms.inbox.push(FarmInput::Left(user)),
        Place::Hub(hub_id) => return places.hubs.inbox.push(HubInput::Left { hub_id, user }),
        Place::Match => {}
    }
    let Some(m) = index
        .0
        .get(&session.match_id)
        .and_then(|e| matches.get(*e).ok())
    else {
        return;
    };
    if m.state.is_over() || m.seat_of(user) != Some(session.seat) {
        return;
    }
    let away = Away {
        until: Instant::now() + net.grace,
        joined_before: true,
    };
    net.away.insert((m.id, user), away);
    let opponent = m.players[session.seat.other().index()];
    let grace_seconds = net.grace.as_secs() as u32;
    net.send_in_match(
        m.id,
        opponent,
        &ServerMessage::OpponentLeft { grace_seconds },
    );
}

fn read_messages(
    net: &mut NetServer,
    clock: &MatchClock,
    index: &MatchIndex,
    matches: &Query<&CardMatch>,
    inbox: &mut MatchInbox,
    places: &mut Places<'_>,
) {
    let clients: Vec<(ClientId, PlayerSession)> =
        net.sessions.iter().map(|(c, s)| (*c, *s)).collect();
    for (client, session) in clients {
        loop {
            let shard = &mut net.shards[session.shard];
            let Some(bytes) = shard
                .server
                .receive_message(client, Channel::Reliable)
                .or_else(|| shard.server.receive_message(client, Channel::Unreliable))
            else {
                break;
            };
            metrics::counter!("croft_instance_messages_received_total").increment(1);
            let window = clock.tick / u64::from(clock.tick_hz.max(1));
            let limit = net.max_messages_per_second;
            let Some(s) = net.sessions.get_mut(&client) else {
                break;
            };
            if s.window != window {
                s.window = window;
                s.messages = 0;
            }
            s.messages += 1;
            let place = s.place;
            let decoded = if s.messages > limit {
                Err((
                    ErrorCode::RateLimited,
                    format!("more than {limit} messages in a second"),
                    "rate_limited",
                ))
            } else {
                ClientMessage::decode(&bytes)
                    .map_err(|e| {
                        let reason = match e.code() {
                            ErrorCode::TooLarge => "too_large",
                            _ => "malformed",
                        };
                        (e.code(), e.to_string(), reason)
                    })
                    .and_then(|m| {
                        // Farm messages on a farm connection, hub messages in the hub, match
                        // messages in a match.
                        let fits = match &m {
                            ClientMessage::MatchAction { .. } | ClientMessage::RequestSnapshot => {
                                place == Place::Match
                            }
                            ClientMessage::FarmAction { .. } => place == Place::Farm,
                            ClientMessage::HubMove { .. } | ClientMessage::HubChat { .. } => {
                                matches!(place, Place::Hub(_))
                            }
                        };
                        if fits {
                            Ok(m)
                        } else {
                            Err((
                                ErrorCode::NotAllowed,
                                "not on this connection".to_string(),
                                "wrong_place",
                            ))
                        }
                    })
            };
            match decoded {
                Ok(ClientMessage::MatchAction { seq, action }) => inbox.0.push(MatchCommand {
                    match_id: session.match_id,
                    user_id: client,
                    kind: CommandKind::Act { seq, action },
                }),
                Ok(ClientMessage::FarmAction { seq, action }) => {
                    places.farms.inbox.push(FarmInput::Action {
                        user: client,
                        seq,
                        action,
                    });
                }
                Ok(ClientMessage::HubMove { x, y }) => {
                    if let Place::Hub(hub_id) = place {
                        places.hubs.inbox.push(HubInput::Move {
                            hub_id,
                            user: client,
                            to: (x, y),
                        });
                    }
                }
                Ok(ClientMessage::HubChat { text }) => {
                    if let Place::Hub(hub_id) = place {
                        places.hubs.inbox.push(HubInput::Chat {
                            hub_id,
                            user: client,
                            text,
                        });
                    }
                }
                Ok(ClientMessage::RequestSnapshot) => {
                    let found = index
                        .0
                        .get(&session.match_id)
                        .and_then(|e| matches.get(*e).ok());
                    if let Some(m) = found.filter(|m| m.seat_of(client) == Some(session.seat)) {
                        let snapshot = m.snapshot_for(session.seat, clock);
                        net.send(client, &ServerMessage::Snapshot(Box::new(snapshot)));
                    }
                }
                Err((code, message, reason)) => {
                    metrics::counter!("croft_instance_bad_messages_total", "reason" => reason)
                        .increment(1);
                    let Some(s) = net.sessions.get_mut(&client) else {
                        break;
                    };
                    s.bad_messages += 1;
                    if s.bad_messages > net.bad_message_budget {
                        net.refuse(
                            session.shard,
                            client,
                            ErrorCode::TooManyErrors,
                            "too many bad messages".into(),
                            "bad_messages",
                        );
                        // Kicked like a drop: the grace period and forfeit rules apply.
                        if let Some(session) = net.sessions.remove(&client) {
                            left(net, session, client, index, matches, places);
                        }
                        break;
                    }
                    net.send(client, &ServerMessage::Error { code, message });
                }
            }
        }
    }
}

/// Flushes packets once per simulation tick: renet repeats pending acks on every flush, so
/// flushing on every (more frequent) receive frame would multiply packets without news.
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
            .flush(&mut shard.server, clock.tick, idle, |c| dirty.contains(&c));
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
