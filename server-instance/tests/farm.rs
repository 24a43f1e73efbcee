//! Farms on the instance server over real UDP, against a real SQLite database: opened through
//! the control API, offline growth applied on load, actions validated and saved, forged ones
//! refused, and a kill -9 that loses neither the harvest nor the watering.

mod common;

use std::time::Duration;

use common::{Instance, database, runtime, wait_for};
use headless_bot::Connection;
use shared_sim::farm::{Farm, FarmAction, FarmError, Plot};
use shared_sim::protocol::{ClientMessage, ErrorCode, ServerMessage};
use store::Store;

type FarmView = (Vec<Plot>, Vec<(String, u32)>, u64);

thread_local! {
    /// Farm states that arrived while a test waited for an action's result (the server sends
    /// an applied action's state before its result), by connection.
    static SEEN: std::cell::RefCell<std::collections::HashMap<usize, FarmView>> =
        Default::default();
}

fn key(conn: &Connection) -> usize {
    conn as *const Connection as usize
}

/// The farm state: one seen while waiting for a result, else the next to arrive.
fn state(conn: &mut Connection) -> FarmView {
    if let Some(seen) = SEEN.with(|s| s.borrow_mut().remove(&key(conn))) {
        return seen;
    }
    match wait_for(conn, Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::FarmState { .. })
    }) {
        Some(ServerMessage::FarmState { plots, items, tick }) => (plots, items, tick),
        other => panic!("no farm state: {other:?}"),
    }
}

fn act(conn: &mut Connection, seq: u32, action: FarmAction) -> Option<FarmError> {
    conn.send(&ClientMessage::FarmAction { seq, action });
    let _ = conn.flush();
    let k = key(conn);
    match wait_for(conn, Duration::from_secs(5), |m| match m {
        ServerMessage::FarmState { plots, items, tick } => {
            let view = (plots.clone(), items.clone(), *tick);
            SEEN.with(|s| s.borrow_mut().insert(k, view));
            false
        }
        ServerMessage::FarmActionResult { seq: s, .. } => *s == seq,
        _ => false,
    }) {
        Some(ServerMessage::FarmActionResult { error, .. }) => error,
        other => panic!("no result for {seq}: {other:?}"),
    }
}

fn count(items: &[(String, u32)], id: &str) -> u32 {
    items.iter().find(|(i, _)| i == id).map_or(0, |(_, n)| *n)
}

fn open(inst: &Instance, user: i64) -> reqwest::blocking::Response {
    inst.http()
        .post(format!("{}/v1/farms", inst.control_url()))
        .bearer_auth(&inst.control_token)
        .json(&serde_json::json!({ "user_id": user }))
        .send()
        .unwrap()
}

fn connect(inst: &Instance, user: i64) -> Connection {
    let r = open(inst, user);
    assert!(r.status().is_success(), "{:?}", r.text());
    let body: serde_json::Value = r.json().unwrap();
    let addr = body["server_addr"].as_str().unwrap().parse().unwrap();
    let token = inst.issuer().mint_farm(addr, user as u64).unwrap();
    Connection::connect(token).unwrap()
}

/// Stores a farm for `user` (version 4) whose plot 3 holds ripe wheat: wheat's crop index.
fn ripe_wheat_on_plot_3(rt: &tokio::runtime::Runtime, store: &Store, user: i64) -> usize {
    let data = common::game_data();
    let wheat = data.crops.iter().position(|c| c.id == "wheat").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut farm = Farm::new(data.rules.farm_plots, now);
    farm.plots[3] = Plot::Ripe {
        crop: data.crops[wheat].id.clone(),
        neglect: 0,
    };
    rt.block_on(store.save_farm(user, &serde_json::to_string(&farm).unwrap(), 4))
        .unwrap();
    wheat
}

#[test]
fn a_farm_is_played_saved_and_survives_a_kill() {
    let rt = runtime();
    let (dir, url, store) = database(&rt, "kill");
    let user = rt.block_on(store.create_user("farmer", "$h")).unwrap().id;
    rt.block_on(store.grant_once(user, "kit", &[("wheat_seed".into(), 2)], &[]))
        .unwrap();
    // A farm saved long ago: a ripe wheat on plot 0, and carrots watered for their stage
    // 100 000 ticks ago (long withered since, computed on load, not simulated).
    let data = common::game_data();
    let wheat = "wheat".to_string();
    let carrot = "carrot".to_string();
    let now = shared_sim::farm::FARM_TICKS_PER_SECOND
        * std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
    let mut old = Farm::new(data.rules.farm_plots, now - 100_000);
    old.plots[0] = Plot::Ripe {
        crop: wheat.clone(),
        neglect: 0,
    };
    old.plots[2] = Plot::Growing {
        crop: carrot.clone(),
        stage: 0,
        progress: 0,
        water: 1,
        neglect: 0,
    };
    let mut expected = old.clone();
    expected.advance_to(&data.crops, now);
    let json = serde_json::to_string(&old).unwrap();
    rt.block_on(store.save_farm(user, &json, 1)).unwrap();

    // A short farm lease: the killed instance below holds the farm only that long.
    let db = ["--database", url.as_str(), "--farm-lease-ms", "1000"];
    let mut inst = Instance::start(&db);
    // Opening twice: the second answer is the same farm.
    assert_eq!(open(&inst, user).status(), 201);
    assert_eq!(open(&inst, user).status(), 200);
    let mut conn = connect(&inst, user);
    let (plots, items, _) = state(&mut conn);
    assert_eq!(
        plots[2], expected.plots[2],
        "offline growth applied on load"
    );
    assert_eq!(
        plots[2],
        Plot::Withered {
            crop: carrot.clone()
        }
    );
    assert_eq!(
        plots[0],
        Plot::Withered {
            crop: wheat.clone()
        },
        "left ripe too long"
    );
    assert_eq!(count(&items, "wheat_seed"), 2);

    // Forged or impossible actions are refused and change nothing.
    assert_eq!(
        act(&mut conn, 1, FarmAction::Harvest { plot: 1 }),
        Some(FarmError::NotRipe)
    );
    assert_eq!(
        act(&mut conn, 2, FarmAction::Water { plot: 200 }),
        Some(FarmError::NoSuchPlot)
    );
    assert_eq!(
        act(
            &mut conn,
            3,
            FarmAction::Plant {
                plot: 1,
                seed: "carrot_seed".into()
            }
        ),
        Some(FarmError::MissingSeed)
    );
    assert_eq!(
        act(
            &mut conn,
            4,
            FarmAction::Plant {
                plot: 1,
                seed: "wheat".into()
            }
        ),
        Some(FarmError::NotASeed)
    );
    conn.send(&ClientMessage::RequestSnapshot);
    assert!(matches!(
        wait_for(&mut conn, Duration::from_secs(5), |m| matches!(
            m,
            ServerMessage::Error { .. }
        )),
        Some(ServerMessage::Error {
            code: ErrorCode::NotAllowed,
            ..
        })
    ));

    // Clear the withered plots, plant wheat and water it.
    assert_eq!(act(&mut conn, 5, FarmAction::Clear { plot: 0 }), None);
    assert_eq!(act(&mut conn, 6, FarmAction::Clear { plot: 2 }), None);
    assert_eq!(
        act(
            &mut conn,
            7,
            FarmAction::Plant {
                plot: 1,
                seed: "wheat_seed".into()
            }
        ),
        None
    );
    // The seed is gone from the database the moment the answer came.
    let inv = rt.block_on(store.inventory(user)).unwrap();
    assert_eq!(inv, vec![("wheat_seed".to_string(), 1)]);
    assert_eq!(act(&mut conn, 8, FarmAction::Water { plot: 1 }), None);
    assert_eq!(
        act(&mut conn, 9, FarmAction::Water { plot: 1 }),
        Some(FarmError::AlreadyWatered)
    );
    std::thread::sleep(Duration::from_millis(1500));

    // kill -9: the watering (older than a second) and the planting survive.
    inst.signal("KILL");
    let _ = inst.wait_exit(Duration::from_secs(5));
    drop(conn);
    let inst = Instance::start(&db);
    // The killed instance never gave the farm up: it stays closed until its lease expires.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = open(&inst, user);
        if r.status().is_success() {
            break;
        }
        assert_eq!(r.status(), 409, "{:?}", r.text());
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never expired"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut conn = connect(&inst, user);
    let (plots, items, _) = state(&mut conn);
    assert!(
        matches!(&plots[1], Plot::Growing { crop, water: 1, .. } if *crop == wheat),
        "{plots:?}"
    );
    assert_eq!(plots[0], Plot::Empty);
    assert_eq!(plots[2], Plot::Empty);
    assert_eq!(count(&items, "wheat_seed"), 1);

    // Someone else's farm token is refused: that farm is not open here.
    let other = rt.block_on(store.create_user("stranger", "$h")).unwrap().id;
    let addr = inst.ready.udp[0];
    let token = inst.issuer().mint_farm(addr, other as u64).unwrap();
    let mut stranger = Connection::connect(token).unwrap();
    let refused = wait_for(&mut stranger, Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::Error { .. })
    });
    assert!(
        matches!(
            refused,
            Some(ServerMessage::Error {
                code: ErrorCode::UnknownMatch,
                ..
            })
        ),
        "{refused:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_ripe_crop_is_harvested_into_the_database() {
    let rt = runtime();
    let (dir, url, store) = database(&rt, "harvest");
    let user = rt.block_on(store.create_user("reaper", "$h")).unwrap().id;
    let data = common::game_data();
    let wheat = ripe_wheat_on_plot_3(&rt, &store, user);
    let inst = Instance::start(&["--database", url.as_str()]);
    let mut conn = connect(&inst, user);
    state(&mut conn);
    assert_eq!(act(&mut conn, 1, FarmAction::Harvest { plot: 3 }), None);
    let yield_amount = data.crops[wheat].yield_amount;
    assert_eq!(
        rt.block_on(store.inventory(user)).unwrap(),
        vec![("wheat".to_string(), yield_amount)]
    );
    let (plots, items, _) = state(&mut conn);
    assert_eq!(plots[3], Plot::Empty);
    assert_eq!(count(&items, "wheat"), yield_amount as u32);
    assert_eq!(
        act(&mut conn, 2, FarmAction::Harvest { plot: 3 }),
        Some(FarmError::NotRipe)
    );
    // The stored farm moved on with the harvest.
    let (json, version) = rt.block_on(store.farm(user)).unwrap().unwrap();
    assert!(version > 4);
    let stored: Farm = serde_json::from_str(&json).unwrap();
    assert_eq!(stored.plots[3], Plot::Empty);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_a_database_no_farm_is_opened() {
    let inst = Instance::start(&[]);
    let r = open(&inst, 42);
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["error"]["code"],
        "no_farms"
    );
}

#[test]
fn a_farm_is_hosted_by_one_instance_at_a_time_and_a_paused_host_cannot_write() {
    let rt = runtime();
    let (dir, url, store) = database(&rt, "lease");
    let user = rt.block_on(store.create_user("twin", "$h")).unwrap().id;
    let data = common::game_data();
    let wheat = ripe_wheat_on_plot_3(&rt, &store, user);
    let lease = ["--database", url.as_str(), "--farm-lease-ms", "1500"];
    let a = Instance::start(&lease);
    let b = Instance::start(&lease);
    let mut on_a = connect(&a, user);
    state(&mut on_a);
    // While A hosts the farm, B does not open it.
    let r = open(&b, user);
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["error"]["code"],
        "farm_elsewhere"
    );
    // A stops (a long GC pause, a frozen VM) past its lease: B takes the farm and harvests.
    a.signal("STOP");
    std::thread::sleep(Duration::from_millis(2500));
    let mut on_b = connect(&b, user);
    state(&mut on_b);
    assert_eq!(act(&mut on_b, 1, FarmAction::Harvest { plot: 3 }), None);
    a.signal("CONT");
    // A wakes up still showing the ripe plot; its harvest must not reach the store.
    on_a.send(&ClientMessage::FarmAction {
        seq: 7,
        action: FarmAction::Harvest { plot: 3 },
    });
    let _ = on_a.flush();
    let answer = wait_for(&mut on_a, Duration::from_secs(5), |m| {
        matches!(
            m,
            ServerMessage::FarmActionResult { seq: 7, .. } | ServerMessage::Error { .. }
        )
    });
    assert!(
        !matches!(
            answer,
            Some(ServerMessage::FarmActionResult { error: None, .. })
        ),
        "the paused host's harvest went through: {answer:?}"
    );
    let yield_amount = data.crops[wheat].yield_amount;
    assert_eq!(
        rt.block_on(store.inventory(user)).unwrap(),
        vec![("wheat".to_string(), yield_amount)],
        "harvested once"
    );
    let lease = rt.block_on(store.farm_lease(user)).unwrap().unwrap();
    assert_eq!(lease.epoch, 2, "A had the first lease, B the second");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_drained_instance_gives_its_farms_up_at_once() {
    let rt = runtime();
    let (dir, url, store) = database(&rt, "drained");
    let user = rt.block_on(store.create_user("mover", "$h")).unwrap().id;
    // The default lease (15 s): only a release lets B open the farm within this test.
    let db = ["--database", url.as_str()];
    let mut a = Instance::start(&db);
    let b = Instance::start(&db);
    let mut on_a = connect(&a, user);
    state(&mut on_a);
    assert_eq!(open(&b, user).status(), 409);
    a.signal("TERM");
    assert!(a.wait_exit(Duration::from_secs(10)).is_some(), "A drained");
    let r = open(&b, user);
    assert!(r.status().is_success(), "{:?}", r.text());
    let lease = rt.block_on(store.farm_lease(user)).unwrap().unwrap();
    assert_eq!(lease.epoch, 2);
    let _ = std::fs::remove_dir_all(&dir);
}
