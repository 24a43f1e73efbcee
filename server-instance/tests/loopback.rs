//! End to end over real UDP on loopback: the `server-instance` binary, bots on the client core,
//! abusive clients, reconnects, forfeits and draining.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Instance, game_data, wait_for};
use headless_bot::{Connection, MatchPlayer, Pacing, PlayerState, Summary, run_until_done};
use shared_sim::protocol::{ClientMessage, ErrorCode, ServerMessage, TokenKind, TokenUserData};
use shared_sim::rules::{Action, EndReason, Seat};

const FAST: Pacing = Pacing {
    think: Duration::from_millis(10),
    jitter: 0.2,
};

fn players_for(
    inst: &Instance,
    mm: &headless_bot::dev::DevMatchmaker,
    users: [u64; 2],
    pacing: Pacing,
) -> Vec<MatchPlayer> {
    let _ = inst;
    let data = game_data();
    let (match_id, tokens) = mm
        .create_match(users, ["starter_ember", "starter_grove"])
        .expect("match created");
    users
        .into_iter()
        .zip(tokens)
        .map(|(u, t)| MatchPlayer::new(u, match_id, t, data.clone(), pacing).unwrap())
        .collect()
}

/// Polls until the connection is gone; true if it was dropped within the timeout.
fn dropped_within(conn: &mut Connection, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if conn.update().is_err() || conn.is_disconnected() {
            return true;
        }
        while conn.receive().is_some() {}
        let _ = conn.flush();
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn two_bots_play_a_match_to_the_end_and_it_is_logged_and_replayable() {
    let inst = Instance::start(&[]);
    let mm = inst.matchmaker(1);
    let mut players = players_for(&inst, &mm, [11, 12], FAST);
    run_until_done(
        &mut players,
        &mm,
        Duration::from_secs(120),
        Duration::from_millis(2),
    );
    let summary = Summary::of(&players);
    assert_eq!(summary.finished, 2, "{summary} {:?}", summary.failures);
    assert_eq!(summary.rejected, 0, "the policy only makes legal moves");
    assert!(summary.moves > 5);
    let results: Vec<_> = players
        .iter()
        .map(|p| match &p.state {
            PlayerState::Finished(r) => *r,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(results[0], results[1], "both players see the same result");

    // The record reaches the match log and replays to the same result.
    let deadline = Instant::now() + Duration::from_secs(5);
    let record = loop {
        if let Some(r) = inst.match_log().into_iter().find(|r| r["match_id"] == 1) {
            break r;
        }
        assert!(Instant::now() < deadline, "no match record");
        std::thread::sleep(Duration::from_millis(50));
    };
    let record: shared_sim::plugin::MatchRecord = serde_json::from_value(record).unwrap();
    assert_eq!(record.players, [11, 12]);
    let data = game_data();
    let replayed = shared_sim::rules::replay(&data, &record.setup, &record.log);
    assert_eq!(replayed.result, Some(record.result));
    assert_eq!(replayed.result, Some(results[0]));
    assert_eq!(replayed.turn, record.turns);
}

/// With a database the instance records each result with its `game_ended` (and the match's
/// `game_started`) in the outbox, and its ended-matches feed reports a match only once the
/// result is there, so matchmaking never frees players of a match whose result could be lost.
#[test]
fn results_and_game_events_are_in_the_database_before_the_feed_reports_the_end() {
    let rt = common::runtime();
    let (dir, url, store) = common::database(&rt, "results");
    let inst = Instance::start(&["--database", url.as_str()]);
    let mm = inst.matchmaker(7);
    let mut players = players_for(&inst, &mm, [41, 42], FAST);
    run_until_done(
        &mut players,
        &mm,
        Duration::from_secs(120),
        Duration::from_millis(2),
    );
    assert_eq!(Summary::of(&players).finished, 2);
    let client = contracts::instance::InstanceClient::new(
        reqwest::Client::new(),
        inst.control_token.as_str(),
    );
    let control = inst.control_url();
    let deadline = Instant::now() + Duration::from_secs(10);
    let ended = loop {
        let report = rt.block_on(client.matches(&control, 0)).unwrap();
        if let Some(e) = report.ended.into_iter().find(|e| e.match_id == 7) {
            break e;
        }
        assert!(Instant::now() < deadline, "the feed never reported the end");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Reported, so already durable: no waiting here.
    let reason = rt.block_on(store.match_reason(7)).unwrap();
    assert_eq!(reason.as_deref(), Some(ended.reason.as_str()));
    let events = rt.block_on(store.unsent_events(10)).unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| &e.event.event_type[..])
            .collect::<Vec<_>>(),
        ["game_started", "game_ended"]
    );
    assert!(events.iter().all(|e| e.event.key == "7"), "{events:?}");
    drop(inst);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn abuse_is_refused_and_the_honest_match_still_finishes() {
    let inst = Instance::start(&["--bad-message-budget", "3"]);
    let mm = inst.matchmaker(100);
    let mut honest = players_for(&inst, &mm, [21, 22], FAST);
    // A second match whose players misbehave.
    let (abuse_match, abuse_tokens) = mm
        .create_match([31, 32], ["starter_ember", "starter_grove"])
        .unwrap();
    let [t31, t32] = abuse_tokens;
    let t31_copy = t31.clone();

    // 1. Garbage UDP datagrams at the game port.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x: u32 = 12345;
    for i in 0..2000usize {
        let len = i % 1400;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let _ = junk.send_to(&bytes, inst.ready.udp[0]);
    }

    // 2. Tokens that must not get in.
    let issuer = inst.issuer();
    let addr = inst.ready.udp[0];
    let other_match = issuer.mint_instance(addr, 33, 999_999).unwrap();
    let not_a_player = issuer.mint_instance(addr, 34, abuse_match).unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let expired = issuer
        .mint_at(
            now - Duration::from_secs(3600),
            &[addr],
            TokenUserData {
                kind: TokenKind::Instance,
                user_id: 35,
                match_id: abuse_match,
                session_id: [0; 16],
            },
        )
        .unwrap();
    let foreign_key = token::ConnectTokenIssuer::new(token::NetcodeKey::generate().unwrap())
        .mint_instance(addr, 31, abuse_match)
        .unwrap();
    let wrong_kind = issuer
        .mint(
            &[addr],
            TokenUserData {
                kind: TokenKind::Connection,
                user_id: 36,
                match_id: abuse_match,
                session_id: [0; 16],
            },
        )
        .unwrap();

    let mut c_other = Connection::connect(other_match).unwrap();
    let mut c_not_player = Connection::connect(not_a_player).unwrap();
    let mut c_kind = Connection::connect(wrong_kind).unwrap();
    let mut c_expired = Connection::connect(expired).unwrap();
    let mut c_foreign = Connection::connect(foreign_key).unwrap();

    let refused = |m: &ServerMessage, code: ErrorCode| matches!(m, ServerMessage::Error { code: c, .. } if *c == code);
    assert!(
        wait_for(&mut c_other, Duration::from_secs(5), |m| refused(
            m,
            ErrorCode::UnknownMatch
        ))
        .is_some()
    );
    assert!(dropped_within(&mut c_other, Duration::from_secs(5)));
    assert!(
        wait_for(&mut c_not_player, Duration::from_secs(5), |m| refused(
            m,
            ErrorCode::UnknownMatch
        ))
        .is_some()
    );
    assert!(
        wait_for(&mut c_kind, Duration::from_secs(5), |m| refused(
            m,
            ErrorCode::BadToken
        ))
        .is_some()
    );
    // Expired and forged tokens never complete the handshake.
    assert!(wait_for(&mut c_expired, Duration::from_secs(2), |_| true).is_none());
    assert!(!c_expired.is_connected());
    assert!(wait_for(&mut c_foreign, Duration::from_secs(2), |_| true).is_none());
    assert!(!c_foreign.is_connected());

    // 3. A legitimate player of the abuse match connects; a replay of the same token does not.
    let mut p31 = Connection::connect(t31).unwrap();
    let welcome = wait_for(&mut p31, Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::Welcome { .. })
    })
    .expect("welcome");
    assert!(matches!(
        welcome,
        ServerMessage::Welcome {
            user_id: 31,
            seat: Seat::First,
            ..
        }
    ));
    let mut replay = Connection::connect(t31_copy).unwrap();
    assert!(
        wait_for(&mut replay, Duration::from_secs(2), |_| true).is_none(),
        "replayed token got in"
    );
    assert!(!replay.is_connected());

    // 4. Seat 2 acts out of turn; seat 1 plays a card it does not hold.
    let mut p32 = Connection::connect(t32).unwrap();
    wait_for(&mut p32, Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::Snapshot(_))
    })
    .expect("snapshot");
    p32.send(&ClientMessage::MatchAction {
        seq: 7,
        action: Action::EndTurn,
    });
    let r = wait_for(&mut p32, Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::ActionRejected { .. })
    })
    .unwrap();
    assert_eq!(
        r,
        ServerMessage::ActionRejected {
            seq: 7,
            reason: shared_sim::rules::ActionError::NotYourTurn
        }
    );
    // Flooding (well-formed messages past the per-second limit) is refused, then kicked.
    for _ in 0..45 {
        p32.send(&ClientMessage::RequestSnapshot);
    }
    assert!(
        wait_for(&mut p32, Duration::from_secs(5), |m| refused(
            m,
            ErrorCode::RateLimited
        ))
        .is_some(),
        "no rate-limit error"
    );
    assert!(
        wait_for(&mut p32, Duration::from_secs(5), |m| refused(
            m,
            ErrorCode::TooManyErrors
        ))
        .is_some()
    );
    p31.send(&ClientMessage::MatchAction {
        seq: 8,
        action: Action::PlayCard {
            card: "elder_oak".into(),
            target: None,
        },
    });
    let r = wait_for(&mut p31, Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::ActionRejected { .. })
    })
    .unwrap();
    assert!(
        matches!(
            r,
            ServerMessage::ActionRejected {
                seq: 8,
                reason: shared_sim::rules::ActionError::CardNotInHand
                    | shared_sim::rules::ActionError::NotEnoughMana { .. }
            }
        ),
        "{r:?}"
    );

    // 5. Malformed payloads over the authenticated connection: typed errors, then disconnect.
    p31.send_raw(vec![0xff, 0xff, 0xff]);
    let e = wait_for(&mut p31, Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::Error { .. })
    })
    .unwrap();
    assert!(refused(&e, ErrorCode::Malformed), "{e:?}");
    p31.send_raw(vec![0u8; 5000]);
    let e = wait_for(&mut p31, Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::Error { .. })
    })
    .unwrap();
    assert!(refused(&e, ErrorCode::TooLarge), "{e:?}");
    for _ in 0..3 {
        p31.send_raw(vec![9, 9, 9]);
    }
    assert!(
        wait_for(&mut p31, Duration::from_secs(5), |m| refused(
            m,
            ErrorCode::TooManyErrors
        ))
        .is_some()
    );
    assert!(dropped_within(&mut p31, Duration::from_secs(5)));

    // The honest match is unaffected.
    run_until_done(
        &mut honest,
        &mm,
        Duration::from_secs(120),
        Duration::from_millis(2),
    );
    let summary = Summary::of(&honest);
    assert_eq!(summary.finished, 2, "{summary} {:?}", summary.failures);
    assert_eq!(summary.rejected, 0);

    // And the server still answers.
    let cap = inst
        .http()
        .get(format!("{}/v1/capacity", inst.control_url()))
        .bearer_auth(&inst.control_token)
        .send()
        .unwrap();
    assert!(cap.status().is_success());
    let metrics = inst
        .http()
        .get(format!("{}/metrics", inst.control_url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("croft_instance_bad_messages_total"),
        "{metrics}"
    );
    assert!(metrics.contains("croft_instance_connections_refused_total"));
    assert!(metrics.contains("croft_instance_tick_seconds"));
    assert!(metrics.contains("croft_instance_free_match_slots"));
    assert!(metrics.contains("process_cpu_seconds_total"));
}

#[test]
fn a_dropped_player_reconnects_with_a_fresh_token_and_the_match_finishes() {
    let inst = Instance::start(&[]);
    let mm = inst.matchmaker(200);
    let mut players = players_for(
        &inst,
        &mm,
        [41, 42],
        Pacing {
            think: Duration::from_millis(30),
            jitter: 0.2,
        },
    );
    let start = Instant::now();
    let mut dropped = false;
    while start.elapsed() < Duration::from_secs(120) && !players.iter().all(|p| p.is_done()) {
        for p in players.iter_mut() {
            p.poll(&mm);
        }
        if !dropped && start.elapsed() > Duration::from_millis(400) {
            players[0].drop_connection();
            dropped = true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let summary = Summary::of(&players);
    assert_eq!(summary.finished, 2, "{summary} {:?}", summary.failures);
    assert!(players[0].stats.reconnects >= 1);
}

#[test]
fn a_player_who_does_not_return_forfeits_after_the_grace_period() {
    let inst = Instance::start(&["--grace-seconds", "1"]);
    let mm = inst.matchmaker(300);
    let slow = Pacing {
        think: Duration::from_secs(3600),
        jitter: 0.0,
    };
    let mut players = players_for(&inst, &mm, [51, 52], slow);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) && players.iter().any(|p| p.seat.is_none()) {
        for p in players.iter_mut() {
            p.poll(&mm);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    players[0].drop_connection();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) && !players[1].is_done() {
        players[1].poll(&mm);
        std::thread::sleep(Duration::from_millis(5));
    }
    match &players[1].state {
        PlayerState::Finished(r) => {
            assert_eq!(r.reason, EndReason::Forfeit);
            assert_eq!(r.winner, players[1].seat);
        }
        other => panic!("expected a forfeit win, got {other:?}"),
    }
}

#[test]
fn sigterm_drains_then_aborts_and_records_and_the_control_api_guards_itself() {
    let mut inst = Instance::start(&["--drain-seconds", "1"]);
    let http = inst.http();
    let url = format!("{}/v1/matches", inst.control_url());
    // Without the credential: 401, with a JSON error body.
    let r = http.post(&url).json(&serde_json::json!({"match_id": 1, "players": [1, 2], "starter_decks": ["starter_ember", "starter_grove"]})).send().unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["error"]["code"],
        "unauthorized"
    );
    let r = http
        .post(&url)
        .bearer_auth("x".repeat(40))
        .json(&serde_json::json!({}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    // Bad decks: 422; malformed JSON: 400; duplicate: 409.
    let r = http.post(&url).bearer_auth(&inst.control_token).json(&serde_json::json!({"match_id": 5, "players": [1, 2], "decks": [["ember_fox"], ["ember_fox"]]})).send().unwrap();
    assert_eq!(r.status(), 422);
    let r = http
        .post(&url)
        .bearer_auth(&inst.control_token)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let mm = inst.matchmaker(400);
    let slow = Pacing {
        think: Duration::from_secs(3600),
        jitter: 0.0,
    };
    let mut players = players_for(&inst, &mm, [61, 62], slow);
    let r = http.post(&url).bearer_auth(&inst.control_token).json(&serde_json::json!({"match_id": 400, "players": [1, 2], "starter_decks": ["starter_ember", "starter_grove"]})).send().unwrap();
    assert_eq!(r.status(), 409);
    // A player already seated here cannot be put in a second match.
    let r = http
        .post(&url)
        .bearer_auth(&inst.control_token)
        .json(&serde_json::json!({"match_id": 402, "players": [61, 99], "starter_decks": ["starter_ember", "starter_grove"]}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["error"]["code"],
        "player_busy"
    );

    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) && players.iter().any(|p| p.seat.is_none()) {
        for p in players.iter_mut() {
            p.poll(&mm);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    inst.signal("TERM");
    // New matches are refused while draining.
    std::thread::sleep(Duration::from_millis(200));
    let r = http.post(&url).bearer_auth(&inst.control_token).json(&serde_json::json!({"match_id": 401, "players": [1, 2], "starter_decks": ["starter_ember", "starter_grove"]})).send().unwrap();
    assert_eq!(r.status(), 503);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) && !players.iter().all(|p| p.is_done()) {
        for p in players.iter_mut() {
            p.poll(&mm);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for p in &players {
        match &p.state {
            PlayerState::Finished(r) => assert_eq!(r.reason, EndReason::Aborted),
            other => panic!("expected an aborted match, got {other:?}"),
        }
    }
    let status = inst
        .wait_exit(Duration::from_secs(10))
        .expect("server exits after draining");
    assert!(status.success(), "{status}");
    let log = inst.match_log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["result"]["reason"], "Aborted");
}

#[test]
fn game_started_and_game_ended_reach_kafka_without_touching_the_tick() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let inst = Instance::start(&["--kafka", &brokers, "--topic-prefix", "it."]);
    let mm = inst.matchmaker(1);
    let mut players = players_for(&inst, &mm, [21, 22], FAST);
    run_until_done(
        &mut players,
        &mm,
        Duration::from_secs(120),
        Duration::from_millis(2),
    );
    assert_eq!(Summary::of(&players).finished, 2);
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "instance-test")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer
        .subscribe(&["it.game_started", "it.game_ended"])
        .unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 2 && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            assert_eq!(v["producer"], "instance");
            assert_eq!(v["key"], "1", "keyed by match id");
            assert_eq!(v["payload"]["players"], serde_json::json!([21, 22]));
            seen.push(v["event_type"].as_str().unwrap().to_string());
        }
    }
    seen.sort();
    assert_eq!(seen, vec!["game_ended", "game_started"]);
}
