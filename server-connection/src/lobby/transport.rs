//! The sockets under the lobby and admission: netcode (or WebSocket) shards in, the outbox out
//! with the per-client flush policy, and who may hold a session.

use std::collections::HashSet;
use std::time::Duration;

use bevy::prelude::*;
use shared_net::{ClientId, ServerEvent};
use shared_net::{RateWindow, Shard};
use shared_sim::protocol::{
    Channel, ErrorCode, Presence, TokenKind, TokenUserData, USER_DATA_BYTES,
};

use super::{Lobby, NetEvent, Outgoing, Session};
use crate::bridge::{Job, UserId};

/// The sockets: one link server per shard, and what the flush policy tracks.
#[derive(Resource)]
pub struct LobbyNet {
    pub shards: Vec<Shard>,
    /// Clients sent something this frame (flushed now rather than at the idle cadence).
    dirty: HashSet<ClientId>,
    /// Clients whose messages arrived this frame: acknowledged at once rather than at the
    /// idle cadence, so their reliable messages are not resent.
    ack_now: HashSet<ClientId>,
    /// Clients that may have messages waiting.
    to_read: HashSet<ClientId>,
    frame: u64,
}

impl LobbyNet {
    pub fn new(shards: Vec<Shard>) -> Self {
        Self {
            shards,
            dirty: HashSet::new(),
            ack_now: HashSet::new(),
            to_read: HashSet::new(),
            frame: 0,
        }
    }

    /// Disconnects everyone (shutdown) after the lobby withdrew their tickets and presence.
    pub fn disconnect_all(&mut self, lobby: &mut Lobby) {
        lobby.end_all();
        for shard in &mut self.shards {
            shard.transport.disconnect_all(&mut shard.server);
        }
    }
}

/// Reads the sockets: connections and disconnections become [`NetEvent`]s.
pub fn receive(time: Res<Time<Real>>, mut net: ResMut<LobbyNet>, mut lobby: ResMut<Lobby>) {
    let net = &mut *net;
    let dt = time.delta();
    net.frame += 1;
    for (i, shard) in net.shards.iter_mut().enumerate() {
        if let Err(e) = shard.transport.receive(dt, &mut shard.server) {
            metrics::counter!("croft_connection_transport_errors_total").increment(1);
            tracing::warn!(shard = i, error = %e, "netcode transport error");
        }
        shard.server.update(dt);
        while let Some(event) = shard.server.get_event() {
            lobby.arrivals.push(match event {
                ServerEvent::ClientConnected { client_id } => NetEvent::Connected {
                    shard: i,
                    client: client_id,
                    user_data: shard.transport.user_data(client_id).map(Box::new),
                },
                ServerEvent::ClientDisconnected { client_id, reason } => NetEvent::Disconnected {
                    shard: i,
                    client: client_id,
                    reason: reason.to_string(),
                },
            });
        }
        net.to_read.extend(shard.transport.take_active());
    }
}

/// Admits the clients that connected and ends the sessions of those that left.
pub fn admit_and_drop(time: Res<Time<Real>>, mut lobby: ResMut<Lobby>) {
    let now = time.elapsed();
    for event in std::mem::take(&mut lobby.arrivals) {
        match event {
            NetEvent::Connected {
                shard,
                client,
                user_data,
            } => admit(&mut lobby, shard, client, user_data.as_deref(), now),
            NetEvent::Disconnected {
                shard,
                client,
                reason,
            } => {
                if lobby
                    .sessions
                    .get(&client)
                    .is_some_and(|s| s.shard == shard)
                {
                    tracing::info!(user = client, %reason, "player disconnected");
                    lobby.end_session(client);
                }
            }
        }
    }
}

fn admit(
    lobby: &mut Lobby,
    shard: usize,
    client: ClientId,
    user_data: Option<&[u8; USER_DATA_BYTES]>,
    now: Duration,
) {
    let data = match user_data.map(TokenUserData::from_bytes) {
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
    lobby.sessions.insert(
        client,
        Session {
            shard,
            tag: data.session_id,
            username: None,
            presence: Presence::Online,
            friends: HashSet::new(),
            match_id: None,
            chat_window: RateWindow::new(now),
            msg_window: RateWindow::new(now),
            bad_messages: 0,
        },
    );
    metrics::counter!("croft_connection_logins_total").increment(1);
    lobby.job(Job::Load {
        user: client,
        tag: data.session_id,
    });
}

/// Reads the messages of the clients that sent something (and of players just loaded, whose
/// early messages waited) into the lobby's inbox: with thousands of idle clients, only these
/// can have any.
pub fn read_messages(mut net: ResMut<LobbyNet>, mut lobby: ResMut<Lobby>) {
    let net = &mut *net;
    let lobby = &mut *lobby;
    net.to_read.extend(lobby.just_loaded.drain(..));
    let users: Vec<(UserId, usize)> = net
        .to_read
        .drain()
        .filter_map(|u| {
            let s = lobby.sessions.get(&u)?;
            s.loaded().then_some((u, s.shard))
        })
        .collect();
    for (user, shard) in users {
        let server = &mut net.shards[shard].server;
        while let Some(bytes) = server
            .receive_message(user, Channel::Reliable)
            .or_else(|| server.receive_message(user, Channel::Unreliable))
        {
            metrics::counter!("croft_connection_messages_received_total").increment(1);
            lobby.inbox.push((user, bytes));
            net.ack_now.insert(user);
        }
    }
}

/// Writes the outbox to the sockets and flushes: at once for clients with news or messages
/// just read, at the idle cadence for the rest.
pub fn send(mut net: ResMut<LobbyNet>, mut lobby: ResMut<Lobby>) {
    let net = &mut *net;
    for out in lobby.outbox.drain(..) {
        match out {
            Outgoing::Message {
                shard,
                client,
                bytes,
            } => {
                net.shards[shard]
                    .server
                    .send_message(client, Channel::Reliable, bytes);
                net.dirty.insert(client);
                metrics::counter!("croft_connection_messages_sent_total").increment(1);
            }
            Outgoing::Disconnect { shard, client } => {
                let s = &mut net.shards[shard];
                s.transport.flush_client(&mut s.server, client);
                s.server.disconnect(client);
            }
        }
    }
    let (idle, frame) = (lobby.limits.idle_flush_frames.max(1), net.frame);
    let dirty = std::mem::take(&mut net.dirty);
    for user in std::mem::take(&mut net.ack_now) {
        if let Some(shard) = lobby.sessions.get(&user).map(|s| s.shard) {
            let s = &mut net.shards[shard];
            s.transport.flush_client(&mut s.server, user);
        }
    }
    for shard in &mut net.shards {
        shard
            .transport
            .flush(&mut shard.server, frame, idle, &dirty);
        // After the flush: a client that just got an ack packet needs no netcode keep-alive
        // on top of it (netcode sends one only after 250 ms without a packet).
        shard.transport.maintain(&mut shard.server, frame);
    }
    if frame.is_multiple_of(50) {
        report_status(net, &lobby);
    }
}

fn report_status(net: &LobbyNet, lobby: &Lobby) {
    let connected: usize = net
        .shards
        .iter()
        .map(|s| s.server.connected_clients())
        .sum();
    metrics::gauge!("croft_connection_clients_connected").set(connected as f64);
    if let Ok(mut s) = lobby.status.lock() {
        *s = contracts::connection::v1::Status {
            connected,
            sessions: lobby.sessions.len(),
            sockets: net
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
