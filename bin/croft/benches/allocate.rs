//! Allocation from the warm pool: the local allocator places matches on a running instance
//! server (a real `croft instance` child process, reached over its control API), one after the
//! other; we measure the latency of each placement and the placements per second.
//!
//! `cargo bench -p croft --bench allocate -- [ALLOCATIONS]` (default 5000).

use std::time::{Duration, Instant};

use contracts::instance::v1::CreateMatchRequest;
use matchmaking::allocator::{Allocator, LocalAllocator, LocalConfig};

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
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
    // One instance with room for every placement: 12 sockets of 448 matches.
    config.max_instances = 1;
    config.max_matches = n.max(1);
    config.extra_args = vec![
        "--cards".into(),
        cards.display().to_string(),
        "--netcode-key-file".into(),
        dir.join("netcode.key").display().to_string(),
        "--control-token-file".into(),
        dir.join("control.token").display().to_string(),
        "--shards".into(),
        n.div_ceil(448).max(1).to_string(),
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let alloc = LocalAllocator::start(config).await.unwrap();
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
        alloc.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
