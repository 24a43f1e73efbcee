//! croft's secure netcode server: the netcode 1.02 standard as renetcode 2.0 speaks it, so that
//! renet clients and the Godot bindings connect unchanged, with state and lookups sized for a
//! server of thousands of connections.
//!
//! The wire format and the security are renetcode's (connect tokens sealed with
//! XChaCha20-Poly1305 under the server's private key; every packet after the request sealed
//! with ChaCha20-Poly1305 under the token's per-direction keys, nonce = the packet sequence,
//! additional data `"NETCODE 1.02\0" ‖ protocol id ‖ prefix byte`; a challenge token sealed
//! under a key only this process knows; a token used from one address refused from another;
//! a replay window of 256 sequences). What differs, and why it was worth owning:
//! - clients are found by address and by id through maps; renetcode walks its 1024 slots of
//!   2.4 KiB on every packet received or sent, and on every client's upkeep;
//! - a client's state is ~0.5 KiB (a 256-bit replay window in place of 256 stored sequences,
//!   and no slots reserved for clients that are not there);
//! - keep-alives on the interval the server chooses ([`NetcodeServer::set_keep_alive`]), not a
//!   fixed 250 ms;
//! - packets are written straight into the caller's send batch ([`Outgoing`]);
//! - a packet whose prefix claims a sequence longer than 8 bytes is refused (renetcode 2.0.0
//!   indexes past its 8-byte buffer and panics on it);
//! - every refusal has a reason ([`Refused`]) that the caller counts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use crate::ws_token::{self, TokenError, VERSION_INFO};

/// Largest datagram this protocol sends or accepts.
pub const MAX_PACKET_BYTES: usize = 1400;
/// Largest payload one packet carries.
pub const MAX_PAYLOAD_BYTES: usize = 1300;
pub const USER_DATA_BYTES: usize = 256;
/// The keep-alive interval of the standard (and renetcode's only one).
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_millis(250);
/// Most half-open handshakes (a request answered with a challenge, no response yet) at once.
pub const MAX_PENDING: usize = 4096;

const MAC_BYTES: usize = 16;
const KEY_BYTES: usize = 32;
/// prefix, version, protocol id, expiry, nonce, private token.
const REQUEST_BYTES: usize = 1 + 13 + 8 + 8 + 24 + 1024;
const CHALLENGE_TOKEN_BYTES: usize = 300;
const REPLAY_WINDOW: u64 = 256;
/// Tokens remembered for the one-address rule, per client slot.
const USED_TOKENS_PER_SLOT: usize = 8;

const REQUEST: u8 = 0;
const DENIED: u8 = 1;
const CHALLENGE: u8 = 2;
const RESPONSE: u8 = 3;
const KEEP_ALIVE: u8 = 4;
const PAYLOAD: u8 = 5;
const DISCONNECT: u8 = 6;

/// Why a packet was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("shorter than its packet type allows")]
    TooShort,
    #[error("unknown packet type or sequence length in the prefix")]
    Prefix,
    #[error("a packet type this sender may not send now")]
    Unexpected,
    #[error("sequence already received (a replay)")]
    Replayed,
    #[error("does not authenticate under the sender's key")]
    Forged,
    #[error("another netcode version")]
    Version,
    #[error("connect token: {0}")]
    Token(TokenError),
    #[error("connect token already used from another address")]
    TokenReused,
    #[error("client already connected")]
    AlreadyConnected,
    #[error("too many handshakes under way")]
    Busy,
    #[error("challenge token not this server's or not this client's")]
    Challenge,
}

impl Refused {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refused::TooShort => "too_short",
            Refused::Prefix => "prefix",
            Refused::Unexpected => "unexpected",
            Refused::Replayed => "replayed",
            Refused::Forged => "forged",
            Refused::Version => "version",
            Refused::Token(TokenError::Expired) => "token_expired",
            Refused::Token(TokenError::WrongProtocol) => "token_protocol",
            Refused::Token(TokenError::WrongServer) => "token_server",
            Refused::Token(_) => "token_forged",
            Refused::TokenReused => "token_reused",
            Refused::AlreadyConnected => "already_connected",
            Refused::Busy => "busy",
            Refused::Challenge => "challenge",
        }
    }
}

/// Why a packet could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no such client")]
    NoClient,
    #[error("payload of {0} bytes is over the limit of {MAX_PAYLOAD_BYTES}")]
    TooLarge(usize),
}

/// What a received packet meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// Handled inside the protocol (a handshake step, a keep-alive).
    None,
    /// A client finished the handshake.
    Connected(u64),
    /// A client's payload.
    Payload(u64, &'a [u8]),
    /// A client said goodbye.
    Disconnected(u64),
}

/// Where the server's packets go: a batch of datagrams to send.
pub trait Outgoing {
    /// Queues one datagram to `addr`, which `write` writes into the buffer it is given
    /// ([`MAX_PACKET_BYTES`] long) and returns the length of.
    fn packet(&mut self, addr: SocketAddr, write: &mut dyn FnMut(&mut [u8]) -> usize);
}

impl Outgoing for udp_batch::Sender {
    fn packet(&mut self, addr: SocketAddr, write: &mut dyn FnMut(&mut [u8]) -> usize) {
        let _ = self.push_with::<std::convert::Infallible>(addr, |buf| Ok(write(buf)));
    }
}

/// The configuration renetcode's `ServerConfig` carried, for the secure mode only.
pub struct ServerConfig {
    pub current_time: Duration,
    pub max_clients: usize,
    pub protocol_id: u64,
    pub public_addresses: Vec<SocketAddr>,
    pub private_key: [u8; KEY_BYTES],
}

/// Sequences seen: the newest, and a bit for each of the 256 before it (bit `n` = newest - n).
#[derive(Debug, Clone, Default)]
struct ReplayWindow {
    newest: u64,
    bits: [u64; 4],
}

impl ReplayWindow {
    /// Whether `seq` must be refused: seen already, or too old to tell.
    fn seen(&self, seq: u64) -> bool {
        if seq > self.newest {
            return false;
        }
        let age = self.newest - seq;
        age >= REPLAY_WINDOW || self.bits[(age / 64) as usize] & (1 << (age % 64)) != 0
    }

    fn record(&mut self, seq: u64) {
        if seq > self.newest {
            let shift = seq - self.newest;
            self.shift(shift);
            self.newest = seq;
        }
        let age = self.newest - seq;
        if age < REPLAY_WINDOW {
            self.bits[(age / 64) as usize] |= 1 << (age % 64);
        }
    }

    /// Ages every recorded bit by `by`.
    fn shift(&mut self, by: u64) {
        if by >= REPLAY_WINDOW {
            self.bits = [0; 4];
            return;
        }
        let limbs = (by / 64) as usize;
        let bits = (by % 64) as u32;
        let old = self.bits;
        for i in (0..4).rev() {
            let mut v = 0u64;
            if i >= limbs {
                v = old[i - limbs] << bits;
                if bits > 0 && i > limbs {
                    v |= old[i - limbs - 1] >> (64 - bits);
                }
            }
            self.bits[i] = v;
        }
    }
}

struct Client {
    id: u64,
    addr: SocketAddr,
    send_key: [u8; KEY_BYTES],
    receive_key: [u8; KEY_BYTES],
    user_data: Box<[u8; USER_DATA_BYTES]>,
    last_received: Duration,
    last_sent: Duration,
    /// Seconds without a packet before the client is dropped (<= 0: never).
    timeout_seconds: i32,
    sequence: u64,
    replay: ReplayWindow,
}

struct Pending {
    client_id: u64,
    /// From the connect token this server decrypted (the challenge token's copy is not used).
    user_data: Box<[u8; USER_DATA_BYTES]>,
    send_key: [u8; KEY_BYTES],
    receive_key: [u8; KEY_BYTES],
    timeout_seconds: i32,
    expire_timestamp: u64,
}

struct UsedToken {
    addr: SocketAddr,
    expire_timestamp: u64,
}

/// A secure netcode server for one socket. Feed it datagrams with [`Self::process`]; it
/// writes what it sends into an [`Outgoing`] batch.
pub struct NetcodeServer {
    protocol_id: u64,
    private_key: [u8; KEY_BYTES],
    challenge_key: [u8; KEY_BYTES],
    challenge_sequence: u64,
    /// Sequence of packets sent under a token's key before the client has a slot.
    global_sequence: u64,
    public_addresses: Vec<SocketAddr>,
    max_clients: usize,
    now: Duration,
    keep_alive: Duration,
    slots: Vec<Option<Client>>,
    free: Vec<u32>,
    by_addr: HashMap<SocketAddr, u32>,
    by_id: HashMap<u64, u32>,
    pending: HashMap<SocketAddr, Pending>,
    used_tokens: HashMap<[u8; MAC_BYTES], UsedToken>,
    last_prune_secs: u64,
}

impl NetcodeServer {
    /// Fails only when the operating system's random generator does (the challenge key must be
    /// unpredictable: a client that could forge challenge tokens could skip the handshake's
    /// proof of address).
    pub fn new(config: ServerConfig) -> Result<Self, std::io::Error> {
        let mut challenge_key = [0u8; KEY_BYTES];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut challenge_key)
            .map_err(|_| std::io::Error::other("the OS random generator failed"))?;
        Ok(Self {
            protocol_id: config.protocol_id,
            private_key: config.private_key,
            challenge_key,
            challenge_sequence: 0,
            // As the reference implementation: handshake packets are sealed under the token's
            // server-to-client key on this sequence, the client's own packets later on its
            // slot's sequence from 0; starting at 2^63 keeps the two nonce ranges apart (and
            // makes a denial long enough for renetcode's client, which drops packets under 18
            // bytes).
            global_sequence: 1 << 63,
            public_addresses: config.public_addresses,
            max_clients: config.max_clients,
            now: config.current_time,
            keep_alive: DEFAULT_KEEP_ALIVE,
            slots: Vec::new(),
            free: Vec::new(),
            by_addr: HashMap::new(),
            by_id: HashMap::new(),
            pending: HashMap::new(),
            used_tokens: HashMap::new(),
            last_prune_secs: 0,
        })
    }

    /// A keep-alive goes to a client when its upkeep runs and nothing was sent to it for
    /// `interval` (the standard's 250 ms by default).
    pub fn set_keep_alive(&mut self, interval: Duration) {
        self.keep_alive = interval.min(Duration::from_secs(3600));
    }

    pub fn connected_clients(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_connected(&self, client_id: u64) -> bool {
        self.by_id.contains_key(&client_id)
    }

    /// The connected clients' ids (from the id map: a walk over them touches no client slot).
    pub fn clients_id(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_id.keys().copied()
    }

    pub fn user_data(&self, client_id: u64) -> Option<[u8; USER_DATA_BYTES]> {
        self.client(client_id).map(|c| *c.user_data)
    }

    pub fn client_addr(&self, client_id: u64) -> Option<SocketAddr> {
        self.client(client_id).map(|c| c.addr)
    }

    fn client(&self, client_id: u64) -> Option<&Client> {
        let slot = *self.by_id.get(&client_id)?;
        self.slots[slot as usize].as_ref()
    }

    fn now_secs(&self) -> u64 {
        self.now.as_secs()
    }

    /// Advances the clock; drops handshakes whose token expired, and (once a second)
    /// remembered tokens that expired.
    pub fn update(&mut self, dt: Duration) {
        self.now += dt;
        let now = self.now_secs();
        if now != self.last_prune_secs {
            self.last_prune_secs = now;
            self.pending.retain(|_, p| p.expire_timestamp >= now);
            self.used_tokens.retain(|_, t| t.expire_timestamp >= now);
        }
    }

    /// Handles one datagram from `addr`; what the server answers goes to `out`.
    pub fn process<'b>(
        &mut self,
        addr: SocketAddr,
        buf: &'b mut [u8],
        out: &mut dyn Outgoing,
    ) -> Result<Event<'b>, Refused> {
        if buf.len() < 2 + MAC_BYTES {
            return Err(Refused::TooShort);
        }
        let prefix = buf[0];
        let kind = prefix & 0xF;
        if kind > DISCONNECT || usize::from(prefix >> 4) > 8 {
            return Err(Refused::Prefix);
        }
        if let Some(&slot) = self.by_addr.get(&addr) {
            return self.client_packet(slot as usize, buf);
        }
        match kind {
            REQUEST => self.request(addr, buf, out).map(|()| Event::None),
            RESPONSE if self.pending.contains_key(&addr) => self.response(addr, buf, out),
            _ => Err(Refused::Unexpected),
        }
    }

    fn client_packet<'b>(&mut self, slot: usize, buf: &'b mut [u8]) -> Result<Event<'b>, Refused> {
        let prefix = buf[0];
        let kind = prefix & 0xF;
        if kind == REQUEST {
            // A request repeated after the handshake finished: nothing to do.
            return Ok(Event::None);
        }
        if !matches!(kind, KEEP_ALIVE | PAYLOAD | DISCONNECT) {
            return Err(Refused::Unexpected);
        }
        let protocol_id = self.protocol_id;
        let now = self.now;
        let Some(client) = self.slots[slot].as_mut() else {
            return Err(Refused::Unexpected);
        };
        let (seq, body_at) = read_sequence(buf)?;
        if client.replay.seen(seq) {
            return Err(Refused::Replayed);
        }
        let body_len = open(
            &mut buf[body_at..],
            seq,
            &client.receive_key,
            &aad(protocol_id, prefix),
        )?;
        client.replay.record(seq);
        client.last_received = now;
        let id = client.id;
        match kind {
            PAYLOAD => Ok(Event::Payload(id, &buf[body_at..body_at + body_len])),
            KEEP_ALIVE if body_len < 8 => Err(Refused::TooShort),
            KEEP_ALIVE => Ok(Event::None),
            _ => {
                self.remove(slot);
                Ok(Event::Disconnected(id))
            }
        }
    }

    fn request(
        &mut self,
        addr: SocketAddr,
        buf: &[u8],
        out: &mut dyn Outgoing,
    ) -> Result<(), Refused> {
        if buf.len() != REQUEST_BYTES {
            return Err(Refused::TooShort);
        }
        if buf[1..14] != VERSION_INFO[..] {
            return Err(Refused::Version);
        }
        let protocol_id = le_u64(&buf[14..22]);
        let expire_timestamp = le_u64(&buf[22..30]);
        if protocol_id != self.protocol_id {
            return Err(Refused::Token(TokenError::WrongProtocol));
        }
        if self.now_secs() >= expire_timestamp {
            return Err(Refused::Token(TokenError::Expired));
        }
        let mut xnonce = [0u8; 24];
        xnonce.copy_from_slice(&buf[30..54]);
        let mut private = [0u8; 1024];
        private.copy_from_slice(&buf[54..REQUEST_BYTES]);
        let token = ws_token::open_private(
            &private,
            &xnonce,
            protocol_id,
            expire_timestamp,
            &self.private_key,
        )
        .map_err(Refused::Token)?;
        if !token
            .server_addresses
            .iter()
            .any(|a| self.public_addresses.contains(a))
        {
            return Err(Refused::Token(TokenError::WrongServer));
        }
        if self.by_id.contains_key(&token.client_id) {
            return Err(Refused::AlreadyConnected);
        }
        if !self.pending.contains_key(&addr) && self.pending.len() >= MAX_PENDING {
            return Err(Refused::Busy);
        }
        self.remember_token(token.mac, addr, expire_timestamp)?;

        if self.by_id.len() >= self.max_clients {
            self.pending.remove(&addr);
            self.send_unslotted(out, addr, DENIED, &token.server_to_client_key, |_| 0);
            return Ok(());
        }

        self.challenge_sequence += 1;
        let challenge_sequence = self.challenge_sequence;
        let mut challenge = [0u8; CHALLENGE_TOKEN_BYTES];
        challenge[..8].copy_from_slice(&token.client_id.to_le_bytes());
        challenge[8..8 + USER_DATA_BYTES].copy_from_slice(&token.user_data);
        let sealed_len = CHALLENGE_TOKEN_BYTES - MAC_BYTES;
        if seal(
            &mut challenge,
            sealed_len,
            challenge_sequence,
            &self.challenge_key,
            &[],
        )
        .is_none()
        {
            return Err(Refused::Challenge);
        }
        self.send_unslotted(out, addr, CHALLENGE, &token.server_to_client_key, |body| {
            body[..8].copy_from_slice(&challenge_sequence.to_le_bytes());
            body[8..8 + CHALLENGE_TOKEN_BYTES].copy_from_slice(&challenge);
            8 + CHALLENGE_TOKEN_BYTES
        });
        self.pending.entry(addr).or_insert_with(|| Pending {
            client_id: token.client_id,
            user_data: Box::new(token.user_data),
            send_key: token.server_to_client_key,
            receive_key: token.client_to_server_key,
            timeout_seconds: token.timeout_seconds,
            expire_timestamp,
        });
        Ok(())
    }

    /// A token may be used again from the address that used it first, never from another.
    fn remember_token(
        &mut self,
        mac: [u8; MAC_BYTES],
        addr: SocketAddr,
        expire_timestamp: u64,
    ) -> Result<(), Refused> {
        if let Some(used) = self.used_tokens.get(&mac) {
            return if used.addr == addr {
                Ok(())
            } else {
                Err(Refused::TokenReused)
            };
        }
        let cap = self.max_clients.max(1) * USED_TOKENS_PER_SLOT;
        if self.used_tokens.len() >= cap {
            let now = self.now_secs();
            self.used_tokens.retain(|_, t| t.expire_timestamp >= now);
            // Still full of live tokens: forget the one that expires first (as renetcode
            // forgets its oldest), so that a flood of valid tokens cannot lock players out.
            if self.used_tokens.len() >= cap
                && let Some(soonest) = self
                    .used_tokens
                    .iter()
                    .min_by_key(|(_, t)| t.expire_timestamp)
                    .map(|(mac, _)| *mac)
            {
                self.used_tokens.remove(&soonest);
            }
        }
        self.used_tokens.insert(
            mac,
            UsedToken {
                addr,
                expire_timestamp,
            },
        );
        Ok(())
    }

    fn response<'b>(
        &mut self,
        addr: SocketAddr,
        buf: &mut [u8],
        out: &mut dyn Outgoing,
    ) -> Result<Event<'b>, Refused> {
        let Some(pending) = self.pending.get(&addr) else {
            return Err(Refused::Unexpected);
        };
        let prefix = buf[0];
        let (seq, body_at) = read_sequence(buf)?;
        let body_len = open(
            &mut buf[body_at..],
            seq,
            &pending.receive_key,
            &aad(self.protocol_id, prefix),
        )?;
        if body_len < 8 + CHALLENGE_TOKEN_BYTES {
            return Err(Refused::TooShort);
        }
        let body = &mut buf[body_at..body_at + 8 + CHALLENGE_TOKEN_BYTES];
        let challenge_sequence = le_u64(&body[..8]);
        let challenge = &mut body[8..];
        let plain_len = open(challenge, challenge_sequence, &self.challenge_key, &[])
            .map_err(|_| Refused::Challenge)?;
        if plain_len < 8 + USER_DATA_BYTES || le_u64(&challenge[..8]) != pending.client_id {
            return Err(Refused::Challenge);
        }
        let Some(pending) = self.pending.remove(&addr) else {
            return Err(Refused::Unexpected);
        };
        if self.by_id.contains_key(&pending.client_id) {
            return Err(Refused::AlreadyConnected);
        }
        let slot = match self.free.pop() {
            Some(slot) => slot as usize,
            None if self.slots.len() < self.max_clients => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => {
                self.send_unslotted(out, addr, DENIED, &pending.send_key, |_| 0);
                return Ok(Event::None);
            }
        };
        let id = pending.client_id;
        self.slots[slot] = Some(Client {
            id,
            addr,
            send_key: pending.send_key,
            receive_key: pending.receive_key,
            user_data: pending.user_data,
            last_received: self.now,
            last_sent: self.now,
            timeout_seconds: pending.timeout_seconds,
            sequence: 0,
            replay: ReplayWindow::default(),
        });
        self.by_addr.insert(addr, slot as u32);
        self.by_id.insert(id, slot as u32);
        // The keep-alive that tells the client it is in, with its slot.
        let max_clients = self.max_clients as u32;
        self.send_to_slot(out, slot, KEEP_ALIVE, &mut |body| {
            body[..4].copy_from_slice(&(slot as u32).to_le_bytes());
            body[4..8].copy_from_slice(&max_clients.to_le_bytes());
            8
        });
        Ok(Event::Connected(id))
    }

    /// Sends a payload packet to a connected client.
    pub fn send_payload(
        &mut self,
        client_id: u64,
        payload: &[u8],
        out: &mut dyn Outgoing,
    ) -> Result<(), SendError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(SendError::TooLarge(payload.len()));
        }
        let slot = *self.by_id.get(&client_id).ok_or(SendError::NoClient)? as usize;
        self.send_to_slot(out, slot, PAYLOAD, &mut |body| {
            body[..payload.len()].copy_from_slice(payload);
            payload.len()
        });
        Ok(())
    }

    /// A client's upkeep: drops it if it timed out (sending it a disconnect), or sends a
    /// keep-alive if nothing went to it for the keep-alive interval. Returns the client's id
    /// when it was dropped.
    pub fn upkeep(&mut self, client_id: u64, out: &mut dyn Outgoing) -> Option<u64> {
        let slot = *self.by_id.get(&client_id)? as usize;
        let client = self.slots[slot].as_ref()?;
        let timed_out = client.timeout_seconds > 0
            && client.last_received + Duration::from_secs(client.timeout_seconds as u64) < self.now;
        if timed_out {
            self.send_to_slot(out, slot, DISCONNECT, &mut |_| 0);
            self.remove(slot);
            return Some(client_id);
        }
        if client.last_sent + self.keep_alive <= self.now {
            let max_clients = self.max_clients as u32;
            self.send_to_slot(out, slot, KEEP_ALIVE, &mut |body| {
                body[..4].copy_from_slice(&(slot as u32).to_le_bytes());
                body[4..8].copy_from_slice(&max_clients.to_le_bytes());
                8
            });
        }
        None
    }

    /// Drops a client, sending it a disconnect; false if it was not connected.
    pub fn disconnect(&mut self, client_id: u64, out: &mut dyn Outgoing) -> bool {
        let Some(&slot) = self.by_id.get(&client_id) else {
            return false;
        };
        self.send_to_slot(out, slot as usize, DISCONNECT, &mut |_| 0);
        self.remove(slot as usize);
        true
    }

    fn remove(&mut self, slot: usize) {
        if let Some(client) = self.slots[slot].take() {
            self.by_addr.remove(&client.addr);
            self.by_id.remove(&client.id);
            self.free.push(slot as u32);
        }
    }

    /// Seals a packet of `kind` to the client in `slot` with its next sequence.
    fn send_to_slot(
        &mut self,
        out: &mut dyn Outgoing,
        slot: usize,
        kind: u8,
        body: &mut dyn FnMut(&mut [u8]) -> usize,
    ) {
        let protocol_id = self.protocol_id;
        let now = self.now;
        let Some(client) = self.slots[slot].as_mut() else {
            return;
        };
        let seq = client.sequence;
        client.sequence += 1;
        client.last_sent = now;
        let key = client.send_key;
        out.packet(client.addr, &mut |buf| {
            write_packet(buf, protocol_id, kind, seq, &key, &mut *body)
        });
    }

    /// Seals a handshake packet to an address without a slot, on the server's own sequence.
    fn send_unslotted(
        &mut self,
        out: &mut dyn Outgoing,
        addr: SocketAddr,
        kind: u8,
        key: &[u8; KEY_BYTES],
        mut body: impl FnMut(&mut [u8]) -> usize,
    ) {
        let seq = self.global_sequence;
        self.global_sequence += 1;
        let protocol_id = self.protocol_id;
        out.packet(addr, &mut |buf| {
            write_packet(buf, protocol_id, kind, seq, key, &mut body)
        });
    }
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(b)
}

fn aad(protocol_id: u64, prefix: u8) -> [u8; 22] {
    let mut aad = [0u8; 22];
    aad[..13].copy_from_slice(VERSION_INFO);
    aad[13..21].copy_from_slice(&protocol_id.to_le_bytes());
    aad[21] = prefix;
    aad
}

/// The sequence after the prefix, and where the sealed body starts.
fn read_sequence(buf: &[u8]) -> Result<(u64, usize), Refused> {
    let len = usize::from(buf[0] >> 4);
    if len > 8 {
        return Err(Refused::Prefix);
    }
    if buf.len() < 1 + len + MAC_BYTES {
        return Err(Refused::TooShort);
    }
    let mut seq = [0u8; 8];
    seq[..len].copy_from_slice(&buf[1..1 + len]);
    Ok((u64::from_le_bytes(seq), 1 + len))
}

/// Bytes the sequence takes on the wire (0 for sequence 0).
fn sequence_bytes(seq: u64) -> usize {
    8 - (seq.leading_zeros() as usize / 8)
}

/// Writes prefix, sequence and sealed body into `buf`; returns the packet's length.
fn write_packet(
    buf: &mut [u8],
    protocol_id: u64,
    kind: u8,
    seq: u64,
    key: &[u8; KEY_BYTES],
    body: &mut dyn FnMut(&mut [u8]) -> usize,
) -> usize {
    let seq_len = sequence_bytes(seq);
    let prefix = kind | ((seq_len as u8) << 4);
    buf[0] = prefix;
    buf[1..1 + seq_len].copy_from_slice(&seq.to_le_bytes()[..seq_len]);
    let at = 1 + seq_len;
    let limit = buf.len() - at - MAC_BYTES;
    let len = body(&mut buf[at..at + limit]);
    match seal(&mut buf[at..], len, seq, key, &aad(protocol_id, prefix)) {
        Some(()) => at + len + MAC_BYTES,
        None => 0,
    }
}

fn nonce(seq: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Seals `buf[..len]` in place, writing the tag at `buf[len..len + 16]`.
fn seal(buf: &mut [u8], len: usize, seq: u64, key: &[u8; KEY_BYTES], aad: &[u8]) -> Option<()> {
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).ok()?);
    let (plain, rest) = buf.split_at_mut(len);
    let tag = key
        .seal_in_place_separate_tag(nonce(seq), Aad::from(aad), plain)
        .ok()?;
    rest.get_mut(..MAC_BYTES)?.copy_from_slice(tag.as_ref());
    Some(())
}

/// Opens `buf` (ciphertext then tag) in place; returns the plaintext's length.
fn open(buf: &mut [u8], seq: u64, key: &[u8; KEY_BYTES], aad: &[u8]) -> Result<usize, Refused> {
    let key =
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).map_err(|_| Refused::Forged)?);
    key.open_in_place(nonce(seq), Aad::from(aad), buf)
        .map(|plain| plain.len())
        .map_err(|_| Refused::Forged)
}

#[cfg(test)]
mod tests;
