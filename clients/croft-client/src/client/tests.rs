//! The facade's pure parts: lobby and match messages to events, events to signals, targets,
//! outcomes and the suggested moves. No server: connections are made with locally minted
//! tokens to an address nobody answers on, and messages are fed in directly.

use super::*;
use crate::HubEvent;
use shared_sim::farm::{FarmAction, FarmError, Plot};
use shared_sim::protocol::{DeckEntry, QueueEnd, ServerMessage};
use shared_sim::rules::{
    Action, ActionError, Input, MatchEvent, MatchResult, MatchSetup, MatchState, Seat, Target,
};
use shared_sim::view::MatchSnapshot;

fn token_bytes(user: u64, match_id: u64) -> Vec<u8> {
    let issuer = token::ConnectTokenIssuer::new(token::NetcodeKey::generate().unwrap());
    let t = issuer
        .mint_instance("127.0.0.1:9".parse().unwrap(), user, match_id)
        .unwrap();
    let mut out = Vec::new();
    t.write(&mut out).unwrap();
    out
}

fn found(match_id: u64) -> LobbyServerMessage {
    LobbyServerMessage::MatchFound {
        match_id,
        server_addr: "127.0.0.1:9".parse().unwrap(),
        connect_token: token_bytes(7, match_id),
        ws_url: None,
    }
}

fn snapshot(seat: Seat, seed: u64) -> MatchSnapshot {
    let data = embedded_game_data().unwrap();
    let decks = [0, 1].map(|i| data.resolve_deck(&data.starter_decks[i].cards).unwrap());
    let state = MatchState::new(
        &data,
        &MatchSetup {
            seed,
            decks,
            ticks_per_turn: 600,
            start_tick: 0,
        },
    );
    MatchSnapshot::from_state(&data, &state, 5, seat, 0, 20)
}

/// Feeds one instance message through the facade's match path.
fn feed(c: &mut Client, msg: ServerMessage) {
    let mut out = Vec::new();
    let g = c.game.as_mut().unwrap();
    g.handle(msg, &mut out);
    let (id, seat) = (g.match_id, g.seat);
    for u in out {
        c.match_update(id, seat, u);
    }
}

fn names(events: &[ClientEvent]) -> Vec<&'static str> {
    events
        .iter()
        .flat_map(|e| e.signals().into_iter().map(|(n, _)| n))
        .collect()
}

#[test]
fn targets_parse_relative_to_the_player() {
    assert_eq!(parse_target("", Seat::First), Ok(None));
    assert_eq!(parse_target("none", Seat::Second), Ok(None));
    assert_eq!(
        parse_target("me", Seat::Second),
        Ok(Some(Target::Hero(Seat::Second)))
    );
    assert_eq!(
        parse_target(" enemy ", Seat::Second),
        Ok(Some(Target::Hero(Seat::First)))
    );
    assert_eq!(
        parse_target("17", Seat::First),
        Ok(Some(Target::Creature(17)))
    );
    for bad in ["-1", "hero", "1.5", "99999999999"] {
        assert!(parse_target(bad, Seat::First).is_err(), "{bad}");
    }
    for seat in Seat::BOTH {
        for t in [
            None,
            Some(Target::Hero(Seat::First)),
            Some(Target::Hero(Seat::Second)),
            Some(Target::Creature(3)),
        ] {
            assert_eq!(parse_target(&target_text(t, seat), seat), Ok(t));
        }
    }
}

#[test]
fn outcomes_follow_the_winner_and_our_seat() {
    let r = |winner| MatchResult {
        winner,
        reason: EndReason::HeroDied,
    };
    let first = Some(Seat::First);
    assert_eq!(MatchOutcome::of(&r(first), first), MatchOutcome::Won);
    assert_eq!(
        MatchOutcome::of(&r(first), Some(Seat::Second)),
        MatchOutcome::Lost
    );
    assert_eq!(MatchOutcome::of(&r(None), first), MatchOutcome::Draw);
    assert_eq!(MatchOutcome::of(&r(first), None), MatchOutcome::Unknown);
}

#[test]
fn calls_without_a_session_are_refused_with_an_event() {
    let mut c = Client::new();
    c.find_match();
    c.chat(Some(3), "hi");
    assert_eq!(c.end_turn(), None);
    assert_eq!(c.play_card("x", "bogus"), None);
    assert_eq!(c.farm_action(FarmAction::Water { plot: 0 }), None);
    c.reconnect();
    let events = c.poll();
    assert_eq!(events.len(), 6, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| matches!(e, ClientEvent::Error { code: None, .. }))
    );
    assert!(c.suggest_action().is_none());
    assert!(!c.is_logged_in());
}

#[test]
fn messages_over_the_size_limit_are_refused_here_not_sent() {
    let mut c = Client::new();
    c.chat(
        None,
        &"x".repeat(shared_sim::protocol::MAX_CLIENT_MESSAGE_BYTES + 1),
    );
    c.chat(None, "short");
    let events = c.poll();
    let messages: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Error { message, .. } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(messages.len(), 2, "{events:?}");
    assert!(messages[0].contains("byte limit"), "{}", messages[0]);
    assert!(messages[1].contains("not connected"), "{}", messages[1]);
}

#[test]
fn lobby_messages_become_events_and_friend_signals() {
    let mut c = Client::new();
    c.handle_lobby(LobbyServerMessage::Welcome {
        user_id: 7,
        username: "ann".into(),
    });
    c.handle_lobby(LobbyServerMessage::Friends(vec![FriendEntry {
        user_id: 8,
        username: "bob".into(),
        state: FriendState::Accepted,
        presence: Presence::Offline,
    }]));
    c.handle_lobby(LobbyServerMessage::FriendPresence {
        user_id: 8,
        presence: Presence::Online,
    });
    c.handle_lobby(LobbyServerMessage::FriendPresence {
        user_id: 8,
        presence: Presence::InQueue,
    });
    c.handle_lobby(LobbyServerMessage::FriendPresence {
        user_id: 8,
        presence: Presence::Offline,
    });
    c.handle_lobby(LobbyServerMessage::Chat {
        from: 8,
        from_name: "bob".into(),
        to: ChatTarget::User(7),
        text: "hello".into(),
    });
    c.handle_lobby(LobbyServerMessage::Queued);
    c.handle_lobby(LobbyServerMessage::Error {
        code: ErrorCode::NotAllowed,
        message: "no".into(),
    });
    let events = c.poll();
    assert_eq!(
        events[0],
        ClientEvent::LoggedIn {
            user_id: 7,
            username: "ann".into()
        }
    );
    assert_eq!(c.username(), Some("ann"));
    assert_eq!(
        names(&events),
        [
            "logged_in",
            "friends",
            "friend_presence",
            "friend_online",
            "friend_presence",
            "friend_presence",
            "friend_offline",
            "chat_received",
            "queued",
            "error"
        ]
    );
    let signals: Vec<_> = events.iter().flat_map(|e| e.signals()).collect();
    assert_eq!(
        signals[2].1,
        vec![Value::Int(8), "bob".into(), "Online".into()]
    );
    assert_eq!(
        signals[7].1,
        vec![Value::Int(8), "bob".into(), "direct".into(), "hello".into()]
    );
    assert_eq!(signals[9].1, vec!["NotAllowed".into(), "no".into()]);
    let friends = &signals[1].1[0];
    let Value::List(list) = friends else {
        panic!("{friends:?}")
    };
    assert_eq!(list[0].get("state"), Some(&"Accepted".into()));
    assert_eq!(online_friends(c.friends()).count(), 0);
}

#[test]
fn a_match_is_followed_from_found_to_closed() {
    let mut c = Client::new();
    c.handle_lobby(found(5));
    assert_eq!(c.match_id(), Some(5));
    feed(
        &mut c,
        ServerMessage::Welcome {
            user_id: 7,
            match_id: 5,
            seat: Seat::Second,
        },
    );
    let mut view = snapshot(Seat::Second, 3);
    feed(&mut c, ServerMessage::Snapshot(Box::new(view.clone())));
    // Not our turn (the first seat starts): nothing to suggest.
    assert!(c.suggest_action().is_none());
    let turn = [
        MatchEvent::TurnEnded {
            seat: Seat::First,
            timed_out: false,
        },
        MatchEvent::TurnStarted {
            seat: Seat::Second,
            turn: 2,
            max_mana: 1,
            seconds: 30,
        },
    ];
    feed(&mut c, ServerMessage::Events(turn.to_vec()));
    for e in &turn {
        view.apply(e);
    }
    assert_eq!(c.match_view(), Some(&view));
    // Our turn, but this connection never comes up (nobody answers on port 9).
    assert!(!c.can_act());
    let suggested = c.suggest_action().unwrap();
    assert_eq!(
        suggested,
        policy::choose_action(c.game_data().unwrap(), &view)
    );
    feed(
        &mut c,
        ServerMessage::ActionRejected {
            seq: 1,
            reason: ActionError::NotYourTurn,
        },
    );
    assert_eq!(c.suggest_action(), Some(Action::EndTurn), "after a refusal");
    let result = MatchResult {
        winner: Some(Seat::Second),
        reason: EndReason::HeroDied,
    };
    feed(
        &mut c,
        ServerMessage::Events(vec![MatchEvent::MatchEnded { result }]),
    );
    // The lobby's close does not report the end a second time.
    c.handle_lobby(LobbyServerMessage::MatchEnded {
        match_id: 5,
        aborted: false,
    });
    let events = c.poll();
    assert_eq!(
        names(&events),
        [
            "match_found",
            "match_joined",
            "match_state",
            "match_events",
            "match_state",
            "action_result",
            "match_events",
            "match_state",
            "match_ended",
            "match_closed"
        ]
    );
    assert!(events.contains(&ClientEvent::MatchEnded {
        match_id: 5,
        outcome: MatchOutcome::Won,
        reason: Some(EndReason::HeroDied)
    }));
    assert!(c.match_id().is_none(), "the connection is closed");
    let signals: Vec<_> = events.iter().flat_map(|e| e.signals()).collect();
    assert_eq!(signals[1].1, vec![Value::Int(5), Value::Int(1)]);
    let state = &signals[4].1[0];
    assert_eq!(state.get("my_turn"), Some(&Value::Bool(true)));
    assert_eq!(state.get("you"), Some(&Value::Int(1)));
    assert_eq!(
        signals[5].1,
        vec![
            Value::Int(1),
            "NotYourTurn".into(),
            "it is not your turn".into()
        ]
    );
    assert_eq!(
        signals[8].1,
        vec![Value::Int(5), "won".into(), "HeroDied".into()]
    );
    let Value::List(evs) = &signals[3].1[0] else {
        panic!()
    };
    assert_eq!(evs[1].get("type"), Some(&"TurnStarted".into()));
}

#[test]
fn a_closed_match_without_its_end_is_reported_once() {
    let mut c = Client::new();
    c.handle_lobby(found(9));
    c.handle_lobby(LobbyServerMessage::MatchEnded {
        match_id: 9,
        aborted: true,
    });
    c.handle_lobby(LobbyServerMessage::MatchEnded {
        match_id: 9,
        aborted: true,
    });
    let events = c.poll();
    assert_eq!(
        events[1],
        ClientEvent::MatchEnded {
            match_id: 9,
            outcome: MatchOutcome::Unknown,
            reason: Some(EndReason::Aborted)
        }
    );
    assert_eq!(
        names(&events),
        ["match_found", "match_ended", "match_closed", "match_closed"]
    );
}

#[test]
fn a_rejoin_token_reconnects_without_a_new_match_event() {
    let mut c = Client::new();
    c.handle_lobby(found(4));
    c.ask_rejoin(4, 0);
    c.handle_lobby(found(4));
    assert!(c.rejoin.is_none());
    assert_eq!(c.match_id(), Some(4));
    assert_eq!(names(&c.poll()), ["match_found"]);
    // A drop with no lobby to ask for a token: reported, not retried.
    c.drop_match_connection();
    assert!(c.match_id().is_none());
    let events = c.poll();
    assert!(matches!(
        events[..],
        [ClientEvent::MatchConnectionLost {
            match_id: 4,
            retrying: false,
            ..
        }]
    ));
    // A bad token is a lost connection (with no lobby to ask again).
    c.handle_lobby(LobbyServerMessage::MatchFound {
        match_id: 6,
        server_addr: "127.0.0.1:9".parse().unwrap(),
        connect_token: vec![1, 2, 3],
        ws_url: None,
    });
    let events = c.poll();
    assert_eq!(names(&events), ["match_found", "match_connection_lost"]);
    assert!(matches!(
        events[1],
        ClientEvent::MatchConnectionLost {
            match_id: 6,
            retrying: false,
            ..
        }
    ));
}

#[test]
fn every_signal_is_declared_with_its_arguments() {
    let s = snapshot(Seat::First, 1);
    let samples = vec![
        ClientEvent::LoginFailed("x".into()),
        ClientEvent::LoggedOut,
        ClientEvent::Disconnected("x".into()),
        ClientEvent::FriendRequest {
            user_id: 1,
            username: "a".into(),
        },
        ClientEvent::FriendUpdate {
            user_id: 1,
            accepted: true,
        },
        ClientEvent::Notification("n".into()),
        ClientEvent::QueueLeft {
            reason: QueueEnd::TimedOut,
        },
        ClientEvent::MatchState(Box::new(s.clone())),
        ClientEvent::MatchEvents {
            you: Seat::First,
            events: vec![
                MatchEvent::CardDrawn {
                    seat: Seat::Second,
                    card: None,
                },
                MatchEvent::Attacked {
                    attacker: 3,
                    target: Target::Hero(Seat::Second),
                },
            ],
        },
        ClientEvent::ActionResult {
            seq: 2,
            error: None,
        },
        ClientEvent::OpponentLeft { grace_seconds: 30 },
        ClientEvent::OpponentReturned,
        ClientEvent::MatchConnectionLost {
            match_id: 1,
            reason: "r".into(),
            retrying: true,
        },
        ClientEvent::Inventory {
            items: vec![("wheat".into(), 3)],
            cards: vec![],
        },
        ClientEvent::Crafted {
            recipe: "r".into(),
            output: "o".into(),
            quantity: 1,
        },
        ClientEvent::Decks {
            decks: vec![DeckEntry {
                slot: 0,
                name: "d".into(),
                cards: vec!["c".into()],
            }],
            active: None,
        },
        ClientEvent::FarmReady,
        ClientEvent::FarmState {
            tick: 3,
            plots: vec![
                Plot::Empty,
                Plot::Withered {
                    crop: "wheat".into(),
                },
            ],
            items: vec![],
        },
        ClientEvent::FarmResult {
            seq: 1,
            error: Some(FarmError::NotRipe),
        },
        ClientEvent::FarmLeft("x".into()),
        ClientEvent::HubReady,
        ClientEvent::Hub(HubEvent::Moved(vec![(1, 2, 3)])),
        ClientEvent::HubLeft("x".into()),
        ClientEvent::Error {
            code: None,
            message: "m".into(),
        },
    ];
    for e in &samples {
        for (name, args) in e.signals() {
            let declared = SIGNALS
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("{name} is not declared"));
            assert_eq!(declared.1.len(), args.len(), "{name}");
        }
    }
    let events = &samples[8].signals()[0].1[0];
    let Value::List(list) = events else { panic!() };
    assert_eq!(list[0].get("card"), Some(&Value::Nil));
    assert_eq!(list[1].get("target"), Some(&"enemy".into()));
    assert_eq!(
        samples[21].signals()[0].1[0].get("type"),
        Some(&"Moved".into())
    );
    assert_eq!(
        samples[23].signals()[0].1[0],
        Value::Str("ClientError".into())
    );
}

/// The suggested moves are legal all the way to the end of a match (the policy's own test
/// runs in headless-bot's suite too, through the re-export).
#[test]
fn suggested_actions_finish_a_match() {
    let data = embedded_game_data().unwrap();
    let decks = [0, 1].map(|i| data.resolve_deck(&data.starter_decks[i].cards).unwrap());
    let mut state = MatchState::new(
        &data,
        &MatchSetup {
            seed: 11,
            decks,
            ticks_per_turn: 600,
            start_tick: 0,
        },
    );
    let mut moves = 0;
    while state.result.is_none() {
        let seat = state.active;
        let view = MatchSnapshot::from_state(&data, &state, 1, seat, 0, 20);
        let action = policy::choose_action(&data, &view);
        let v = value::action_value(&action, seat);
        assert!(v.get("type").is_some());
        let mut ev = Vec::new();
        state
            .apply(&data, moves, &Input::Act(seat, action), &mut ev)
            .unwrap();
        moves += 1;
        assert!(moves < 5000);
    }
}

/// The auth API is reachable over HTTPS: an https URL fails to connect (nobody listens), it is
/// not refused as an unsupported scheme.
#[test]
fn https_urls_are_supported() {
    let api = crate::api::AuthApi::new("https://127.0.0.1:9").unwrap();
    let err = api.login("ann", "secret").unwrap_err();
    let text = format!("{err:#}");
    assert!(!text.contains("scheme"), "{text}");
    let cause = err
        .chain()
        .find_map(|e| e.downcast_ref::<reqwest::Error>())
        .unwrap_or_else(|| panic!("not a reqwest error: {text}"));
    assert!(cause.is_connect(), "{text}");
}

#[test]
fn rejoins_stop_when_refused_or_out_of_attempts() {
    let mut c = Client::new();
    // The lobby has no match to rejoin: the client stops asking and says so.
    c.ask_rejoin(3, 1);
    c.handle_lobby(LobbyServerMessage::Error {
        code: ErrorCode::NotAllowed,
        message: "not in a match".into(),
    });
    assert!(c.rejoin.is_none());
    assert!(matches!(
        c.poll()[..],
        [
            ClientEvent::MatchConnectionLost {
                match_id: 3,
                retrying: false,
                ..
            },
            ClientEvent::Error { .. }
        ]
    ));
    // A rejoin token that cannot even be read uses up an attempt; past the budget, no retry.
    c.ask_rejoin(3, REJOIN_ATTEMPTS - 1);
    c.handle_lobby(LobbyServerMessage::MatchFound {
        match_id: 3,
        server_addr: "127.0.0.1:9".parse().unwrap(),
        connect_token: vec![0; 4],
        ws_url: None,
    });
    assert_eq!(names(&c.poll()), ["match_connection_lost"]);
    assert!(c.rejoin.is_none());
}
