//! WebSocket clients (web exports) on an instance server: the same tokens and messages as UDP,
//! a WebSocket player and a UDP player in one match, and every refusal (subprotocol, token
//! checks, one use per token, one connection per user across transports, bad messages).

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Instance, game_data};
use croft_client::{Route, TokenSource};
use headless_bot::{Connection, MatchPlayer, Pacing, PlayerState, Summary, run_until_done};
use renetcode::ConnectToken;
use shared_sim::protocol::{
    ErrorCode, ServerMessage, TokenKind, TokenUserData, ws_close, ws_subprotocol,
};
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

const FAST: Pacing = Pacing {
    think: Duration::from_millis(10),
    jitter: 0.2,
};

fn start() -> (Instance, String) {
    let inst = Instance::start(&["--ws", "127.0.0.1:0"]);
    let url = inst
        .ready
        .ws
        .clone()
        .expect("the ready file names the WebSocket URL");
    (inst, url)
}

fn token_bytes(t: &ConnectToken) -> Vec<u8> {
    let mut out = Vec::new();
    t.write(&mut out).unwrap();
    out
}

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

/// A raw WebSocket client offering `protocol`.
fn raw(url: &str, protocol: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let mut request = url.into_client_request().unwrap();
    if let Some(p) = protocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
    }
    let (ws, _) = tungstenite::connect(request)?;
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    Ok(ws)
}

/// Reads until the server closes; the close code, and the messages before it.
fn close_code(ws: &mut Ws) -> (Option<u16>, Vec<ServerMessage>) {
    let mut messages = Vec::new();
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return (frame.map(|f| u16::from(f.code)), messages),
            Ok(Message::Binary(b)) => messages.push(ServerMessage::decode(&b).unwrap()),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e} (after {messages:?})"),
        }
    }
}

/// The next binary message, decoded.
fn next_message(ws: &mut Ws) -> ServerMessage {
    loop {
        match ws.read().expect("a message") {
            Message::Binary(b) => return ServerMessage::decode(&b).unwrap(),
            Message::Close(f) => panic!("closed: {f:?}"),
            _ => {}
        }
    }
}

#[test]
fn a_websocket_player_and_a_udp_player_play_a_match_to_the_end() {
    let (inst, url) = start();
    let mm = inst.matchmaker(1);
    let data = game_data();
    let (match_id, [t0, t1]) = mm
        .create_match([21, 22], ["starter_ember", "starter_grove"])
        .unwrap();
    let ws_route = Route::Ws { url, tls: None };
    let mut players = vec![
        MatchPlayer::new_by(ws_route, 21, match_id, t0, data.clone(), FAST).unwrap(),
        MatchPlayer::new(22, match_id, t1, data, FAST).unwrap(),
    ];
    run_until_done(
        &mut players,
        &mm,
        Duration::from_secs(120),
        Duration::from_millis(2),
    );
    let summary = Summary::of(&players);
    assert_eq!(summary.finished, 2, "{summary} {:?}", summary.failures);
    assert_eq!(
        summary.rejected, 0,
        "the policy only makes legal moves (WebSocket player {:?}, UDP player {:?})",
        players[0].stats, players[1].stats
    );
    assert!(
        players[0].stats.moves_sent > 2,
        "the WebSocket player played"
    );
    let results: Vec<_> = players
        .iter()
        .map(|p| match &p.state {
            PlayerState::Finished(r) => *r,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(results[0], results[1], "both players see the same result");
    let metrics = inst
        .http()
        .get(format!("{}/metrics", inst.control_url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("croft_ws_frames_received_total"),
        "the WebSocket path is counted"
    );
}

#[test]
fn bad_upgrades_and_tokens_are_refused_with_their_close_codes() {
    let (inst, url) = start();
    let mm = inst.matchmaker(1);
    let (match_id, [t0, _t1]) = mm
        .create_match([31, 32], ["starter_ember", "starter_grove"])
        .unwrap();
    let protocol = ws_subprotocol();

    // No subprotocol, or another version's: refused at the upgrade with 400.
    for offered in [None, Some("croft.v1")] {
        match raw(&url, offered) {
            Err(tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 400),
            other => panic!("{offered:?}: {:?}", other.map(|_| ())),
        }
    }

    // A first frame that is not a token, or text.
    let mut ws = raw(&url, Some(&protocol)).unwrap();
    ws.send(Message::Binary(vec![1, 2, 3].into())).unwrap();
    assert_eq!(close_code(&mut ws).0, Some(ws_close::BAD_TOKEN));
    let mut ws = raw(&url, Some(&protocol)).unwrap();
    ws.send(Message::Text("hello".into())).unwrap();
    assert_eq!(close_code(&mut ws).0, Some(ws_close::BAD_TOKEN));

    // A token with one byte of its private part changed.
    let mut forged = token_bytes(&t0);
    let at = forged.len() - 300;
    forged[at] ^= 1;
    let mut ws = raw(&url, Some(&protocol)).unwrap();
    ws.send(Message::Binary(forged.into())).unwrap();
    assert_eq!(close_code(&mut ws).0, Some(ws_close::BAD_TOKEN));

    // Expired: minted two minutes ago with a one-minute lifetime.
    let issuer = inst.issuer();
    let udp = inst.ready.udp[0];
    let data = TokenUserData {
        kind: TokenKind::Instance,
        user_id: 31,
        match_id,
        session_id: [0; 16],
    };
    let past = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() - Duration::from_secs(120);
    let expired = issuer.mint_at(past, &[udp], data).unwrap();
    let mut ws = raw(&url, Some(&protocol)).unwrap();
    ws.send(Message::Binary(token_bytes(&expired).into()))
        .unwrap();
    assert_eq!(close_code(&mut ws).0, Some(ws_close::EXPIRED_TOKEN));

    // A valid token for another server.
    let elsewhere = issuer
        .mint(&["127.0.0.1:9".parse().unwrap()], data)
        .unwrap();
    let mut ws = raw(&url, Some(&protocol)).unwrap();
    ws.send(Message::Binary(token_bytes(&elsewhere).into()))
        .unwrap();
    assert_eq!(close_code(&mut ws).0, Some(ws_close::WRONG_SERVER));

    // The good token works once: Welcome, then the same bytes again are refused.
    let bytes = token_bytes(&t0);
    let mut ws = raw(&url, Some(&protocol)).unwrap();
    ws.send(Message::Binary(bytes.clone().into())).unwrap();
    assert!(matches!(
        next_message(&mut ws),
        ServerMessage::Welcome { user_id: 31, .. }
    ));
    let mut again = raw(&url, Some(&protocol)).unwrap();
    again.send(Message::Binary(bytes.into())).unwrap();
    assert_eq!(close_code(&mut again).0, Some(ws_close::BAD_TOKEN));
    ws.close(None).unwrap();
}

#[test]
fn one_connection_per_user_across_transports_and_bad_messages_cost_the_session() {
    let (inst, url) = start();
    let mm = inst.matchmaker(1);
    let (match_id, [t0, t1]) = mm
        .create_match([41, 42], ["starter_ember", "starter_grove"])
        .unwrap();
    let protocol = ws_subprotocol();

    // User 41 over UDP first.
    let mut udp = Connection::connect(t0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut welcomed = false;
    while !welcomed && Instant::now() < deadline {
        udp.update().unwrap();
        while let Some(m) = udp.receive() {
            welcomed |= matches!(m, Ok(ServerMessage::Welcome { .. }));
        }
        let _ = udp.flush();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(welcomed, "the UDP player is seated");
    // The same user over WebSocket is refused: an error, then the close.
    let second = mm.instance_token(41, match_id).unwrap();
    let mut ws = raw(&url, Some(&protocol)).unwrap();
    ws.send(Message::Binary(token_bytes(&second).into()))
        .unwrap();
    let (code, messages) = close_code(&mut ws);
    assert_eq!(code, Some(ws_close::CLOSED_BY_SERVER));
    assert!(
        messages.iter().any(|m| matches!(
            m,
            ServerMessage::Error { code: ErrorCode::NotAllowed, message } if message.contains("already connected")
        )),
        "{messages:?}"
    );

    // User 42 over WebSocket: bad messages get named errors until the budget runs out.
    let mut ws = raw(&url, Some(&protocol)).unwrap();
    ws.send(Message::Binary(token_bytes(&t1).into())).unwrap();
    assert!(matches!(
        next_message(&mut ws),
        ServerMessage::Welcome { user_id: 42, .. }
    ));
    ws.send(Message::Binary(vec![0xff, 0xff, 0xff].into()))
        .unwrap();
    ws.send(Message::Text("not binary".into())).unwrap();
    let mut errors = Vec::new();
    while errors.len() < 2 {
        if let ServerMessage::Error { code, .. } = next_message(&mut ws) {
            errors.push(code);
        }
    }
    assert_eq!(errors, vec![ErrorCode::Malformed, ErrorCode::Malformed]);
    for _ in 0..12 {
        ws.send(Message::Binary(vec![0xff].into())).unwrap();
    }
    let (code, messages) = close_code(&mut ws);
    assert_eq!(code, Some(ws_close::CLOSED_BY_SERVER));
    assert!(
        messages.iter().any(|m| matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::TooManyErrors,
                ..
            }
        )),
        "{messages:?}"
    );
    // The server is still there for everyone else: user 41's UDP session goes on.
    udp.update().unwrap();
    assert!(udp.is_connected());
}

#[test]
fn a_client_that_sends_no_token_is_closed_after_the_hello_timeout() {
    let (_inst, url) = start();
    let mut ws = raw(&url, Some(&ws_subprotocol())).unwrap();
    let started = Instant::now();
    assert_eq!(close_code(&mut ws).0, Some(ws_close::TIMEOUT));
    assert!(started.elapsed() >= Duration::from_secs(4));
}

#[test]
fn wss_with_a_configured_certificate_and_only_for_clients_that_trust_it() {
    let dir = std::env::temp_dir().join(format!("croft-wss-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let inst = Instance::start(&[
        "--ws",
        "127.0.0.1:0",
        "--ws-tls-cert",
        cert_path.to_str().unwrap(),
        "--ws-tls-key",
        key_path.to_str().unwrap(),
    ]);
    let url = inst.ready.ws.clone().unwrap();
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");
    let mm = inst.matchmaker(1);
    let (_, [t0, t1]) = mm
        .create_match([51, 52], ["starter_ember", "starter_grove"])
        .unwrap();

    // A client that trusts the certificate is seated.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let tls = croft_client::ws::tls_config(Some(roots)).unwrap();
    let mut conn = Connection::connect_ws(&url, t0, Some(tls)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut welcomed = false;
    while !welcomed && Instant::now() < deadline {
        conn.update().unwrap();
        while let Some(m) = conn.receive() {
            welcomed |= matches!(m, Ok(ServerMessage::Welcome { user_id: 51, .. }));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(welcomed, "seated over wss");
    // One that only trusts the web PKI refuses the self-signed certificate.
    let untrusting = Connection::connect_ws(&url, t1, None);
    assert!(
        matches!(untrusting, Err(croft_client::ClientError::Ws(ref e)) if e.contains("certificate")),
        "{:?}",
        untrusting.err()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_newer_websocket_connection_replaces_the_older_and_floods_are_cut_off() {
    let (inst, url) = start();
    let mm = inst.matchmaker(1);
    let (match_id, [t0, _]) = mm
        .create_match([61, 62], ["starter_ember", "starter_grove"])
        .unwrap();
    let protocol = ws_subprotocol();
    let mut first = raw(&url, Some(&protocol)).unwrap();
    first
        .send(Message::Binary(token_bytes(&t0).into()))
        .unwrap();
    assert!(matches!(
        next_message(&mut first),
        ServerMessage::Welcome { user_id: 61, .. }
    ));
    // The same user again (a client back over a half-dead socket): the new one is seated, the
    // old one closed with 4003.
    let again = mm.instance_token(61, match_id).unwrap();
    let mut second = raw(&url, Some(&protocol)).unwrap();
    second
        .send(Message::Binary(token_bytes(&again).into()))
        .unwrap();
    assert!(matches!(
        next_message(&mut second),
        ServerMessage::Welcome { user_id: 61, .. }
    ));
    assert_eq!(close_code(&mut first).0, Some(ws_close::ALREADY_CONNECTED));
    // A message sent right before closing is still handled: a concession ends the match.
    let action = shared_sim::protocol::ClientMessage::MatchAction {
        seq: 1,
        action: shared_sim::rules::Action::Concede,
    };
    second
        .send(Message::Binary(action.encode().into()))
        .unwrap();
    second.close(None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = inst.match_log();
        if let Some(r) = log.iter().find(|r| r["match_id"] == match_id) {
            assert_eq!(r["result"]["reason"], "Concede", "{r}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the concession was lost: {log:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // More than 100 frames in a second: closed before they reach the game loop.
    let (_, [_, t1]) = mm
        .create_match([63, 64], ["starter_ember", "starter_grove"])
        .unwrap();
    let mut flood = raw(&url, Some(&protocol)).unwrap();
    flood
        .send(Message::Binary(token_bytes(&t1).into()))
        .unwrap();
    for _ in 0..150 {
        let request = shared_sim::protocol::ClientMessage::RequestSnapshot.encode();
        if flood.send(Message::Binary(request.into())).is_err() {
            break;
        }
    }
    assert_eq!(close_code(&mut flood).0, Some(ws_close::CLOSED_BY_SERVER));
}

#[test]
fn shutdown_closes_websocket_clients_with_going_away() {
    let (mut inst, url) = start();
    let answer: serde_json::Value = inst
        .http()
        .post(format!("{}/v1/hub", inst.control_url()))
        .bearer_auth(&inst.control_token)
        .json(&serde_json::json!({ "user_id": 71, "name": "walker" }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let addr = answer["server_addr"].as_str().unwrap().parse().unwrap();
    let hub_id = answer["hub_id"].as_u64().unwrap() as u32;
    let token = inst.issuer().mint_hub(addr, 71, hub_id).unwrap();
    let mut ws = raw(&url, Some(&ws_subprotocol())).unwrap();
    ws.send(Message::Binary(token_bytes(&token).into()))
        .unwrap();
    assert!(matches!(
        next_message(&mut ws),
        ServerMessage::HubWelcome { .. }
    ));
    inst.signal("TERM");
    assert_eq!(close_code(&mut ws).0, Some(ws_close::GOING_AWAY));
    let status = inst.wait_exit(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}
