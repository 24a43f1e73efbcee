//! N players in one common-area shard over real UDP on loopback, against the release
//! `server-instance` binary, driven from this one process. Every player walks one step every
//! `move_ms` (within walking speed) and says something every 10 s. Prints the server's CPU (and
//! per move), its memory per player, what each player receives per second, and the time from a
//! move to the mover seeing it in the shard's `HubMoves` batch (p50/p99).
//!
//! cargo bench -p server-instance --bench hub_load -- [players] [seconds] [move_ms]

#[path = "../tests/common/mod.rs"]
mod common;

use contracts::instance::v1::{HUB, HubRequest, HubResponse};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::Instance;
use headless_bot::{Connection, percentile};
use shared_sim::hub;
use shared_sim::protocol::{ClientMessage, ServerMessage};
use telemetry::ProcessStats;

struct Walker {
    user: u64,
    conn: Connection,
    pos: Option<(i32, i32)>,
    dir: i32,
    next_move: Instant,
    next_chat: Instant,
    /// Sent moves waiting to be seen: position -> when sent.
    pending: HashMap<(i32, i32), Instant>,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let players: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(300);
    let seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let move_ms: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(200);
    anyhow::ensure!(
        players > 0 && seconds > 0,
        "players and seconds must be at least 1"
    );

    let capacity = players.to_string();
    let server = Instance::start(&["--hub-capacity", &capacity]);
    let pid = server.pid().to_string();
    std::thread::sleep(Duration::from_millis(300));
    let empty = ProcessStats::read_pid(&pid).expect("server stats");
    let issuer = server.issuer();
    let http = server.http();
    let mut walkers = Vec::with_capacity(players);
    for i in 0..players as u64 {
        let user = 1_000 + i;
        let answer: HubResponse = http
            .post(format!("{}{HUB}", server.control_url()))
            .bearer_auth(&server.control_token)
            .json(&HubRequest {
                user_id: user,
                name: format!("walker {i}"),
            })
            .send()?
            .error_for_status()?
            .json()?;
        let token = issuer.mint_hub(answer.server_addr, user, answer.hub_id)?;
        let now = Instant::now();
        walkers.push(Walker {
            user,
            conn: Connection::connect(token)?,
            pos: None,
            dir: if i % 2 == 0 { 1 } else { -1 },
            // Spread the moves over the interval.
            next_move: now + Duration::from_millis(move_ms * i / players as u64),
            next_chat: now + Duration::from_millis(10_000 * i / players as u64),
            pending: HashMap::new(),
        });
    }
    let mut bytes_in = 0u64;
    let mut latencies: Vec<u64> = Vec::new();
    let mut moves = 0u64;
    let mut refused = 0u64;
    let mut measuring = false;
    let warmup = Duration::from_secs(3);
    let start = Instant::now();
    let mut loaded = ProcessStats::read_pid(&pid).expect("server stats");
    let mut bot_start = ProcessStats::read().expect("own stats");
    let mut measure_start = Instant::now();
    while start.elapsed() < warmup + Duration::from_secs(seconds) {
        if !measuring && start.elapsed() >= warmup {
            measuring = true;
            loaded = ProcessStats::read_pid(&pid).expect("server stats");
            bot_start = ProcessStats::read().expect("own stats");
            measure_start = Instant::now();
            bytes_in = 0;
            latencies.clear();
            moves = 0;
            refused = 0;
        }
        let now = Instant::now();
        for w in walkers.iter_mut() {
            let _ = w.conn.update();
            while let Some(Ok(m)) = w.conn.receive() {
                bytes_in += m.encode().len() as u64;
                match m {
                    ServerMessage::HubWelcome { you, .. } => w.pos = Some((you.x, you.y)),
                    ServerMessage::HubMoves(list) => {
                        for (u, x, y) in list {
                            if u == w.user
                                && let Some(sent) = w.pending.remove(&(x, y))
                            {
                                latencies.push(sent.elapsed().as_micros() as u64);
                            }
                        }
                    }
                    ServerMessage::HubMoveRejected { x, y, .. } => {
                        refused += 1;
                        w.pos = Some((x, y));
                    }
                    _ => {}
                }
            }
            let Some(pos) = w.pos else {
                let _ = w.conn.flush_if_due(false);
                continue;
            };
            if now >= w.next_move {
                // Walk back and forth along x, 100 units a step (well within walking speed).
                let mut to = (pos.0 + 100 * w.dir, pos.1);
                if !(2_000..=hub::WIDTH - 2_000).contains(&to.0) {
                    w.dir = -w.dir;
                    to = (pos.0 + 100 * w.dir, pos.1);
                }
                w.conn.send(&ClientMessage::HubMove { x: to.0, y: to.1 });
                w.pending.insert(to, now);
                w.pos = Some(to);
                w.next_move = now + Duration::from_millis(move_ms);
                moves += 1;
                if now >= w.next_chat {
                    w.conn.send(&ClientMessage::HubChat {
                        text: "nice crops today".into(),
                    });
                    w.next_chat = now + Duration::from_secs(10);
                }
                let _ = w.conn.flush_if_due(true);
            } else {
                let _ = w.conn.flush_if_due(false);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = measure_start.elapsed().as_secs_f64();
    let end = ProcessStats::read_pid(&pid).expect("server stats");
    let bot_end = ProcessStats::read().expect("own stats");
    let cpu = end.cpu_seconds - loaded.cpu_seconds;
    latencies.sort_unstable();
    println!("hub_load: {players} players in one shard, a step every {move_ms} ms, {seconds} s");
    println!(
        "  moves {:.0}/s ({} refused), server CPU {:.1}% of a core, {:.1} us per move",
        moves as f64 / elapsed,
        refused,
        100.0 * cpu / elapsed,
        cpu * 1e6 / moves.max(1) as f64
    );
    println!(
        "  received per player: {:.1} KB/s of messages; move -> seen in HubMoves p50 {:.1} ms p99 {:.1} ms ({} samples)",
        bytes_in as f64 / elapsed / players as f64 / 1000.0,
        percentile(&latencies, 0.5) as f64 / 1000.0,
        percentile(&latencies, 0.99) as f64 / 1000.0,
        latencies.len()
    );
    println!(
        "  server memory {:.1} MiB resident, {:.1} KiB per player; bot process CPU {:.1}% of a core",
        end.resident_bytes as f64 / 1048576.0,
        (end.resident_bytes.saturating_sub(empty.resident_bytes)) as f64 / 1024.0 / players as f64,
        100.0 * (bot_end.cpu_seconds - bot_start.cpu_seconds) / elapsed
    );
    drop(server);
    anyhow::ensure!(moves > 0, "no move was made");
    anyhow::ensure!(
        !latencies.is_empty(),
        "no move was seen by the other players"
    );
    Ok(())
}
