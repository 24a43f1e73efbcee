//! The client's netcode socket, with control over when acks go out.

use std::io;
use std::net::UdpSocket;
use std::time::Duration;

use renet::RenetClient;
use renetcode::{ClientAuthentication, NETCODE_MAX_PACKET_BYTES, NetcodeClient};

/// renet's wire tag of an ack-only packet (`Packet::Ack`).
pub const RENET_ACK_PACKET: u8 = 4;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("netcode: {0}")]
    Netcode(#[from] renetcode::NetcodeError),
    #[error("disconnected: {0}")]
    Disconnected(String),
}

/// netcode's packet type of a keep-alive, in the low bits of a packet's first byte.
const NETCODE_KEEP_ALIVE: u8 = 4;

/// A client's netcode socket that decides when renet's ack packets go out.
///
/// renet appends an ack packet to every flush while acks are pending, which is always: its
/// pending ranges are trimmed only when the peer acknowledges an ack packet, and croft's
/// servers do not answer ack packets (that ping-pong cost both ends a datagram every flush).
/// So the ack packet goes out only on a flush `with_acks`, and only when a packet carrying
/// messages arrived since the last one went out (the server's own rule, see
/// `shared_net::link`): an idle connection sends keep-alives only, and sending with an action
/// adds no ack datagram. Acks are cumulative ranges, so a skipped ack packet loses nothing
/// (renet counts it as a lost packet and forgets it after 3 s).
pub struct ClientSocket {
    socket: UdpSocket,
    netcode: NetcodeClient,
    buffer: Box<[u8; NETCODE_MAX_PACKET_BYTES]>,
    /// Keep-alives go out only when nothing was sent for this long ([`crate::MATCH_KEEPALIVE`]
    /// by default; netcode itself sends one every 250 ms without other traffic).
    pub keepalive_every: Duration,
    last_sent: std::time::Instant,
    /// A renet packet other than an ack arrived since the last ack packet went out.
    owe_ack: bool,
}

impl ClientSocket {
    /// The server this client is connecting or connected to (one of the token's addresses).
    pub fn server_addr(&self) -> std::net::SocketAddr {
        self.netcode.server_addr()
    }

    /// How long since the server was last heard from (any packet, keep-alives included).
    pub fn silent_for(&self) -> Duration {
        self.netcode.time_since_last_received_packet()
    }

    pub fn new(
        now: Duration,
        authentication: ClientAuthentication,
        socket: UdpSocket,
    ) -> Result<Self, TransportError> {
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            netcode: NetcodeClient::new(now, authentication)?,
            buffer: Box::new([0; NETCODE_MAX_PACKET_BYTES]),
            keepalive_every: crate::MATCH_KEEPALIVE,
            last_sent: std::time::Instant::now(),
            owe_ack: false,
        })
    }

    /// Reads every waiting datagram into `client` and lets netcode send what its state needs
    /// (connection requests, keep-alives).
    pub fn update(&mut self, dt: Duration, client: &mut RenetClient) -> Result<(), TransportError> {
        if let Some(reason) = self.netcode.disconnect_reason() {
            client.disconnect_due_to_transport();
            return Err(TransportError::Disconnected(reason.to_string()));
        }
        if let Some(reason) = client.disconnect_reason() {
            let (addr, packet) = self.netcode.disconnect()?;
            self.socket.send_to(packet, addr)?;
            return Err(TransportError::Disconnected(reason.to_string()));
        }
        if self.netcode.is_connected() {
            client.set_connected();
        } else if self.netcode.is_connecting() {
            client.set_connecting();
        }
        loop {
            let len = match self.socket.recv_from(&mut self.buffer[..]) {
                Ok((len, addr)) if addr == self.netcode.server_addr() => len,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => break,
                Err(e) => return Err(e.into()),
            };
            if let Some(payload) = self.netcode.process_packet(&mut self.buffer[..len]) {
                self.owe_ack |= payload.first() != Some(&RENET_ACK_PACKET);
                client.process_packet(payload);
            }
        }
        let connected = self.netcode.is_connected();
        if let Some((packet, addr)) = self.netcode.update(dt) {
            let keepalive = connected
                && packet
                    .first()
                    .is_some_and(|b| b & 0x0f == NETCODE_KEEP_ALIVE);
            if !keepalive || self.last_sent.elapsed() >= self.keepalive_every {
                self.socket.send_to(packet, addr)?;
                self.last_sent = std::time::Instant::now();
            }
        }
        Ok(())
    }

    /// Sends renet's packets; the ack packet only when `with_acks` and messages arrived since
    /// the last one.
    pub fn send(
        &mut self,
        client: &mut RenetClient,
        with_acks: bool,
    ) -> Result<(), TransportError> {
        if let Some(reason) = self.netcode.disconnect_reason() {
            return Err(TransportError::Disconnected(reason.to_string()));
        }
        for packet in client.get_packets_to_send() {
            if packet.first() == Some(&RENET_ACK_PACKET) {
                if !(with_acks && self.owe_ack) {
                    continue;
                }
                self.owe_ack = false;
            }
            let (addr, payload) = self.netcode.generate_payload_packet(&packet)?;
            self.socket.send_to(payload, addr)?;
            self.last_sent = std::time::Instant::now();
        }
        Ok(())
    }

    pub fn disconnect(&mut self) {
        if self.netcode.is_disconnected() {
            return;
        }
        if let Ok((addr, packet)) = self.netcode.disconnect() {
            let _ = self.socket.send_to(packet, addr);
        }
    }
}
