//! croft's message layer over the netcode sockets: renet 2's wire protocol (its packets,
//! channels, acks and resends), server side, in place of `renet::RenetServer`.
//!
//! renet clients (the client core, the bots, the Godot bindings) connect unchanged: the packets
//! are byte for byte renet's (`SmallReliable`, `SmallUnreliable`, `ReliableSlice`,
//! `UnreliableSlice`, `Ack`, with QUIC varints), and so are the rules: every packet is acked
//! by sequence in ranges, an ack packet is retired when the peer acks it, a reliable message is
//! resent after the channel's resend time until a packet carrying it is acked.
//!
//! What renet's server did that cost croft (measured in `BENCHMARKS.md`: ~40% of the instance's
//! CPU at 1,000 matches, and of the lobby's with 10,000 idle clients):
//! - `RenetServer::update` walked every connection each frame (statistics, slice expiry, lost
//!   packets); here the clock is one number and each link's housekeeping happens when the link
//!   is written or read;
//! - every packet was decoded into a `Vec` of freshly copied messages, and every flush built a
//!   `Vec<Vec<u8>>` of packets and a `BTreeMap` entry per packet; here packets are parsed in
//!   place and written straight into the socket's send queue, and the sent-packet record is a
//!   ring indexed by sequence (sequences are consecutive);
//! - a connection with nothing to send still ran the whole packet builder; here
//!   [`LinkServer::write_packets`] returns at once.
//!
//! WebSocket sessions are *direct* links ([`LinkServer::add_direct`]): the socket is already
//! reliable and ordered, so their messages go into and out of the same queues the servers read
//! and write, with no packets, acks or local client in between.
//!
//! Incoming limits are renet's (1 MiB of reliable and 256 KiB of unreliable messages waiting per
//! link) plus one renet lacks: at most [`MAX_EARLY`] reliable messages may wait for a gap, so a
//! client cannot grow the out-of-order buffer with empty messages. A link that breaks a rule is
//! disconnected with a [`DisconnectReason`] saying which.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;

/// A client's id: the netcode client id (the user id in croft).
pub type ClientId = u64;

/// Largest payload of a small-message packet and of one slice (renet's `SLICE_SIZE`).
pub const SLICE_SIZE: usize = 1200;
/// Reliable messages that may wait for an earlier one before the link counts as abusive.
pub const MAX_EARLY: usize = 1024;
/// How long a sent packet's record is kept for its ack (renet's `DISCARD_AFTER`).
const SENT_KEPT: Duration = Duration::from_secs(3);
/// Most sent-packet records per link; older ones are forgotten (their messages are resent on
/// the timer like lost ones).
const MAX_SENT: usize = 4096;
/// Most ack ranges kept (renet keeps 64).
const MAX_ACK_RANGES: usize = 64;
/// A peer's ack packet with this many further ranges gets acknowledged (so it trims them), even
/// though ack packets alone are otherwise never answered.
const TRIM_PEER_RANGES: u64 = 8;
/// Most reliable messages queued for one link (unacknowledged, or for a direct link unsent),
/// whatever their size.
const MAX_QUEUED: usize = 65_536;
/// What a received message counts against its channel's memory limit beyond its bytes (its
/// queue entry), so that empty messages cannot fill memory for free.
const MESSAGE_OVERHEAD: usize = 16;
/// Incomplete unreliable sliced messages kept per link.
const MAX_UNRELIABLE_SLICED: usize = 4;
/// Largest datagram payload written (renet's buffer).
const PACKET_BUFFER: usize = 1400;

const SMALL_RELIABLE: u8 = 0;
const SMALL_UNRELIABLE: u8 = 1;
const RELIABLE_SLICE: u8 = 2;
const UNRELIABLE_SLICE: u8 = 3;
const ACK: u8 = 4;

/// The channels and limits both ends agree on (see `shared_sim::protocol::connection_config`;
/// a test keeps the two in step).
#[derive(Debug, Clone, Copy)]
pub struct LinkConfig {
    /// The reliable, ordered channel's id.
    pub reliable_channel: u8,
    /// The unreliable channel's id.
    pub unreliable_channel: u8,
    /// A reliable message unacknowledged this long is sent again.
    pub resend: Duration,
    /// Reliable bytes one link may hold each way (waiting to be read, or unacknowledged).
    pub reliable_memory: usize,
    /// Unreliable bytes one link may hold each way.
    pub unreliable_memory: usize,
    /// Message bytes one [`LinkServer::write_packets`] call sends at most.
    pub bytes_per_write: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            reliable_channel: 0,
            unreliable_channel: 1,
            resend: Duration::from_millis(600),
            reliable_memory: 1024 * 1024,
            unreliable_memory: 256 * 1024,
            bytes_per_write: 60_000,
        }
    }
}

/// Why a packet broke the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("packet ends early")]
    Truncated,
    #[error("unknown packet type {0}")]
    PacketType(u8),
    #[error("message on unknown channel {0}")]
    Channel(u8),
    #[error("invalid ack range")]
    AckRange,
    #[error("invalid slice")]
    Slice,
    #[error("reliable channel memory exhausted")]
    ReliableMemory,
    #[error("more than {MAX_EARLY} reliable messages wait for a gap")]
    TooManyEarly,
}

/// Why a link ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The transport ended it (netcode time-out or disconnect, a closed WebSocket).
    Transport,
    /// The server called [`LinkServer::disconnect`].
    DisconnectedByServer,
    /// The client broke the protocol.
    Protocol(WireError),
    /// The client did not acknowledge the server's reliable messages (or a WebSocket client did
    /// not read them) before they filled the send budget.
    SendQueueFull,
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transport => write!(f, "connection terminated by the transport layer"),
            Self::DisconnectedByServer => write!(f, "connection terminated by the server"),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::SendQueueFull => write!(f, "reliable send queue full"),
        }
    }
}

/// What happened to links, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    ClientConnected {
        client_id: ClientId,
    },
    ClientDisconnected {
        client_id: ClientId,
        reason: DisconnectReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no link for client {0}")]
pub struct UnknownClient(pub ClientId);

/// Every client's link, and the clock they share.
pub struct LinkServer {
    config: LinkConfig,
    /// Boxed, so a walk over the ids (the flush policy's, every frame) stays in a dense table.
    links: HashMap<ClientId, Box<Link>>,
    events: VecDeque<ServerEvent>,
    /// Links marked disconnected and not yet removed by their transport.
    disconnecting: Vec<ClientId>,
    now: Duration,
    /// Message ids of the packet being written (kept to spare an allocation per write).
    scratch: Vec<u64>,
}

impl Default for LinkServer {
    fn default() -> Self {
        Self::new(LinkConfig::default())
    }
}

impl LinkServer {
    pub fn new(config: LinkConfig) -> Self {
        Self {
            config,
            links: HashMap::new(),
            events: VecDeque::new(),
            disconnecting: Vec::new(),
            now: Duration::ZERO,
            scratch: Vec::new(),
        }
    }

    /// Advances the clock (no per-link work: that happens when a link is read or written).
    pub fn update(&mut self, dt: Duration) {
        self.now += dt;
    }

    /// A netcode client connected: its link speaks renet's packets.
    pub fn add_connection(&mut self, client_id: ClientId) {
        self.add(client_id, false);
    }

    /// A WebSocket client connected: messages without packets ([`Self::push_direct`],
    /// [`Self::take_direct`]).
    pub fn add_direct(&mut self, client_id: ClientId) {
        self.add(client_id, true);
    }

    fn add(&mut self, client_id: ClientId, direct: bool) {
        if self.links.contains_key(&client_id) {
            // The transport reconnected the id without a removal: end the old link first.
            self.remove_connection(client_id);
        }
        self.links.insert(client_id, Box::new(Link::new(direct)));
        self.events
            .push_back(ServerEvent::ClientConnected { client_id });
    }

    /// The transport ended the link (time-out, disconnect packet, closed socket, or after a
    /// [`Self::disconnect`]): reported as [`ServerEvent::ClientDisconnected`].
    pub fn remove_connection(&mut self, client_id: ClientId) {
        if let Some(link) = self.links.remove(&client_id) {
            if link.disconnected.is_some() {
                self.disconnecting.retain(|&c| c != client_id);
            }
            self.events.push_back(ServerEvent::ClientDisconnected {
                client_id,
                reason: link.disconnected.unwrap_or(DisconnectReason::Transport),
            });
        }
    }

    pub fn get_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Ends a link: it is listed in [`Self::disconnections_id`] until its transport sends the
    /// goodbye and removes it; nothing more is read from or sent to it.
    pub fn disconnect(&mut self, client_id: ClientId) {
        self.mark(client_id, DisconnectReason::DisconnectedByServer);
    }

    fn mark(&mut self, client_id: ClientId, reason: DisconnectReason) {
        if let Some(link) = self.links.get_mut(&client_id)
            && link.disconnected.is_none()
        {
            link.disconnected = Some(reason);
            self.disconnecting.push(client_id);
        }
    }

    /// Links ended by the server or by a protocol error, which their transport must close.
    pub fn disconnections_id(&self) -> Vec<ClientId> {
        self.disconnecting.clone()
    }

    pub fn disconnect_reason(&self, client_id: ClientId) -> Option<DisconnectReason> {
        self.links.get(&client_id).and_then(|l| l.disconnected)
    }

    /// Every link's id, disconnected ones included (cheaper than [`Self::clients_id_iter`]: it
    /// reads no link).
    pub fn ids(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.links.keys().copied()
    }

    pub fn clients_id_iter(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.links
            .iter()
            .filter(|(_, l)| l.disconnected.is_none())
            .map(|(&c, _)| c)
    }

    pub fn connected_clients(&self) -> usize {
        self.links.len() - self.disconnecting.len()
    }

    pub fn is_connected(&self, client_id: ClientId) -> bool {
        self.links
            .get(&client_id)
            .is_some_and(|l| l.disconnected.is_none())
    }

    /// Queues a message; a reliable one stays until acknowledged. A link whose unacknowledged
    /// reliable bytes would pass the budget is disconnected ([`DisconnectReason::SendQueueFull`]).
    pub fn send_message(
        &mut self,
        client_id: ClientId,
        channel: impl Into<u8>,
        message: impl Into<Bytes>,
    ) {
        let channel = channel.into();
        let Some(link) = self.links.get_mut(&client_id) else {
            return;
        };
        if link.disconnected.is_some() {
            return;
        }
        if let Err(reason) = link.send(&self.config, channel, message.into()) {
            self.mark(client_id, reason);
        }
    }

    /// The next message waiting on `channel`, in order on the reliable channel.
    pub fn receive_message(
        &mut self,
        client_id: ClientId,
        channel: impl Into<u8>,
    ) -> Option<Bytes> {
        let channel = channel.into();
        let link = self.links.get_mut(&client_id)?;
        if link.disconnected.is_some() {
            return None;
        }
        if channel == self.config.reliable_channel {
            let m = link.inbox.pop_front()?;
            link.inbox_bytes -= cost(m.len());
            Some(m)
        } else if channel == self.config.unreliable_channel {
            let m = link.unreliable_in.pop_front()?;
            link.unreliable_in_bytes -= cost(m.len());
            Some(m)
        } else {
            None
        }
    }

    /// Reads one renet packet from `client_id`. A packet that breaks the protocol disconnects
    /// the link (the error says why); only an unknown client is an error here.
    pub fn process_packet_from(
        &mut self,
        payload: &[u8],
        client_id: ClientId,
    ) -> Result<(), UnknownClient> {
        let link = self
            .links
            .get_mut(&client_id)
            .ok_or(UnknownClient(client_id))?;
        if link.disconnected.is_some() || link.direct {
            return Ok(());
        }
        if let Err(e) = link.process(&self.config, self.now, payload) {
            self.mark(client_id, DisconnectReason::Protocol(e));
        }
        Ok(())
    }

    /// Whether a write now would send anything (with acks, or messages only).
    pub fn wants_write(&self, client_id: ClientId, with_acks: bool) -> bool {
        self.links
            .get(&client_id)
            .is_some_and(|l| l.wants_write(self.now, with_acks))
    }

    /// Writes the link's due packets, each passed to `send` (a netcode payload each): new and
    /// due-for-resend reliable messages, queued unreliable ones, and with `with_acks` the ack
    /// packet when the link owes one. Returns the packets written.
    pub fn write_packets(
        &mut self,
        client_id: ClientId,
        with_acks: bool,
        mut send: impl FnMut(&[u8]),
    ) -> usize {
        let Some(link) = self.links.get_mut(&client_id) else {
            return 0;
        };
        if !link.wants_write(self.now, with_acks) {
            return 0;
        }
        link.write(
            &self.config,
            self.now,
            with_acks,
            &mut self.scratch,
            &mut send,
        )
    }

    /// A WebSocket frame from a direct link: waits on the reliable channel. Over the budget
    /// the link is disconnected and `false` returned.
    pub fn push_direct(&mut self, client_id: ClientId, message: Bytes) -> bool {
        let Some(link) = self.links.get_mut(&client_id) else {
            return false;
        };
        if link.disconnected.is_some() {
            return false;
        }
        if link.inbox_bytes + cost(message.len()) > self.config.reliable_memory {
            self.mark(
                client_id,
                DisconnectReason::Protocol(WireError::ReliableMemory),
            );
            return false;
        }
        link.inbox_bytes += cost(message.len());
        link.inbox.push_back(message);
        true
    }

    /// A direct link's queued messages (both channels, in the order sent), taken.
    pub fn take_direct(&mut self, client_id: ClientId) -> Vec<Bytes> {
        match self.links.get_mut(&client_id) {
            Some(link) if link.direct => {
                link.out_bytes = 0;
                std::mem::take(&mut link.direct_out)
            }
            _ => Vec::new(),
        }
    }

    /// Reliable messages sent to `client_id` and not yet acknowledged (tests, metrics).
    pub fn unacked(&self, client_id: ClientId) -> usize {
        self.links
            .get(&client_id)
            .map_or(0, |l| l.unacked.iter().filter(|u| !u.acked).count())
    }
}

/// One client's link state.
struct Link {
    direct: bool,
    disconnected: Option<DisconnectReason>,

    // Receiving.
    /// Sequences of the peer's packets to acknowledge, as sorted disjoint ranges.
    pending_acks: Vec<Range<u64>>,
    /// A packet with messages arrived since the last ack packet went out.
    owe_ack: bool,
    /// The next reliable message id to deliver.
    recv_next: u64,
    /// Reliable messages past a gap.
    early: BTreeMap<u64, Bytes>,
    /// Reliable sliced messages being assembled.
    slices_in: Vec<SliceIn>,
    /// Reliable messages ready, in order.
    inbox: VecDeque<Bytes>,
    /// Bytes in `early`, `slices_in` and `inbox`.
    inbox_bytes: usize,
    unreliable_in: VecDeque<Bytes>,
    unreliable_slices_in: Vec<(SliceIn, Duration)>,
    /// Bytes in `unreliable_in` and `unreliable_slices_in`.
    unreliable_in_bytes: usize,

    // Sending.
    next_sequence: u64,
    /// The sequence of `sent[0]`.
    sent_base: u64,
    sent: VecDeque<Sent>,
    /// The message id of `unacked[0]`.
    unacked_base: u64,
    unacked: VecDeque<Unacked>,
    /// Unacknowledged reliable bytes (direct links: queued bytes).
    out_bytes: usize,
    /// Messages from this id on were never sent.
    unsent_from: u64,
    /// No sent message is due for a resend before this time.
    resend_at: Duration,
    unreliable_out: Vec<Bytes>,
    unreliable_out_bytes: usize,
    next_unreliable_slice: u64,
    /// A direct link's outgoing messages.
    direct_out: Vec<Bytes>,
}

struct Unacked {
    message: Bytes,
    last_sent: Option<Duration>,
    acked: bool,
    slices: Option<Box<SlicesOut>>,
}

struct SlicesOut {
    acked: Vec<bool>,
    last_sent: Vec<Option<Duration>>,
    remaining: usize,
}

struct Sent {
    at: Duration,
    what: SentWhat,
}

enum SentWhat {
    /// Nothing to do on its ack (unreliable, or already acked).
    Nothing,
    /// Consecutive reliable message ids.
    Messages {
        first: u64,
        count: u32,
    },
    /// Reliable message ids out of sequence (resends among new ones).
    MessageList(Vec<u64>),
    Slice {
        message: u64,
        index: u32,
    },
    /// An ack packet acknowledging up to this sequence.
    Ack {
        largest: u64,
    },
}

struct SliceIn {
    message: u64,
    count: usize,
    received: Vec<bool>,
    remaining: usize,
    data: Vec<u8>,
}

impl SliceIn {
    fn new(message: u64, count: usize) -> Self {
        Self {
            message,
            count,
            received: vec![false; count],
            remaining: count,
            data: vec![0; count * SLICE_SIZE],
        }
    }

    /// Adds a slice; the message once complete.
    fn add(
        &mut self,
        index: usize,
        count: usize,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, WireError> {
        if count != self.count {
            return Err(WireError::Slice);
        }
        if self.received[index] {
            return Ok(None);
        }
        let start = index * SLICE_SIZE;
        self.data[start..start + payload.len()].copy_from_slice(payload);
        if index == count - 1 {
            self.data.truncate(start + payload.len());
        }
        self.received[index] = true;
        self.remaining -= 1;
        Ok((self.remaining == 0).then(|| std::mem::take(&mut self.data)))
    }
}

/// A slice packet's body on `channel`: message id, slice index and count, payload (checked by
/// [`check_slice`]).
fn read_slice<'a>(
    r: &mut Reader<'a>,
    channel: u8,
    max_bytes: usize,
) -> Result<(u64, usize, usize, &'a [u8]), WireError> {
    r.channel(channel)?;
    let (id, index, count) = (r.varint()?, r.varint()?, r.varint()?);
    let payload = r.bytes_with_len()?;
    let (index, count) = check_slice(index, count, payload.len(), max_bytes)?;
    Ok((id, index, count, payload))
}

/// A received message's charge against its channel's memory limit.
fn cost(len: usize) -> usize {
    len + MESSAGE_OVERHEAD
}

/// A slice's header and payload, checked: a non-final slice is exactly [`SLICE_SIZE`] bytes,
/// the final one 1 to [`SLICE_SIZE`], and there are no more slices than `max_bytes` allows.
fn check_slice(
    index: u64,
    count: u64,
    len: usize,
    max_bytes: usize,
) -> Result<(usize, usize), WireError> {
    let max_slices = (max_bytes / SLICE_SIZE).max(1) as u64;
    if count == 0 || count > max_slices || index >= count {
        return Err(WireError::Slice);
    }
    let last = index == count - 1;
    if len == 0 || len > SLICE_SIZE || (!last && len != SLICE_SIZE) {
        return Err(WireError::Slice);
    }
    Ok((index as usize, count as usize))
}

impl Link {
    fn new(direct: bool) -> Self {
        Self {
            direct,
            disconnected: None,
            pending_acks: Vec::new(),
            owe_ack: false,
            recv_next: 0,
            early: BTreeMap::new(),
            slices_in: Vec::new(),
            inbox: VecDeque::new(),
            inbox_bytes: 0,
            unreliable_in: VecDeque::new(),
            unreliable_slices_in: Vec::new(),
            unreliable_in_bytes: 0,
            next_sequence: 0,
            sent_base: 0,
            sent: VecDeque::new(),
            unacked_base: 0,
            unacked: VecDeque::new(),
            out_bytes: 0,
            unsent_from: 0,
            resend_at: Duration::MAX,
            unreliable_out: Vec::new(),
            unreliable_out_bytes: 0,
            next_unreliable_slice: 0,
            direct_out: Vec::new(),
        }
    }

    fn send(
        &mut self,
        config: &LinkConfig,
        channel: u8,
        message: Bytes,
    ) -> Result<(), DisconnectReason> {
        if self.direct {
            if channel == config.reliable_channel {
                if self.out_bytes + message.len() > config.reliable_memory
                    || self.direct_out.len() >= MAX_QUEUED
                {
                    return Err(DisconnectReason::SendQueueFull);
                }
                self.out_bytes += message.len();
                self.direct_out.push(message);
            } else if channel == config.unreliable_channel {
                // Unreliable messages may be dropped: WebSocket delivers them if there is room.
                if self.out_bytes + message.len() <= config.reliable_memory
                    && self.direct_out.len() < MAX_QUEUED
                {
                    self.out_bytes += message.len();
                    self.direct_out.push(message);
                }
            }
            return Ok(());
        }
        if channel == config.reliable_channel {
            if self.out_bytes + message.len() > config.reliable_memory
                || self.unacked.len() >= MAX_QUEUED
            {
                return Err(DisconnectReason::SendQueueFull);
            }
            self.out_bytes += message.len();
            let slices = (message.len() > SLICE_SIZE).then(|| {
                let n = message.len().div_ceil(SLICE_SIZE);
                Box::new(SlicesOut {
                    acked: vec![false; n],
                    last_sent: vec![None; n],
                    remaining: n,
                })
            });
            self.unacked.push_back(Unacked {
                message,
                last_sent: None,
                acked: false,
                slices,
            });
        } else if channel == config.unreliable_channel
            && self.unreliable_out_bytes + message.len() <= config.unreliable_memory
        {
            self.unreliable_out_bytes += message.len();
            self.unreliable_out.push(message);
        }
        Ok(())
    }

    // ---- receiving ----

    fn process(
        &mut self,
        config: &LinkConfig,
        now: Duration,
        payload: &[u8],
    ) -> Result<(), WireError> {
        let mut r = Reader::new(payload);
        let kind = r.u8()?;
        let sequence = r.varint()?;
        match kind {
            SMALL_RELIABLE => {
                r.channel(config.reliable_channel)?;
                let count = r.u16()?;
                for _ in 0..count {
                    let id = r.varint()?;
                    let message = r.bytes_with_len()?;
                    self.receive_reliable(config, id, message)?;
                }
            }
            SMALL_UNRELIABLE => {
                r.channel(config.unreliable_channel)?;
                let count = r.u16()?;
                for _ in 0..count {
                    let message = r.bytes_with_len()?;
                    if self.unreliable_in_bytes + cost(message.len()) <= config.unreliable_memory {
                        self.unreliable_in_bytes += cost(message.len());
                        self.unreliable_in
                            .push_back(Bytes::copy_from_slice(message));
                    }
                }
            }
            RELIABLE_SLICE => {
                let (id, index, count, payload) =
                    read_slice(&mut r, config.reliable_channel, config.reliable_memory)?;
                self.receive_reliable_slice(config, id, index, count, payload)?;
            }
            UNRELIABLE_SLICE => {
                let (id, index, count, payload) =
                    read_slice(&mut r, config.unreliable_channel, config.unreliable_memory)?;
                self.receive_unreliable_slice(config, now, id, index, count, payload)?;
            }
            ACK => self.receive_ack(now, &mut r)?,
            other => return Err(WireError::PacketType(other)),
        }
        // Only packets with messages call for an ack packet: renet acknowledges every packet,
        // ack packets included, so answering acks with acks would never end (see `write`).
        self.owe_ack |= kind != ACK;
        self.add_pending_ack(sequence);
        Ok(())
    }

    fn receive_reliable(
        &mut self,
        config: &LinkConfig,
        id: u64,
        message: &[u8],
    ) -> Result<(), WireError> {
        if id < self.recv_next || self.early.contains_key(&id) {
            return Ok(());
        }
        if self.inbox_bytes + cost(message.len()) > config.reliable_memory {
            return Err(WireError::ReliableMemory);
        }
        self.accept_reliable(id, Bytes::copy_from_slice(message))
    }

    /// Delivers or parks a new reliable message (`inbox_bytes` not yet counting it).
    fn accept_reliable(&mut self, id: u64, message: Bytes) -> Result<(), WireError> {
        if id == self.recv_next {
            self.inbox_bytes += cost(message.len());
            self.inbox.push_back(message);
            self.recv_next += 1;
            while let Some(next) = self.early.remove(&self.recv_next) {
                self.inbox.push_back(next);
                self.recv_next += 1;
            }
            // A slice buffer for a message now delivered can go (its bytes were counted).
            let before = self.slices_in.len();
            if before > 0 {
                let next = self.recv_next;
                let mut freed = 0;
                self.slices_in.retain(|s| {
                    let keep = s.message >= next;
                    if !keep {
                        freed += s.count * SLICE_SIZE;
                    }
                    keep
                });
                self.inbox_bytes -= freed;
            }
            return Ok(());
        }
        if self.early.len() >= MAX_EARLY {
            return Err(WireError::TooManyEarly);
        }
        self.inbox_bytes += cost(message.len());
        self.early.insert(id, message);
        Ok(())
    }

    fn receive_reliable_slice(
        &mut self,
        config: &LinkConfig,
        id: u64,
        index: usize,
        count: usize,
        payload: &[u8],
    ) -> Result<(), WireError> {
        if id < self.recv_next || self.early.contains_key(&id) {
            return Ok(());
        }
        let at = match self.slices_in.iter().position(|s| s.message == id) {
            Some(at) => at,
            None => {
                let reserve = count * SLICE_SIZE;
                if self.inbox_bytes + reserve > config.reliable_memory {
                    return Err(WireError::ReliableMemory);
                }
                if self.slices_in.len() >= MAX_EARLY {
                    return Err(WireError::TooManyEarly);
                }
                self.inbox_bytes += reserve;
                self.slices_in.push(SliceIn::new(id, count));
                self.slices_in.len() - 1
            }
        };
        if let Some(message) = self.slices_in[at].add(index, count, payload)? {
            self.slices_in.swap_remove(at);
            self.inbox_bytes -= count * SLICE_SIZE;
            self.accept_reliable(id, Bytes::from(message))?;
        }
        Ok(())
    }

    fn receive_unreliable_slice(
        &mut self,
        config: &LinkConfig,
        now: Duration,
        id: u64,
        index: usize,
        count: usize,
        payload: &[u8],
    ) -> Result<(), WireError> {
        // Incomplete messages older than a sent packet's lifetime are lost.
        let mut freed = 0;
        self.unreliable_slices_in.retain(|(s, at)| {
            let keep = now.saturating_sub(*at) < SENT_KEPT;
            if !keep {
                freed += s.count * SLICE_SIZE;
            }
            keep
        });
        self.unreliable_in_bytes -= freed;
        let at = match self
            .unreliable_slices_in
            .iter()
            .position(|(s, _)| s.message == id)
        {
            Some(at) => at,
            None => {
                let reserve = count * SLICE_SIZE;
                if self.unreliable_slices_in.len() >= MAX_UNRELIABLE_SLICED
                    || self.unreliable_in_bytes + reserve > config.unreliable_memory
                {
                    // Dropped, as unreliable messages over the budget are.
                    return Ok(());
                }
                self.unreliable_in_bytes += reserve;
                self.unreliable_slices_in
                    .push((SliceIn::new(id, count), now));
                self.unreliable_slices_in.len() - 1
            }
        };
        if let Some(message) = self.unreliable_slices_in[at].0.add(index, count, payload)? {
            self.unreliable_slices_in.swap_remove(at);
            self.unreliable_in_bytes -= count * SLICE_SIZE;
            self.unreliable_in_bytes += cost(message.len());
            self.unreliable_in.push_back(Bytes::from(message));
        }
        Ok(())
    }

    /// An ack packet: ranges are decoded from the highest down (each strictly below the one
    /// before, as renet writes them), and each acks the sent packets it covers.
    fn receive_ack(&mut self, now: Duration, r: &mut Reader<'_>) -> Result<(), WireError> {
        let end = r.varint()?;
        let size = r.varint()?;
        let remaining = r.varint()?;
        if end < size {
            return Err(WireError::AckRange);
        }
        // A peer reporting many ranges lost some of our packets and keeps acking them all in
        // every packet until one of its ack packets is acknowledged: owe it that.
        if remaining >= TRIM_PEER_RANGES {
            self.owe_ack = true;
        }
        let mut start = end - size;
        self.ack_range(start..end + 1);
        for _ in 0..remaining {
            let gap = r.varint()?;
            if start < gap.saturating_add(2) {
                return Err(WireError::AckRange);
            }
            let range_end = start - gap - 2;
            let range_size = r.varint()?;
            if range_end < range_size {
                return Err(WireError::AckRange);
            }
            start = range_end - range_size;
            self.ack_range(start..range_end + 1);
        }
        self.forget_old_sent(now);
        Ok(())
    }

    fn ack_range(&mut self, range: Range<u64>) {
        let base = self.sent_base;
        let top = base + self.sent.len() as u64;
        let (from, to) = (range.start.max(base), range.end.min(top));
        for sequence in from..to {
            let index = (sequence - base) as usize;
            let what = std::mem::replace(&mut self.sent[index].what, SentWhat::Nothing);
            match what {
                SentWhat::Nothing => {}
                SentWhat::Messages { first, count } => {
                    for id in first..first + u64::from(count) {
                        self.ack_message(id);
                    }
                }
                SentWhat::MessageList(ids) => {
                    for id in ids {
                        self.ack_message(id);
                    }
                }
                SentWhat::Slice { message, index } => self.ack_slice(message, index as usize),
                SentWhat::Ack { largest } => self.acked_largest(largest),
            }
        }
        self.pop_acked();
    }

    fn ack_message(&mut self, id: u64) {
        let Some(index) = id.checked_sub(self.unacked_base) else {
            return;
        };
        if let Some(u) = self.unacked.get_mut(index as usize)
            && !u.acked
        {
            u.acked = true;
            self.out_bytes -= u.message.len();
        }
    }

    fn ack_slice(&mut self, id: u64, slice: usize) {
        let Some(index) = id.checked_sub(self.unacked_base) else {
            return;
        };
        let Some(u) = self.unacked.get_mut(index as usize) else {
            return;
        };
        if u.acked {
            return;
        }
        let Some(s) = u.slices.as_mut() else {
            return;
        };
        if let Some(acked) = s.acked.get_mut(slice)
            && !*acked
        {
            *acked = true;
            s.remaining -= 1;
            if s.remaining == 0 {
                u.acked = true;
                self.out_bytes -= u.message.len();
            }
        }
    }

    fn pop_acked(&mut self) {
        while self.unacked.front().is_some_and(|u| u.acked) {
            self.unacked.pop_front();
            self.unacked_base += 1;
        }
        self.unsent_from = self.unsent_from.max(self.unacked_base);
    }

    /// The peer has our acks up to `largest`: they need not be repeated.
    fn acked_largest(&mut self, largest: u64) {
        while let Some(range) = self.pending_acks.first_mut() {
            if largest < range.start {
                return;
            }
            if range.end <= largest {
                self.pending_acks.remove(0);
                continue;
            }
            range.start = largest + 1;
            if range.is_empty() {
                self.pending_acks.remove(0);
            }
            return;
        }
    }

    /// renet's pending-ack bookkeeping: sorted disjoint ranges, merged, at most 64 (the oldest
    /// dropped).
    fn add_pending_ack(&mut self, sequence: u64) {
        let acks = &mut self.pending_acks;
        // Full: a sequence below every range is dropped (renet inserts it and grows the list
        // without bound, so a client sending descending sequences could make every packet
        // cost a scan of a list as long as its packet count).
        if acks.len() >= MAX_ACK_RANGES && acks.first().is_some_and(|r| sequence < r.start) {
            return;
        }
        for index in 0..acks.len() {
            let range = &mut acks[index];
            if range.contains(&sequence) {
                return;
            }
            if range.start == sequence + 1 {
                range.start = sequence;
                return;
            }
            if range.end == sequence {
                range.end = sequence + 1;
                if index + 1 < acks.len() && acks[index].end == acks[index + 1].start {
                    acks[index].end = acks[index + 1].end;
                    acks.remove(index + 1);
                }
                return;
            }
            if range.start > sequence + 1 {
                acks.insert(index, sequence..sequence + 1);
                if acks.len() > MAX_ACK_RANGES {
                    acks.remove(0);
                }
                return;
            }
        }
        acks.push(sequence..sequence + 1);
        if acks.len() > MAX_ACK_RANGES {
            acks.remove(0);
        }
    }

    // ---- sending ----

    fn forget_old_sent(&mut self, now: Duration) {
        while let Some(front) = self.sent.front() {
            let done = matches!(front.what, SentWhat::Nothing);
            if done || now.saturating_sub(front.at) >= SENT_KEPT || self.sent.len() > MAX_SENT {
                self.sent.pop_front();
                self.sent_base += 1;
            } else {
                break;
            }
        }
    }

    fn record(&mut self, now: Duration, what: SentWhat) -> u64 {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        if self.sent.is_empty() {
            self.sent_base = sequence;
        }
        self.sent.push_back(Sent { at: now, what });
        sequence
    }

    fn wants_write(&self, now: Duration, with_acks: bool) -> bool {
        if self.disconnected.is_some() || self.direct {
            return false;
        }
        (with_acks && self.owe_ack && !self.pending_acks.is_empty())
            || !self.unreliable_out.is_empty()
            || self.unsent_from < self.unacked_base + self.unacked.len() as u64
            || (!self.unacked.is_empty() && now >= self.resend_at)
    }

    fn write(
        &mut self,
        config: &LinkConfig,
        now: Duration,
        with_acks: bool,
        ids: &mut Vec<u64>,
        send: &mut impl FnMut(&[u8]),
    ) -> usize {
        self.forget_old_sent(now);
        let mut budget = config.bytes_per_write;
        let mut written = 0;
        let mut buf = [0u8; PACKET_BUFFER];

        // Reliable messages: all of them when a resend may be due, else the unsent tail.
        let full_scan = now >= self.resend_at;
        let start = if full_scan {
            0
        } else {
            (self.unsent_from - self.unacked_base) as usize
        };
        let mut next_resend = if full_scan {
            Duration::MAX
        } else {
            self.resend_at
        };
        let mut first_skipped: Option<u64> = None;
        ids.clear();
        let mut packet_bytes = 0;
        for i in start..self.unacked.len() {
            let id = self.unacked_base + i as u64;
            let u = &mut self.unacked[i];
            if u.acked {
                continue;
            }
            if let Some(slices) = u.slices.as_mut() {
                let n = slices.acked.len();
                for index in 0..n {
                    if slices.acked[index] {
                        continue;
                    }
                    if let Some(at) = slices.last_sent[index] {
                        let due = at + config.resend;
                        if now < due {
                            next_resend = next_resend.min(due);
                            continue;
                        }
                    }
                    if budget < SLICE_SIZE {
                        first_skipped.get_or_insert(id);
                        break;
                    }
                    let from = index * SLICE_SIZE;
                    let to = (from + SLICE_SIZE).min(u.message.len());
                    budget -= to - from;
                    slices.last_sent[index] = Some(now);
                    next_resend = next_resend.min(now + config.resend);
                    let sequence = self.next_sequence;
                    self.next_sequence += 1;
                    if self.sent.is_empty() {
                        self.sent_base = sequence;
                    }
                    self.sent.push_back(Sent {
                        at: now,
                        what: SentWhat::Slice {
                            message: id,
                            index: index as u32,
                        },
                    });
                    let slice = Slice {
                        kind: RELIABLE_SLICE,
                        sequence,
                        channel: config.reliable_channel,
                        message: id,
                        index,
                        count: n,
                    };
                    let len = slice.write(&mut buf, &u.message[from..to]);
                    send(&buf[..len]);
                    written += 1;
                }
                continue;
            }
            if let Some(at) = u.last_sent {
                let due = at + config.resend;
                if now < due {
                    next_resend = next_resend.min(due);
                    continue;
                }
            }
            let len = u.message.len();
            if budget < len {
                first_skipped.get_or_insert(id);
                continue;
            }
            budget -= len;
            u.last_sent = Some(now);
            next_resend = next_resend.min(now + config.resend);
            let size = varint_len(id) + varint_len(len as u64) + len;
            if packet_bytes + size > SLICE_SIZE && !ids.is_empty() {
                written += self.emit_small(&mut buf, config, now, ids, send);
                packet_bytes = 0;
            }
            ids.push(id);
            packet_bytes += size;
        }
        if !ids.is_empty() {
            written += self.emit_small(&mut buf, config, now, ids, send);
        }
        self.resend_at = next_resend;
        self.unsent_from = first_skipped.unwrap_or(self.unacked_base + self.unacked.len() as u64);

        if !self.unreliable_out.is_empty() {
            written += self.write_unreliable(&mut buf, config, now, budget, send);
        }

        // The ack packet goes out when packets with messages arrived since the last one. The
        // pending ranges also cover the peer's ack packets, so the peer trims its own pending
        // acks whenever it sends messages; acks of acks alone are never answered, which is what
        // stops the ping-pong renet's servers keep up at every flush (an idle peer's ack packets
        // cost one received datagram each, and nothing sent back).
        if with_acks && self.owe_ack && !self.pending_acks.is_empty() {
            self.owe_ack = false;
            let largest = self.pending_acks.last().map_or(0, |r| r.end - 1);
            let sequence = self.record(now, SentWhat::Ack { largest });
            let len = write_ack(&mut buf, sequence, &self.pending_acks);
            send(&buf[..len]);
            written += 1;
        }
        written
    }

    /// One `SmallReliable` packet of the messages `ids` (taken).
    fn emit_small(
        &mut self,
        buf: &mut [u8; PACKET_BUFFER],
        config: &LinkConfig,
        now: Duration,
        ids: &mut Vec<u64>,
        send: &mut impl FnMut(&[u8]),
    ) -> usize {
        let sequence = self.next_sequence;
        let mut w = Writer::new(buf);
        w.u8(SMALL_RELIABLE);
        w.varint(sequence);
        w.u8(config.reliable_channel);
        w.u16(ids.len() as u16);
        for &id in ids.iter() {
            let message = &self.unacked[(id - self.unacked_base) as usize].message;
            w.varint(id);
            w.varint(message.len() as u64);
            w.bytes(message);
        }
        let len = w.len();
        send(&buf[..len]);
        let first = ids[0];
        let consecutive = ids
            .iter()
            .enumerate()
            .all(|(i, &id)| id == first + i as u64);
        let what = if consecutive {
            SentWhat::Messages {
                first,
                count: ids.len() as u32,
            }
        } else {
            SentWhat::MessageList(ids.clone())
        };
        self.record(now, what);
        ids.clear();
        1
    }

    /// Queued unreliable messages: small ones packed, large ones sliced; dropped past the
    /// write's byte budget (as renet does).
    fn write_unreliable(
        &mut self,
        buf: &mut [u8; PACKET_BUFFER],
        config: &LinkConfig,
        now: Duration,
        mut budget: usize,
        send: &mut impl FnMut(&[u8]),
    ) -> usize {
        let messages = std::mem::take(&mut self.unreliable_out);
        self.unreliable_out_bytes = 0;
        let mut written = 0;
        let mut batch: Vec<&Bytes> = Vec::new();
        let mut batch_bytes = 0;
        for message in &messages {
            if budget < message.len() {
                continue;
            }
            budget -= message.len();
            if message.len() > SLICE_SIZE {
                let message_id = self.next_unreliable_slice;
                self.next_unreliable_slice += 1;
                let count = message.len().div_ceil(SLICE_SIZE);
                for index in 0..count {
                    let from = index * SLICE_SIZE;
                    let to = (from + SLICE_SIZE).min(message.len());
                    let slice = Slice {
                        kind: UNRELIABLE_SLICE,
                        sequence: self.record(now, SentWhat::Nothing),
                        channel: config.unreliable_channel,
                        message: message_id,
                        index,
                        count,
                    };
                    let len = slice.write(buf, &message[from..to]);
                    send(&buf[..len]);
                    written += 1;
                }
                continue;
            }
            let size = varint_len(message.len() as u64) + message.len();
            if batch_bytes + size > SLICE_SIZE && !batch.is_empty() {
                written += self.emit_unreliable(buf, config, now, &mut batch, send);
                batch_bytes = 0;
            }
            batch.push(message);
            batch_bytes += size;
        }
        if !batch.is_empty() {
            written += self.emit_unreliable(buf, config, now, &mut batch, send);
        }
        written
    }

    fn emit_unreliable(
        &mut self,
        buf: &mut [u8; PACKET_BUFFER],
        config: &LinkConfig,
        now: Duration,
        batch: &mut Vec<&Bytes>,
        send: &mut impl FnMut(&[u8]),
    ) -> usize {
        let sequence = self.record(now, SentWhat::Nothing);
        let mut w = Writer::new(buf);
        w.u8(SMALL_UNRELIABLE);
        w.varint(sequence);
        w.u8(config.unreliable_channel);
        w.u16(batch.len() as u16);
        for message in batch.iter() {
            w.varint(message.len() as u64);
            w.bytes(message);
        }
        let len = w.len();
        send(&buf[..len]);
        batch.clear();
        1
    }
}

/// A slice packet's header.
struct Slice {
    kind: u8,
    sequence: u64,
    channel: u8,
    message: u64,
    index: usize,
    count: usize,
}

impl Slice {
    fn write(&self, buf: &mut [u8; PACKET_BUFFER], payload: &[u8]) -> usize {
        let mut w = Writer::new(buf);
        w.u8(self.kind);
        w.varint(self.sequence);
        w.u8(self.channel);
        w.varint(self.message);
        w.varint(self.index as u64);
        w.varint(self.count as u64);
        w.varint(payload.len() as u64);
        w.bytes(payload);
        w.len()
    }
}

/// An ack packet of `ranges` (sorted, disjoint), written as renet does: the highest range's
/// last sequence and size, the count of the others, then each as the gap below the previous
/// range's start and its size.
fn write_ack(buf: &mut [u8; PACKET_BUFFER], sequence: u64, ranges: &[Range<u64>]) -> usize {
    let mut w = Writer::new(buf);
    w.u8(ACK);
    w.varint(sequence);
    let mut it = ranges.iter().rev();
    if let Some(last) = it.next() {
        w.varint(last.end - 1);
        w.varint(last.end - 1 - last.start);
        w.varint(it.len() as u64);
        let mut previous_start = last.start;
        for range in it {
            w.varint(previous_start - range.end - 1);
            w.varint(range.end - 1 - range.start);
            previous_start = range.start;
        }
    }
    w.len()
}

/// QUIC's variable-length integer size (renet writes with `octets`).
fn varint_len(v: u64) -> usize {
    match v {
        0..=63 => 1,
        64..=16_383 => 2,
        16_384..=1_073_741_823 => 4,
        _ => 8,
    }
}

/// Reads a packet in place; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    /// A channel id, which must be `expected`.
    fn channel(&mut self, expected: u8) -> Result<(), WireError> {
        match self.u8()? {
            c if c == expected => Ok(()),
            c => Err(WireError::Channel(c)),
        }
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let first = *self.buf.first().ok_or(WireError::Truncated)?;
        let len = 1usize << (first >> 6);
        let b = self.take(len)?;
        let mut v = u64::from(b[0] & 0x3f);
        for &byte in &b[1..] {
            v = (v << 8) | u64::from(byte);
        }
        Ok(v)
    }

    fn bytes_with_len(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| WireError::Truncated)?;
        self.take(len)
    }
}

/// Writes a packet into a buffer sized for the largest one (callers keep within it: a packet
/// is at most a 12-byte header and [`SLICE_SIZE`] bytes of messages, or 64 ack ranges).
struct Writer<'a> {
    buf: &'a mut [u8; PACKET_BUFFER],
    at: usize,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a mut [u8; PACKET_BUFFER]) -> Self {
        Self { buf, at: 0 }
    }

    fn len(&self) -> usize {
        self.at
    }

    fn bytes(&mut self, b: &[u8]) {
        let end = (self.at + b.len()).min(PACKET_BUFFER);
        let n = end - self.at;
        self.buf[self.at..end].copy_from_slice(&b[..n]);
        self.at = end;
    }

    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }

    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }

    fn varint(&mut self, v: u64) {
        match varint_len(v) {
            1 => self.bytes(&[v as u8]),
            2 => self.bytes(&((v as u16) | 0x4000).to_be_bytes()),
            4 => self.bytes(&((v as u32) | 0x8000_0000).to_be_bytes()),
            _ => self.bytes(&((v & 0x3fff_ffff_ffff_ffff) | 0xc000_0000_0000_0000).to_be_bytes()),
        }
    }
}

#[cfg(test)]
mod tests;
