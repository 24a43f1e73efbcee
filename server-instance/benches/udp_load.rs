//! R concurrent matches over real UDP on loopback, played by bots from this one process against
//! the release `server-instance` binary. Each move is sent 100 ms (+-20%) after the player's
//! previous event. Prints moves/s, server CPU microseconds per move, move-to-ack p50/p99 and
//! server memory per match.
//!
//! cargo bench -p server-instance --bench udp_load -- [matches] [seconds] [think_ms]
//!
//! First, the machine's ceiling for the same traffic in the same run: a std-only UDP server
//! (this executable again, `CROFT_UDP_ECHO=1`) that answers each move datagram to its sender
//! and forwards it to the opponent (one datagram in and two out per move, a system call each,
//! no encryption, no state), driven by the same number of matches at the same pace. Its server
//! CPU per move is the floor croft's figure is compared with. `--no-echo` skips it.
//! Datagrams per move (both ways, all of the machine's UDP, from `/proc/net/snmp`) are printed
//! for both.
//!
//! `CROFT_BENCH_SERVER=PATH` measures another `server-instance` binary (an older build, for a
//! before/after in one session).

use std::io::{BufRead, ErrorKind};
use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use contracts::instance::v1::ReadyInfo;
use headless_bot::dev::DevMatchmaker;
use headless_bot::{MatchPlayer, Pacing, percentile};
use shared_sim::GameData;
use telemetry::ProcessStats;

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The echo server's size of a move datagram (about a netcode payload packet with one move).
const ECHO_DATAGRAM: usize = 64;

/// The echo server: every datagram goes back to its sender and on to the port in its first two
/// bytes (the opponent's, on loopback). Prints its port, then serves until killed.
fn echo_server() -> anyhow::Result<()> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    println!("{}", socket.local_addr()?.port());
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        if n < 4 {
            continue;
        }
        let opponent = u16::from_le_bytes([buf[0], buf[1]]);
        socket.send_to(&buf[..n], from)?;
        socket.send_to(&buf[..n], (Ipv4Addr::LOCALHOST, opponent))?;
    }
}

/// UDP datagrams the machine delivered so far (`Udp: InDatagrams` in `/proc/net/snmp`).
fn udp_datagrams() -> u64 {
    let text = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "InDatagrams")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

struct EchoFigures {
    us_per_move: f64,
    datagrams_per_move: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `matches` pairs of sockets take turns through the echo server, a move `pacing` after
/// the opponent's; measured for `seconds` after a 2 s warm-up.
fn echo_baseline(matches: usize, seconds: u64, pacing: Pacing) -> anyhow::Result<EchoFigures> {
    let mut child = Server(
        Command::new(std::env::current_exe()?)
            .env("CROFT_UDP_ECHO", "1")
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().expect("piped stdout")).read_line(&mut line)?;
    let port: u16 = line.trim().parse()?;
    let pid = child.0.id().to_string();

    struct Seat {
        socket: UdpSocket,
        port: u16,
    }
    struct Match {
        seats: [Seat; 2],
        turn: usize,
        due: Instant,
        /// The mover's move is out and the opponent has not seen it yet (resent after 500 ms).
        sent: Option<Instant>,
        /// Per seat: when its move went out, until its answer came.
        waiting: [Option<Instant>; 2],
    }
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let seat = || -> anyhow::Result<Seat> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        socket.connect((Ipv4Addr::LOCALHOST, port))?;
        socket.set_nonblocking(true)?;
        let port = socket.local_addr()?.port();
        Ok(Seat { socket, port })
    };
    let mut games = Vec::with_capacity(matches);
    for _ in 0..matches {
        games.push(Match {
            seats: [seat()?, seat()?],
            turn: 0,
            due: Instant::now() + pacing.delay(&mut rng),
            sent: None,
            waiting: [None; 2],
        });
    }
    let mut latencies = Vec::new();
    let mut moves = 0u64;
    let mut resent = 0u64;
    let mut run = |games: &mut Vec<Match>,
                   rng: &mut u64,
                   how_long: Duration,
                   record: bool,
                   latencies: &mut Vec<u64>,
                   moves: &mut u64|
     -> anyhow::Result<()> {
        let start = Instant::now();
        let mut buf = [0u8; 1500];
        while start.elapsed() < how_long {
            let loop_start = Instant::now();
            for g in games.iter_mut() {
                let now = Instant::now();
                let stale = g
                    .sent
                    .is_some_and(|at| now - at > Duration::from_millis(500));
                if (g.sent.is_none() && now >= g.due) || stale {
                    resent += u64::from(stale);
                    let mover = &g.seats[g.turn];
                    let opponent = g.seats[1 - g.turn].port;
                    let mut d = [0u8; ECHO_DATAGRAM];
                    d[..2].copy_from_slice(&opponent.to_le_bytes());
                    d[2..4].copy_from_slice(&mover.port.to_le_bytes());
                    mover.socket.send(&d)?;
                    g.sent = Some(now);
                    if stale {
                        // A resend: the latency counts from the first send.
                        g.waiting[g.turn].get_or_insert(now);
                    } else {
                        // A new move: an answer lost before it is not waited for.
                        g.waiting[g.turn] = Some(now);
                    }
                }
                for i in 0..2 {
                    loop {
                        let n = match g.seats[i].socket.recv(&mut buf) {
                            Ok(n) => n,
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e.into()),
                        };
                        if n < 4 {
                            continue;
                        }
                        let mover = u16::from_le_bytes([buf[2], buf[3]]);
                        let now = Instant::now();
                        if mover == g.seats[i].port {
                            // The answer to this seat's own move.
                            if let Some(at) = g.waiting[i].take()
                                && record
                            {
                                latencies.push((now - at).as_micros() as u64);
                                *moves += 1;
                            }
                        } else if i != g.turn {
                            // The opponent's move: this seat's turn now.
                            g.turn = i;
                            g.sent = None;
                            g.due = now + pacing.delay(rng);
                        }
                    }
                }
            }
            if let Some(rest) = Duration::from_millis(5).checked_sub(loop_start.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        Ok(())
    };
    run(
        &mut games,
        &mut rng,
        Duration::from_secs(2),
        false,
        &mut latencies,
        &mut moves,
    )?;
    let before = ProcessStats::read_pid(&pid).expect("echo server stats");
    let datagrams_before = udp_datagrams();
    let window = Duration::from_secs(seconds);
    run(
        &mut games,
        &mut rng,
        window,
        true,
        &mut latencies,
        &mut moves,
    )?;
    let after = ProcessStats::read_pid(&pid).expect("echo server stats");
    // Loopback IPv4 only (`/proc/net/snmp`), which is all this bench sends.
    let datagrams = udp_datagrams().saturating_sub(datagrams_before);
    drop(child);
    anyhow::ensure!(moves > 0, "the echo server answered no move");
    anyhow::ensure!(datagrams > 0, "no UDP datagrams counted in /proc/net/snmp");
    latencies.sort_unstable();
    let cpu = after.cpu_seconds - before.cpu_seconds;
    println!(
        "udp echo baseline (std only, 1 in + 2 out per move): {matches} matches, {moves} moves ({:.0}/s), {resent} resent",
        moves as f64 / window.as_secs_f64()
    );
    let figures = EchoFigures {
        us_per_move: cpu * 1e6 / moves as f64,
        datagrams_per_move: datagrams as f64 / moves as f64,
        p50_ms: percentile(&latencies, 0.5) as f64 / 1e3,
        p99_ms: percentile(&latencies, 0.99) as f64 / 1e3,
    };
    println!(
        "  server CPU {:.2} s ({:.1}% of a core) = {:.1} us per move; {:.2} datagrams per move; move -> answer p50 {:.2} ms p99 {:.2} ms",
        cpu,
        100.0 * cpu / window.as_secs_f64(),
        figures.us_per_move,
        figures.datagrams_per_move,
        figures.p50_ms,
        figures.p99_ms
    );
    Ok(figures)
}

fn main() -> anyhow::Result<()> {
    if std::env::var_os("CROFT_UDP_ECHO").is_some() {
        return echo_server();
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let matches: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(200);
    let seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    let think_ms: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100);
    anyhow::ensure!(
        matches > 0 && seconds > 0,
        "matches and seconds must be at least 1"
    );
    let pacing = Pacing {
        think: Duration::from_millis(think_ms),
        jitter: 0.2,
    };
    let echo = if std::env::args().any(|a| a == "--no-echo") {
        None
    } else {
        Some(echo_baseline(matches, seconds, pacing)?)
    };

    let dir = std::env::temp_dir().join(format!("croft-udp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let key = token::NetcodeKey::generate()?;
    key.write_file(&dir.join("netcode.key"))?;
    let control = token::generate_secret()?;
    std::fs::write(dir.join("control.token"), &control)?;
    let cards = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/cards");
    let shards = matches.div_ceil(400).max(1);
    let ready_file = dir.join("ready.json");
    let child = Command::new(
        std::env::var_os("CROFT_BENCH_SERVER")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_server-instance").into()),
    )
    .args(["--udp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
    .arg("--shards")
    .arg(shards.to_string())
    .arg("--max-matches")
    .arg((matches * 2).to_string())
    .arg("--netcode-key-file")
    .arg(dir.join("netcode.key"))
    .arg("--control-token-file")
    .arg(dir.join("control.token"))
    .arg("--cards")
    .arg(&cards)
    .arg("--match-log")
    .arg(dir.join("matches.jsonl"))
    .arg("--ready-file")
    .arg(&ready_file)
    .env("RUST_LOG", "warn")
    .stdout(Stdio::null())
    .spawn()?;
    let mut server = Server(child);
    let pid = server.0.id().to_string();
    let started = Instant::now();
    let ready: ReadyInfo = loop {
        if let Ok(b) = std::fs::read(&ready_file)
            && let Ok(r) = serde_json::from_slice(&b)
        {
            break r;
        }
        if let Some(status) = server.0.try_wait()? {
            anyhow::bail!("server-instance exited before it was ready: {status}");
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "server-instance not ready after 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(300));
    let idle = ProcessStats::read_pid(&pid).expect("server stats");

    let data = Arc::new(GameData::load_dir(&cards).map_err(|e| anyhow::anyhow!("{e}"))?);
    let mm = DevMatchmaker::new(
        format!("http://{}", ready.http),
        control,
        token::ConnectTokenIssuer::new(key),
        1,
    )?;
    let new_match = |users: [u64; 2]| -> anyhow::Result<Vec<MatchPlayer>> {
        let (id, tokens) = mm.create_match(users, ["starter_ember", "starter_grove"])?;
        let mut out = Vec::new();
        for (u, t) in users.into_iter().zip(tokens) {
            out.push(MatchPlayer::new(u, id, t, data.clone(), pacing)?);
        }
        Ok(out)
    };
    let mut slots: Vec<Vec<MatchPlayer>> = Vec::with_capacity(matches);
    for i in 0..matches as u64 {
        slots.push(new_match([10_000 + 2 * i, 10_001 + 2 * i])?);
    }
    let poll_all = |slots: &mut Vec<Vec<MatchPlayer>>, for_how_long: Duration| {
        let start = Instant::now();
        while start.elapsed() < for_how_long {
            for p in slots.iter_mut().flatten() {
                p.poll(&mm);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    // Idle floor: everyone connected, nobody moving.
    for p in slots.iter_mut().flatten() {
        p.hold = true;
    }
    poll_all(&mut slots, Duration::from_secs(3));
    let idle_start = ProcessStats::read_pid(&pid).expect("server stats");
    let idle_window = Duration::from_secs(5);
    poll_all(&mut slots, idle_window);
    let idle_end = ProcessStats::read_pid(&pid).expect("server stats");
    let idle_cpu_per_s =
        (idle_end.cpu_seconds - idle_start.cpu_seconds) / idle_window.as_secs_f64();
    // Warm-up: everyone playing.
    for p in slots.iter_mut().flatten() {
        p.hold = false;
    }
    poll_all(&mut slots, Duration::from_secs(3));
    let loaded = ProcessStats::read_pid(&pid).expect("server stats");
    let bot_start = ProcessStats::read().expect("own stats");
    let acks_before: u64 = slots
        .iter()
        .flatten()
        .map(|p| p.stats.ack_latencies_us.len() as u64)
        .sum();
    let datagrams_start = udp_datagrams();
    let mut lat_start: Vec<usize> = slots
        .iter()
        .flatten()
        .map(|p| p.stats.ack_latencies_us.len())
        .collect();

    let start = Instant::now();
    let mut finished_matches = 0u64;
    let mut create_retries = 0u64;
    let mut next_user = 10_000 + 2 * matches as u64;
    let mut failed_bots = 0usize;
    let mut acks_retired = 0u64;
    let mut latencies = Vec::new();
    let poll_every = Duration::from_millis(5);
    while start.elapsed() < Duration::from_secs(seconds) {
        let loop_start = Instant::now();
        for slot in slots.iter_mut() {
            for p in slot.iter_mut() {
                p.poll(&mm);
            }
        }
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.iter().all(|p| p.is_done()) {
                for p in slot.iter() {
                    if let headless_bot::PlayerState::Failed(why) = &p.state {
                        failed_bots += 1;
                        if failed_bots <= 3 {
                            eprintln!("bot {} failed: {why}", p.user_id);
                        }
                    }
                }
                // Fresh users: a failed bot's match may still be running on the server.
                let users = [next_user, next_user + 1];
                next_user += 2;
                let Ok(next) = new_match(users) else {
                    create_retries += 1;
                    continue;
                };
                finished_matches += 1;

                for (j, p) in slot.iter().enumerate() {
                    let from = lat_start[i * 2 + j].min(p.stats.ack_latencies_us.len());
                    latencies.extend_from_slice(&p.stats.ack_latencies_us[from..]);
                    acks_retired += p.stats.ack_latencies_us.len() as u64;
                }
                *slot = next;
                lat_start[i * 2] = 0;
                lat_start[i * 2 + 1] = 0;
            }
        }
        if let Some(rest) = poll_every.checked_sub(loop_start.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let end = ProcessStats::read_pid(&pid).expect("server stats");
    let datagrams = udp_datagrams().saturating_sub(datagrams_start);
    let bot_end = ProcessStats::read().expect("own stats");
    for (i, p) in slots.iter().flatten().enumerate() {
        latencies.extend_from_slice(
            &p.stats.ack_latencies_us[lat_start[i].min(p.stats.ack_latencies_us.len())..],
        );
    }
    let acks_now: u64 = acks_retired
        + slots
            .iter()
            .flatten()
            .map(|p| p.stats.ack_latencies_us.len() as u64)
            .sum::<u64>();
    let moves = acks_now - acks_before;
    latencies.sort_unstable();
    let cpu = end.cpu_seconds - loaded.cpu_seconds;
    let failed = failed_bots
        + slots
            .iter()
            .flatten()
            .filter(|p| matches!(p.state, headless_bot::PlayerState::Failed(_)))
            .count();
    println!(
        "udp_load: {matches} concurrent matches ({} bots, {shards} netcode socket(s)), think {think_ms} ms +-20%, {elapsed:.1} s measured",
        matches * 2
    );
    println!(
        "  moves acknowledged {moves} ({:.0}/s), matches finished {finished_matches}, failed bots {failed}, create retries {create_retries}",
        moves as f64 / elapsed
    );
    let us_per_move = cpu * 1e6 / moves.max(1) as f64;
    println!(
        "  server CPU {:.2} s ({:.1}% of a core) = {:.1} us per move; {:.2} datagrams per move",
        cpu,
        100.0 * cpu / elapsed,
        us_per_move,
        datagrams as f64 / moves.max(1) as f64
    );
    let marginal = (cpu - idle_cpu_per_s * elapsed).max(0.0);
    println!(
        "  idle floor with all bots connected: {:.1}% of a core; above it {:.1} us per move",
        100.0 * idle_cpu_per_s,
        marginal * 1e6 / moves.max(1) as f64
    );
    println!(
        "  move -> ack p50 {:.2} ms p99 {:.2} ms",
        percentile(&latencies, 0.5) as f64 / 1e3,
        percentile(&latencies, 0.99) as f64 / 1e3
    );
    println!(
        "  server RSS idle {} MiB, loaded {} MiB: {:.1} KiB per match",
        idle.resident_bytes >> 20,
        loaded.resident_bytes >> 20,
        (loaded.resident_bytes.saturating_sub(idle.resident_bytes)) as f64
            / matches as f64
            / 1024.0
    );
    println!(
        "  bot process CPU {:.1}% of a core",
        100.0 * (bot_end.cpu_seconds - bot_start.cpu_seconds) / elapsed
    );
    // (A smoke run's echo server may use no measurable CPU at all.)
    if let Some(echo) = echo.as_ref().filter(|e| e.us_per_move > 0.0) {
        println!(
            "  against the echo baseline: {:.2}x its CPU per move ({:.1} us), {:.2}x its datagrams per move",
            us_per_move / echo.us_per_move,
            echo.us_per_move,
            datagrams as f64 / moves.max(1) as f64 / echo.datagrams_per_move
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(moves > 0, "no move was acknowledged");
    anyhow::ensure!(failed == 0, "{failed} bots failed");
    Ok(())
}
