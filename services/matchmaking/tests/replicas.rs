//! Matchmaking replicas over one real Redis (CROFT_TEST_REDIS, default redis://127.0.0.1:6379),
//! each serving its HTTP API on loopback: tickets taken by any replica are formed once by the
//! leader, queued players keep their place when a replica is killed, and a new leader finishes
//! a placement its killed predecessor started while the old one's late answer is fenced off.
//!
//! Instance servers are stood in for by `Fleet`, an allocator that hands out placements and
//! counts them (the real allocators have their own tests, and the stack tests run the real one).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contracts::instance::v1::CreateMatchRequest;
use contracts::matchmaking::MatchmakingClient;
use contracts::matchmaking::v1::{
    FarmRequest, HubPlaceRequest, RejoinRequest, TicketRequest, UpdateKind, UpdatesQuery,
};
use control_store::ControlStore;
use matchmaking::allocator::{AllocError, AllocEvent, BoxFuture, Endpoint, HubPlace, Placement};
use matchmaking::{Allocator, Matchmaking, QueueConfig};

const TOKEN: &str = "replica-test-service-token";

/// Places every match at once, except that the first allocation can be held until released.
#[derive(Default)]
struct Fleet {
    allocations: AtomicUsize,
    by_match: Mutex<HashMap<u64, usize>>,
    hold_first: Option<tokio::sync::Semaphore>,
    ended: Mutex<Vec<AllocEvent>>,
    /// The home each farm or hub opening was given, in order.
    homes_given: Mutex<Vec<Option<String>>>,
}

fn endpoint() -> Endpoint {
    Endpoint {
        server_addr: "127.0.0.1:40000".parse().unwrap(),
        ws_url: None,
    }
}

impl Fleet {
    fn holding_the_first() -> Self {
        Self {
            hold_first: Some(tokio::sync::Semaphore::new(0)),
            ..Self::default()
        }
    }

    fn placed(&self, match_id: u64) -> usize {
        self.by_match
            .lock()
            .unwrap()
            .get(&match_id)
            .copied()
            .unwrap_or(0)
    }

    fn end(&self, match_id: u64, players: [u64; 2]) {
        self.ended.lock().unwrap().push(AllocEvent::Aborted {
            match_id,
            players,
            instance: "fleet-1".into(),
        });
    }
}

impl Allocator for Fleet {
    fn allocate(
        &self,
        request: CreateMatchRequest,
    ) -> BoxFuture<'_, Result<Placement, AllocError>> {
        Box::pin(async move {
            let n = self.allocations.fetch_add(1, Ordering::SeqCst);
            if n == 0
                && let Some(gate) = &self.hold_first
            {
                let _ = gate.acquire().await;
            }
            *self
                .by_match
                .lock()
                .unwrap()
                .entry(request.match_id)
                .or_default() += 1;
            Ok(Placement {
                instance: "fleet-1".into(),
                server_addr: "127.0.0.1:40000".parse().unwrap(),
                ws_url: None,
                control: None,
            })
        })
    }

    fn poll(&self) -> BoxFuture<'_, Vec<AllocEvent>> {
        Box::pin(async move { std::mem::take(&mut *self.ended.lock().unwrap()) })
    }

    fn status(&self) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async { serde_json::json!({}) })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Opens the farm on its home, else on `instance-<user>`, and notes the home it was given.
    fn open_farm(
        &self,
        user: u64,
        home: Option<String>,
    ) -> BoxFuture<'_, Result<(String, Endpoint), AllocError>> {
        Box::pin(async move {
            self.homes_given.lock().unwrap().push(home.clone());
            let host = home.unwrap_or_else(|| format!("instance-{user}"));
            Ok((host, endpoint()))
        })
    }

    /// Keeps the place on the hub's home, else on `instance-hub`, and notes the home it was given.
    fn open_hub(
        &self,
        _: u64,
        _: String,
        home: Option<String>,
    ) -> BoxFuture<'_, Result<(String, HubPlace), AllocError>> {
        Box::pin(async move {
            self.homes_given.lock().unwrap().push(home.clone());
            Ok((
                home.unwrap_or_else(|| "instance-hub".into()),
                (1, endpoint()),
            ))
        })
    }
}

/// One matchmaking replica: its loops and its HTTP API.
struct Replica {
    mm: Arc<Matchmaking>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    api: MatchmakingClient,
}

impl Replica {
    async fn start(control: ControlStore, store: store::Store, fleet: Arc<Fleet>) -> Self {
        let cards = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/cards");
        let data = shared_sim::GameData::load_dir(&cards).expect("card data");
        let mm = Matchmaking::new(
            QueueConfig::default(),
            store,
            control,
            Duration::from_millis(500),
            fleet,
            token::ConnectTokenIssuer::new(token::NetcodeKey::generate().unwrap()),
            shared_sim::data::DataHandle::new(data),
            TOKEN.into(),
        );
        let loops = matchmaking::spawn_loops(mm.clone(), Duration::from_millis(50));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = matchmaking::router(mm.clone());
        let http = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            mm,
            tasks: vec![loops, http],
            api: MatchmakingClient::new(reqwest::Client::new(), &base, TOKEN),
        }
    }

    /// As `kill -9` would: no resignation, nothing written on the way out.
    fn kill(self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn redis_url() -> String {
    std::env::var("CROFT_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn control() -> ControlStore {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    let prefix = format!("{{croft-mm-test-{:016x}}}:", u64::from_le_bytes(b));
    let control = ControlStore::redis(&redis_url(), &prefix).unwrap();
    control
        .ping()
        .await
        .expect("Redis must be running for these tests (scripts/services starts it)");
    control
}

async fn users(store: &store::Store, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for i in 0..n {
        let u = store
            .create_user(&format!("player{i}"), "unused-hash")
            .await
            .unwrap();
        out.push(u.id as u64);
    }
    out
}

async fn enqueue(r: &Replica, user: u64, server: &str) -> String {
    r.api
        .create_ticket(&TicketRequest {
            user_id: user,
            server: server.into(),
            session_tag: None,
        })
        .await
        .unwrap()
        .status
}

/// Reads `server`'s mailbox through `r` until `want` updates matched `pick`, or 20 s.
async fn collect<T>(
    r: &Replica,
    server: &str,
    after: &mut u64,
    want: usize,
    pick: impl Fn(u64, &UpdateKind) -> Option<T>,
) -> Vec<T> {
    collect_for(r, server, after, want, pick, Duration::from_secs(20)).await
}

async fn collect_for<T>(
    r: &Replica,
    server: &str,
    after: &mut u64,
    want: usize,
    pick: impl Fn(u64, &UpdateKind) -> Option<T>,
    limit: Duration,
) -> Vec<T> {
    let mut got = Vec::new();
    let deadline = Instant::now() + limit;
    while got.len() < want && Instant::now() < deadline {
        let query = UpdatesQuery {
            server: server.into(),
            after: *after,
            wait_ms: 500,
        };
        let Ok(res) = r.api.updates(&query, Duration::from_secs(5)).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        for u in res.updates {
            *after = (*after).max(u.seq);
            got.extend(pick(u.user_id, &u.kind));
        }
    }
    got
}

fn found(user: u64, kind: &UpdateKind) -> Option<(u64, u64)> {
    match kind {
        UpdateKind::MatchFound { match_id, .. } => Some((user, *match_id)),
        _ => None,
    }
}

#[tokio::test]
async fn two_replicas_form_each_match_once_and_free_players_when_it_ends() {
    let control = control().await;
    let store = store::testing::sqlite().await;
    let fleet = Arc::new(Fleet::default());
    let a = Replica::start(control.clone(), store.clone(), fleet.clone()).await;
    let b = Replica::start(
        ControlStore::redis(&redis_url(), &prefix_of(&control)).unwrap(),
        store.clone(),
        fleet.clone(),
    )
    .await;
    let players = users(&store, 20).await;
    for (i, u) in players.iter().enumerate() {
        let (r, server) = if i % 2 == 0 {
            (&a, "conn-a")
        } else {
            (&b, "conn-b")
        };
        assert_eq!(enqueue(r, *u, server).await, "queued");
    }
    // Each connection server's mail is read through the other replica.
    let (mut after_a, mut after_b) = (0, 0);
    let mut seen = collect(&b, "conn-a", &mut after_a, 10, found).await;
    seen.extend(collect(&a, "conn-b", &mut after_b, 10, found).await);
    assert_eq!(seen.len(), 20, "{seen:?}");
    let mut by_match: HashMap<u64, Vec<u64>> = HashMap::new();
    for (user, m) in &seen {
        by_match.entry(*m).or_default().push(*user);
    }
    let mut everyone: Vec<u64> = seen.iter().map(|(u, _)| *u).collect();
    everyone.sort();
    everyone.dedup();
    assert_eq!(everyone.len(), 20, "each player in exactly one match");
    assert_eq!(by_match.len(), 10);
    assert!(by_match.values().all(|p| p.len() == 2));
    assert_eq!(
        fleet.allocations.load(Ordering::SeqCst),
        10,
        "each placed once"
    );
    assert_eq!(
        [a.mm.is_leader(), b.mm.is_leader()]
            .iter()
            .filter(|l| **l)
            .count(),
        1
    );
    let status = b.api.status().await.unwrap();
    assert_eq!((status.queued, status.matches_running), (0, 10));

    // A player in a match cannot queue, on either replica; once it ends they can.
    let (m, pair) = by_match
        .iter()
        .next()
        .map(|(m, p)| (*m, p.clone()))
        .unwrap();
    let again = a
        .api
        .create_ticket(&TicketRequest {
            user_id: pair[0],
            server: "conn-a".into(),
            session_tag: None,
        })
        .await;
    assert!(again.is_err(), "{again:?}");
    fleet.end(m, [pair[0], pair[1]]);
    let ended = |user: u64, k: &UpdateKind| match k {
        UpdateKind::MatchEnded { match_id, .. } if *match_id == m => Some(user),
        _ => None,
    };
    // Players at even places queued through conn-a.
    let on_a = pair
        .iter()
        .filter(|u| players.iter().position(|p| p == *u).unwrap() % 2 == 0)
        .count();
    let mut told = Vec::new();
    if on_a > 0 {
        told.extend(collect(&a, "conn-a", &mut after_a, on_a, ended).await);
    }
    if on_a < 2 {
        told.extend(collect(&a, "conn-b", &mut after_b, 2 - on_a, ended).await);
    }
    told.sort();
    let mut want = pair.clone();
    want.sort();
    assert_eq!(told, want);
    assert_eq!(enqueue(&b, pair[0], "conn-b").await, "queued");
    assert_eq!(
        store.match_count().await.unwrap(),
        1,
        "the result is recorded"
    );
    a.kill();
    b.kill();
    control.clear().await.unwrap();
}

#[tokio::test]
async fn queued_players_keep_their_place_when_the_replica_is_killed() {
    let control = control().await;
    let store = store::testing::sqlite().await;
    let fleet = Arc::new(Fleet::default());
    let players = users(&store, 2).await;
    let first = Replica::start(control.clone(), store.clone(), fleet.clone()).await;
    assert_eq!(enqueue(&first, players[0], "conn-a").await, "queued");
    first.kill();

    let second = Replica::start(control.clone(), store.clone(), fleet.clone()).await;
    assert_eq!(second.api.status().await.unwrap().queued, 1);
    assert_eq!(
        enqueue(&second, players[0], "conn-a").await,
        "already_queued"
    );
    assert_eq!(enqueue(&second, players[1], "conn-a").await, "queued");
    let mut after = 0;
    let seen = collect(&second, "conn-a", &mut after, 2, found).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].1, seen[1].1);
    second.kill();
    control.clear().await.unwrap();
}

#[tokio::test]
async fn a_new_leader_finishes_a_placement_and_the_old_leader_is_fenced() {
    let control = control().await;
    let store = store::testing::sqlite().await;
    let fleet = Arc::new(Fleet::holding_the_first());
    let players = users(&store, 2).await;
    let old = Replica::start(control.clone(), store.clone(), fleet.clone()).await;
    enqueue(&old, players[0], "conn-a").await;
    enqueue(&old, players[1], "conn-a").await;
    // The old leader formed the match and is stuck allocating it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fleet.allocations.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let formed = control.matches().await.unwrap();
    assert_eq!(formed.len(), 1);
    let match_id = formed[0].match_id;
    // It stops leading (its loops die; its allocation is still in flight).
    old.kill();

    let new = Replica::start(control.clone(), store.clone(), fleet.clone()).await;
    let mut after = 0;
    let seen = collect(&new, "conn-a", &mut after, 2, found).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.iter().all(|(_, m)| *m == match_id),
        "the same match, finished"
    );
    assert_eq!(fleet.placed(match_id), 1);

    // The old leader's allocation answers late: its placement is refused, nothing is announced.
    fleet.hold_first.as_ref().unwrap().add_permits(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fleet.placed(match_id) < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fleet.placed(match_id), 2);
    let late = collect_for(&new, "conn-a", &mut after, 1, found, Duration::from_secs(1)).await;
    assert_eq!(late, vec![], "no second announcement");
    let rejoin = new
        .api
        .rejoin(&RejoinRequest {
            user_id: players[0],
            server: "conn-b".into(),
            session_tag: None,
        })
        .await
        .unwrap();
    assert_eq!(rejoin.match_id, match_id);
    new.kill();
    control.clear().await.unwrap();
}

fn prefix_of(control: &ControlStore) -> String {
    match control {
        ControlStore::Redis(r) => r.prefix().to_string(),
        ControlStore::Local(_) => String::new(),
    }
}

/// A match placed by a replica that then died: its allocator's report is gone with it, but the
/// instance records the result in the database, and the leader closes the match from there.
#[tokio::test]
async fn a_recorded_result_closes_a_match_whatever_replica_placed_it() {
    let control = control().await;
    let store = store::testing::sqlite().await;
    let players = users(&store, 2).await;
    let placer = Replica::start(control.clone(), store.clone(), Arc::new(Fleet::default())).await;
    enqueue(&placer, players[0], "conn-a").await;
    enqueue(&placer, players[1], "conn-b").await;
    let mut after_a = 0;
    let seen = collect(&placer, "conn-a", &mut after_a, 1, found).await;
    let match_id = seen[0].1;
    placer.kill();

    let leader = Replica::start(control.clone(), store.clone(), Arc::new(Fleet::default())).await;
    store
        .record_match(&store::MatchResult {
            match_id: match_id as i64,
            players: [players[0] as i64, players[1] as i64],
            winner: Some(players[0] as i64),
            reason: "HeroDied".into(),
            turns: 9,
            data_version: "test".into(),
            record: "{}".into(),
        })
        .await
        .unwrap();
    let ended = |user: u64, k: &UpdateKind| match k {
        UpdateKind::MatchEnded {
            match_id: m,
            aborted,
        } if *m == match_id => Some((user, *aborted)),
        _ => None,
    };
    let mut after_b = 0;
    let told = collect(&leader, "conn-b", &mut after_b, 1, ended).await;
    assert_eq!(told, vec![(players[1], false)]);
    assert_eq!(enqueue(&leader, players[1], "conn-b").await, "queued");
    assert_eq!(leader.api.status().await.unwrap().matches_running, 0);
    leader.kill();
    control.clear().await.unwrap();
}

/// A farm or the common area opened through one replica is asked of the same instance first
/// through another (each with an allocator of its own, as separate processes are): homes live
/// in the store, not in a replica's memory.
#[tokio::test]
async fn farm_and_hub_homes_are_shared_by_replicas() {
    let control = control().await;
    let store = store::testing::sqlite().await;
    let (fleet_a, fleet_b) = (Arc::new(Fleet::default()), Arc::new(Fleet::default()));
    let a = Replica::start(control.clone(), store.clone(), fleet_a.clone()).await;
    let b = Replica::start(
        ControlStore::redis(&redis_url(), &prefix_of(&control)).unwrap(),
        store.clone(),
        fleet_b.clone(),
    )
    .await;
    let farm = |user_id| FarmRequest {
        user_id,
        session_tag: None,
    };
    let hub = |user_id| HubPlaceRequest {
        user_id,
        name: "ann".into(),
        session_tag: None,
    };
    a.api.open_farm(&farm(7)).await.unwrap();
    a.api.open_hub(&hub(7)).await.unwrap();
    b.api.open_farm(&farm(7)).await.unwrap();
    b.api.open_farm(&farm(8)).await.unwrap();
    b.api.open_hub(&hub(8)).await.unwrap();
    assert_eq!(*fleet_a.homes_given.lock().unwrap(), vec![None, None]);
    assert_eq!(
        *fleet_b.homes_given.lock().unwrap(),
        vec![
            Some("instance-7".to_string()),
            None,
            Some("instance-hub".to_string())
        ]
    );
    assert_eq!(
        control
            .home(control_store::Home::Farm(8))
            .await
            .unwrap()
            .as_deref(),
        Some("instance-8")
    );
    a.kill();
    b.kill();
    control.clear().await.unwrap();
}
