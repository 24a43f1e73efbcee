//! One secure netcode socket feeding one renet server, with a per-client flush policy.
//!
//! renet_netcode's `NetcodeServerTransport` flushes every client on every call, and renet puts
//! an ack packet in every flush while acks are pending (they always are: both ends ack each
//! other's acks). At hundreds of clients that makes idle clients cost one encrypted `sendto` per
//! tick each. This adapter sends a client's packets when it has news and otherwise only every
//! few ticks, and runs netcode's per-client upkeep (timeouts, keep-alives) once per tick rather
//! than on every receive frame.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use renet::{ClientId, RenetServer};
use renetcode::{
    NETCODE_MAX_PACKET_BYTES, NETCODE_USER_DATA_BYTES, NetcodeServer, ServerConfig, ServerResult,
};

/// renet's wire tag of an ack-only packet (`Packet::Ack`).
pub const RENET_ACK_PACKET: u8 = 4;

pub struct NetcodeSocket {
    socket: UdpSocket,
    netcode: NetcodeServer,
    buffer: Box<[u8; NETCODE_MAX_PACKET_BYTES]>,
    /// Tick of each client's last flush.
    last_flush: HashMap<ClientId, u64>,
}

impl NetcodeSocket {
    pub fn new(config: ServerConfig, socket: UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            netcode: NetcodeServer::new(config),
            buffer: Box::new([0; NETCODE_MAX_PACKET_BYTES]),
            last_flush: HashMap::new(),
        })
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

    /// Timeouts, keep-alives and renet-initiated disconnects: once per tick is plenty.
    pub fn maintain(&mut self, server: &mut RenetServer) {
        for client in self.netcode.clients_id() {
            let result = self.netcode.update_client(client);
            handle(result, &self.socket, server);
        }
        for client in server.disconnections_id() {
            let result = self.netcode.disconnect(client);
            handle(result, &self.socket, server);
            self.last_flush.remove(&client);
        }
    }

    /// Sends one client's queued packets now, acks included.
    pub fn flush_client(&mut self, server: &mut RenetServer, client: ClientId, tick: u64) {
        self.last_flush.insert(client, tick);
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
                        metrics::counter!("croft_instance_send_errors_total").increment(1);
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

    /// Every `idle_ticks` a client gets a full flush (acks included); in between, a client with
    /// news (`dirty`) gets its messages only.
    pub fn flush(
        &mut self,
        server: &mut RenetServer,
        tick: u64,
        idle_ticks: u64,
        dirty: impl Fn(ClientId) -> bool,
    ) {
        let clients: Vec<ClientId> = server.clients_id_iter().collect();
        for client in clients {
            let last = self.last_flush.get(&client).copied().unwrap_or(0);
            if tick.saturating_sub(last) >= idle_ticks {
                self.flush_client(server, client, tick);
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
        self.last_flush.clear();
    }
}

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
