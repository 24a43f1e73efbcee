//! Allocation from the warm pool: the local allocator places matches on a running instance
//! server (a real `croft instance` child process, reached over its control API), one after the
//! other; we measure the latency of each placement and the placements per second.
//!
//! Then the whole allocation path as matchmaking's leader runs it over Redis: as many pairs
//! queued at once, formation passes (`Matchmaking::tick`) form them, read both players' decks
//! from the database, place each match on that instance, record the placement and mail both
//! players in the control store, and write `match_found`; we measure matches placed per second
//! (Redis at CROFT_BENCH_REDIS, default redis://127.0.0.1:6379; skipped when it does not answer).
//!
//! `cargo bench -p croft --bench allocate -- [ALLOCATIONS]` (default 5000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use contracts::instance::v1::CreateMatchRequest;
use control_store::{ControlStore, Ticket};
use matchmaking::allocator::{Allocator, LocalAllocator, LocalConfig};
use matchmaking::{Matchmaking, QueueConfig};

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    assert!(n >= 2, "ALLOCATIONS must be at least 2");
    let dir = std::env::temp_dir().join(format!("croft-alloc-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    token::NetcodeKey::generate()
        .unwrap()
        .write_file(&dir.join("netcode.key"))
        .unwrap();
    let control = token::generate_secret().unwrap();
    std::fs::write(dir.join("control.token"), &control).unwrap();
    let cards = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/cards");
    let mut config = LocalConfig::new(
        vec![env!("CARGO_BIN_EXE_croft").into(), "instance".into()],
        control,
        dir.join("instances"),
    );
    // One instance with room for every placement of both parts: sockets of 448 matches.
    config.max_instances = 1;
    config.max_matches = 2 * n.max(1);
    config.extra_args = vec![
        "--cards".into(),
        cards.display().to_string(),
        "--netcode-key-file".into(),
        dir.join("netcode.key").display().to_string(),
        "--control-token-file".into(),
        dir.join("control.token").display().to_string(),
        "--shards".into(),
        (2 * n).div_ceil(448).max(1).to_string(),
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let alloc = Arc::new(LocalAllocator::start(config).await.unwrap());
        // Warm the HTTP connection.
        let mut next_id = 1u64;
        let mut request = |players: [u64; 2]| {
            next_id += 1;
            CreateMatchRequest {
                match_id: next_id,
                players,
                decks: None,
                starter_decks: Some(["starter_ember".into(), "starter_grove".into()]),
                seed: Some(next_id),
            }
        };
        alloc.allocate(request([1, 2])).await.unwrap();
        let mut lat = Vec::with_capacity(n);
        let start = Instant::now();
        for i in 1..n as u64 {
            let req = request([10 + 2 * i, 11 + 2 * i]);
            let t = Instant::now();
            alloc.allocate(req).await.unwrap();
            lat.push(t.elapsed());
        }
        let wall = start.elapsed();
        lat.sort_unstable();
        let p = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
        println!(
            "allocation from the warm pool: {} placements on one local instance",
            lat.len()
        );
        println!(
            "  {:.0} allocations/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            lat.len() as f64 / wall.as_secs_f64(),
            ms(p(0.5)),
            ms(p(0.99)),
            ms(*lat.last().unwrap())
        );
        through_matchmaking(alloc.clone(), n).await;
        alloc.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// `pairs` matches through matchmaking's leader over Redis, on `alloc`'s instance.
async fn through_matchmaking(alloc: Arc<LocalAllocator>, pairs: usize) {
    let url =
        std::env::var("CROFT_BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = control_store::testing::fresh_prefix("alloc-bench");
    let control = ControlStore::redis(&url, &prefix).expect("redis url");
    if let Err(e) = control.ping().await {
        println!("through matchmaking on Redis: not measured ({e})");
        assert!(
            std::env::var("CROFT_BENCH_REQUIRE_REDIS").as_deref() != Ok("1"),
            "Redis is required here (CROFT_BENCH_REQUIRE_REDIS=1)"
        );
        return;
    }
    let cards = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/cards");
    let data = shared_sim::GameData::load_dir(&cards).expect("card data");
    let mm = Matchmaking::new(
        QueueConfig::default(),
        store::testing::sqlite().await,
        control.clone(),
        Duration::from_secs(10),
        alloc,
        token::ConnectTokenIssuer::new(token::NetcodeKey::generate().unwrap()),
        shared_sim::data::DataHandle::new(data),
        "bench".into(),
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut queued = tokio::task::JoinSet::new();
    for user in 0..2 * pairs as u64 {
        let control = control.clone();
        queued.spawn(async move {
            let ticket = Ticket {
                user_id: 1_000_000 + user,
                rating: 1000 + (user / 2 % 400) as i32,
                enqueued_ms: now_ms,
                server: "bench-conn".into(),
                tag: String::new(),
            };
            control.enqueue(&ticket).await.expect("enqueue")
        });
    }
    queued.join_all().await;
    let start = Instant::now();
    let (mut found, mut refused, mut after) = (0usize, 0usize, 0u64);
    while found + refused < 2 * pairs && start.elapsed() < Duration::from_secs(120) {
        mm.tick().await;
        let (mail, last) = control
            .mail_after("bench-conn", after, 0)
            .await
            .expect("mailbox");
        after = last;
        for m in mail {
            if m.body.contains("match_found") {
                found += 1;
            } else {
                refused += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = start.elapsed();
    println!(
        "through matchmaking on Redis: {pairs} pairs queued, formed, placed on the instance, recorded and mailed"
    );
    println!(
        "  {} matches placed in {:.2} s: {:.0} matches/s ({} players refused)",
        found / 2,
        wall.as_secs_f64(),
        (found / 2) as f64 / wall.as_secs_f64(),
        refused
    );
    control.clear().await.expect("clearing the bench's keys");
    assert_eq!(found, 2 * pairs, "players told of their match");
    assert_eq!(refused, 0, "players refused a match");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
