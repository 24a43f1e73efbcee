//! The link layer against renet's own client (the version the client core pins): packets go
//! between a `renet::RenetClient` and a [`LinkServer`] in memory, with loss, duplication and
//! reordering where a test says so.

use super::*;
use renet::RenetClient;
use shared_sim::protocol::{Channel, connection_config};

const CLIENT: ClientId = 7;
const STEP: Duration = Duration::from_millis(25);

/// A small deterministic generator (xorshift64*), so failures replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// What the network does to packets in flight.
#[derive(Clone, Copy)]
struct Weather {
    loss: u64,
    duplicate: u64,
    reorder: u64,
}

const CLEAR: Weather = Weather {
    loss: 0,
    duplicate: 0,
    reorder: 0,
};

struct Pair {
    client: RenetClient,
    server: LinkServer,
    rng: Rng,
    weather: Weather,
    to_server: Vec<Vec<u8>>,
    to_client: Vec<Vec<u8>>,
    /// Packets the server wrote.
    server_packets: usize,
}

impl Pair {
    fn new(weather: Weather, seed: u64) -> Self {
        let mut client = RenetClient::new(connection_config());
        client.set_connected();
        let mut server = LinkServer::default();
        server.add_connection(CLIENT);
        assert_eq!(
            server.get_event(),
            Some(ServerEvent::ClientConnected { client_id: CLIENT })
        );
        Self {
            client,
            server,
            rng: Rng(seed),
            weather,
            to_server: Vec::new(),
            to_client: Vec::new(),
            server_packets: 0,
        }
    }

    fn carry(rng: &mut Rng, weather: Weather, packets: Vec<Vec<u8>>, queue: &mut Vec<Vec<u8>>) {
        for p in packets {
            if rng.chance(weather.loss) {
                continue;
            }
            if rng.chance(weather.duplicate) {
                queue.push(p.clone());
            }
            if rng.chance(weather.reorder) && !queue.is_empty() {
                let at = (rng.next() % queue.len() as u64) as usize;
                queue.insert(at, p);
            } else {
                queue.push(p);
            }
        }
    }

    /// One step: both ends advance, write, and read what arrived.
    fn step(&mut self) {
        self.client.update(STEP);
        self.server.update(STEP);
        let from_client = self.client.get_packets_to_send();
        Self::carry(
            &mut self.rng,
            self.weather,
            from_client,
            &mut self.to_server,
        );
        let mut written = Vec::new();
        self.server_packets += self
            .server
            .write_packets(CLIENT, true, |p| written.push(p.to_vec()));
        Self::carry(&mut self.rng, self.weather, written, &mut self.to_client);
        for p in std::mem::take(&mut self.to_server) {
            self.server.process_packet_from(&p, CLIENT).unwrap();
        }
        for p in std::mem::take(&mut self.to_client) {
            self.client.process_packet(&p);
        }
    }

    fn server_inbox(&mut self, channel: Channel) -> Vec<Bytes> {
        std::iter::from_fn(|| self.server.receive_message(CLIENT, channel)).collect()
    }

    fn client_inbox(&mut self, channel: Channel) -> Vec<Bytes> {
        std::iter::from_fn(|| self.client.receive_message(channel)).collect()
    }
}

/// Messages of varied sizes: empty, small, and several slices long.
fn messages(n: usize, tag: u8) -> Vec<Bytes> {
    (0..n)
        .map(|i| {
            let len = match i % 7 {
                0 => 0,
                1 => 1,
                2 => 200,
                3 => SLICE_SIZE,
                4 => SLICE_SIZE + 1,
                5 => 3 * SLICE_SIZE + 17,
                _ => 40,
            };
            Bytes::from((0..len).map(|j| (i + j) as u8 ^ tag).collect::<Vec<u8>>())
        })
        .collect()
}

#[test]
fn config_matches_the_protocol() {
    let renet = connection_config();
    let link = LinkConfig::default();
    assert_eq!(
        renet.available_bytes_per_tick as usize,
        link.bytes_per_write
    );
    for channels in [&renet.server_channels_config, &renet.client_channels_config] {
        for c in channels {
            match c.send_type {
                renet::SendType::ReliableOrdered { resend_time } => {
                    assert_eq!(c.channel_id, link.reliable_channel);
                    assert_eq!(resend_time, link.resend);
                    assert_eq!(c.max_memory_usage_bytes, link.reliable_memory);
                }
                renet::SendType::Unreliable => {
                    assert_eq!(c.channel_id, link.unreliable_channel);
                    assert_eq!(c.max_memory_usage_bytes, link.unreliable_memory);
                }
                renet::SendType::ReliableUnordered { .. } => {
                    panic!("the link layer has no unordered channel")
                }
            }
        }
    }
}

#[test]
fn renet_client_round_trip() {
    let mut pair = Pair::new(CLEAR, 1);
    let up = messages(50, 1);
    let down = messages(50, 2);
    for m in &up {
        pair.client.send_message(Channel::Reliable, m.clone());
    }
    for m in &down {
        pair.server
            .send_message(CLIENT, Channel::Reliable, m.clone());
    }
    pair.client.send_message(Channel::Unreliable, vec![9u8; 30]);
    pair.server
        .send_message(CLIENT, Channel::Unreliable, vec![8u8; 3000]);
    let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
    let (mut unreliable_up, mut unreliable_down) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        pair.step();
        got_up.extend(pair.server_inbox(Channel::Reliable));
        got_down.extend(pair.client_inbox(Channel::Reliable));
        unreliable_up.extend(pair.server_inbox(Channel::Unreliable));
        unreliable_down.extend(pair.client_inbox(Channel::Unreliable));
    }
    assert_eq!(got_up, up);
    assert_eq!(got_down, down);
    assert_eq!(unreliable_up, vec![Bytes::from(vec![9u8; 30])]);
    assert_eq!(unreliable_down, vec![Bytes::from(vec![8u8; 3000])]);
    assert_eq!(pair.server.unacked(CLIENT), 0, "every message acknowledged");
    assert!(!pair.client.is_disconnected());
    assert!(pair.server.is_connected(CLIENT));
}

#[test]
fn stormy_network_delivers_everything_once_in_order() {
    for seed in [3, 11, 12345] {
        let weather = Weather {
            loss: 30,
            duplicate: 10,
            reorder: 20,
        };
        let mut pair = Pair::new(weather, seed);
        let up = messages(120, 3);
        let down = messages(120, 4);
        let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
        for step in 0..2_000 {
            // Messages keep arriving while earlier ones are still being resent.
            if step < 120 {
                pair.client
                    .send_message(Channel::Reliable, up[step].clone());
                pair.server
                    .send_message(CLIENT, Channel::Reliable, down[step].clone());
            }
            pair.step();
            got_up.extend(pair.server_inbox(Channel::Reliable));
            got_down.extend(pair.client_inbox(Channel::Reliable));
            if got_up.len() == up.len() && got_down.len() == down.len() && step > 120 {
                break;
            }
        }
        assert_eq!(got_up, up, "seed {seed}: client to server");
        assert_eq!(got_down, down, "seed {seed}: server to client");
        assert!(pair.server.is_connected(CLIENT), "seed {seed}");
        assert!(!pair.client.is_disconnected(), "seed {seed}");
        // With the weather cleared, every resend ends.
        pair.weather = CLEAR;
        for _ in 0..40 {
            pair.step();
        }
        assert_eq!(pair.server.unacked(CLIENT), 0, "seed {seed}");
    }
}

#[test]
fn acks_answer_messages_and_never_acks() {
    let mut pair = Pair::new(CLEAR, 5);
    pair.client.send_message(Channel::Reliable, vec![1u8; 10]);
    pair.server
        .send_message(CLIENT, Channel::Reliable, vec![2u8; 10]);
    for _ in 0..5 {
        pair.step();
    }
    assert_eq!(pair.server.unacked(CLIENT), 0);
    assert_eq!(pair.server_inbox(Channel::Reliable).len(), 1);
    // renet's client always has acks pending and keeps sending ack packets; none is answered.
    let settled = pair.server_packets;
    for _ in 0..40 {
        pair.step();
    }
    assert_eq!(
        pair.server_packets, settled,
        "acks of acks are not answered"
    );
    assert!(!pair.server.wants_write(CLIENT, true));
    // A message is acknowledged by one ack packet, in time: the client never resends it (a
    // resent copy would call for another ack packet).
    pair.client.send_message(Channel::Reliable, vec![3u8; 10]);
    for _ in 0..60 {
        pair.step();
    }
    assert_eq!(pair.server_packets, settled + 1);
    assert_eq!(
        pair.server_inbox(Channel::Reliable),
        vec![Bytes::from(vec![3u8; 10])]
    );
    // Long after, nothing is resent either way.
    pair.server.update(Duration::from_secs(10));
    assert!(!pair.server.wants_write(CLIENT, true));
}

#[test]
fn resends_wait_for_the_resend_time() {
    let mut server = LinkServer::default();
    server.add_connection(CLIENT);
    server.send_message(CLIENT, Channel::Reliable, vec![1u8; 10]);
    assert_eq!(server.write_packets(CLIENT, false, |_| {}), 1);
    server.update(Duration::from_millis(599));
    assert_eq!(
        server.write_packets(CLIENT, false, |_| {}),
        0,
        "not yet due"
    );
    server.update(Duration::from_millis(1));
    assert_eq!(server.write_packets(CLIENT, false, |_| {}), 1, "resent");
    assert_eq!(server.unacked(CLIENT), 1);
}

#[test]
fn the_write_budget_carries_over() {
    let mut server = LinkServer::default();
    server.add_connection(CLIENT);
    for _ in 0..100 {
        server.send_message(CLIENT, Channel::Reliable, vec![0u8; 1000]);
    }
    let mut bytes = 0;
    server.write_packets(CLIENT, false, |p| bytes += p.len());
    assert!(
        bytes <= 61_000,
        "one write stays near its budget: {bytes} bytes"
    );
    let mut rest = 0;
    server.write_packets(CLIENT, false, |p| rest += p.len());
    assert!(rest >= 39_000, "the rest goes on the next write: {rest}");
}

#[test]
fn a_client_that_never_acks_fills_the_send_queue() {
    let mut server = LinkServer::default();
    server.add_connection(CLIENT);
    server.get_event();
    for _ in 0..1100 {
        server.send_message(CLIENT, Channel::Reliable, vec![0u8; 1000]);
    }
    assert!(!server.is_connected(CLIENT));
    assert_eq!(server.disconnections_id(), vec![CLIENT]);
    assert_eq!(
        server.disconnect_reason(CLIENT),
        Some(DisconnectReason::SendQueueFull)
    );
    server.remove_connection(CLIENT);
    assert_eq!(
        server.get_event(),
        Some(ServerEvent::ClientDisconnected {
            client_id: CLIENT,
            reason: DisconnectReason::SendQueueFull,
        })
    );
    assert!(server.disconnections_id().is_empty());
    assert_eq!(server.connected_clients(), 0);
}

#[test]
fn empty_messages_count_against_the_send_queue_too() {
    let mut server = LinkServer::default();
    server.add_connection(CLIENT);
    server.add_direct(CLIENT + 1);
    for _ in 0..MAX_QUEUED + 1 {
        server.send_message(CLIENT, Channel::Reliable, Bytes::new());
        server.send_message(CLIENT + 1, Channel::Reliable, Bytes::new());
    }
    for client in [CLIENT, CLIENT + 1] {
        assert_eq!(
            server.disconnect_reason(client),
            Some(DisconnectReason::SendQueueFull)
        );
    }
}

/// Feeds one crafted packet to a fresh link and returns why it was disconnected, if it was.
fn verdict(packet: &[u8]) -> Option<DisconnectReason> {
    let mut server = LinkServer::default();
    server.add_connection(CLIENT);
    server.process_packet_from(packet, CLIENT).unwrap();
    server.disconnect_reason(CLIENT)
}

fn packet(f: impl FnOnce(&mut Writer<'_>)) -> Vec<u8> {
    let mut buf = [0u8; PACKET_BUFFER];
    let mut w = Writer::new(&mut buf);
    f(&mut w);
    let len = w.len();
    buf[..len].to_vec()
}

#[test]
fn malformed_packets_disconnect_with_the_reason() {
    let protocol = |e| Some(DisconnectReason::Protocol(e));
    assert_eq!(verdict(&[]), protocol(WireError::Truncated));
    assert_eq!(verdict(&[9, 0]), protocol(WireError::PacketType(9)));
    // A reliable packet on the unreliable channel.
    let wrong_channel = packet(|w| {
        w.u8(SMALL_RELIABLE);
        w.varint(0);
        w.u8(1);
        w.u16(0);
    });
    assert_eq!(verdict(&wrong_channel), protocol(WireError::Channel(1)));
    // Two messages announced, one present.
    let short = packet(|w| {
        w.u8(SMALL_RELIABLE);
        w.varint(0);
        w.u8(0);
        w.u16(2);
        w.varint(0);
        w.varint(3);
        w.bytes(b"abc");
    });
    assert_eq!(verdict(&short), protocol(WireError::Truncated));
    // A message length past the packet's end.
    let long = packet(|w| {
        w.u8(SMALL_RELIABLE);
        w.varint(0);
        w.u8(0);
        w.u16(1);
        w.varint(0);
        w.varint(1_000_000);
    });
    assert_eq!(verdict(&long), protocol(WireError::Truncated));
    // Slices: index past the count, a short middle slice, a zero count, too many slices.
    let slice = |index: u64, count: u64, len: usize| {
        packet(|w| {
            w.u8(RELIABLE_SLICE);
            w.varint(0);
            w.u8(0);
            w.varint(0);
            w.varint(index);
            w.varint(count);
            w.varint(len as u64);
            w.bytes(&vec![1u8; len]);
        })
    };
    assert_eq!(verdict(&slice(2, 2, 10)), protocol(WireError::Slice));
    assert_eq!(verdict(&slice(0, 2, 10)), protocol(WireError::Slice));
    assert_eq!(verdict(&slice(0, 0, 10)), protocol(WireError::Slice));
    assert_eq!(
        verdict(&slice(0, 1_000_000, SLICE_SIZE)),
        protocol(WireError::Slice)
    );
    assert_eq!(verdict(&slice(1, 2, 10)), None, "a valid last slice");
    // Ack ranges below zero.
    let ack = packet(|w| {
        w.u8(ACK);
        w.varint(0);
        w.varint(3);
        w.varint(5);
        w.varint(0);
    });
    assert_eq!(verdict(&ack), protocol(WireError::AckRange));
    let ack_gap = packet(|w| {
        w.u8(ACK);
        w.varint(0);
        w.varint(10);
        w.varint(2);
        w.varint(1);
        w.varint(100);
        w.varint(0);
    });
    assert_eq!(verdict(&ack_gap), protocol(WireError::AckRange));
}

#[test]
fn messages_parked_past_a_gap_are_bounded() {
    let mut server = LinkServer::default();
    server.add_connection(CLIENT);
    // Empty messages far ahead of the first: cost no bytes, so only the count can stop them.
    for id in 1..=MAX_EARLY as u64 + 1 {
        let p = packet(|w| {
            w.u8(SMALL_RELIABLE);
            w.varint(id);
            w.u8(0);
            w.u16(1);
            w.varint(id * 1000);
            w.varint(0);
        });
        server.process_packet_from(&p, CLIENT).unwrap();
    }
    assert_eq!(
        server.disconnect_reason(CLIENT),
        Some(DisconnectReason::Protocol(WireError::TooManyEarly))
    );
}

#[test]
fn a_flood_of_big_messages_hits_the_memory_limit() {
    let mut server = LinkServer::default();
    server.add_connection(CLIENT);
    let mut id = 1;
    while server.is_connected(CLIENT) && id < 2_000 {
        let p = packet(|w| {
            w.u8(SMALL_RELIABLE);
            w.varint(id);
            w.u8(0);
            w.u16(1);
            w.varint(id);
            w.varint(1100);
            w.bytes(&[7u8; 1100]);
        });
        server.process_packet_from(&p, CLIENT).unwrap();
        id += 1;
    }
    assert_eq!(
        server.disconnect_reason(CLIENT),
        Some(DisconnectReason::Protocol(WireError::ReliableMemory))
    );
    assert!(id > 900, "about 1 MiB was accepted first: {id} messages");
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(99);
    let mut server = LinkServer::default();
    for client in 0..2_000u64 {
        server.add_connection(client);
        // Some packets start with a valid type and sequence, so parsing goes deeper.
        for _ in 0..5 {
            let len = (rng.next() % 64) as usize;
            let mut p: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if let Some(first) = p.first_mut() {
                *first %= 6;
            }
            server.process_packet_from(&p, client).unwrap();
        }
        server.update(STEP);
        server.write_packets(client, true, |_| {});
        server.remove_connection(client);
    }
    assert_eq!(server.connected_clients(), 0);
}

#[test]
fn direct_links_pass_messages_without_packets() {
    let mut server = LinkServer::default();
    server.add_direct(CLIENT);
    assert!(server.push_direct(CLIENT, Bytes::from_static(b"one")));
    assert!(server.push_direct(CLIENT, Bytes::from_static(b"two")));
    assert_eq!(
        server.receive_message(CLIENT, Channel::Reliable),
        Some(Bytes::from_static(b"one"))
    );
    assert_eq!(
        server.receive_message(CLIENT, Channel::Reliable),
        Some(Bytes::from_static(b"two"))
    );
    assert_eq!(server.receive_message(CLIENT, Channel::Reliable), None);
    server.send_message(CLIENT, Channel::Reliable, vec![1u8; 5]);
    server.send_message(CLIENT, Channel::Unreliable, vec![2u8; 5]);
    assert_eq!(server.write_packets(CLIENT, true, |_| {}), 0, "no packets");
    assert_eq!(
        server.take_direct(CLIENT),
        vec![Bytes::from(vec![1u8; 5]), Bytes::from(vec![2u8; 5])]
    );
    assert!(server.take_direct(CLIENT).is_empty());
    // A WebSocket client that sends more than the budget without the server reading is cut off.
    let big = Bytes::from(vec![0u8; 600 * 1024]);
    assert!(server.push_direct(CLIENT, big.clone()));
    assert!(!server.push_direct(CLIENT, big));
    assert_eq!(
        server.disconnect_reason(CLIENT),
        Some(DisconnectReason::Protocol(WireError::ReliableMemory))
    );
}

#[test]
fn server_disconnects_are_listed_until_removed() {
    let mut server = LinkServer::default();
    server.add_connection(1);
    server.add_connection(2);
    assert_eq!(server.connected_clients(), 2);
    server.disconnect(2);
    server.disconnect(2);
    assert_eq!(server.disconnections_id(), vec![2]);
    assert_eq!(server.connected_clients(), 1);
    assert_eq!(server.clients_id_iter().collect::<Vec<_>>(), vec![1]);
    // Nothing is sent to or read from a disconnected link.
    server.send_message(2, Channel::Reliable, vec![1u8]);
    assert_eq!(server.write_packets(2, true, |_| {}), 0);
    server.remove_connection(2);
    server.remove_connection(1);
    let events: Vec<ServerEvent> = std::iter::from_fn(|| server.get_event()).collect();
    assert_eq!(
        events,
        vec![
            ServerEvent::ClientConnected { client_id: 1 },
            ServerEvent::ClientConnected { client_id: 2 },
            ServerEvent::ClientDisconnected {
                client_id: 2,
                reason: DisconnectReason::DisconnectedByServer
            },
            ServerEvent::ClientDisconnected {
                client_id: 1,
                reason: DisconnectReason::Transport
            },
        ]
    );
    assert!(
        server.process_packet_from(&[4, 0, 0, 0, 0], 1).is_err(),
        "a removed client is unknown"
    );
}

#[test]
fn pending_acks_merge_like_renets() {
    let mut link = Link::new(false);
    for s in [3, 4, 2, 0, 7, 1, 5, 6] {
        link.add_pending_ack(s);
    }
    assert_eq!(link.pending_acks, vec![0..8]);
    link.acked_largest(3);
    assert_eq!(link.pending_acks, vec![4..8]);
    for s in 0..200u64 {
        link.add_pending_ack(100 + 2 * s);
    }
    assert_eq!(
        link.pending_acks.len(),
        MAX_ACK_RANGES,
        "oldest ranges dropped"
    );
}

#[test]
fn descending_sequences_cannot_grow_the_ack_ranges() {
    let mut server = LinkServer::default();
    server.add_connection(CLIENT);
    // Ack-only packets with sequences 200000, 199998, ...: each below every range so far.
    for i in 0..100_000u64 {
        let p = packet(|w| {
            w.u8(ACK);
            w.varint(200_000 - 2 * i);
            w.varint(0);
            w.varint(0);
            w.varint(0);
        });
        server.process_packet_from(&p, CLIENT).unwrap();
    }
    assert!(server.is_connected(CLIENT));
    let link = &server.links[&CLIENT];
    assert_eq!(link.pending_acks.len(), MAX_ACK_RANGES);
    // The ack packet, were one owed, stays within the buffer: the ranges kept are the newest.
    assert_eq!(link.pending_acks.last(), Some(&(200_000..200_001)));
}

#[test]
fn empty_messages_count_against_the_receive_budget() {
    let mut server = LinkServer::default();
    server.add_connection(CLIENT);
    for seq in 0..40u64 {
        let p = packet(|w| {
            w.u8(SMALL_UNRELIABLE);
            w.varint(seq);
            w.u8(1);
            w.u16(600);
            for _ in 0..600 {
                w.varint(0);
            }
        });
        server.process_packet_from(&p, CLIENT).unwrap();
    }
    let queued = std::iter::from_fn(|| server.receive_message(CLIENT, Channel::Unreliable)).count();
    assert_eq!(
        queued,
        256 * 1024 / MESSAGE_OVERHEAD,
        "the rest were dropped"
    );
    assert!(server.is_connected(CLIENT));
}

#[test]
fn a_peer_reporting_many_lost_packets_gets_its_acks_acknowledged() {
    let mut server = LinkServer::default();
    server.add_connection(CLIENT);
    let ack = |ranges: u64| {
        packet(|w| {
            w.u8(ACK);
            w.varint(0);
            w.varint(1_000);
            w.varint(0);
            w.varint(ranges);
            for _ in 0..ranges {
                w.varint(1);
                w.varint(0);
            }
        })
    };
    server.process_packet_from(&ack(2), CLIENT).unwrap();
    assert!(
        !server.wants_write(CLIENT, true),
        "a few ranges: not answered"
    );
    server
        .process_packet_from(&ack(TRIM_PEER_RANGES), CLIENT)
        .unwrap();
    assert!(server.wants_write(CLIENT, true));
    let mut sent = Vec::new();
    assert_eq!(
        server.write_packets(CLIENT, true, |p| sent.push(p.to_vec())),
        1
    );
    assert_eq!(sent[0][0], ACK);
}
