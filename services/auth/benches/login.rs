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
use auth::service::{AuthState, SessionTokens, router};
use token::jwt::{JwtKeys, SigningKeyPair};

// The allocator of the `croft` binary that serves logins in production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        lat.extend(t.await.unwrap_or_default());
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
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);

    // 1. Raw argon2id verification rate on every core.
    let passwords = Passwords::new(cores).unwrap();
    let hash = passwords.hash_blocking("correct horse battery").unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..cores)
        .map(|_| {
            let (p, h, c) = (passwords.clone(), hash.clone(), count.clone());
            std::thread::spawn(move || {
                while Instant::now() < end {
                    let _ = p.verify_blocking("correct horse battery", Some(&h));
                    c.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let raw = count.load(Ordering::Relaxed) as f64 / seconds as f64;
    println!("argon2id m=19456 t=2 p=1, {cores} threads: {raw:.1} verifications/s");

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
        let _ = store.create_user(&format!("bench{i}"), &hash).await;
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
    let (ok, refused, lat) = hammer(
        client.clone(),
        cores * 4,
        Duration::from_secs(seconds),
        login,
    )
    .await;
    let rate = ok as f64 / seconds as f64;
    println!(
        "login via HTTP, {} clients: {rate:.1} logins/s = {:.2} of the raw rate; p50 {:.1} ms p99 {:.1} ms; refused (503 busy) {refused}",
        cores * 4,
        rate / raw,
        pct(&lat, 0.5),
        pct(&lat, 0.99)
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
    let url = format!("http://{addr}/v1/auth/introspect");
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
    let (ok, bad, lat) = hammer(client, 64, Duration::from_secs(seconds), jwks).await;
    println!(
        "jwks via HTTP, 64 clients: {:.0} requests/s; p50 {:.2} ms p99 {:.2} ms; errors {bad}",
        ok as f64 / seconds as f64,
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
}
