//! The server against renetcode's own client (the one renet_netcode and the client core use),
//! packet by packet, without sockets.

use super::*;
use renetcode::{ClientAuthentication, ConnectToken, DisconnectReason, NetcodeClient};

/// Collects the server's datagrams in place of a socket.
impl Outgoing for Vec<(SocketAddr, Vec<u8>)> {
    fn packet(&mut self, addr: SocketAddr, write: &mut dyn FnMut(&mut [u8]) -> usize) {
        let mut buf = [0u8; MAX_PACKET_BYTES];
        let len = write(&mut buf);
        if len > 0 {
            self.push((addr, buf[..len].to_vec()));
        }
    }
}

const PROTOCOL: u64 = 0x6372_6f66_7400_0001;
const KEY: [u8; 32] = [7; 32];
const STEP: Duration = Duration::from_millis(10);

fn server_addr() -> SocketAddr {
    "127.0.0.1:5000".parse().unwrap()
}

fn epoch() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
}

fn server(max_clients: usize) -> NetcodeServer {
    NetcodeServer::new(ServerConfig {
        current_time: epoch(),
        max_clients,
        protocol_id: PROTOCOL,
        public_addresses: vec![server_addr()],
        private_key: KEY,
    })
    .unwrap()
}

fn token_with(
    client_id: u64,
    at: Duration,
    protocol: u64,
    key: &[u8; 32],
    servers: Vec<SocketAddr>,
) -> ConnectToken {
    let mut user = [0u8; 256];
    user[..8].copy_from_slice(&client_id.to_le_bytes());
    user[255] = 0xAB;
    ConnectToken::generate(at, protocol, 60, client_id, 15, servers, Some(&user), key).unwrap()
}

fn token(client_id: u64) -> ConnectToken {
    token_with(client_id, epoch(), PROTOCOL, &KEY, vec![server_addr()])
}

fn client(token: ConnectToken) -> NetcodeClient {
    NetcodeClient::new(
        epoch(),
        ClientAuthentication::Secure {
            connect_token: token,
        },
    )
    .unwrap()
}

/// One client at one address, talking to the server with every packet delivered.
struct Peer {
    client: NetcodeClient,
    addr: SocketAddr,
}

impl Peer {
    fn new(token: ConnectToken, port: u16) -> Self {
        Self {
            client: client(token),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// The client's next protocol packet (request, response, keep-alive), if any.
    fn tick(&mut self) -> Option<Vec<u8>> {
        self.tick_by(STEP)
    }

    fn tick_by(&mut self, dt: Duration) -> Option<Vec<u8>> {
        self.client.update(dt).map(|(p, _)| p.to_vec())
    }

    fn payload(&mut self, data: &[u8]) -> Vec<u8> {
        self.client
            .generate_payload_packet(data)
            .unwrap()
            .1
            .to_vec()
    }

    /// Delivers what the server sent to this client; returns the payloads.
    fn deliver(&mut self, out: &mut Vec<(SocketAddr, Vec<u8>)>) -> Vec<Vec<u8>> {
        let mut payloads = Vec::new();
        out.retain_mut(|(to, packet)| {
            if *to != self.addr {
                return true;
            }
            if let Some(p) = self.client.process_packet(packet) {
                payloads.push(p.to_vec());
            }
            false
        });
        payloads
    }
}

/// Owned copy of an event.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    None,
    Connected(u64),
    Payload(u64, Vec<u8>),
    Disconnected(u64),
}

fn feed(
    server: &mut NetcodeServer,
    addr: SocketAddr,
    mut packet: Vec<u8>,
    out: &mut Vec<(SocketAddr, Vec<u8>)>,
) -> Result<Got, Refused> {
    server.process(addr, &mut packet, out).map(|e| match e {
        Event::None => Got::None,
        Event::Connected(id) => Got::Connected(id),
        Event::Payload(id, p) => Got::Payload(id, p.to_vec()),
        Event::Disconnected(id) => Got::Disconnected(id),
    })
}

/// Runs the handshake; returns the server's events.
fn handshake(server: &mut NetcodeServer, peer: &mut Peer) -> Vec<Result<Got, Refused>> {
    let mut events = Vec::new();
    let mut out = Vec::new();
    for _ in 0..20 {
        server.update(STEP);
        if let Some(p) = peer.tick() {
            events.push(feed(server, peer.addr, p, &mut out));
        }
        peer.deliver(&mut out);
        if peer.client.is_connected() || peer.client.is_disconnected() {
            break;
        }
    }
    events
}

fn connect(server: &mut NetcodeServer, id: u64, port: u16) -> Peer {
    let mut peer = Peer::new(token(id), port);
    let events = handshake(server, &mut peer);
    assert!(peer.client.is_connected(), "{events:?}");
    assert!(events.contains(&Ok(Got::Connected(id))), "{events:?}");
    peer
}

#[test]
fn a_stock_renetcode_client_connects_and_payloads_flow_both_ways() {
    let mut server = server(16);
    let mut peer = connect(&mut server, 42, 3000);
    assert!(server.is_connected(42));
    assert_eq!(server.client_addr(42), Some(peer.addr));
    let user = server.user_data(42).unwrap();
    assert_eq!(&user[..8], &42u64.to_le_bytes());
    assert_eq!(user[255], 0xAB);

    let mut out = Vec::new();
    for i in 0..300u32 {
        let msg = i.to_le_bytes();
        let packet = peer.payload(&msg);
        assert_eq!(
            feed(&mut server, peer.addr, packet, &mut out),
            Ok(Got::Payload(42, msg.to_vec()))
        );
        server.send_payload(42, &msg, &mut out).unwrap();
        assert_eq!(peer.deliver(&mut out), vec![msg.to_vec()]);
    }
    // The largest payload goes through; a larger one is refused before anything is sent.
    let big = vec![9u8; MAX_PAYLOAD_BYTES];
    server.send_payload(42, &big, &mut out).unwrap();
    assert_eq!(peer.deliver(&mut out), vec![big]);
    assert_eq!(
        server.send_payload(42, &[0; MAX_PAYLOAD_BYTES + 1], &mut out),
        Err(SendError::TooLarge(MAX_PAYLOAD_BYTES + 1))
    );
    assert_eq!(
        server.send_payload(7, b"x", &mut out),
        Err(SendError::NoClient)
    );
    assert!(out.is_empty());
}

#[test]
fn replayed_truncated_altered_and_misprefixed_packets_are_refused() {
    let mut server = server(16);
    let mut peer = connect(&mut server, 42, 3000);
    let mut out = Vec::new();
    let packet = peer.payload(b"hello");
    assert!(matches!(
        feed(&mut server, peer.addr, packet.clone(), &mut out),
        Ok(Got::Payload(42, _))
    ));
    assert_eq!(
        feed(&mut server, peer.addr, packet.clone(), &mut out),
        Err(Refused::Replayed)
    );
    // Truncated at every length: too short, or the tag no longer authenticates.
    let fresh = peer.payload(b"hello again");
    for len in 0..fresh.len() {
        let r = feed(&mut server, peer.addr, fresh[..len].to_vec(), &mut out);
        assert!(
            matches!(r, Err(Refused::TooShort | Refused::Forged)),
            "{len}: {r:?}"
        );
    }
    // Any flipped bit after the prefix.
    for at in 1..fresh.len() {
        let mut bad = fresh.clone();
        bad[at] ^= 0x10;
        let r = feed(&mut server, peer.addr, bad, &mut out);
        assert!(
            matches!(r, Err(Refused::Forged | Refused::Replayed)),
            "{at}: {r:?}"
        );
    }
    // The intact packet still goes through after all that (nothing was recorded).
    assert!(matches!(
        feed(&mut server, peer.addr, fresh, &mut out),
        Ok(Got::Payload(42, _))
    ));
    // A prefix claiming a sequence of 9 to 15 bytes, or an unknown type.
    for prefix in [0x95u8, 0xF5, 0xF4, 0x07, 0x0F] {
        let mut bad = vec![0u8; 64];
        bad[0] = prefix;
        assert_eq!(
            feed(&mut server, peer.addr, bad, &mut out),
            Err(Refused::Prefix)
        );
    }
    assert!(out.is_empty(), "refusals send nothing");
    assert!(server.is_connected(42));
}

#[test]
fn renetcode_2_0_0_panics_on_a_long_sequence_prefix_which_this_server_refuses() {
    // Why croft owns this path: a connected client (or anyone who can send from its address)
    // stops a renetcode server with one datagram.
    let mut stock = renetcode::NetcodeServer::new(renetcode::ServerConfig {
        current_time: epoch(),
        max_clients: 4,
        protocol_id: PROTOCOL,
        public_addresses: vec![server_addr()],
        authentication: renetcode::ServerAuthentication::Secure { private_key: KEY },
    });
    let mut c = client(token(42));
    let addr: SocketAddr = "127.0.0.1:3000".parse().unwrap();
    for _ in 0..10 {
        stock.update(STEP);
        if let Some((p, _)) = c.update(STEP) {
            let mut p = p.to_vec();
            let mut reply = match stock.process_packet(addr, &mut p) {
                renetcode::ServerResult::PacketToSend { payload, .. }
                | renetcode::ServerResult::ClientConnected { payload, .. } => payload.to_vec(),
                _ => Vec::new(),
            };
            if !reply.is_empty() {
                c.process_packet(&mut reply);
            }
        }
    }
    assert!(c.is_connected());
    let mut bad = vec![0u8; 64];
    bad[0] = 0xF5;
    let stock_result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = stock.process_packet(addr, &mut bad);
    }));
    assert!(stock_result.is_err(), "renetcode no longer panics here");
}

#[test]
fn expired_forged_misdirected_and_other_protocol_tokens_never_get_a_challenge() {
    let mut server = server(16);
    let cases = [
        (
            token_with(
                1,
                epoch() - Duration::from_secs(3600),
                PROTOCOL,
                &KEY,
                vec![server_addr()],
            ),
            Refused::Token(TokenError::Expired),
        ),
        (
            token_with(2, epoch(), PROTOCOL, &[8; 32], vec![server_addr()]),
            Refused::Token(TokenError::Forged),
        ),
        (
            token_with(
                3,
                epoch(),
                PROTOCOL,
                &KEY,
                vec!["127.0.0.1:5001".parse().unwrap()],
            ),
            Refused::Token(TokenError::WrongServer),
        ),
        (
            token_with(4, epoch(), PROTOCOL + 1, &KEY, vec![server_addr()]),
            Refused::Token(TokenError::WrongProtocol),
        ),
    ];
    for (i, (token, want)) in cases.into_iter().enumerate() {
        let expired = want == Refused::Token(TokenError::Expired);
        let mut peer = Peer::new(token, 3000 + i as u16);
        let events = handshake(&mut server, &mut peer);
        assert!(!peer.client.is_connected());
        if expired {
            // The stock client gives up on an expired token before sending it.
            assert!(events.iter().all(|e| e == &Err(want.clone())), "{events:?}");
        } else {
            assert!(!events.is_empty());
            assert!(events.iter().all(|e| e == &Err(want.clone())), "{events:?}");
        }
    }
    assert_eq!(server.connected_clients(), 0);
    assert!(server.pending.is_empty());
}

#[test]
fn a_request_of_the_wrong_size_or_version_is_refused() {
    let mut server = server(16);
    let mut peer = Peer::new(token(5), 3000);
    let request = peer.tick().unwrap();
    assert_eq!(request.len(), REQUEST_BYTES);
    let mut out = Vec::new();
    let mut longer = request.clone();
    longer.push(0);
    assert_eq!(
        feed(&mut server, peer.addr, longer, &mut out),
        Err(Refused::TooShort)
    );
    assert_eq!(
        feed(&mut server, peer.addr, request[..600].to_vec(), &mut out),
        Err(Refused::TooShort)
    );
    let mut version = request.clone();
    version[11] = b'3';
    assert_eq!(
        feed(&mut server, peer.addr, version, &mut out),
        Err(Refused::Version)
    );
    assert!(out.is_empty());
    assert_eq!(
        feed(&mut server, peer.addr, request, &mut out),
        Ok(Got::None)
    );
    assert_eq!(out.len(), 1, "a challenge");
}

#[test]
fn a_token_used_from_one_address_is_refused_from_another_and_ids_are_unique() {
    let mut server = server(16);
    let t = token(42);
    let mut first = Peer::new(t.clone(), 3000);
    let mut thief = Peer::new(t, 3001);
    let mut out = Vec::new();
    let request = first.tick().unwrap();
    assert_eq!(
        feed(&mut server, first.addr, request.clone(), &mut out),
        Ok(Got::None)
    );
    // The same request again from the same address: answered again (a lost challenge).
    assert_eq!(
        feed(&mut server, first.addr, request, &mut out),
        Ok(Got::None)
    );
    assert_eq!(out.len(), 2);
    let stolen = thief.tick().unwrap();
    assert_eq!(
        feed(&mut server, thief.addr, stolen, &mut out),
        Err(Refused::TokenReused)
    );
    out.retain(|(to, _)| *to == first.addr);
    first.deliver(&mut out);
    let events = handshake(&mut server, &mut first);
    assert!(events.contains(&Ok(Got::Connected(42))), "{events:?}");
    // Another token for the same user while it is connected.
    let mut twin = Peer::new(token(42), 3002);
    let events = handshake(&mut server, &mut twin);
    assert!(!twin.client.is_connected());
    assert!(
        events.iter().all(|e| e == &Err(Refused::AlreadyConnected)),
        "{events:?}"
    );
}

#[test]
fn a_full_server_denies_and_the_client_hears_it() {
    let mut server = server(2);
    let _a = connect(&mut server, 1, 3000);
    let _b = connect(&mut server, 2, 3001);
    let mut c = Peer::new(token(3), 3002);
    handshake(&mut server, &mut c);
    assert_eq!(
        c.client.disconnect_reason(),
        Some(DisconnectReason::ConnectionDenied)
    );
    assert_eq!(server.connected_clients(), 2);
}

#[test]
fn a_forged_response_or_one_with_another_clients_challenge_gets_nobody_in() {
    let mut server = server(16);
    let mut a = Peer::new(token(1), 3000);
    let mut b = Peer::new(token(2), 3001);
    let mut out = Vec::new();
    feed(&mut server, a.addr, a.tick().unwrap(), &mut out).unwrap();
    feed(&mut server, b.addr, b.tick().unwrap(), &mut out).unwrap();
    a.deliver(&mut out);
    b.deliver(&mut out);
    let mut response_a = None;
    for _ in 0..20 {
        if let Some(p) = a.tick()
            && p[0] & 0xF == RESPONSE
        {
            response_a = Some(p);
            break;
        }
    }
    let response_a = response_a.expect("a response");
    // A's response from B's address does not open under B's key.
    assert_eq!(
        feed(&mut server, b.addr, response_a.clone(), &mut out),
        Err(Refused::Forged)
    );
    let mut altered = response_a.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    assert_eq!(
        feed(&mut server, a.addr, altered, &mut out),
        Err(Refused::Forged)
    );
    assert_eq!(server.connected_clients(), 0);
    assert_eq!(
        feed(&mut server, a.addr, response_a, &mut out),
        Ok(Got::Connected(1))
    );
}

#[test]
fn datagrams_from_strangers_leave_no_state() {
    let mut server = server(16);
    let mut out = Vec::new();
    let stranger: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let mut x: u32 = 99;
    for len in 0..1400usize {
        let packet: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert!(feed(&mut server, stranger, packet, &mut out).is_err());
    }
    for kind in [DENIED, CHALLENGE, RESPONSE, KEEP_ALIVE, PAYLOAD, DISCONNECT] {
        let mut p = vec![0u8; 100];
        p[0] = kind;
        assert_eq!(
            feed(&mut server, stranger, p, &mut out),
            Err(Refused::Unexpected)
        );
    }
    assert!(out.is_empty());
    assert!(server.pending.is_empty() && server.used_tokens.is_empty());
}

#[test]
fn keep_alives_follow_the_chosen_interval_and_silence_times_a_client_out() {
    let mut server = server(16);
    let mut peer = connect(&mut server, 42, 3000);
    server.set_keep_alive(Duration::from_secs(2));
    let mut out = Vec::new();
    let mut sent_at = Vec::new();
    // 10 s of upkeep every 100 ms while the client keeps talking (its own keep-alives).
    for step in 1..=100u32 {
        server.update(Duration::from_millis(100));
        if let Some(p) = peer.tick_by(Duration::from_millis(100)) {
            let _ = feed(&mut server, peer.addr, p, &mut out);
        }
        assert_eq!(server.upkeep(42, &mut out), None);
        if !out.is_empty() {
            sent_at.push(step);
            peer.deliver(&mut out);
        }
    }
    let gaps: Vec<u32> = sent_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(sent_at.len() >= 4 && sent_at.len() <= 5, "{sent_at:?}");
    assert!(gaps.iter().all(|&g| g == 20), "{gaps:?}");
    assert!(peer.client.is_connected());

    // Now the client goes quiet: dropped after its token's 15 s, with a disconnect sent.
    let mut dropped = None;
    for step in 1..=200u32 {
        server.update(Duration::from_millis(100));
        if server.upkeep(42, &mut out).is_some() {
            dropped = Some(step);
            break;
        }
    }
    let step = dropped.expect("timed out");
    assert!((147..=151).contains(&step), "{step}");
    assert!(!server.is_connected(42));
    let last = out.pop().unwrap();
    assert_eq!(last.1[0] & 0xF, DISCONNECT);
}

#[test]
fn a_goodbye_frees_the_slot_for_the_next_client_and_a_kick_is_heard() {
    let mut server = server(1);
    let mut a = connect(&mut server, 1, 3000);
    let mut out = Vec::new();
    let (_, goodbye) = a.client.disconnect().unwrap();
    let goodbye = goodbye.to_vec();
    assert_eq!(
        feed(&mut server, a.addr, goodbye.clone(), &mut out),
        Ok(Got::Disconnected(1))
    );
    assert_eq!(
        feed(&mut server, a.addr, goodbye, &mut out),
        Err(Refused::Unexpected),
        "not connected any more"
    );
    let mut b = connect(&mut server, 2, 3001);
    assert!(server.disconnect(2, &mut out));
    assert!(!server.disconnect(2, &mut out));
    b.deliver(&mut out);
    assert_eq!(
        b.client.disconnect_reason(),
        Some(DisconnectReason::DisconnectedByServer)
    );
    assert_eq!(server.connected_clients(), 0);
}

#[test]
fn handshakes_end_when_their_token_expires() {
    let mut server = server(16);
    let mut peer = Peer::new(token(9), 3000);
    let mut out = Vec::new();
    feed(&mut server, peer.addr, peer.tick().unwrap(), &mut out).unwrap();
    assert_eq!(server.pending.len(), 1);
    assert_eq!(server.used_tokens.len(), 1);
    server.update(Duration::from_secs(62));
    assert!(server.pending.is_empty());
    assert!(server.used_tokens.is_empty());
}

/// The reference: renetcode's window (256 slots holding the sequence last stored there).
struct Reference {
    most_recent: u64,
    slots: [u64; 256],
}

impl Reference {
    fn seen(&self, seq: u64) -> bool {
        if seq.saturating_add(256) <= self.most_recent {
            return true;
        }
        let s = self.slots[(seq % 256) as usize];
        s != u64::MAX && s >= seq
    }
    fn record(&mut self, seq: u64) {
        self.most_recent = self.most_recent.max(seq);
        self.slots[(seq % 256) as usize] = seq;
    }
}

#[test]
fn the_bit_window_refuses_exactly_what_renetcodes_window_refuses() {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for run in 0..50 {
        let mut window = ReplayWindow::default();
        let mut reference = Reference {
            most_recent: 0,
            slots: [u64::MAX; 256],
        };
        let mut top = 0u64;
        for _ in 0..5000 {
            // Mostly forward, some reordering and duplicates, occasional jumps.
            let r = next();
            let seq = match r % 10 {
                0..=5 => {
                    top += 1 + r % 3;
                    top
                }
                6..=8 => top.saturating_sub(r % 300),
                _ => {
                    top += r % 700;
                    top
                }
            };
            let seen = window.seen(seq);
            assert_eq!(seen, reference.seen(seq), "run {run} seq {seq} top {top}");
            if !seen {
                window.record(seq);
                reference.record(seq);
            }
        }
    }
    // Sequences at the top of the range neither wrap nor panic.
    let mut w = ReplayWindow::default();
    assert!(!w.seen(u64::MAX));
    w.record(u64::MAX);
    assert!(w.seen(u64::MAX));
    assert!(!w.seen(u64::MAX - 1));
    assert!(w.seen(0));
}

#[test]
fn a_full_table_of_used_tokens_forgets_the_soonest_to_expire_instead_of_refusing() {
    // One slot: room for 8 remembered tokens.
    let mut server = server(1);
    let mut out = Vec::new();
    let mut first = None;
    for i in 0..9u16 {
        // Each token expires a second later than the one before.
        let t = token_with(
            100 + u64::from(i),
            epoch() + Duration::from_secs(u64::from(i)),
            PROTOCOL,
            &KEY,
            vec![server_addr()],
        );
        let mut peer = Peer::new(t, 3000 + i);
        let request = peer.tick().unwrap();
        assert_eq!(
            feed(&mut server, peer.addr, request.clone(), &mut out),
            Ok(Got::None),
            "token {i}"
        );
        if i == 0 {
            first = Some(request);
        }
    }
    assert_eq!(server.used_tokens.len(), 8);
    // The first token (the soonest to expire) was forgotten, so another address may use it;
    // that is the trade renetcode makes too, and the handshake still needs the token's keys.
    let stranger: SocketAddr = "127.0.0.1:3999".parse().unwrap();
    assert_eq!(
        feed(&mut server, stranger, first.unwrap(), &mut out),
        Ok(Got::None)
    );
}

#[test]
fn handshake_packets_use_sequences_far_from_the_clients_own() {
    let mut server = server(16);
    let mut peer = Peer::new(token(1), 3000);
    let mut out = Vec::new();
    feed(&mut server, peer.addr, peer.tick().unwrap(), &mut out).unwrap();
    let (_, challenge) = &out[0];
    assert_eq!(challenge[0] & 0xF, CHALLENGE);
    assert_eq!(challenge[0] >> 4, 8, "an 8-byte sequence");
    assert_eq!(challenge[8] & 0x80, 0x80, "at or above 2^63");
}
