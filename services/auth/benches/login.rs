//! Login and token-service throughput against the raw argon2id rate, measured in one run.
//!
//! cargo bench -p auth --bench login -- [seconds] [database-url]
//!
//! 1. Raw: argon2id verifications/s with the production parameters on every core.
//! 2. Login through HTTP (loopback, the edge's limits raised for the load test): logins/s,
//!    p50/p99 latency, answers refused with 503 by the hashing admission bound.
//! 3. Session introspection and JWKS through HTTP: requests/s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use auth::Passwords;
use auth::service::{AuthState, router};
use contracts::auth::v1::SessionTokens;
use token::jwt::{JwtKeys, SigningKeyPair};

// The allocator of the `croft` binary that serves logins in production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// CPU seconds this process used so far (user + system).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// argon2id verifications per second on `cores` threads over `seconds`: argon2's own
/// `verify_password` (a fresh 19 MiB block buffer per call: the raw rate the target names)
/// when `library`, else croft's `verify_blocking` (one reused buffer per thread).
fn raw_rate(passwords: &Passwords, hash: &str, cores: usize, seconds: u64, library: bool) -> f64 {
    use argon2::PasswordVerifier;
    let count = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..cores)
        .map(|_| {
            let (p, h, c) = (passwords.clone(), hash.to_string(), count.clone());
            std::thread::spawn(move || {
                let argon2 = argon2::Argon2::default();
                while Instant::now() < end {
                    let verified = if library {
                        argon2
                            .verify_password(b"correct horse battery", h.as_str())
                            .map(|()| true)
                            .map_err(|e| e.to_string())
                    } else {
                        p.verify_blocking("correct horse battery", Some(&h))
                            .map_err(|e| e.to_string())
                    };
                    assert!(
                        matches!(verified, Ok(true)),
                        "the password did not verify: {verified:?}"
                    );
                    c.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a hashing thread panicked");
    }
    count.load(Ordering::Relaxed) as f64 / seconds as f64
}

fn pct(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q) as usize] as f64 / 1000.0
}

async fn hammer(
    client: reqwest::Client,
    workers: usize,
    duration: Duration,
    make: Arc<dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync>,
) -> (u64, u64, Vec<u64>) {
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let end = Instant::now() + duration;
    for _ in 0..workers {
        let (client, ok, refused, make) =
            (client.clone(), ok.clone(), refused.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < end {
                let t = Instant::now();
                match make(&client).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    _ => {
                        // A refused client backs off as `Retry-After` asks (shortened to keep
                        // the pressure on), instead of spinning on the server's CPU.
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("a client task panicked"));
    }
    lat.sort_unstable();
    (
        ok.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        lat,
    )
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let seconds: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(10);
    assert!(seconds > 0, "seconds must be at least 1");
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);

    // 1. Raw argon2id verification rate on every core; measured again after the login phase,
    // and the login rate compared with the mean of the two, because this VM's speed drifts by
    // more than the effect being measured.
    let passwords = Passwords::new(cores).unwrap();
    let hash = passwords.hash_blocking("correct horse battery").unwrap();
    let raw_before = raw_rate(&passwords, &hash, cores, seconds, true);
    let reused_before = raw_rate(&passwords, &hash, cores, seconds, false);
    println!(
        "argon2id m=19456 t=2 p=1, {cores} threads: {raw_before:.1} verifications/s (argon2's verify_password); {reused_before:.1}/s reusing each thread's blocks (croft's verify)"
    );

    // 2. The real service on loopback.
    let store = match args.get(1) {
        Some(url) => {
            let s = store::Store::connect(url, &store::PoolSettings::default())
                .await
                .unwrap();
            s.migrate().await.unwrap();
            s
        }
        None => store::testing::sqlite().await,
    };
    println!("database: {:?}", store.backend());
    for i in 0..64 {
        store
            .create_user(&format!("bench{i}"), &hash)
            .await
            .expect("creating the bench's users (a fresh database)");
    }
    let state = AuthState::new(
        store.clone(),
        Passwords::new(cores).unwrap(),
        JwtKeys::new(
            "croft",
            SigningKeyPair::generate().unwrap(),
            Duration::from_secs(900),
        )
        .unwrap(),
        token::ConnectTokenIssuer::new(token::NetcodeKey::generate().unwrap()),
        vec!["127.0.0.1:5100".parse().unwrap()],
        Duration::from_secs(3600),
    );
    let edge_config = edge::EdgeConfig {
        rate: edge::Rate {
            burst: 1_000_000,
            per_second: 1_000_000.0,
        },
        strict_rate: edge::Rate {
            burst: 1_000_000,
            per_second: 1_000_000.0,
        },
        ..edge::EdgeConfig::default()
    };
    let internal_app = auth::service::internal_router(state.clone());
    let app = edge::wrap(router(state), &edge_config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    // Introspection is served on the internal listener only.
    let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let internal_addr = internal.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(internal, internal_app).await;
    });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();

    let url = format!("http://{addr}/v1/auth/login");
    let n = AtomicU64::new(0);
    let n = Arc::new(n);
    let login = {
        let n = n.clone();
        Arc::new(move |c: &reqwest::Client| {
            let i = n.fetch_add(1, Ordering::Relaxed) % 64;
            c.post(&url).json(&serde_json::json!({"username": format!("bench{i}"), "password": "correct horse battery"}))
        })
    };
    // Clients: CROFT_LOGIN_CLIENTS (default 4 per core); CROFT_LOGIN_WRK=1 drives the load from
    // a separate `wrk` process instead of reqwest in this one.
    let clients: usize = std::env::var("CROFT_LOGIN_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cores * 4);
    let raw = raw_before;
    let login_rate;
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    if std::env::var("CROFT_LOGIN_WRK").is_ok_and(|v| v == "1") {
        let script = std::env::temp_dir().join(format!("croft-login-{}.lua", std::process::id()));
        std::fs::write(
            &script,
            "local i = 0\nrequest = function()\n  i = (i + 1) % 64\n  return wrk.format(\"POST\", nil, {[\"Content-Type\"] = \"application/json\"}, '{\"username\": \"bench' .. i .. '\", \"password\": \"correct horse battery\"}')\nend\n",
        )
        .unwrap();
        let out = std::process::Command::new("wrk")
            .args([
                "-t1",
                &format!("-c{clients}"),
                &format!("-d{seconds}s"),
                "--latency",
                "-s",
            ])
            .arg(&script)
            .arg(format!("http://{addr}/v1/auth/login"))
            .output()
            .expect("wrk (apt install wrk)");
        assert!(out.status.success(), "wrk failed: {}", out.status);
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(name))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let total = field("Requests/sec:");
        let non2xx = field("Non-2xx or 3xx responses:");
        let rate = total - non2xx / seconds as f64;
        login_rate = rate;
        let p99 = text
            .lines()
            .find(|l| l.trim_start().starts_with("99%"))
            .map(|l| l.trim().to_string())
            .unwrap_or_default();
        println!(
            "login via HTTP (wrk, {clients} connections): {rate:.1} logins/s = {:.2} of the raw rate; {p99}; non-2xx {non2xx}",
            rate / raw
        );
        let _ = std::fs::remove_file(&script);
    } else {
        let (ok, refused, lat) =
            hammer(client.clone(), clients, Duration::from_secs(seconds), login).await;
        let rate = ok as f64 / seconds as f64;
        assert!(ok > 0, "no login succeeded");
        login_rate = rate;
        println!(
            "login via HTTP, {clients} clients: {rate:.1} logins/s = {:.2} of the raw rate; p50 {:.1} ms p99 {:.1} ms; refused (503 busy) {refused}",
            rate / raw,
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
    }

    let cpu = cpu_seconds() - cpu0;
    let login_wall = wall0.elapsed().as_secs_f64();
    let raw_after = raw_rate(&passwords, &hash, cores, seconds, true);
    let reused_after = raw_rate(&passwords, &hash, cores, seconds, false);
    println!(
        "argon2id again after the login phase: {raw_after:.1} verifications/s (argon2's), {reused_after:.1}/s (reused blocks); login rate / mean raw rate = {:.2} (to argon2's own), {:.2} (to croft's verify alone)",
        login_rate / ((raw_before + raw_after) / 2.0),
        login_rate / ((reused_before + reused_after) / 2.0)
    );
    println!(
        "  this process used {:.0}% of the {cores} cores during the login phase ({:.2} CPU-s over {:.1} s)",
        100.0 * cpu / (login_wall * cores as f64),
        cpu,
        login_wall
    );

    // 3. Introspection (one indexed read) and JWKS.
    let tokens: SessionTokens = client
        .post(format!("http://{addr}/v1/auth/login"))
        .json(&serde_json::json!({"username": "bench1", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!("http://{internal_addr}/v1/auth/introspect");
    let sid = tokens.session_id.clone();
    let introspect = Arc::new(move |c: &reqwest::Client| {
        c.post(&url).json(&serde_json::json!({"session_id": sid}))
    });
    let (ok, bad, lat) = hammer(client.clone(), 64, Duration::from_secs(seconds), introspect).await;
    println!(
        "introspect via HTTP, 64 clients: {:.0} requests/s; p50 {:.2} ms p99 {:.2} ms; errors {bad}",
        ok as f64 / seconds as f64,
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    let url = format!("http://{addr}/.well-known/jwks.json");
    let jwks = Arc::new(move |c: &reqwest::Client| c.get(&url));
    let (jwks_ok, jwks_bad, lat) = hammer(client, 64, Duration::from_secs(seconds), jwks).await;
    println!(
        "jwks via HTTP, 64 clients: {:.0} requests/s; p50 {:.2} ms p99 {:.2} ms; errors {jwks_bad}",
        jwks_ok as f64 / seconds as f64,
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    assert!(
        ok > 0 && bad == 0,
        "introspection: {ok} answered, {bad} errors"
    );
    assert!(
        jwks_ok > 0 && jwks_bad == 0,
        "jwks: {jwks_ok} answered, {jwks_bad} errors"
    );
}
