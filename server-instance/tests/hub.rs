//! The common area over real UDP: places kept through the control API, players seeing each
//! other arrive, move and leave, moves checked for speed and bounds, local chat, and a full
//! shard opening the next one.

mod common;

use std::time::Duration;

use common::{Instance, wait_for};
use headless_bot::Connection;
use shared_sim::hub::{self, MoveError};
use shared_sim::protocol::{ClientMessage, ErrorCode, ServerMessage};

fn keep(inst: &Instance, user: u64, name: &str) -> (u32, std::net::SocketAddr) {
    let r = inst
        .http()
        .post(format!("{}/v1/hub", inst.control_url()))
        .bearer_auth(&inst.control_token)
        .json(&serde_json::json!({ "user_id": user, "name": name }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    (
        v["hub_id"].as_u64().unwrap() as u32,
        v["server_addr"].as_str().unwrap().parse().unwrap(),
    )
}

fn join(inst: &Instance, user: u64, name: &str) -> (u32, Connection, Vec<hub::HubPlayer>) {
    let (hub_id, addr) = keep(inst, user, name);
    let token = inst.issuer().mint_hub(addr, user, hub_id).unwrap();
    let mut conn = Connection::connect(token).unwrap();
    match wait_for(&mut conn, Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::HubWelcome { .. })
    }) {
        Some(ServerMessage::HubWelcome {
            hub_id: h,
            you,
            players,
        }) => {
            assert_eq!(h, hub_id);
            assert_eq!(you.user_id, user);
            assert_eq!((you.x, you.y), hub::SPAWN);
            (hub_id, conn, players)
        }
        other => panic!("no welcome: {other:?}"),
    }
}

fn send(conn: &mut Connection, m: ClientMessage) {
    conn.send(&m);
    let _ = conn.flush();
}

#[test]
fn players_meet_walk_chat_and_leave_in_the_common_area() {
    let inst = Instance::start(&["--hub-capacity", "2"]);
    let (hub_a, mut ann, seen) = join(&inst, 1, "ann");
    assert!(seen.is_empty());
    let (hub_b, mut bob, seen) = join(&inst, 2, "bob");
    assert_eq!(hub_a, hub_b);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].name, "ann");
    let joined = wait_for(&mut ann, Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::HubJoined(_))
    });
    assert!(
        matches!(&joined, Some(ServerMessage::HubJoined(p)) if p.user_id == 2 && p.name == "bob"),
        "{joined:?}"
    );

    // A full shard: the third player is put in the next one and does not see the others.
    let (hub_c, mut cid, seen) = join(&inst, 3, "cid");
    assert_ne!(hub_c, hub_a);
    assert!(seen.is_empty());

    // A walking step is seen by the others; a leap and a step outside are refused.
    std::thread::sleep(Duration::from_millis(150));
    let (x, y) = hub::SPAWN;
    send(&mut ann, ClientMessage::HubMove { x: x + 200, y });
    let moved = wait_for(&mut bob, Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::HubMoves(_))
    });
    assert_eq!(moved, Some(ServerMessage::HubMoves(vec![(1, x + 200, y)])));
    send(&mut ann, ClientMessage::HubMove { x: x + 9_000, y });
    assert_eq!(
        wait_for(&mut ann, Duration::from_secs(5), |m| matches!(
            m,
            ServerMessage::HubMoveRejected { .. }
        )),
        Some(ServerMessage::HubMoveRejected {
            error: MoveError::TooFast,
            x: x + 200,
            y
        })
    );
    send(&mut bob, ClientMessage::HubMove { x, y: -5 });
    assert!(matches!(
        wait_for(&mut bob, Duration::from_secs(5), |m| matches!(
            m,
            ServerMessage::HubMoveRejected { .. }
        )),
        Some(ServerMessage::HubMoveRejected {
            error: MoveError::OutOfBounds,
            ..
        })
    ));

    // Chat reaches the players nearby in the same shard only; bad chat is refused.
    send(
        &mut bob,
        ClientMessage::HubChat {
            text: "hi ann".into(),
        },
    );
    let heard = wait_for(&mut ann, Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::HubChat { .. })
    });
    assert_eq!(
        heard,
        Some(ServerMessage::HubChat {
            from: 2,
            name: "bob".into(),
            text: "hi ann".into()
        })
    );
    assert!(
        wait_for(&mut cid, Duration::from_millis(500), |m| matches!(
            m,
            ServerMessage::HubChat { .. }
        ))
        .is_none(),
        "another shard hears nothing"
    );
    send(&mut bob, ClientMessage::HubChat { text: "".into() });
    assert!(matches!(
        wait_for(&mut bob, Duration::from_secs(5), |m| matches!(
            m,
            ServerMessage::Error { .. }
        )),
        Some(ServerMessage::Error {
            code: ErrorCode::BadChat,
            ..
        })
    ));
    // Match messages do not belong on a hub connection.
    send(&mut bob, ClientMessage::RequestSnapshot);
    assert!(matches!(
        wait_for(&mut bob, Duration::from_secs(5), |m| matches!(
            m,
            ServerMessage::Error { .. }
        )),
        Some(ServerMessage::Error {
            code: ErrorCode::NotAllowed,
            ..
        })
    ));

    // Bob leaves: Ann sees it, and his place frees up for a newcomer in the first shard.
    bob.disconnect();
    let left = wait_for(&mut ann, Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::HubLeft { .. })
    });
    assert_eq!(left, Some(ServerMessage::HubLeft { user_id: 2 }));
    let (hub_d, _dee, seen) = join(&inst, 4, "dee");
    assert_eq!(hub_d, hub_a);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].user_id, 1);
    assert_eq!((seen[0].x, seen[0].y), (x + 200, y));

    // A hub token without a kept place is refused.
    let addr = inst.ready.udp[0];
    let token = inst.issuer().mint_hub(addr, 9, hub_a).unwrap();
    let mut gate_crasher = Connection::connect(token).unwrap();
    assert!(matches!(
        wait_for(&mut gate_crasher, Duration::from_secs(5), |m| matches!(
            m,
            ServerMessage::Error { .. }
        )),
        Some(ServerMessage::Error {
            code: ErrorCode::UnknownMatch,
            ..
        })
    ));
}
