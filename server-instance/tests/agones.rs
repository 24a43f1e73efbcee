//! The instance server under Agones, against a local stand-in of the SDK sidecar generated from
//! the `agones` crate's own `sdk.proto` (tools/agones-standin), and without Agones.
//!
//! The GameServer's port is a host port that differs from the container port the socket binds,
//! as under `portPolicy: Dynamic`; a small UDP port map in the test plays the node's NAT.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agones_standin::{Call, Setup, StandIn};
use common::{Instance, game_data};
use headless_bot::{MatchPlayer, Pacing, PlayerState, Summary, run_until_done};

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Forwards UDP from `host` to `container` with one upstream socket per client and back: the
/// node's port mapping of an Agones host port.
struct PortMap {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PortMap {
    fn start(host: u16, container: SocketAddr) -> PortMap {
        let front = UdpSocket::bind(("127.0.0.1", host)).unwrap();
        front.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut upstream: HashMap<SocketAddr, UdpSocket> = HashMap::new();
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                let mut busy = false;
                while let Ok((n, from)) = front.recv_from(&mut buf) {
                    busy = true;
                    let up = upstream.entry(from).or_insert_with(|| {
                        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                        s.connect(container).unwrap();
                        s.set_nonblocking(true).unwrap();
                        s
                    });
                    let _ = up.send(&buf[..n]);
                }
                for (client, up) in &upstream {
                    while let Ok(n) = up.recv(&mut buf) {
                        busy = true;
                        let _ = front.send_to(&buf[..n], client);
                    }
                }
                if !busy {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        PortMap {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PortMap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ready_calls(standin: &StandIn) -> usize {
    standin
        .calls()
        .iter()
        .filter(|c| **c == Call::Ready)
        .count()
}

#[test]
fn under_agones_the_server_follows_the_game_server_lifecycle() {
    let host_port = free_udp_port();
    let container_port = free_udp_port();
    let standin = StandIn::start(Setup {
        address: "127.0.0.1".into(),
        ports: vec![("netcode".into(), host_port)],
        counters: vec![("matches".into(), 0, 448)],
        ..Setup::default()
    })
    .unwrap();
    let udp = format!("127.0.0.1:{container_port}");
    let mut inst = Instance::start_env(
        &[
            "--agones",
            "--udp",
            &udp,
            "--max-matches",
            "3",
            "--agones-idle-ready-seconds",
            "1",
        ],
        &[("AGONES_SDK_GRPC_PORT", standin.port().to_string())],
    );
    let _nat = PortMap::start(host_port, udp.parse().unwrap());

    // Tokens name the GameServer's address and host port, not the bound socket.
    assert_eq!(
        inst.ready.udp,
        vec![SocketAddr::from(([127, 0, 0, 1], host_port))]
    );
    // Ready, with this server's capacity on the counter, and health pings from the tick.
    assert!(
        standin.wait_until(Duration::from_secs(10), |s| s.state() == "Ready"
            && s.counter("matches") == Some((0, 3))
            && s.health_pings() >= 2),
        "state {} counter {:?} pings {} calls {:?}",
        standin.state(),
        standin.counter("matches"),
        standin.health_pings(),
        standin.calls()
    );

    // Matchmaking's allocation increments the counter twice, but only one match arrives: the
    // server sets the counter back to what really runs.
    standin.allocate("matches", 1).unwrap();
    standin.allocate("matches", 1).unwrap();
    assert_eq!(standin.state(), "Allocated");
    let mm = inst.matchmaker(1);
    let (match_id, tokens) = mm
        .create_match([11, 12], ["starter_ember", "starter_grove"])
        .expect("match created");
    assert!(
        standin.wait_until(Duration::from_secs(10), |s| s.counter("matches")
            == Some((1, 3))),
        "counter {:?}",
        standin.counter("matches")
    );
    assert_eq!(standin.state(), "Allocated");

    // Two bots play it to the end through the host port.
    let data = game_data();
    let fast = Pacing {
        think: Duration::from_millis(10),
        jitter: 0.2,
    };
    let mut players: Vec<MatchPlayer> = [11, 12]
        .into_iter()
        .zip(tokens)
        .map(|(u, t)| MatchPlayer::new(u, match_id, t, data.clone(), fast).unwrap())
        .collect();
    run_until_done(
        &mut players,
        &mm,
        Duration::from_secs(120),
        Duration::from_millis(2),
    );
    let summary = Summary::of(&players);
    assert_eq!(summary.finished, 2, "{summary} {:?}", summary.failures);
    assert!(
        players
            .iter()
            .all(|p| matches!(p.state, PlayerState::Finished(_)))
    );

    // Empty again: the counter drops to 0 and, idle for a second, the server returns to Ready.
    assert!(
        standin.wait_until(Duration::from_secs(15), |s| s.counter("matches")
            == Some((0, 3))
            && s.state() == "Ready"),
        "state {} counter {:?}",
        standin.state(),
        standin.counter("matches")
    );
    assert_eq!(ready_calls(&standin), 2);
    let pings = standin.health_pings();
    assert!(
        standin.wait_until(Duration::from_secs(5), |s| s.health_pings() > pings),
        "health pings go on"
    );

    // Drain: no more allocations (capacity 0), then Shutdown and exit.
    let r = inst
        .http()
        .post(format!("{}/v1/drain", inst.control_url()))
        .bearer_auth(&inst.control_token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let status = inst
        .wait_exit(Duration::from_secs(15))
        .expect("server exits after draining");
    assert!(status.success(), "{status}");
    assert_eq!(standin.state(), "Shutdown");
    assert_eq!(standin.counter("matches"), Some((0, 0)));
    let calls = standin.calls();
    assert_eq!(calls.last(), Some(&Call::Shutdown), "{calls:?}");
    assert_eq!(
        calls.iter().filter(|c| **c == Call::Shutdown).count(),
        1,
        "{calls:?}"
    );
}

#[test]
fn without_agones_the_server_never_calls_the_sdk() {
    let standin = StandIn::start(Setup::default()).unwrap();
    let started = Instant::now();
    let inst = Instance::start_env(&[], &[("AGONES_SDK_GRPC_PORT", standin.port().to_string())]);
    // Up without waiting for any sidecar (the SDK's connect would block for 30 s).
    assert!(started.elapsed() < Duration::from_secs(20));
    let mm = inst.matchmaker(1);
    let summary = headless_bot::dev::play_matches(
        &mm,
        &game_data(),
        1,
        21,
        Pacing {
            think: Duration::from_millis(10),
            jitter: 0.2,
        },
        Duration::from_secs(120),
    )
    .unwrap();
    assert_eq!(summary.finished, 2, "{summary} {:?}", summary.failures);
    assert!(standin.calls().is_empty(), "{:?}", standin.calls());
    assert_eq!(standin.health_pings(), 0);
    assert_eq!(standin.state(), "Scheduled");
}

#[test]
fn with_agones_but_no_sidecar_the_server_stops_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("croft-agones-none-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = token::NetcodeKey::generate().unwrap();
    key.write_file(&dir.join("netcode.key")).unwrap();
    std::fs::write(dir.join("control.token"), token::generate_secret().unwrap()).unwrap();
    // A port nothing listens on.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_server-instance"))
        .args([
            "--agones",
            "--agones-connect-seconds",
            "1",
            "--udp",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .arg("--netcode-key-file")
        .arg(dir.join("netcode.key"))
        .arg("--control-token-file")
        .arg(dir.join("control.token"))
        .arg("--cards")
        .arg(common::cards_dir())
        .arg("--match-log")
        .arg(dir.join("matches.jsonl"))
        .env("AGONES_SDK_GRPC_PORT", unused.to_string())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Agones SDK sidecar did not answer within 1s"),
        "{stderr}"
    );
}
