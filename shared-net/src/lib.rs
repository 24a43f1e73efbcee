//! One secure netcode socket feeding one renet server, with a per-client flush policy.

pub mod rate;
pub mod ws;
pub mod ws_token;

pub use rate::RateWindow;

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use renet::{ClientId, RenetServer};
use renetcode::{
    NETCODE_MAX_PACKET_BYTES, NETCODE_USER_DATA_BYTES, NetcodeServer, ServerAuthentication,
    ServerConfig, ServerResult,
};
use shared_sim::protocol::{PROTOCOL_ID, connection_config};

/// Most clients one netcode server (one socket) accepts.
pub const MAX_CLIENTS_PER_SOCKET: usize = 1024;

/// One socket and the renet server it feeds.
pub struct Shard {
    pub server: RenetServer,
    pub transport: Transport,
    /// The address connect tokens must name for this socket (for a WebSocket shard, the
    /// listener's address: tokens name the UDP sockets, see [`ws`]).
    pub public_addr: SocketAddr,
}

impl Shard {
    /// A shard of WebSocket clients (one per server), listening at `addr`.
    pub fn websocket(socket: ws::WsSocket, addr: SocketAddr) -> Self {
        Self {
            server: RenetServer::new(connection_config()),
            transport: Transport::Ws(socket),
            public_addr: addr,
        }
    }

    pub fn is_websocket(&self) -> bool {
        matches!(self.transport, Transport::Ws(_))
    }
}

/// What feeds a shard's renet server: a netcode UDP socket, or WebSocket clients.
pub enum Transport {
    Netcode(Box<NetcodeSocket>),
    Ws(ws::WsSocket),
}

impl Transport {
    pub fn user_data(&self, client: ClientId) -> Option<[u8; NETCODE_USER_DATA_BYTES]> {
        match self {
            Transport::Netcode(t) => t.user_data(client),
            Transport::Ws(t) => t.user_data(client),
        }
    }

    /// See [`NetcodeSocket::set_upkeep_every`] (WebSocket sessions have no netcode upkeep).
    pub fn set_upkeep_every(&mut self, ticks: u64) {
        if let Transport::Netcode(t) = self {
            t.set_upkeep_every(ticks);
        }
    }

    /// Reads what arrived and feeds it to `server`.
    pub fn receive(&mut self, dt: Duration, server: &mut RenetServer) -> io::Result<()> {
        match self {
            Transport::Netcode(t) => t.receive(dt, server),
            Transport::Ws(t) => {
                t.receive(dt, server);
                Ok(())
            }
        }
    }

    pub fn take_active(&mut self) -> HashSet<ClientId> {
        match self {
            Transport::Netcode(t) => t.take_active(),
            Transport::Ws(t) => t.take_active(),
        }
    }

    pub fn maintain(&mut self, server: &mut RenetServer, tick: u64) {
        match self {
            Transport::Netcode(t) => t.maintain(server, tick),
            Transport::Ws(t) => t.maintain(server),
        }
    }

    pub fn flush_client(&mut self, server: &mut RenetServer, client: ClientId) {
        match self {
            Transport::Netcode(t) => t.flush_client(server, client),
            Transport::Ws(t) => t.flush_client(server, client),
        }
    }

    /// See [`NetcodeSocket::flush`]; WebSocket clients get their messages every call.
    pub fn flush(
        &mut self,
        server: &mut RenetServer,
        tick: u64,
        idle_ticks: u64,
        dirty: impl Fn(ClientId) -> bool,
    ) {
        match self {
            Transport::Netcode(t) => t.flush(server, tick, idle_ticks, dirty),
            Transport::Ws(t) => t.flush(server),
        }
    }

    pub fn disconnect_all(&mut self, server: &mut RenetServer) {
        match self {
            Transport::Netcode(t) => t.disconnect_all(server),
            Transport::Ws(t) => t.disconnect_all(server),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot bind UDP {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("socket setup failed: {0}")]
    Io(#[from] io::Error),
    #[error("shard ports run past 65535")]
    Ports,
}

/// Binds `count` secure sockets from `first` (consecutive ports, or ephemeral ports for port 0);
/// `public_ip` replaces the bound IP in the addresses tokens name (for NAT or `0.0.0.0` binds),
/// and `public_port` the bound port of the first socket (the others follow it), where a port
/// mapping (an Agones host port) puts the socket behind another port.
pub fn bind_shards(
    first: SocketAddr,
    public_ip: Option<IpAddr>,
    public_port: Option<u16>,
    count: usize,
    private_key: [u8; 32],
) -> Result<Vec<Shard>, BindError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut out = Vec::new();
    for i in 0..count.max(1) {
        let mut addr = first;
        if first.port() != 0 {
            let port = u16::try_from(i)
                .ok()
                .and_then(|i| first.port().checked_add(i))
                .ok_or(BindError::Ports)?;
            addr.set_port(port);
        }
        let socket = UdpSocket::bind(addr).map_err(|source| BindError::Bind { addr, source })?;
        let mut public_addr = socket.local_addr()?;
        if let Some(ip) = public_ip {
            public_addr.set_ip(ip);
        }
        if let Some(port) = public_port {
            let port = u16::try_from(i)
                .ok()
                .and_then(|i| port.checked_add(i))
                .ok_or(BindError::Ports)?;
            public_addr.set_port(port);
        }
        let config = ServerConfig {
            current_time: now,
            max_clients: MAX_CLIENTS_PER_SOCKET,
            protocol_id: PROTOCOL_ID,
            public_addresses: vec![public_addr],
            authentication: ServerAuthentication::Secure { private_key },
        };
        out.push(Shard {
            server: RenetServer::new(connection_config()),
            transport: Transport::Netcode(Box::new(NetcodeSocket::new(config, socket)?)),
            public_addr,
        });
    }
    Ok(out)
}

/// renet's wire tag of an ack-only packet (`Packet::Ack`).
pub const RENET_ACK_PACKET: u8 = 4;

/// A secure netcode socket feeding a renet server, in place of renet_netcode's transport.
///
/// renet_netcode's `NetcodeServerTransport` flushes every client on every call, and renet puts
/// an ack packet in every flush while acks are pending (they always are: both ends ack each
/// other's acks). At hundreds of clients that makes idle clients cost one encrypted `sendto` per
/// tick each. This adapter sends a client's packets when it has news and otherwise only every
/// few ticks, and runs netcode's per-client upkeep (timeouts, keep-alives) once per tick rather
/// than on every receive frame.
pub struct NetcodeSocket {
    socket: UdpSocket,
    netcode: NetcodeServer,
    buffer: Box<[u8; NETCODE_MAX_PACKET_BYTES]>,
    /// Ticks between a client's netcode upkeeps (timeout check, keep-alive): 1 checks every
    /// tick (netcode then sends a keep-alive whenever 250 ms passed without a packet); more
    /// spaces keep-alives out for idle clients.
    upkeep_every: u64,
    /// Clients whose packets carried payload since the last [`Self::take_active`].
    active: HashSet<ClientId>,
}

/// Whether periodic work for `client` falls on `tick` when it runs every `every` ticks: each
/// client has a fixed phase (from its id), which spreads the work evenly over the ticks
/// without per-client bookkeeping.
fn due(client: ClientId, tick: u64, every: u64) -> bool {
    every <= 1 || client.wrapping_add(tick).is_multiple_of(every)
}

impl NetcodeSocket {
    pub fn new(config: ServerConfig, socket: UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            netcode: NetcodeServer::new(config),
            buffer: Box::new([0; NETCODE_MAX_PACKET_BYTES]),
            upkeep_every: 1,
            active: HashSet::new(),
        })
    }

    /// Runs each client's netcode upkeep every `ticks` ticks (spread over the ticks), which
    /// bounds the server's keep-alives to one per client per `ticks` ticks.
    pub fn set_upkeep_every(&mut self, ticks: u64) {
        self.upkeep_every = ticks.max(1);
    }

    pub fn user_data(&self, client: ClientId) -> Option<[u8; NETCODE_USER_DATA_BYTES]> {
        self.netcode.user_data(client)
    }

    /// Advances netcode's clock and reads every waiting datagram.
    pub fn receive(&mut self, dt: Duration, server: &mut RenetServer) -> io::Result<()> {
        self.netcode.update(dt);
        loop {
            match self.socket.recv_from(&mut self.buffer[..]) {
                Ok((len, addr)) => {
                    let result = self.netcode.process_packet(addr, &mut self.buffer[..len]);
                    if let ServerResult::Payload { client_id, .. } = &result {
                        self.active.insert(*client_id);
                    }
                    handle(result, &self.socket, server);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
                // An ICMP "port unreachable" from a client that went away.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The clients that sent renet packets since the last call: only they can have new
    /// messages waiting, so servers with many idle clients read just these.
    pub fn take_active(&mut self) -> HashSet<ClientId> {
        std::mem::take(&mut self.active)
    }

    /// Timeouts, keep-alives and renet-initiated disconnects, once per tick; each client's
    /// netcode upkeep runs every [`Self::set_upkeep_every`] ticks, in its own phase.
    pub fn maintain(&mut self, server: &mut RenetServer, tick: u64) {
        let every = self.upkeep_every;
        for client in self.netcode.clients_id() {
            if due(client, tick, every) {
                let result = self.netcode.update_client(client);
                handle(result, &self.socket, server);
            }
        }
        for client in server.disconnections_id() {
            let result = self.netcode.disconnect(client);
            handle(result, &self.socket, server);
        }
    }

    /// Sends one client's queued packets now, acks included.
    pub fn flush_client(&mut self, server: &mut RenetServer, client: ClientId) {
        self.send_client(server, client, true);
    }

    /// Sends one client's packets; renet's ack-only packet only when `with_acks` (acks are
    /// cumulative and repeated until acknowledged, so a skipped one loses nothing).
    fn send_client(&mut self, server: &mut RenetServer, client: ClientId, with_acks: bool) {
        let Ok(packets) = server.get_packets_to_send(client) else {
            return;
        };
        for packet in packets {
            if !with_acks && packet.first() == Some(&RENET_ACK_PACKET) {
                continue;
            }
            match self.netcode.generate_payload_packet(client, &packet) {
                Ok((addr, payload)) => {
                    if let Err(e) = self.socket.send_to(payload, addr) {
                        metrics::counter!("croft_netcode_send_errors_total").increment(1);
                        tracing::debug!(client, error = %e, "send failed");
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(client, error = %e, "cannot encrypt packet");
                    return;
                }
            }
        }
    }

    /// Every `idle_ticks` (in its phase) a client gets a full flush, acks included; in
    /// between, a client with news (`dirty`) gets its messages only. renet acknowledges ack
    /// packets too, so the full-flush cadence is the idle packet rate of a connection.
    pub fn flush(
        &mut self,
        server: &mut RenetServer,
        tick: u64,
        idle_ticks: u64,
        dirty: impl Fn(ClientId) -> bool,
    ) {
        let clients: Vec<ClientId> = server.clients_id_iter().collect();
        for client in clients {
            if due(client, tick, idle_ticks) {
                self.send_client(server, client, true);
            } else if dirty(client) {
                self.send_client(server, client, false);
            }
        }
    }

    pub fn disconnect_all(&mut self, server: &mut RenetServer) {
        for client in self.netcode.clients_id() {
            let result = self.netcode.disconnect(client);
            handle(result, &self.socket, server);
        }
        self.active.clear();
    }
}

/// Acts on netcode's answer: sends what it produced, feeds payloads to renet.
fn handle(result: ServerResult, socket: &UdpSocket, server: &mut RenetServer) {
    let send = |packet: &[u8], addr: SocketAddr| {
        if let Err(e) = socket.send_to(packet, addr) {
            tracing::debug!(%addr, error = %e, "send failed");
        }
    };
    match result {
        ServerResult::None => {}
        ServerResult::PacketToSend { payload, addr } => send(payload, addr),
        ServerResult::Payload { client_id, payload } => {
            if server.process_packet_from(payload, client_id).is_err() {
                tracing::debug!(client_id, "payload for an unknown client");
            }
        }
        ServerResult::ClientConnected {
            client_id,
            addr,
            payload,
            ..
        } => {
            server.add_connection(client_id);
            send(payload, addr);
        }
        ServerResult::ClientDisconnected {
            client_id,
            addr,
            payload,
        } => {
            server.remove_connection(client_id);
            if let Some(payload) = payload {
                send(payload, addr);
            }
        }
    }
}
