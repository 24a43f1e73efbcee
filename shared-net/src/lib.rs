//! One secure netcode socket feeding one link server (renet's wire protocol, [`link`]), with a
//! per-client flush policy.

pub mod link;
pub mod netcode;
pub mod rate;
pub mod ws;
pub mod ws_token;

pub use bytes::Bytes;
pub use link::{ClientId, DisconnectReason, LinkServer, ServerEvent};
pub use rate::RateWindow;

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use netcode::{Event, MAX_PACKET_BYTES, NetcodeServer, ServerConfig, USER_DATA_BYTES};
use shared_sim::protocol::PROTOCOL_ID;

/// Most clients one netcode server (one socket) accepts.
pub const MAX_CLIENTS_PER_SOCKET: usize = 1024;

/// One socket and the link server it feeds.
pub struct Shard {
    pub server: LinkServer,
    pub transport: Transport,
    /// The address connect tokens must name for this socket (for a WebSocket shard, the
    /// listener's address: tokens name the UDP sockets, see [`ws`]).
    pub public_addr: SocketAddr,
}

impl Shard {
    /// A shard of WebSocket clients (one per server), listening at `addr`.
    pub fn websocket(socket: ws::WsSocket, addr: SocketAddr) -> Self {
        Self {
            server: LinkServer::default(),
            transport: Transport::Ws(socket),
            public_addr: addr,
        }
    }

    pub fn is_websocket(&self) -> bool {
        matches!(self.transport, Transport::Ws(_))
    }
}

/// What feeds a shard's link server: a netcode UDP socket, or WebSocket clients.
pub enum Transport {
    Netcode(Box<NetcodeSocket>),
    Ws(ws::WsSocket),
}

impl Transport {
    pub fn user_data(&self, client: ClientId) -> Option<[u8; USER_DATA_BYTES]> {
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
    pub fn receive(&mut self, dt: Duration, server: &mut LinkServer) -> io::Result<()> {
        match self {
            Transport::Netcode(t) => t.receive(dt, server),
            Transport::Ws(t) => {
                t.receive(server);
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

    pub fn maintain(&mut self, server: &mut LinkServer, tick: u64) {
        match self {
            Transport::Netcode(t) => t.maintain(server, tick),
            Transport::Ws(t) => t.maintain(server),
        }
    }

    pub fn flush_client(&mut self, server: &mut LinkServer, client: ClientId) {
        match self {
            Transport::Netcode(t) => t.flush_client(server, client),
            Transport::Ws(t) => t.flush_client(server, client),
        }
    }

    /// See [`NetcodeSocket::flush`]; WebSocket clients get their messages every call.
    pub fn flush(
        &mut self,
        server: &mut LinkServer,
        tick: u64,
        idle_ticks: u64,
        dirty: &HashSet<ClientId>,
    ) {
        match self {
            Transport::Netcode(t) => t.flush(server, tick, idle_ticks, dirty),
            Transport::Ws(t) => t.flush(server),
        }
    }

    pub fn disconnect_all(&mut self, server: &mut LinkServer) {
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
            private_key,
        };
        out.push(Shard {
            server: LinkServer::default(),
            transport: Transport::Netcode(Box::new(NetcodeSocket::new(config, socket)?)),
            public_addr,
        });
    }
    Ok(out)
}

/// Datagrams read per system call.
const RECV_BATCH: usize = udp_batch::MAX_BATCH;
/// Datagrams sent per system call.
const SEND_BATCH: usize = udp_batch::MAX_BATCH;
/// Most receive calls per frame: a flood cannot keep the loop from its other work (the kernel
/// drops what does not fit its buffer, as it would for a slow reader).
const MAX_RECV_CALLS: usize = 32;

/// A secure netcode socket feeding a link server, in place of renet_netcode's transport.
///
/// renet_netcode's `NetcodeServerTransport` flushes every client on every call, and renet's
/// protocol puts an ack packet in every flush while acks are pending (they always are: both ends
/// ack each other's acks). At hundreds of clients that makes idle clients cost one encrypted
/// `sendto` per tick each. This adapter sends a client's packets when it has news and otherwise
/// only every few ticks, and runs netcode's per-client upkeep (timeouts, keep-alives) once per
/// tick rather than on every receive frame. The netcode protocol is croft's own server
/// ([`netcode`]), and datagrams move in batches ([`udp_batch`]: `recvmmsg`/`sendmmsg` on Linux).
pub struct NetcodeSocket {
    rx: udp_batch::Receiver,
    tx: udp_batch::Sender,
    netcode: NetcodeServer,
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
        Ok(Self {
            rx: udp_batch::Receiver::new(socket.try_clone()?, RECV_BATCH, MAX_PACKET_BYTES)?,
            tx: udp_batch::Sender::new(socket, SEND_BATCH, MAX_PACKET_BYTES)?,
            netcode: NetcodeServer::new(config)?,
            upkeep_every: 1,
            active: HashSet::new(),
        })
    }

    /// Runs each client's netcode upkeep every `ticks` ticks (spread over the ticks), which
    /// bounds the server's keep-alives to one per client per `ticks` ticks.
    pub fn set_upkeep_every(&mut self, ticks: u64) {
        self.upkeep_every = ticks.max(1);
    }

    pub fn user_data(&self, client: ClientId) -> Option<[u8; USER_DATA_BYTES]> {
        self.netcode.user_data(client)
    }

    /// Advances netcode's clock and reads every waiting datagram.
    pub fn receive(&mut self, dt: Duration, server: &mut LinkServer) -> io::Result<()> {
        self.netcode.update(dt);
        let mut calls = 0;
        let result = loop {
            calls += 1;
            let n = match self.rx.recv() {
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            for i in 0..n {
                let (addr, buf) = self.rx.datagram(i);
                match self.netcode.process(addr, buf, &mut self.tx) {
                    Ok(Event::None) => {}
                    Ok(Event::Payload(client_id, payload)) => {
                        self.active.insert(client_id);
                        if server.process_packet_from(payload, client_id).is_err() {
                            tracing::debug!(client_id, "payload for an unknown client");
                        }
                    }
                    Ok(Event::Connected(client_id)) => server.add_connection(client_id),
                    Ok(Event::Disconnected(client_id)) => server.remove_connection(client_id),
                    Err(refused) => {
                        metrics::counter!("croft_netcode_refused_total", "reason" => refused.label())
                            .increment(1);
                        tracing::trace!(%addr, %refused, "datagram refused");
                    }
                }
            }
            if n < RECV_BATCH || calls == MAX_RECV_CALLS {
                break Ok(());
            }
        };
        self.send_queued();
        result
    }

    /// The clients that sent packets since the last call: only they can have new
    /// messages waiting, so servers with many idle clients read just these.
    pub fn take_active(&mut self) -> HashSet<ClientId> {
        std::mem::take(&mut self.active)
    }

    /// Timeouts, keep-alives and server-initiated disconnects, once per tick; each client's
    /// netcode upkeep runs every [`Self::set_upkeep_every`] ticks, in its own phase.
    pub fn maintain(&mut self, server: &mut LinkServer, tick: u64) {
        let every = self.upkeep_every;
        let due_now: Vec<ClientId> = self
            .netcode
            .clients_id()
            .filter(|&client| due(client, tick, every))
            .collect();
        for client in due_now {
            if let Some(dropped) = self.netcode.upkeep(client, &mut self.tx) {
                server.remove_connection(dropped);
            }
        }
        for client in server.disconnections_id() {
            if self.netcode.disconnect(client, &mut self.tx) {
                server.remove_connection(client);
            }
        }
        self.send_queued();
    }

    /// Sends one client's queued packets now, acks included.
    pub fn flush_client(&mut self, server: &mut LinkServer, client: ClientId) {
        self.queue_client(server, client, true);
        self.send_queued();
    }

    /// Queues one client's packets; the ack packet only when `with_acks` (an owed ack waits
    /// for the next full flush, so leaving it out loses nothing).
    fn queue_client(&mut self, server: &mut LinkServer, client: ClientId, with_acks: bool) {
        let (netcode, tx) = (&mut self.netcode, &mut self.tx);
        let mut failed = false;
        server.write_packets(client, with_acks, |packet| {
            if failed {
                return;
            }
            if let Err(e) = netcode.send_payload(client, packet, tx) {
                tracing::debug!(client, error = %e, "cannot send packet");
                failed = true;
            }
        });
    }

    /// Sends every queued datagram, counting the ones the kernel refused.
    fn send_queued(&mut self) {
        self.tx.flush();
        let failures = self.tx.take_failures();
        if failures.count > 0 {
            metrics::counter!("croft_netcode_send_errors_total").increment(failures.count);
            if let Some(e) = failures.last {
                tracing::debug!(count = failures.count, error = %e, "sends failed");
            }
        }
    }

    /// Every `idle_ticks` (in its phase) a client gets a full flush, its ack packet included
    /// when messages arrived from it since the last one (see [`link`]); in between, a client
    /// with news (`dirty`) gets its messages only. A client with nothing due costs a lookup.
    pub fn flush(
        &mut self,
        server: &mut LinkServer,
        tick: u64,
        idle_ticks: u64,
        dirty: &HashSet<ClientId>,
    ) {
        // The walk reads ids only; a link with nothing to write costs one lookup.
        let due_now: Vec<ClientId> = server
            .ids()
            .filter(|&client| due(client, tick, idle_ticks))
            .collect();
        for client in due_now {
            self.queue_client(server, client, true);
        }
        for &client in dirty {
            if !due(client, tick, idle_ticks) {
                self.queue_client(server, client, false);
            }
        }
        self.send_queued();
    }

    pub fn disconnect_all(&mut self, server: &mut LinkServer) {
        let clients: Vec<ClientId> = self.netcode.clients_id().collect();
        for client in clients {
            self.netcode.disconnect(client, &mut self.tx);
            server.remove_connection(client);
        }
        self.send_queued();
        self.active.clear();
    }
}
