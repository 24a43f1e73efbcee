//! What the client core's UDP connection sends when it has nothing to say, counted by a stock
//! renet server (renetcode + renet, as any netcode server sees the client): one ack packet for
//! the messages it received, then keep-alives only, at [`croft_client::MATCH_KEEPALIVE`].

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use croft_client::Connection;
use renet::{RenetServer, SendType};
use renetcode::{NetcodeServer, ServerAuthentication, ServerConfig, ServerResult};
use shared_sim::protocol::{Channel, PROTOCOL_ID, TokenKind, TokenUserData, connection_config};

/// netcode's packet types (low bits of the first byte) and renet's ack packet tag.
const NETCODE_KEEP_ALIVE: u8 = 4;
const RENET_ACK: u8 = 4;

#[derive(Default, Debug)]
struct Counts {
    keepalives: usize,
    acks: usize,
    with_messages: usize,
}

struct StockServer {
    socket: UdpSocket,
    netcode: NetcodeServer,
    renet: RenetServer,
    last: Instant,
    client: Option<u64>,
    counts: Counts,
}

impl StockServer {
    fn new(key: [u8; 32]) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let netcode = NetcodeServer::new(ServerConfig {
            current_time: now,
            max_clients: 4,
            protocol_id: PROTOCOL_ID,
            public_addresses: vec![socket.local_addr().unwrap()],
            authentication: ServerAuthentication::Secure { private_key: key },
        });
        // The server resends nothing during the test (a stall of this busy machine past the
        // usual 600 ms would otherwise earn a second, honest ack); the client's side of the
        // channels is unchanged.
        let mut config = connection_config();
        for channel in &mut config.server_channels_config {
            if let SendType::ReliableOrdered { resend_time } = &mut channel.send_type {
                *resend_time = Duration::from_secs(60);
            }
        }
        Self {
            socket,
            netcode,
            renet: RenetServer::new(config),
            last: Instant::now(),
            client: None,
            counts: Counts::default(),
        }
    }

    /// Reads every datagram (counting what the client sent), then sends what netcode and renet
    /// have due, the way renet's own transport does each frame.
    fn pump(&mut self) {
        let now = Instant::now();
        let dt = now - self.last;
        self.last = now;
        self.netcode.update(dt);
        self.renet.update(dt);
        let Self {
            socket,
            netcode,
            renet,
            client,
            counts,
            ..
        } = self;
        let mut buf = [0u8; 1400];
        loop {
            let (len, from) = match socket.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("server socket: {e}"),
            };
            let kind = buf[0] & 0x0f;
            match netcode.process_packet(from, &mut buf[..len]) {
                ServerResult::Payload { client_id, payload } => {
                    if payload.first() == Some(&RENET_ACK) {
                        counts.acks += 1;
                    } else {
                        counts.with_messages += 1;
                    }
                    renet.process_packet_from(payload, client_id).unwrap();
                }
                ServerResult::PacketToSend { addr, payload } => {
                    socket.send_to(payload, addr).unwrap();
                }
                ServerResult::ClientConnected {
                    client_id,
                    addr,
                    payload,
                    ..
                } => {
                    renet.add_connection(client_id);
                    *client = Some(client_id);
                    socket.send_to(payload, addr).unwrap();
                }
                ServerResult::ClientDisconnected { client_id, .. } => {
                    renet.remove_connection(client_id);
                }
                ServerResult::None => {
                    if kind == NETCODE_KEEP_ALIVE {
                        counts.keepalives += 1;
                    }
                }
            }
        }
        for id in netcode.clients_id() {
            if let ServerResult::PacketToSend { addr, payload } = netcode.update_client(id) {
                socket.send_to(payload, addr).unwrap();
            }
        }
        for id in renet.clients_id() {
            for packet in renet.get_packets_to_send(id).unwrap() {
                let (addr, payload) = netcode.generate_payload_packet(id, &packet).unwrap();
                socket.send_to(payload, addr).unwrap();
            }
        }
    }
}

#[test]
fn an_idle_connection_acks_what_it_received_once_then_sends_keepalives_only() {
    let key = token::NetcodeKey::generate().unwrap();
    let mut server = StockServer::new(*key.bytes());
    let addr = server.socket.local_addr().unwrap();
    let issuer = token::ConnectTokenIssuer::new(key);
    let data = TokenUserData {
        kind: TokenKind::Connection,
        user_id: 7,
        match_id: 0,
        session_id: [1; 16],
    };
    let mut conn = Connection::connect(issuer.mint(&[addr], data).unwrap()).unwrap();

    // The client polls the way `Lobby::poll` and `GameSession::poll` do: read, then a flush
    // that sends acks only on its cadence.
    let mut received = 0;
    let mut step = |server: &mut StockServer, conn: &mut Connection| {
        server.pump();
        conn.update().unwrap();
        while conn.receive_raw().is_some() {
            received += 1;
        }
        conn.flush_if_due(false).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    };
    let started = Instant::now();
    while server.client.is_none() || !conn.is_connected() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never connected"
        );
        step(&mut server, &mut conn);
    }
    let client = server.client.unwrap();
    server.counts = Counts::default();

    server
        .renet
        .send_message(client, Channel::Reliable as u8, vec![1u8, 2, 3]);
    let window = Instant::now();
    while window.elapsed() < Duration::from_millis(2600) {
        step(&mut server, &mut conn);
    }
    assert_eq!(received, 1, "the message arrived");
    let counts = &server.counts;
    assert_eq!(
        counts.acks, 1,
        "one ack packet for the one message (renet alone repeats it every flush): {counts:?}"
    );
    assert_eq!(counts.with_messages, 0, "{counts:?}");
    assert!(
        (1..=3).contains(&counts.keepalives),
        "keep-alives about once a second over 2.6 s (netcode's own rate is 4 a second): {counts:?}"
    );
    assert!(conn.is_connected());
}
