//! Matchmaking alone: tickets arrive at a steady rate, the formation pass runs every few
//! milliseconds, and we measure tickets formed per second of CPU spent in the queue and the
//! enqueue -> formed latency (allocation excluded).
//!
//! `cargo bench -p matchmaking --bench queue` (add `-- TICKETS ARRIVALS_PER_SECOND PASS_MS`).

mod common;

use std::time::{Duration, Instant};

use matchmaking::queue::{Queue, QueueConfig};

fn main() {
    let args = common::args();
    let tickets: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let rate: f64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000.0);
    let pass = Duration::from_millis(args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5));
    assert!(
        tickets > 0 && rate > 0.0,
        "TICKETS and ARRIVALS_PER_SECOND must be above 0"
    );

    let mut q = Queue::new(QueueConfig::default());
    // Ratings spread like a real ladder: most near 1000-1600, a thin tail.
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let start = Instant::now();
    let mut queue_cpu = Duration::ZERO;
    let mut enqueued = 0usize;
    let mut formed = 0usize;
    let mut latencies = Vec::with_capacity(tickets);
    let mut passes = 0u64;
    let mut last_formed = Instant::now();
    loop {
        // Tickets due by now at the arrival rate arrive in this pass.
        let due = ((start.elapsed().as_secs_f64() * rate) as usize).min(tickets);
        let t0 = Instant::now();
        while enqueued < due {
            // A ladder: most ratings in 1000-1600, one in twenty up to 600 higher.
            let tail = if next() % 20 == 0 {
                (next() % 600) as i32
            } else {
                0
            };
            let r = 1000 + (next() % 600) as i32 + tail;
            enqueued += 1;
            let _ = q.enqueue(enqueued as u64, r, "bench", Instant::now());
        }
        let now = Instant::now();
        let groups = q.form(now);
        let done = Instant::now();
        queue_cpu += done - t0;
        passes += 1;
        for g in &groups {
            for t in g {
                latencies.push(done.duration_since(t.enqueued_at).as_secs_f64() * 1000.0);
            }
            formed += g.len();
        }
        if !groups.is_empty() {
            last_formed = Instant::now();
        }
        // Done when everyone arrived and nothing formed for longer than the window takes to
        // reach its maximum (whoever is left has no partner).
        if enqueued >= tickets
            && (q.queued() < 2 || last_formed.elapsed() > Duration::from_secs(20))
        {
            break;
        }
        let next_pass = t0 + pass;
        let now = Instant::now();
        if next_pass > now {
            std::thread::sleep(next_pass - now);
        }
    }
    let wall = start.elapsed();
    latencies.sort_by(|a, b| a.total_cmp(b));
    println!(
        "matchmaking queue: {tickets} tickets arriving at {rate:.0}/s, a formation pass every {pass:?}"
    );
    println!(
        "  formed {formed} into matches in {:.2} s wall over {passes} passes; queue CPU {:.3} s",
        wall.as_secs_f64(),
        queue_cpu.as_secs_f64()
    );
    println!(
        "  throughput: {:.0} tickets formed per second of queue CPU",
        formed as f64 / queue_cpu.as_secs_f64()
    );
    println!(
        "  enqueue -> formed latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        common::percentile(&latencies, 0.5),
        common::percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0.0)
    );
    println!("  left in queue (no partner within window): {}", q.queued());
    assert!(
        formed * 100 >= tickets * 99,
        "only {formed} of {tickets} tickets formed"
    );
}
