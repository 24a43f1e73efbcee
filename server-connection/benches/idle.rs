//! Idle connected clients on one connection server process: CPU share of one core and memory
//! per client while N logged-in players sit idle (keep-alives only), with the load generator
//! (this process) beside it on the same machine.
//!
//! `cargo bench -p server-connection --bench idle -- [CLIENTS] [SECONDS]` (default 10000, 20).
//! Exits non-zero when a client is not logged in or drops, or the server does not start.
//! `CROFT_BENCH_SERVER=PATH` measures another `server-connection` binary (an older build, for
//! a before/after in one session).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use headless_bot::Connection;
use shared_sim::protocol::{LOBBY_KEEPALIVE, LobbyServerMessage, TokenKind, TokenUserData};

fn proc_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn proc_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The server process, stopped however the bench ends (a panic included).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let clients: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    assert!(
        clients > 0 && seconds > 0,
        "CLIENTS and SECONDS must be at least 1"
    );

    let dir = std::env::temp_dir().join(format!("croft-idle-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = token::NetcodeKey::generate().unwrap();
    key.write_file(&dir.join("netcode.key")).unwrap();
    std::fs::write(dir.join("service.token"), token::generate_secret().unwrap()).unwrap();
    let db = format!("sqlite://{}/croft.db", dir.display());

    // The accounts the clients log in as.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ids: Vec<u64> = rt.block_on(async {
        let store = store::Store::connect(&db, &store::PoolSettings::default())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let mut ids = Vec::with_capacity(clients);
        for i in 0..clients {
            let u = store
                .create_user(&format!("idle-{i}"), "$argon2id$not-a-real-hash")
                .await
                .unwrap();
            ids.push(u.id as u64);
        }
        ids
    });

    let ready = dir.join("ready.json");
    let cards = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/cards");
    let server = Command::new(
        std::env::var_os("CROFT_BENCH_SERVER")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_server-connection").into()),
    )
    .args(["--udp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
    .arg("--cards")
    .arg(&cards)
    .args(["--max-clients", &clients.to_string()])
    .args(["--database", &db])
    // Nothing listens here: the revocation and matchmaking polls fail fast and retry.
    .args([
        "--auth-url",
        "http://127.0.0.1:9",
        "--matchmaking-url",
        "http://127.0.0.1:9",
    ])
    .arg("--netcode-key-file")
    .arg(dir.join("netcode.key"))
    .arg("--service-token-file")
    .arg(dir.join("service.token"))
    .arg("--ready-file")
    .arg(&ready)
    .env("RUST_LOG", "warn")
    .stdout(Stdio::null())
    .spawn()
    .expect("starting server-connection");
    let mut server = Server(server);
    let pid = server.0.id();
    let started = Instant::now();
    let info: server_connection::ReadyInfo = loop {
        if let Ok(b) = std::fs::read(&ready)
            && let Ok(i) = serde_json::from_slice(&b)
        {
            break i;
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("server-connection exited before it was ready: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "server-connection not ready after 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_secs(1));
    let rss_before = proc_rss_kib(pid);
    let issuer = token::ConnectTokenIssuer::new(key);

    // Connect in batches, spreading over the sockets the way the auth service does.
    let start = Instant::now();
    let mut conns: Vec<(Connection, bool)> = Vec::with_capacity(clients);
    let mut welcomed = 0usize;
    let pump = |conns: &mut Vec<(Connection, bool)>, welcomed: &mut usize| {
        for (c, ok) in conns.iter_mut() {
            if c.update().is_err() {
                continue;
            }
            let mut received = false;
            while let Some(b) = c.receive_raw() {
                received = true;
                if matches!(
                    LobbyServerMessage::decode(&b),
                    Ok(LobbyServerMessage::Welcome { .. })
                ) && !*ok
                {
                    *ok = true;
                    *welcomed += 1;
                }
            }
            let _ = if received {
                c.flush()
            } else {
                c.flush_if_due(false)
            };
        }
    };
    for (i, id) in ids.iter().enumerate() {
        let mut servers: Vec<SocketAddr> = info.udp.clone();
        let n = servers.len();
        servers.rotate_left(i % n);
        let data = TokenUserData {
            kind: TokenKind::Connection,
            user_id: *id,
            match_id: 0,
            session_id: token::revocation::session_tag(&format!("s{i}")),
        };
        let t = issuer.mint(&servers, data).unwrap();
        let mut c = Connection::connect(t).unwrap();
        c.set_keepalive(LOBBY_KEEPALIVE);
        conns.push((c, false));
        if i % 250 == 249 {
            pump(&mut conns, &mut welcomed);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while welcomed < clients && Instant::now() < deadline {
        pump(&mut conns, &mut welcomed);
        std::thread::sleep(Duration::from_millis(20));
    }
    let connect_time = start.elapsed();
    println!(
        "connection server idle: {welcomed}/{clients} clients logged in over {} sockets in {:.1} s",
        info.udp.len(),
        connect_time.as_secs_f64()
    );
    // Let the login burst settle, then measure the idle steady state.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(5) {
        pump(&mut conns, &mut welcomed);
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu0 = proc_cpu_seconds(pid);
    let own0 = proc_cpu_seconds(std::process::id());
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(seconds) {
        pump(&mut conns, &mut welcomed);
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = proc_cpu_seconds(pid) - cpu0;
    let own = proc_cpu_seconds(std::process::id()) - own0;
    let rss_after = proc_rss_kib(pid);
    let still = conns.iter_mut().filter(|(c, _)| c.is_connected()).count();
    println!(
        "  idle for {wall:.0} s: server CPU {:.1}% of one core; load generator {:.1}%",
        100.0 * cpu / wall,
        100.0 * own / wall
    );
    println!(
        "  server RSS {} KiB before clients, {} KiB with them: {:.2} KiB per client",
        rss_before,
        rss_after,
        (rss_after.saturating_sub(rss_before)) as f64 / clients as f64
    );
    println!("  still connected at the end: {still}/{clients}");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let stop = Instant::now();
    while !matches!(server.0.try_wait(), Ok(Some(_))) && stop.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(server);
    drop(conns);
    let _ = std::fs::remove_dir_all(Path::new(&dir));
    assert_eq!(welcomed, clients, "clients not logged in");
    assert_eq!(still, clients, "clients dropped while idle");
}
