//! The client core's cost and the WebSocket path against the UDP path, in one run against one
//! release `server-instance` (with `--ws`) on loopback. Two phases of `matches` concurrent
//! matches each, first every bot over UDP, then every bot over WebSocket, played by the
//! headless bot's policy from this one process (each move 100 ms +-20% after the player's
//! previous event). For each phase it prints: moves/s, move -> answer (`ActionAccepted`)
//! p50/p99, server CPU per move, and the client side: this process's
//! CPU per connected client and per move, and its memory per connected client (RSS growth from
//! connecting `matches` held matches of each kind before any play, both sets connected at
//! once).
//!
//! cargo bench -p server-instance --bench client_paths -- [matches] [seconds] [think_ms]
//!
//! `CROFT_BENCH_SERVER=PATH` measures another `server-instance` binary.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Instance, game_data};
use croft_client::Route;
use headless_bot::{MatchPlayer, Pacing, PlayerState, percentile};
use shared_sim::GameData;
use telemetry::ProcessStats;

struct Phase {
    name: &'static str,
    clients: usize,
    moves: u64,
    seconds: f64,
    latencies: Vec<u64>,
    server_cpu: f64,
    client_cpu: f64,
    client_rss_per_client: f64,
    failed: usize,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let matches: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(100);
    let seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let think_ms: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100);
    anyhow::ensure!(
        matches > 0 && seconds > 0,
        "matches and seconds must be at least 1"
    );
    // The memory sets and the first phase's matches stay on the server (their players dropped,
    // within the reconnect grace) while later ones start: room for all of them.
    let max = (matches * 8).to_string();
    let shards = (matches * 8).div_ceil(400).to_string();
    let server = Instance::start(&[
        "--ws",
        "127.0.0.1:0",
        "--max-matches",
        &max,
        "--shards",
        &shards,
    ]);
    let ws_url = server
        .ready
        .ws
        .clone()
        .expect("the server has a WebSocket URL");
    let pacing = Pacing {
        think: Duration::from_millis(think_ms),
        jitter: 0.2,
    };
    let data = game_data();
    let ws = Route::Ws {
        url: ws_url,
        tls: None,
    };
    // Memory first, with both sets connected at once (nothing freed in between, so neither
    // reuses the other's freed memory): each set's RSS growth over its clients.
    let memory = connected_memory(&server, [Route::Udp, ws.clone()], &data, pacing, matches)?;
    let mut udp = run_phase(
        &server,
        "udp",
        Route::Udp,
        &data,
        pacing,
        matches,
        seconds,
        0,
    )?;
    let mut ws = run_phase(&server, "websocket", ws, &data, pacing, matches, seconds, 1)?;
    udp.client_rss_per_client = memory[0];
    ws.client_rss_per_client = memory[1];
    println!(
        "client_paths: {matches} concurrent matches ({} clients) per phase, think {think_ms} ms +-20%, {seconds} s measured per phase",
        matches * 2
    );
    for p in [&udp, &ws] {
        let per_s = p.moves as f64 / p.seconds;
        println!(
            "  {:<9} moves {} ({per_s:.0}/s), move -> answer p50 {:.2} ms p99 {:.2} ms, failed bots {}",
            p.name,
            p.moves,
            percentile(&p.latencies, 0.5) as f64 / 1e3,
            percentile(&p.latencies, 0.99) as f64 / 1e3,
            p.failed
        );
        println!(
            "  {:<9} server {:.1} us per move ({:.1}% of a core); client process {:.1}% of a core = {:.2}% per 100 clients, {:.1} us per move; client memory {:.1} KiB per connected client",
            "",
            p.server_cpu * 1e6 / p.moves.max(1) as f64,
            100.0 * p.server_cpu / p.seconds,
            100.0 * p.client_cpu / p.seconds,
            100.0 * p.client_cpu / p.seconds * 100.0 / p.clients as f64,
            p.client_cpu * 1e6 / p.moves.max(1) as f64,
            p.client_rss_per_client / 1024.0
        );
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!(
        "  websocket / udp: moves/s {:.2}x, p50 {:.2}x, p99 {:.2}x, server us/move {:.2}x, client us/move {:.2}x",
        ratio(ws.moves as f64 / ws.seconds, udp.moves as f64 / udp.seconds),
        ratio(
            percentile(&ws.latencies, 0.5) as f64,
            percentile(&udp.latencies, 0.5) as f64
        ),
        ratio(
            percentile(&ws.latencies, 0.99) as f64,
            percentile(&udp.latencies, 0.99) as f64
        ),
        ratio(
            ws.server_cpu / ws.moves.max(1) as f64,
            udp.server_cpu / udp.moves.max(1) as f64
        ),
        ratio(
            ws.client_cpu / ws.moves.max(1) as f64,
            udp.client_cpu / udp.moves.max(1) as f64
        ),
    );
    for p in [&udp, &ws] {
        anyhow::ensure!(p.moves > 0, "{}: no move was answered", p.name);
        anyhow::ensure!(p.failed == 0, "{}: {} bots failed", p.name, p.failed);
    }
    Ok(())
}

/// Connects `matches` matches by `route`, lets them settle, then measures `seconds` of play
/// (finished matches are replaced by new ones on the same route).
#[allow(clippy::too_many_arguments)]
fn run_phase(
    server: &Instance,
    name: &'static str,
    route: Route,
    data: &Arc<GameData>,
    pacing: Pacing,
    matches: usize,
    seconds: u64,
    phase: u64,
) -> anyhow::Result<Phase> {
    let pid = server.pid().to_string();
    let mm = server.matchmaker(1 + phase * 1_000_000);
    let mut users = 100_000 + phase * 10_000_000;
    let mut slots = Vec::with_capacity(matches);
    for _ in 0..matches {
        slots.push(new_match(&mm, &route, &mut users, data, pacing)?);
    }
    let poll = |slots: &mut Vec<Vec<MatchPlayer>>, mm: &headless_bot::dev::DevMatchmaker| {
        for p in slots.iter_mut().flatten() {
            p.poll(mm);
        }
    };
    let clients = matches * 2;
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(2) {
        poll(&mut slots, &mm);
        std::thread::sleep(Duration::from_millis(5));
    }
    let counted: Vec<usize> = slots
        .iter()
        .flatten()
        .map(|p| p.stats.ack_latencies_us.len())
        .collect();
    let mut skip: Vec<usize> = counted;
    let server_start = ProcessStats::read_pid(&pid).expect("server stats");
    let client_start = ProcessStats::read().expect("own stats");
    let start = Instant::now();
    let mut latencies = Vec::new();
    let mut failed = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        let loop_start = Instant::now();
        poll(&mut slots, &mm);
        for (i, slot) in slots.iter_mut().enumerate() {
            if !slot.iter().all(|p| p.is_done()) {
                continue;
            }
            for (j, p) in slot.iter().enumerate() {
                if let PlayerState::Failed(why) = &p.state {
                    failed += 1;
                    if failed <= 3 {
                        eprintln!("{name} bot {} failed: {why}", p.user_id);
                    }
                }
                let from = skip[i * 2 + j].min(p.stats.ack_latencies_us.len());
                latencies.extend_from_slice(&p.stats.ack_latencies_us[from..]);
            }
            *slot = new_match(&mm, &route, &mut users, data, pacing)?;
            skip[i * 2] = 0;
            skip[i * 2 + 1] = 0;
        }
        if let Some(rest) = Duration::from_millis(5).checked_sub(loop_start.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let server_end = ProcessStats::read_pid(&pid).expect("server stats");
    let client_end = ProcessStats::read().expect("own stats");
    for (i, p) in slots.iter().flatten().enumerate() {
        let from = skip[i].min(p.stats.ack_latencies_us.len());
        latencies.extend_from_slice(&p.stats.ack_latencies_us[from..]);
        if matches!(p.state, PlayerState::Failed(_)) {
            failed += 1;
        }
    }
    latencies.sort_unstable();
    // Leave: the next phase starts from an idle server.
    for p in slots.iter_mut().flatten() {
        p.drop_connection();
    }
    std::thread::sleep(Duration::from_millis(500));
    Ok(Phase {
        name,
        clients,
        moves: latencies.len() as u64,
        seconds: elapsed,
        latencies,
        server_cpu: server_end.cpu_seconds - server_start.cpu_seconds,
        client_cpu: client_end.cpu_seconds - client_start.cpu_seconds,
        client_rss_per_client: 0.0,
        failed,
    })
}

/// Connects `matches` held (not moving) matches by each route in turn, every set staying
/// connected; the process's RSS growth per client for each set.
fn connected_memory(
    server: &Instance,
    routes: [Route; 2],
    data: &Arc<GameData>,
    pacing: Pacing,
    matches: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    let mut sets = Vec::new();
    let mut last = ProcessStats::read().expect("own stats").resident_bytes;
    for (i, route) in routes.into_iter().enumerate() {
        let mm = server.matchmaker(1 + (10 + i as u64) * 1_000_000);
        let mut users = 50_000_000 + i as u64 * 1_000_000;
        let mut players = Vec::new();
        for _ in 0..matches {
            players.extend(new_match(&mm, &route, &mut users, data, pacing)?);
        }
        for p in &mut players {
            p.hold = true;
        }
        sets.push((mm, players));
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_secs(3) {
            for (mm, players) in sets.iter_mut() {
                for p in players.iter_mut() {
                    p.poll(mm);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let now = ProcessStats::read().expect("own stats").resident_bytes;
        out.push(now.saturating_sub(last) as f64 / (matches * 2) as f64);
        last = now;
    }
    for (_, players) in sets.iter_mut() {
        for p in players.iter_mut() {
            p.drop_connection();
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    Ok(out)
}

/// A new match on the server for the next two user ids, both players connecting by `route`.
fn new_match(
    mm: &headless_bot::dev::DevMatchmaker,
    route: &Route,
    next_user: &mut u64,
    data: &Arc<GameData>,
    pacing: Pacing,
) -> anyhow::Result<Vec<MatchPlayer>> {
    let users = [*next_user, *next_user + 1];
    *next_user += 2;
    let (id, tokens) = mm.create_match(users, ["starter_ember", "starter_grove"])?;
    let mut out = Vec::new();
    for (u, t) in users.into_iter().zip(tokens) {
        out.push(MatchPlayer::new_by(
            route.clone(),
            u,
            id,
            t,
            data.clone(),
            pacing,
        )?);
    }
    Ok(out)
}
