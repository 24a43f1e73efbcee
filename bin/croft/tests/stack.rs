//! The login-to-match flow with real processes: `croft up` (auth + matchmaking in one process,
//! a connection server and instance servers as children), driven by clients that log in over
//! HTTP and speak the lobby protocol over secure netcode.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use headless_bot::Connection;
use headless_bot::api::{AuthApi, SessionTokens};
use shared_sim::protocol::{
    ChatTarget, ErrorCode, FriendState, LobbyClientMessage, LobbyServerMessage, Presence, QueueEnd,
    ServerMessage,
};
use shared_sim::rules::MatchEvent;
use test_stack::{PASSWORD, Stack};

/// `croft up` in a fresh folder with `extra` flags.
fn start_with(name: &str, extra: &[&str]) -> Stack {
    Stack::start(
        Path::new(env!("CARGO_BIN_EXE_croft")),
        test_stack::fresh_dir(&format!("stack-{name}")),
        extra,
        Duration::from_secs(60),
    )
}

fn start(name: &str) -> Stack {
    start_with(name, &[])
}

fn add_user(stack: &Stack, name: &str) {
    stack.add_user(name, PASSWORD);
}

/// Logs `name` in and connects to the connection server, waiting for the welcome.
fn login(stack: &Stack, name: &str) -> Client {
    let api = AuthApi::new(&stack.url("auth")).unwrap();
    let session = api.login(name, PASSWORD).unwrap();
    let mut conn =
        Connection::connect(headless_bot::api::netcode_token(&session).unwrap()).unwrap();
    conn.set_keepalive(shared_sim::protocol::LOBBY_KEEPALIVE);
    let mut c = Client {
        session,
        conn,
        inbox: Vec::new(),
    };
    match c.wait(|m| matches!(m, LobbyServerMessage::Welcome { .. })) {
        LobbyServerMessage::Welcome { username, .. } => assert_eq!(username, name),
        _ => unreachable!(),
    }
    c
}

struct Client {
    session: SessionTokens,
    conn: Connection,
    inbox: Vec<LobbyServerMessage>,
}

impl Client {
    fn user_id(&self) -> u64 {
        self.session.user_id
    }

    fn send(&mut self, m: &LobbyClientMessage) {
        self.conn.send_raw(m.encode());
        self.conn.flush().unwrap();
    }

    fn pump(&mut self) -> Result<(), String> {
        // Messages that arrived with a disconnect are still read before the error is returned.
        let updated = self.conn.update().map_err(|e| e.to_string());
        let mut received = false;
        while let Some(bytes) = self.conn.receive_raw() {
            received = true;
            self.inbox
                .push(LobbyServerMessage::decode(&bytes).expect("decodable server message"));
        }
        updated?;
        if received {
            self.conn.flush().map_err(|e| e.to_string())
        } else {
            self.conn.flush_if_due(false).map_err(|e| e.to_string())
        }
    }

    /// Waits up to 5 s for a message matching `pred` (removing it and everything before it).
    fn wait(&mut self, pred: impl Fn(&LobbyServerMessage) -> bool) -> LobbyServerMessage {
        self.wait_for(Duration::from_secs(5), pred)
    }

    fn wait_for(
        &mut self,
        within: Duration,
        pred: impl Fn(&LobbyServerMessage) -> bool,
    ) -> LobbyServerMessage {
        let deadline = Instant::now() + within;
        loop {
            if let Some(i) = self.inbox.iter().position(&pred) {
                let m = self.inbox[i].clone();
                self.inbox.drain(..=i);
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "no such message; got {:?}",
                self.inbox
            );
            if let Err(e) = self.pump()
                && !self.inbox.iter().any(&pred)
            {
                panic!("connection lost ({e}); got {:?}", self.inbox);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Pumps for `d`, returning what arrived.
    fn idle(&mut self, d: Duration) -> Vec<LobbyServerMessage> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            let _ = self.pump();
            std::thread::sleep(Duration::from_millis(5));
        }
        std::mem::take(&mut self.inbox)
    }
}

fn pump_all(clients: &mut [&mut Client], d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        for c in clients.iter_mut() {
            let _ = c.pump();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn error_code(m: &LobbyServerMessage) -> Option<ErrorCode> {
    match m {
        LobbyServerMessage::Error { code, .. } => Some(*code),
        _ => None,
    }
}

#[test]
fn friends_presence_chat_notifications_and_revocation() {
    let stack = start("social");
    for n in ["amy", "bob", "cat"] {
        add_user(&stack, n);
    }
    let mut amy = login(&stack, "amy");
    let mut bob = login(&stack, "bob");
    let bob_id = bob.user_id();

    // Friend request by name, seen by bob, accepted: both see each other online.
    amy.send(&LobbyClientMessage::FriendRequest {
        username: "BOB".into(),
    });
    let amy_id = amy.user_id();
    bob.wait(|m| {
        matches!(m, LobbyServerMessage::FriendRequestReceived { user_id, username } if *user_id == amy_id && username == "amy")
    });
    amy.send(&LobbyClientMessage::FriendRequest {
        username: "nobody".into(),
    });
    assert_eq!(
        error_code(&amy.wait(|m| error_code(m).is_some())),
        Some(ErrorCode::UnknownUser)
    );
    bob.send(&LobbyClientMessage::FriendAccept { user_id: amy_id });
    amy.wait(|m| {
        matches!(m, LobbyServerMessage::FriendUpdate { user_id, accepted: true } if *user_id == bob_id)
    });
    match amy.wait(|m| matches!(m, LobbyServerMessage::Friends(list) if list.iter().any(|f| f.state == FriendState::Accepted)))
    {
        LobbyServerMessage::Friends(list) => {
            assert_eq!(list.len(), 1);
            assert_eq!(list[0].username, "bob");
            assert_eq!(list[0].presence, Presence::Online);
        }
        _ => unreachable!(),
    }

    // Bob quits and logs in again: amy hears offline, then online within a second.
    bob.conn.disconnect();
    drop(bob);
    amy.wait(|m| {
        matches!(m, LobbyServerMessage::FriendPresence { user_id, presence: Presence::Offline } if *user_id == bob_id)
    });
    let t = Instant::now();
    let mut bob = login(&stack, "bob");
    amy.wait(|m| {
        matches!(m, LobbyServerMessage::FriendPresence { user_id, presence: Presence::Online } if *user_id == bob_id)
    });
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    // Direct chat, common chat, and the errors.
    amy.send(&LobbyClientMessage::Chat {
        to: ChatTarget::User(bob_id),
        text: "hello bob".into(),
    });
    bob.wait(|m| {
        matches!(m, LobbyServerMessage::Chat { from, text, to: ChatTarget::User(_), .. } if *from == amy_id && text == "hello bob")
    });
    let mut cat = login(&stack, "cat");
    cat.send(&LobbyClientMessage::Chat {
        to: ChatTarget::Common,
        text: "hi all".into(),
    });
    for c in [&mut amy, &mut bob] {
        c.wait(|m| matches!(m, LobbyServerMessage::Chat { to: ChatTarget::Common, text, from_name, .. } if text == "hi all" && from_name == "cat"));
    }
    cat.send(&LobbyClientMessage::Chat {
        to: ChatTarget::User(424242),
        text: "anyone?".into(),
    });
    assert_eq!(
        error_code(&cat.wait(|m| error_code(m).is_some())),
        Some(ErrorCode::UnknownUser)
    );
    cat.send(&LobbyClientMessage::Chat {
        to: ChatTarget::Common,
        text: "x".repeat(257),
    });
    assert_eq!(
        error_code(&cat.wait(|m| error_code(m).is_some())),
        Some(ErrorCode::BadChat)
    );
    // 10 per 10 s: the 11th is refused (two were already counted above).
    for i in 0..9 {
        cat.send(&LobbyClientMessage::Chat {
            to: ChatTarget::Common,
            text: format!("spam {i}"),
        });
    }
    assert_eq!(
        error_code(&cat.wait(|m| error_code(m).is_some())),
        Some(ErrorCode::RateLimited)
    );

    // Malformed bytes: a clear error, the connection stays.
    cat.conn.send_raw(vec![0xff, 0xff, 0xff]);
    cat.conn.flush().unwrap();
    cat.wait(|m| error_code(m) == Some(ErrorCode::Malformed));

    // A global notification through the admin command reaches everyone.
    let out = Command::new(env!("CARGO_BIN_EXE_croft"))
        .args(["notify", "--connection", &stack.url("connection_http")])
        .arg("--service-token-file")
        .arg(stack.dir.join("service.token"))
        .arg("maintenance at noon")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for c in [&mut amy, &mut bob, &mut cat] {
        c.wait(|m| matches!(m, LobbyServerMessage::Notification { text } if text == "maintenance at noon"));
    }
    // Without the credential: refused.
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/v1/notifications", stack.url("connection_http")))
        .json(&serde_json::json!({ "text": "x" }))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // Logout revokes the session: the connection server drops cat within the poll interval,
    // and the old connect token no longer gets in.
    let api = AuthApi::new(&stack.url("auth")).unwrap();
    api.logout(&cat.session.access_token).unwrap();
    assert_eq!(
        error_code(&cat.wait(|m| error_code(m) == Some(ErrorCode::SessionRevoked))),
        Some(ErrorCode::SessionRevoked)
    );
    let t = Instant::now();
    while cat.pump().is_ok() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(cat.pump().is_err(), "a revoked session stays connected");

    // A token minted for an instance server is refused here.
    let key = token::NetcodeKey::read_file(&stack.dir.join("netcode.key")).unwrap();
    let udp: std::net::SocketAddr = stack.info["connection_udp"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let wrong = token::ConnectTokenIssuer::new(key)
        .mint_instance(udp, 999_999, 1)
        .unwrap();
    let mut conn = Connection::connect(wrong).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut refused = false;
    while Instant::now() < deadline && !refused {
        if conn.update().is_err() {
            break;
        }
        while let Some(b) = conn.receive_raw() {
            refused |= matches!(
                LobbyServerMessage::decode(&b),
                Ok(LobbyServerMessage::Error {
                    code: ErrorCode::BadToken,
                    ..
                })
            );
        }
        let _ = conn.flush();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        refused,
        "an instance token was accepted by the connection server"
    );
    // The others are unaffected.
    pump_all(&mut [&mut amy, &mut bob], Duration::from_millis(200));
    amy.send(&LobbyClientMessage::FriendRemove { user_id: bob_id });
    bob.wait(|m| {
        matches!(m, LobbyServerMessage::FriendUpdate { user_id, accepted: false } if *user_id == amy_id)
    });
}

#[test]
fn queueing_is_idempotent_cancellable_and_a_dead_instance_aborts_its_matches() {
    let stack = start("mm");
    for n in ["dan", "eve", "fay"] {
        add_user(&stack, n);
    }
    let mut dan = login(&stack, "dan");
    let mut eve = login(&stack, "eve");
    let mut fay = login(&stack, "fay");

    // Queue, queue again (same ticket), cancel.
    fay.send(&LobbyClientMessage::FindMatch);
    fay.wait(|m| matches!(m, LobbyServerMessage::Queued));
    fay.send(&LobbyClientMessage::FindMatch);
    fay.wait(|m| matches!(m, LobbyServerMessage::Queued));
    fay.send(&LobbyClientMessage::CancelMatch);
    fay.wait(|m| {
        matches!(
            m,
            LobbyServerMessage::QueueLeft {
                reason: QueueEnd::Cancelled
            }
        )
    });

    // Two players queue and are matched; nobody else is pulled in.
    dan.send(&LobbyClientMessage::FindMatch);
    eve.send(&LobbyClientMessage::FindMatch);
    let found = |m: &LobbyServerMessage| matches!(m, LobbyServerMessage::MatchFound { .. });
    let (
        LobbyServerMessage::MatchFound {
            match_id,
            server_addr,
            ..
        },
        _,
    ) = (dan.wait(found), eve.wait(found))
    else {
        unreachable!()
    };
    let idle = fay.idle(Duration::from_millis(300));
    assert!(!idle.iter().any(found), "{idle:?}");
    // In a match: queueing again is refused.
    dan.send(&LobbyClientMessage::FindMatch);
    assert_eq!(
        error_code(&dan.wait(|m| error_code(m).is_some())),
        Some(ErrorCode::NotAllowed)
    );
    // A rejoin token for the same match is available.
    dan.send(&LobbyClientMessage::RejoinMatch);
    dan.wait(
        |m| matches!(m, LobbyServerMessage::MatchFound { match_id: id, .. } if *id == match_id),
    );

    // Kill the instance hosting the match: both players are told it was aborted, the result
    // is recorded, and they can queue again.
    let status: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!(
            "{}/v1/matchmaking/status",
            stack.url("matchmaking")
        ))
        .bearer_auth(stack.secret("service.token"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let instances = status["allocator"]["instances"].as_array().unwrap();
    let host = instances
        .iter()
        .find(|i| {
            i["udp"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a.as_str() == Some(&server_addr.to_string()))
        })
        .unwrap_or_else(|| panic!("no instance has {server_addr}: {status}"));
    let pid = host["pid"].as_u64().unwrap();
    assert!(
        Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success()
    );
    for c in [&mut dan, &mut eve] {
        c.wait(|m| {
            matches!(m, LobbyServerMessage::MatchEnded { match_id: id, aborted: true } if *id == match_id)
        });
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let recorded = rt.block_on(async {
        let url = format!("sqlite://{}/croft.db", stack.dir.display());
        let store = store::Store::connect(&url, &store::PoolSettings::default())
            .await
            .unwrap();
        sqlx_reason(&store, match_id).await
    });
    assert_eq!(recorded.as_deref(), Some("Aborted"));
    for c in [&mut dan, &mut eve] {
        c.send(&LobbyClientMessage::FindMatch);
        c.wait(|m| matches!(m, LobbyServerMessage::Queued));
    }
    // They were matched again, on a new instance the allocator started.
    let mut seats = Vec::new();
    for c in [&mut dan, &mut eve] {
        let LobbyServerMessage::MatchFound {
            match_id,
            connect_token,
            ..
        } = c.wait(found)
        else {
            unreachable!()
        };
        let token = renet_netcode::ConnectToken::read(&mut connect_token.as_slice()).unwrap();
        seats.push((match_id, Connection::connect(token).unwrap()));
    }
    let second = seats[0].0;
    let mut conns: Vec<Connection> = seats.into_iter().map(|(_, c)| c).collect();
    for conn in conns.iter_mut() {
        let welcomed = instance_wait(conn, Duration::from_secs(10), |m| {
            matches!(m, ServerMessage::Welcome { .. })
        });
        assert!(welcomed, "not seated");
    }
    // eve logs out: her session is revoked, so the instance drops her too and she forfeits.
    let api = AuthApi::new(&stack.url("auth")).unwrap();
    api.logout(&eve.session.access_token).unwrap();
    let revoked_at = Instant::now();
    let [dan_conn, eve_conn] = &mut conns[..] else {
        unreachable!()
    };
    let dropped = instance_wait(eve_conn, Duration::from_secs(5), |m| {
        matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::SessionRevoked,
                ..
            }
        )
    });
    let took = revoked_at.elapsed();
    assert!(dropped, "the instance kept a revoked session");
    println!("a revoked player dropped from the match after {took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    let ended = instance_wait(
        dan_conn,
        Duration::from_secs(5),
        |m| matches!(m, ServerMessage::Events(events) if events.iter().any(|e| matches!(e, MatchEvent::MatchEnded { .. }))),
    );
    assert!(ended, "the opponent's match did not end");
    dan.wait(|m| {
        matches!(m, LobbyServerMessage::MatchEnded { match_id: id, aborted: false } if *id == second)
    });
    let recorded = rt.block_on(async {
        let url = format!("sqlite://{}/croft.db", stack.dir.display());
        let store = store::Store::connect(&url, &store::PoolSettings::default())
            .await
            .unwrap();
        sqlx_reason(&store, second).await
    });
    assert_eq!(recorded.as_deref(), Some("Forfeit"));

    // Ctrl-C (SIGTERM here) stops everything cleanly: croft up exits 0, and neither the
    // connection server nor any instance server is left running.
    let status: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!(
            "{}/v1/matchmaking/status",
            stack.url("matchmaking")
        ))
        .bearer_auth(stack.secret("service.token"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let pids: Vec<u64> = status["allocator"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["pid"].as_u64().unwrap())
        .collect();
    assert!(!pids.is_empty());
    let mut stack = stack;
    let code = stack.stop();
    assert!(code.success(), "{code:?}");
    for pid in pids {
        let alive = Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(
            !alive,
            "instance {pid} still running after croft up stopped"
        );
    }
}

/// Pumps an instance connection until a message matches `pred` (true) or `within` passes.
fn instance_wait(
    conn: &mut Connection,
    within: Duration,
    pred: impl Fn(&ServerMessage) -> bool,
) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if conn.update().is_err() {
            return false;
        }
        while let Some(b) = conn.receive_raw() {
            if ServerMessage::decode(&b).is_ok_and(|m| pred(&m)) {
                return true;
            }
        }
        let _ = conn.flush();
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

async fn sqlx_reason(store: &store::Store, match_id: u64) -> Option<String> {
    store.match_reason(match_id as i64).await.unwrap()
}

/// Two connection servers in one stack: logins rotate over them, and friend presence, direct
/// and common chat, and a notification sent to one server cross to the other over the bus.
#[test]
fn presence_chat_and_notifications_cross_between_two_connection_servers() {
    let stack = start_with("bus", &["--connection-servers", "2"]);
    let servers = stack.info["connections"].as_array().unwrap().clone();
    assert_eq!(servers.len(), 2);
    for n in ["dan", "eve"] {
        add_user(&stack, n);
    }
    // dan and eve are friends (made in the database; friend requests are tested above).
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}/croft.db", stack.dir.display());
        let store = store::Store::connect(&url, &store::PoolSettings::default())
            .await
            .unwrap();
        let dan = store.user_by_name("dan").await.unwrap().unwrap().id;
        let eve = store.user_by_name("eve").await.unwrap().unwrap().id;
        store
            .request_friend(dan, "eve", |to| {
                events::Event::FriendRequest {
                    from_user_id: dan,
                    to_user_id: to,
                }
                .outbox("test")
            })
            .await
            .unwrap();
        store.accept_friend(eve, dan).await.unwrap();
    });
    let mut dan = login(&stack, "dan");
    let dan_id = dan.user_id();
    // Logins rotate over the servers: log eve in until she lands on the other one.
    let mut eve = login(&stack, "eve");
    for _ in 0..4 {
        if eve.conn.server_addr() != dan.conn.server_addr() {
            break;
        }
        eve.conn.disconnect();
        eve = login(&stack, "eve");
    }
    assert_ne!(eve.conn.server_addr(), dan.conn.server_addr());
    let eve_id = eve.user_id();
    let bus = Duration::from_secs(15);

    // eve came online on the other server: dan hears it through the bus.
    dan.wait_for(bus, |m| {
        matches!(m, LobbyServerMessage::FriendPresence { user_id, presence: Presence::Online } if *user_id == eve_id)
    });
    // Friend changes reach the other server's player at once: dan removes eve, asks again,
    // eve accepts.
    dan.send(&LobbyClientMessage::FriendRemove { user_id: eve_id });
    eve.wait_for(bus, |m| {
        matches!(m, LobbyServerMessage::FriendUpdate { user_id, accepted: false } if *user_id == dan_id)
    });
    dan.send(&LobbyClientMessage::FriendRequest {
        username: "eve".into(),
    });
    eve.wait_for(bus, |m| {
        matches!(m, LobbyServerMessage::FriendRequestReceived { user_id, username } if *user_id == dan_id && username == "dan")
    });
    eve.send(&LobbyClientMessage::FriendAccept { user_id: dan_id });
    dan.wait_for(bus, |m| {
        matches!(m, LobbyServerMessage::FriendUpdate { user_id, accepted: true } if *user_id == eve_id)
    });
    // Direct chat both ways, and the common channel.
    dan.send(&LobbyClientMessage::Chat {
        to: ChatTarget::User(eve_id),
        text: "across servers".into(),
    });
    eve.wait_for(bus, |m| {
        matches!(m, LobbyServerMessage::Chat { from, text, to: ChatTarget::User(_), .. } if *from == dan_id && text == "across servers")
    });
    eve.send(&LobbyClientMessage::Chat {
        to: ChatTarget::Common,
        text: "hello both servers".into(),
    });
    dan.wait_for(bus, |m| {
        matches!(m, LobbyServerMessage::Chat { to: ChatTarget::Common, text, from_name, .. } if text == "hello both servers" && from_name == "eve")
    });
    // eve sees her own common message once (from her server, not again from the bus).
    eve.wait(
        |m| matches!(m, LobbyServerMessage::Chat { text, .. } if text == "hello both servers"),
    );
    // A notification sent to the first server reaches players on both.
    let resp = reqwest::blocking::Client::new()
        .post(format!(
            "{}/v1/notifications",
            servers[0]["http"].as_str().unwrap()
        ))
        .bearer_auth(stack.secret("service.token"))
        .json(&serde_json::json!({ "text": "both servers hear this" }))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    for c in [&mut dan, &mut eve] {
        c.wait_for(bus, |m| matches!(m, LobbyServerMessage::Notification { text } if text == "both servers hear this"));
    }
    let late = pump_and_take(&mut [&mut dan, &mut eve], Duration::from_millis(1500));
    assert!(
        !late.iter().any(|m| matches!(m, LobbyServerMessage::Chat { text, .. } | LobbyServerMessage::Notification { text } if text == "hello both servers" || text == "both servers hear this")),
        "delivered twice: {late:?}"
    );
    // Produce rates and consumer lag are exported (statistics every 5 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text =
            reqwest::blocking::get(format!("{}/metrics", servers[1]["http"].as_str().unwrap()))
                .unwrap()
                .text()
                .unwrap();
        if text.contains("croft_events_consumer_lag{")
            && text.contains("croft_events_produced_total{topic=\"presence_changed\"}")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no bus metrics:\n{text}");
        pump_all(&mut [&mut dan, &mut eve], Duration::from_millis(500));
    }
    // The operator's view: both connection servers, the queue, the instances.
    let croft_op = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_croft"))
            .args(args)
            .args(["--matchmaking", &stack.url("matchmaking")])
            .arg("--service-token-file")
            .arg(stack.dir.join("service.token"))
            .env("CROFT_CONTROL_TOKEN_FILE", stack.dir.join("service.token"))
            .output()
            .unwrap()
    };
    let conns = format!(
        "{},{}",
        servers[0]["http"].as_str().unwrap(),
        servers[1]["http"].as_str().unwrap()
    );
    let out = croft_op(&["status", "--connection", &conns]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("0 queued") && text.contains("local-1"),
        "{text}"
    );
    assert_eq!(text.matches("connection http://").count(), 2, "{text}");
    // The live view, as one text snapshot: figures, and every target up (the instance found
    // through matchmaking).
    let out = croft_op(&[
        "top",
        "--once",
        "--url",
        &format!("{},{conns}", stack.url("matchmaking")),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("players online (lobby)   2"), "{text}");
    assert!(text.contains("queued                   0"), "{text}");
    assert_eq!(
        text.matches("target ").count(),
        4,
        "matchmaking, 2 connection servers, 1 instance: {text}"
    );
    assert!(!text.contains("DOWN"), "{text}");
    let out = croft_op(&["drain", "local-9"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no instance `local-9`"));
    let out = croft_op(&["drain", "local-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = croft_op(&["status", "--connection", &conns, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let instances = v["matchmaking"]["allocator"]["instances"]
            .as_array()
            .unwrap();
        // Draining, or (idle) already stopped and replaced by a fresh warm instance.
        let drained = instances
            .iter()
            .any(|i| i["id"] == "local-1" && i["draining"] == true)
            || (!instances.iter().any(|i| i["id"] == "local-1") && !instances.is_empty());
        if drained {
            break;
        }
        assert!(Instant::now() < deadline, "local-1 not draining: {v}");
        pump_all(&mut [&mut dan, &mut eve], Duration::from_millis(300));
    }
    // eve leaves: dan hears she is offline.
    eve.conn.disconnect();
    drop(eve);
    dan.wait_for(bus, |m| {
        matches!(m, LobbyServerMessage::FriendPresence { user_id, presence: Presence::Offline } if *user_id == eve_id)
    });
    // A direct message to a player online nowhere is refused.
    dan.send(&LobbyClientMessage::Chat {
        to: ChatTarget::User(eve_id),
        text: "are you there".into(),
    });
    assert_eq!(
        error_code(&dan.wait(|m| error_code(m).is_some())),
        Some(ErrorCode::UnknownUser)
    );

    // eve is back on the other server, and that server is killed: it says no goodbye, and
    // its heartbeats stop. dan sees her offline within 10 s.
    let mut eve = login(&stack, "eve");
    for _ in 0..6 {
        if eve.conn.server_addr() != dan.conn.server_addr() {
            break;
        }
        eve.conn.disconnect();
        eve = login(&stack, "eve");
    }
    assert_ne!(eve.conn.server_addr(), dan.conn.server_addr());
    dan.wait_for(bus, |m| {
        matches!(m, LobbyServerMessage::FriendPresence { user_id, presence: Presence::Online } if *user_id == eve_id)
    });
    // Whatever her tries on dan's server said has arrived by now; only news counts from here.
    pump_all(&mut [&mut dan, &mut eve], Duration::from_millis(1500));
    dan.inbox.clear();
    let eve_addr = eve.conn.server_addr().to_string();
    let eve_server = servers
        .iter()
        .find(|s| {
            s["udp"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a.as_str() == Some(eve_addr.as_str()))
        })
        .expect("eve's server is listed");
    let pid = eve_server["pid"].as_u64().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success()
    );
    let killed = Instant::now();
    dan.wait_for(Duration::from_secs(10), |m| {
        matches!(m, LobbyServerMessage::FriendPresence { user_id, presence: Presence::Offline } if *user_id == eve_id)
    });
    println!(
        "a killed connection server's player shown offline after {:.1} s",
        killed.elapsed().as_secs_f64()
    );
    drop(eve);
}

fn pump_and_take(clients: &mut [&mut Client], d: Duration) -> Vec<LobbyServerMessage> {
    pump_all(clients, d);
    clients
        .iter_mut()
        .flat_map(|c| std::mem::take(&mut c.inbox))
        .collect()
}

type Counts = Vec<(String, u32)>;

/// The player's (items, cards).
fn inventory(c: &mut Client) -> (Counts, Counts) {
    c.send(&LobbyClientMessage::Inventory);
    match c.wait(|m| matches!(m, LobbyServerMessage::Inventory { .. })) {
        LobbyServerMessage::Inventory { items, cards } => (items, cards),
        _ => unreachable!(),
    }
}

fn count(list: &[(String, u32)], id: &str) -> u32 {
    list.iter().find(|(i, _)| i == id).map_or(0, |(_, n)| *n)
}

fn refused(c: &mut Client, msg: &LobbyClientMessage) -> ErrorCode {
    c.send(msg);
    let m = c.wait(|m| matches!(m, LobbyServerMessage::Error { .. }));
    error_code(&m).unwrap()
}

/// The starter kit, crafting (refusals included), deck building against the collection, the
/// chosen deck, and that matchmaking seats the player with it.
#[test]
fn crafting_decks_and_the_chosen_deck_in_a_match() {
    let cards_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/cards");
    let data = std::sync::Arc::new(shared_sim::GameData::load_dir(&cards_dir).unwrap());
    let stack = start("craft");
    add_user(&stack, "carol");
    add_user(&stack, "dave");
    let mut carol = login(&stack, "carol");

    // A new player has the starter items and their starter deck's cards.
    let (items, cards) = inventory(&mut carol);
    for (item, n) in &data.rules.starter_items {
        assert_eq!(count(&items, item), *n, "{item}: {items:?}");
    }
    let starter = data.starter_deck_for(carol.user_id()).unwrap();
    assert_eq!(
        cards.iter().map(|(_, n)| *n as usize).sum::<usize>(),
        starter.cards.len()
    );

    // Refusals change nothing.
    let craft = |recipe: &str| LobbyClientMessage::Craft {
        recipe: recipe.into(),
    };
    assert_eq!(refused(&mut carol, &craft("no_such")), ErrorCode::UnknownId);
    assert_eq!(
        refused(&mut carol, &craft("craft_crystal_beetle")),
        ErrorCode::NotEnoughItems
    );
    assert_eq!(inventory(&mut carol).0, items);

    // wheat -> flour twice, then planks + flour -> a Mill Golem card.
    for recipe in ["mill_flour", "mill_flour", "craft_mill_golem"] {
        carol.send(&craft(recipe));
        match carol.wait(|m| matches!(m, LobbyServerMessage::Crafted { .. })) {
            LobbyServerMessage::Crafted { recipe: r, .. } => assert_eq!(r, recipe),
            _ => unreachable!(),
        }
    }
    let (items2, cards2) = inventory(&mut carol);
    assert_eq!(count(&items2, "wheat"), 0);
    assert_eq!(count(&items2, "flour"), 0);
    assert_eq!(count(&items2, "plank"), count(&items, "plank") - 4);
    assert_eq!(count(&cards2, "mill_golem"), 1);
    assert_eq!(
        refused(&mut carol, &craft("mill_flour")),
        ErrorCode::NotEnoughItems
    );

    // Decks: two golems are not owned, a short deck breaks the rules, slot out of range.
    let mut deck = starter.cards.clone();
    deck.pop();
    deck.push("mill_golem".into());
    let mut two = deck.clone();
    two[0] = "mill_golem".into();
    let save = |slot: u8, cards: Vec<String>| LobbyClientMessage::SaveDeck {
        slot,
        name: "Golem".into(),
        cards,
    };
    assert_eq!(refused(&mut carol, &save(0, two)), ErrorCode::InvalidDeck);
    assert_eq!(
        refused(&mut carol, &save(0, deck[1..].to_vec())),
        ErrorCode::InvalidDeck
    );
    assert_eq!(
        refused(&mut carol, &save(200, deck.clone())),
        ErrorCode::InvalidDeck
    );
    assert_eq!(
        refused(
            &mut carol,
            &LobbyClientMessage::ChooseDeck { slot: Some(0) }
        ),
        ErrorCode::InvalidDeck
    );
    carol.send(&save(0, deck.clone()));
    match carol.wait(|m| matches!(m, LobbyServerMessage::Decks { .. })) {
        LobbyServerMessage::Decks { decks, active } => {
            assert_eq!(decks.len(), 1);
            assert_eq!(decks[0].cards, deck);
            assert_eq!(active, None);
        }
        _ => unreachable!(),
    }
    carol.send(&LobbyClientMessage::ChooseDeck { slot: Some(0) });
    carol.wait(|m| {
        matches!(
            m,
            LobbyServerMessage::Decks {
                active: Some(0),
                ..
            }
        )
    });

    // Logging in again does not grant the starter kit twice.
    carol.conn.disconnect();
    drop(carol);
    let mut carol = login(&stack, "carol");
    assert_eq!(inventory(&mut carol).0, items2);
    // A player's requests are answered in the order sent: save, then choose at once.
    carol.send(&save(1, deck.clone()));
    carol.send(&LobbyClientMessage::ChooseDeck { slot: Some(1) });
    carol.wait(|m| {
        matches!(
            m,
            LobbyServerMessage::Decks {
                active: Some(1),
                ..
            }
        )
    });

    // Matched with dave: carol plays her deck (the match record's setup holds it).
    let mut dave = login(&stack, "dave");
    carol.send(&LobbyClientMessage::FindMatch);
    dave.send(&LobbyClientMessage::FindMatch);
    let found = |m: &LobbyServerMessage| matches!(m, LobbyServerMessage::MatchFound { .. });
    let mut players = Vec::new();
    for c in [&mut carol, &mut dave] {
        let LobbyServerMessage::MatchFound {
            match_id,
            connect_token,
            ..
        } = c.wait_for(Duration::from_secs(15), found)
        else {
            unreachable!()
        };
        let token = renet_netcode::ConnectToken::read(&mut connect_token.as_slice()).unwrap();
        players.push(
            headless_bot::MatchPlayer::new(
                c.user_id(),
                match_id,
                token,
                data.clone(),
                headless_bot::Pacing {
                    think: Duration::from_millis(5),
                    jitter: 0.1,
                },
            )
            .unwrap(),
        );
    }
    let carol_id = carol.user_id();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) && !players.iter().all(|p| p.is_done()) {
        for p in players.iter_mut() {
            p.poll(&headless_bot::NoRejoin);
        }
        pump_all(&mut [&mut carol, &mut dave], Duration::from_millis(2));
    }
    assert!(players.iter().all(|p| p.is_done()));
    let golem = data.card_idx("mill_golem").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let record = loop {
        let found = std::fs::read_dir(stack.dir.join("instances"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".matches.jsonl"))
            .flat_map(|e| {
                std::fs::read_to_string(e.path())
                    .unwrap_or_default()
                    .lines()
                    .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .next();
        if let Some(r) = found {
            break r;
        }
        assert!(Instant::now() < deadline, "no match record");
        std::thread::sleep(Duration::from_millis(100));
    };
    let seat = record["players"]
        .as_array()
        .unwrap()
        .iter()
        .position(|p| p.as_u64() == Some(carol_id))
        .unwrap();
    let carol_deck: Vec<u64> = record["setup"]["decks"][seat]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert_eq!(carol_deck.len(), deck.len());
    assert!(
        carol_deck.contains(&u64::from(golem.0)),
        "carol's match deck has her crafted card: {carol_deck:?}"
    );
}
