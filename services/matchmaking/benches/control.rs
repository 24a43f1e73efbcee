//! Matchmaking's queue through its control store: two replica handles enqueue tickets as fast
//! as they are answered while a leader runs formation passes (read the tickets, form with the
//! rating window, take each match's tickets in one batched step), as `Matchmaking::tick` does.
//! Allocation is left out. Runs the in-process store and Redis in the same run, so the ratio
//! between them holds even when this machine's speed drifts.
//!
//! `cargo bench -p matchmaking --bench control` (add `-- TICKETS ARRIVALS_PER_SECOND PASS_MS`,
//! default 200000 at 100000/s, a pass every 5 ms; Redis at CROFT_BENCH_REDIS, default
//! redis://127.0.0.1:6379).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use control_store::{ControlStore, Group, Ticket};
use matchmaking::queue::{Queue, QueueConfig};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Outcome {
    formed: usize,
    /// From the first arrival to the last match formed.
    wall: Duration,
    /// From the first arrival to the pass that formed 99.9% of the tickets (the last few are
    /// rating outliers that wait seconds for the window, whatever the store).
    wall_999: Option<Duration>,
    enqueue_wall: Duration,
    passes: u64,
    latencies_ms: Vec<f64>,
}

/// Requests in flight per replica handle (the connection servers' concurrent calls).
const LANES: usize = 512;

/// Enqueues `tickets` at `rate` per second through `replicas` (up to [`LANES`] in flight each)
/// while one leader forms matches.
async fn run(replicas: Vec<ControlStore>, tickets: usize, rate: f64, pass: Duration) -> Outcome {
    let leader_store = replicas[0].clone();
    let lease = leader_store
        .lead("bench-leader", Duration::from_secs(60))
        .await
        .expect("lead")
        .expect("free lease");
    let enqueued = Arc::new(AtomicUsize::new(0));
    let done_enqueuing = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let per = tickets / replicas.len();
    let n = replicas.len();
    let mut producers = Vec::new();
    for (r, store) in replicas.iter().enumerate() {
        for lane in 0..LANES {
            let store = store.clone();
            let enqueued = enqueued.clone();
            producers.push(tokio::spawn(async move {
                let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ ((r * LANES + lane) as u64 + 1);
                let mut i = lane;
                while i < per {
                    // Arrivals at the rate, interleaved over the replicas.
                    let due = start + Duration::from_secs_f64((i * n + r) as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let user = (r * per + i + 1) as u64;
                    let ticket = Ticket {
                        user_id: user,
                        rating: 1000 + (rng % 600) as i32,
                        enqueued_ms: now_ms(),
                        server: format!("conn-{r}"),
                        tag: String::new(),
                    };
                    store.enqueue(&ticket).await.expect("enqueue");
                    enqueued.fetch_add(1, Ordering::Relaxed);
                    i += LANES;
                }
            }));
        }
    }
    let leader = {
        let done_enqueuing = done_enqueuing.clone();
        tokio::spawn(async move {
            let mut formed = 0usize;
            let mut passes = 0u64;
            let mut latencies = Vec::with_capacity(tickets);
            let mut next_id = 1u64;
            let mut idle_since = Instant::now();
            let mut last_formed = Instant::now();
            let mut at_999 = None;
            loop {
                let pass_start = Instant::now();
                let queued = leader_store.tickets().await.expect("tickets");
                let (now, wall) = (Instant::now(), now_ms());
                let mut q = Queue::new(QueueConfig::default());
                for t in &queued {
                    let waited = Duration::from_millis(wall.saturating_sub(t.enqueued_ms));
                    let _ = q.enqueue(
                        t.user_id,
                        t.rating,
                        &t.server,
                        now.checked_sub(waited).unwrap_or(now),
                    );
                }
                let groups = q.form(now);
                let since: std::collections::HashMap<u64, u64> =
                    queued.iter().map(|t| (t.user_id, t.enqueued_ms)).collect();
                let users: Vec<Vec<u64>> = groups
                    .iter()
                    .map(|g| g.iter().map(|t| t.user_id).collect())
                    .collect();
                let batch: Vec<Group<'_>> = users
                    .iter()
                    .map(|u| {
                        next_id += 1;
                        Group {
                            match_id: next_id,
                            users: u,
                            state: "formed",
                        }
                    })
                    .collect();
                let taken = leader_store.form_many(&lease, &batch).await.expect("form");
                let at = now_ms();
                for (g, ok) in groups.iter().zip(&taken) {
                    if *ok {
                        formed += g.len();
                        for t in g {
                            if let Some(ms) = since.get(&t.user_id) {
                                latencies.push(at.saturating_sub(*ms) as f64);
                            }
                        }
                    }
                }
                passes += 1;
                if at_999.is_none() && formed * 1000 >= tickets * 999 {
                    at_999 = Some(Instant::now());
                }
                if !groups.is_empty() {
                    idle_since = Instant::now();
                    last_formed = Instant::now();
                }
                let everyone_in = done_enqueuing.load(Ordering::Relaxed);
                if everyone_in
                    && (queued.len() < 2 || idle_since.elapsed() > Duration::from_secs(3))
                {
                    break;
                }
                // A pass every `pass` at most, as the service's loop does (every 100 ms there).
                let next = pass_start + pass;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
            }
            (formed, passes, latencies, last_formed, at_999)
        })
    };
    for p in producers {
        p.await.expect("producer");
    }
    let enqueue_wall = start.elapsed();
    done_enqueuing.store(true, Ordering::Relaxed);
    let (formed, passes, mut latencies_ms, last_formed, at_999) = leader.await.expect("leader");
    latencies_ms.sort_by(|a, b| a.total_cmp(b));
    Outcome {
        formed,
        wall: last_formed.duration_since(start),
        wall_999: at_999.map(|t| t.duration_since(start)),
        enqueue_wall,
        passes,
        latencies_ms,
    }
}

fn report(name: &str, tickets: usize, arrivals: f64, o: &Outcome) -> f64 {
    assert!(
        o.formed * 100 >= tickets * 99,
        "{name}: only {} of {tickets} tickets formed",
        o.formed
    );
    // Formation ends when the last pair forms; the last few wait for a wider window.
    let rate = o.formed as f64 / o.wall.as_secs_f64();
    println!(
        "{name}: {tickets} tickets arriving at {arrivals:.0}/s through 2 replica handles, one leader"
    );
    println!(
        "  enqueued in {:.2} s ({:.0}/s); formed {} in {:.2} s over {} passes: {:.0} tickets/s",
        o.enqueue_wall.as_secs_f64(),
        tickets as f64 / o.enqueue_wall.as_secs_f64(),
        o.formed,
        o.wall.as_secs_f64(),
        o.passes,
        rate
    );
    if let Some(w) = o.wall_999 {
        println!(
            "  99.9% formed {:.2} s after the first arrival: {:.0} tickets/s",
            w.as_secs_f64(),
            tickets as f64 * 0.999 / w.as_secs_f64()
        );
    }
    println!(
        "  enqueue -> formed: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        common::percentile(&o.latencies_ms, 0.5),
        common::percentile(&o.latencies_ms, 0.99),
        o.latencies_ms.last().copied().unwrap_or(0.0)
    );
    o.wall_999
        .map_or(rate, |w| tickets as f64 * 0.999 / w.as_secs_f64())
}

fn main() {
    let args = common::args();
    let tickets: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let arrivals: f64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000.0);
    let pass = Duration::from_millis(args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5));
    assert!(
        tickets >= 2 && arrivals > 0.0,
        "TICKETS must be at least 2 and ARRIVALS_PER_SECOND above 0"
    );
    let rt = common::runtime();
    rt.block_on(async {
        let local = ControlStore::local();
        let local_rate = report(
            "in-process store",
            tickets,
            arrivals,
            &run(vec![local.clone(), local], tickets, arrivals, pass).await,
        );
        let url =
            std::env::var("CROFT_BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("{{croft-bench-{}}}:", std::process::id());
        let a = ControlStore::redis(&url, &prefix).expect("redis url");
        if let Err(e) = a.ping().await {
            println!("redis: not measured ({e})");
            assert!(!common::redis_required(), "Redis is required here");
            return;
        }
        let b = ControlStore::redis(&url, &prefix).expect("redis url");
        let redis_rate = report(
            "redis",
            tickets,
            arrivals,
            &run(vec![a.clone(), b], tickets, arrivals, pass).await,
        );
        println!(
            "redis / in-process: {:.2} of the in-process rate (to 99.9% formed)",
            redis_rate / local_rate
        );
        a.clear().await.expect("clearing the bench's keys");
    });
}
