//! `croft up`: the whole stack on embedded defaults, auth and matchmaking in this process and a
//! connection server beside it, SQLite under the data folder.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use headless_bot::Pacing;
use headless_bot::api::AuthApi;

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Where keys, the database and logs live; created if missing.
    #[arg(long, env = "CROFT_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    #[arg(long, env = "CROFT_CARDS", default_value = "assets/cards")]
    cards: PathBuf,
    /// Database URL (default: SQLite in the data folder).
    #[arg(long)]
    database: Option<String>,
    /// Bots to run: each logs in, connects, queues and plays, until Ctrl-C or `--matches`.
    #[arg(long, default_value_t = 0)]
    bots: usize,
    /// Of the bots, how many connect over WebSocket everywhere (lobby, farm, common area,
    /// matches) as web clients do; the others use UDP.
    #[arg(long, default_value_t = 0)]
    ws_bots: usize,
    /// Matches each bot plays; then the stack stops (exit 0 when every bot finished).
    #[arg(long)]
    matches: Option<usize>,
    /// Milliseconds a bot waits before each move.
    #[arg(long, default_value_t = 100)]
    think_ms: u64,
    /// Give up on the bots after this long.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Public REST address (the auth service).
    #[arg(long = "http", alias = "auth-http", default_value = "127.0.0.1:7000")]
    auth_http: SocketAddr,
    /// Internal address of the auth service: the revocation feed, introspection, the admin API,
    /// /metrics and health.
    #[arg(long, default_value = "127.0.0.1:7001")]
    auth_metrics: SocketAddr,
    /// Internal matchmaking API.
    #[arg(long, default_value = "127.0.0.1:7002")]
    matchmaking_http: SocketAddr,
    /// UDP address of the connection server.
    #[arg(long, default_value = "127.0.0.1:5100")]
    connection_udp: SocketAddr,
    /// WebSocket listener of the connection server (web clients); the n-th server takes port
    /// + n. Instance servers take WebSocket clients on ports of their own.
    #[arg(long, default_value = "127.0.0.1:7300")]
    connection_ws: SocketAddr,
    /// Admin/metrics HTTP of the connection server.
    #[arg(long, default_value = "127.0.0.1:7200")]
    connection_http: SocketAddr,
    /// Connection servers to run; logins rotate over them, and presence, chat and
    /// notifications cross between them over the event bus. The n-th (from 0) takes UDP port
    /// `--connection-udp` + 8n and HTTP port `--connection-http` + n (port 0 stays 0).
    #[arg(long, default_value_t = 1)]
    connection_servers: usize,
    /// Instance servers kept warm.
    #[arg(long, default_value_t = 1)]
    warm_instances: usize,
    #[arg(long, default_value_t = 4)]
    max_instances: usize,
    /// Matches one instance server hosts.
    #[arg(long, default_value_t = 500)]
    instance_max_matches: usize,
    /// Kafka brokers (`host:port,...`) to publish events to; without, an embedded
    /// Kafka-protocol broker (librdkafka's mock cluster) runs inside this process.
    #[arg(long, env = "CROFT_KAFKA_BROKERS")]
    kafka: Option<String>,
    /// Prefix of every topic name (shared clusters).
    #[arg(long, env = "CROFT_KAFKA_TOPIC_PREFIX", default_value = "")]
    topic_prefix: String,
    /// Write where each part listens here as JSON once everything is up.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

/// Stops a child however `up` ends: SIGTERM, then SIGKILL after a while.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        terminate(&mut self.0, Duration::from_secs(10));
    }
}

pub(crate) fn terminate(child: &mut Child, wait: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub(crate) fn secret_file(
    path: &Path,
    make: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let text = make()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    // Readable by the owner only from the moment it exists.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, (text + "\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[derive(Parser)]
struct AuthArgs {
    #[command(flatten)]
    config: auth::server::AuthConfig,
}

#[derive(Parser)]
struct MatchmakingArgs {
    #[command(flatten)]
    config: matchmaking::server::MatchmakingConfig,
}

/// Runs the whole stack. In this process: the auth service and matchmaking (with the local
/// allocator, which starts instance servers as child processes); beside it: a connection server
/// (a child process). SQLite under the data folder. With `--bots N`, bots log in through the
/// API, queue, play and the stack stops when they are done; without, it runs until Ctrl-C.
pub fn run(args: UpArgs) -> anyhow::Result<()> {
    telemetry::init_logging("croft-up", telemetry::LogTarget::Stderr);
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let dir = std::fs::canonicalize(&args.data_dir)?;
    let cards = std::fs::canonicalize(&args.cards)
        .with_context(|| format!("card data folder {}", args.cards.display()))?;
    let netcode_key = dir.join("netcode.key");
    let jwt_key = dir.join("jwt.key");
    let service_token = dir.join("service.token");
    let admin_token = dir.join("admin.token");
    let bot_password = dir.join("bots.password");
    secret_file(&netcode_key, || Ok(token::NetcodeKey::generate()?.to_hex()))?;
    secret_file(&jwt_key, || {
        Ok(token::jwt::SigningKeyPair::generate()?.to_hex())
    })?;
    secret_file(&service_token, || Ok(token::generate_secret()?))?;
    secret_file(&admin_token, || Ok(token::generate_secret()?))?;
    secret_file(&bot_password, || Ok(token::generate_secret()?))?;
    let database = args
        .database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}/croft.db", dir.display()));
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(run_stack(&args, &dir, &cards, &database))
}

async fn run_stack(args: &UpArgs, dir: &Path, cards: &Path, database: &str) -> anyhow::Result<()> {
    let p = |f: &str| dir.join(f).display().to_string();
    let auth_config = AuthArgs::try_parse_from([
        "auth".to_string(),
        "--database".into(),
        database.to_string(),
        "--jwt-key-file".into(),
        p("jwt.key"),
        "--netcode-key-file".into(),
        p("netcode.key"),
        "--admin-token-file".into(),
        p("admin.token"),
        "--http".into(),
        args.auth_http.to_string(),
        "--metrics".into(),
        args.auth_metrics.to_string(),
        "--data-dir".into(),
        dir.display().to_string(),
    ])?
    .config;
    // The event bus: an embedded broker unless one is given; the outbox relay publishes to it.
    let (embedded, brokers) = match &args.kafka {
        Some(b) => (None, b.clone()),
        None => {
            let cluster = rdkafka::mocking::MockCluster::new(1)
                .map_err(|e| anyhow::anyhow!("starting the embedded broker: {e}"))?;
            let brokers = cluster.bootstrap_servers();
            // Topics exist from the start, so consumers see the first events at once.
            for t in events::EVENT_TYPES {
                let topic = format!("{}{t}", args.topic_prefix);
                if let Err(e) = cluster.create_topic(&topic, 4, 1) {
                    eprintln!("cannot create topic {topic}: {e}");
                }
            }
            (Some(cluster), brokers)
        }
    };
    let mut mm_config = MatchmakingArgs::try_parse_from([
        "matchmaking".to_string(),
        "--http".into(),
        args.matchmaking_http.to_string(),
        "--database".into(),
        database.to_string(),
        "--netcode-key-file".into(),
        p("netcode.key"),
        "--service-token-file".into(),
        p("service.token"),
        "--control-token-file".into(),
        p("service.token"),
        "--cards".into(),
        cards.display().to_string(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--warm-instances".into(),
        args.warm_instances.to_string(),
        "--max-instances".into(),
        args.max_instances.to_string(),
        "--instance-max-matches".into(),
        args.instance_max_matches.to_string(),
        "--kafka".into(),
        brokers.clone(),
        "--topic-prefix".into(),
        args.topic_prefix.clone(),
        "--instance-ws".into(),
    ])?
    .config;

    // The database, migrated once, shared by auth and matchmaking.
    let mut state = auth::server::build_state(&auth_config).await?;
    let auth_listener = tokio::net::TcpListener::bind(args.auth_http)
        .await
        .with_context(|| format!("binding {}", args.auth_http))?;
    let auth_addr = auth_listener.local_addr()?;
    let auth_internal = tokio::net::TcpListener::bind(args.auth_metrics)
        .await
        .with_context(|| format!("binding {}", args.auth_metrics))?;
    let auth_internal_addr = auth_internal.local_addr()?;
    let mm_listener = tokio::net::TcpListener::bind(args.matchmaking_http)
        .await
        .with_context(|| format!("binding {}", args.matchmaking_http))?;
    let mm_addr = mm_listener.local_addr()?;

    // Instances drop players whose session auth revokes (its internal listener has the feed).
    mm_config.instance_auth_url = Some(format!("http://{auth_internal_addr}"));
    let mm = matchmaking::server::start(&mm_config, state.store.clone()).await?;
    // As `croft matchmaking` does: /metrics (this process's: auth and matchmaking) and health.
    let mm_app = matchmaking::router(mm.matchmaking.clone())
        .merge(telemetry::router(telemetry::Readiness::new(true)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let mm_server = tokio::spawn(
        axum::serve(mm_listener, mm_app)
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );

    // The connection servers, child processes.
    let exe = std::env::current_exe().context("locating the croft binary")?;
    let mut connections = Vec::new();
    let mut conn_ready = Vec::new();
    let offset = |a: SocketAddr, by: usize| {
        let mut a = a;
        if a.port() != 0 {
            a.set_port(a.port() + by as u16);
        }
        a
    };
    for i in 0..args.connection_servers.max(1) {
        let ready_file = dir.join(format!("connection-{}.ready.json", i + 1));
        let _ = std::fs::remove_file(&ready_file);
        let log_path = dir.join(format!("connection-{}.log", i + 1));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new(&exe)
            .arg("connection")
            .args(["--udp", &offset(args.connection_udp, 8 * i).to_string()])
            .args(["--http", &offset(args.connection_http, i).to_string()])
            .args(["--ws", &offset(args.connection_ws, i).to_string()])
            .args(["--database", database])
            .args(["--auth-url", &format!("http://{auth_internal_addr}")])
            .args(["--matchmaking-url", &format!("http://{mm_addr}")])
            .args(["--service-token-file", &p("service.token")])
            .args(["--netcode-key-file", &p("netcode.key")])
            .args(["--server-id", &format!("conn-local-{}", i + 1)])
            .arg("--cards")
            .arg(cards)
            .args(["--kafka", &brokers])
            .args(["--topic-prefix", &args.topic_prefix])
            .arg("--ready-file")
            .arg(&ready_file)
            .stdout(log)
            // Its own process group: Ctrl-C reaches `croft up`, which stops the parts in order.
            .process_group(0)
            .spawn()
            .context("starting a connection server")?;
        let mut guard = ChildGuard(child);
        conn_ready.push(wait_ready(&mut guard.0, &ready_file, Duration::from_secs(30)).await?);
        connections.push(guard);
    }
    state.connection_servers = conn_ready.iter().flat_map(|r| r.udp.clone()).collect();
    state.connection_ws_urls = conn_ready.iter().filter_map(|r| r.ws.clone()).collect();

    // Accounts for the bots, created once and kept in the database.
    let mut accounts = Vec::new();
    if args.bots > 0 {
        let password = std::fs::read_to_string(dir.join("bots.password"))?
            .trim()
            .to_string();
        for i in 1..=args.bots {
            let name = format!("bot-{i}");
            if state.store.user_by_name(&name).await?.is_none() {
                let hash = state.passwords.hash(password.clone()).await?;
                match state.store.create_user(&name, &hash).await {
                    Ok(_) | Err(store::StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            accounts.push((name, password.clone()));
        }
    }

    let mut relay_config = events::relay::RelayConfig::new(&brokers);
    relay_config.topic_prefix = args.topic_prefix.clone();
    let relay = events::relay::Relay::new(state.store.clone(), relay_config)?;
    let relay_task = tokio::spawn(relay.run(Duration::from_millis(200)));

    let auth_server = tokio::spawn(auth::server::run_owned(
        auth_config,
        state,
        auth_listener,
        auth_internal,
        stopped(stop_rx.clone()),
    ));
    println!("croft is up (data in {})", dir.display());
    println!("  auth          http://{auth_addr}  (internal http://{auth_internal_addr})");
    println!("  matchmaking   http://{mm_addr}  (internal)");
    for c in &conn_ready {
        println!(
            "  connection    udp {:?}  ws {}  admin http://{}  ({})",
            c.udp,
            c.ws.as_deref().unwrap_or("-"),
            c.http,
            c.server_id
        );
    }
    println!(
        "  instances     {}",
        mm.allocator.status().await["instances"]
    );
    println!("  database      {}", store::redact(database));
    println!(
        "  kafka         {brokers} ({})",
        if embedded.is_some() {
            "embedded broker; any Kafka client can read it"
        } else {
            "external"
        }
    );
    println!("  admin token   {}", dir.join("admin.token").display());

    if let Some(path) = &args.ready_file {
        let info = serde_json::json!({
            "auth": format!("http://{auth_addr}"),
            "auth_internal": format!("http://{auth_internal_addr}"),
            "matchmaking": format!("http://{mm_addr}"),
            "connection_udp": conn_ready[0].udp,
            "connection_http": format!("http://{}", conn_ready[0].http),
            "connections": conn_ready.iter().zip(&connections).map(|(c, g)| serde_json::json!({
                "server_id": c.server_id,
                "udp": c.udp,
                "ws": c.ws,
                "http": format!("http://{}", c.http),
                "pid": g.0.id(),
            })).collect::<Vec<_>>(),
            "kafka": brokers,
            "data_dir": dir,
        });
        std::fs::write(path, info.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let outcome = if args.bots == 0 {
        println!("press Ctrl-C to stop");
        telemetry::shutdown_signal().await;
        Ok(())
    } else {
        let data =
            Arc::new(shared_sim::GameData::load_dir(cards).map_err(|e| anyhow::anyhow!("{e}"))?);
        let pacing = Pacing {
            think: Duration::from_millis(args.think_ms),
            jitter: 0.2,
        };
        let (bots, timeout, ws_bots) = (args.bots, args.timeout_secs, args.ws_bots);
        let matches = args.matches.unwrap_or(usize::MAX);
        match args.matches {
            Some(m) => println!("{bots} bots play {m} match(es) each"),
            None => println!("{bots} bots play until Ctrl-C"),
        }
        if ws_bots > 0 {
            println!("{} of them over WebSocket", ws_bots.min(bots));
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if args.matches.is_none() {
            let stop = stop.clone();
            tokio::spawn(async move {
                telemetry::shutdown_signal().await;
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            });
        }
        let base = format!("http://{auth_addr}");
        let timeout = if args.matches.is_some() {
            Duration::from_secs(timeout)
        } else {
            Duration::MAX
        };
        let played = tokio::task::spawn_blocking(move || {
            let api = AuthApi::new(&base)?;
            headless_bot::lobby::play_until(
                &api, &accounts, matches, &data, pacing, timeout, &stop, ws_bots,
            )
        })
        .await?;
        let (queued, in_match) = mm.matchmaking.control.counts().await.unwrap_or_default();
        println!("matchmaking after the bots: {queued} queued, {in_match} matches open");
        report(played, args)
    };

    // Shut down: connection server, instances, then the services; the relay last, once the
    // outbox is empty (or once it stops making progress).
    tokio::task::spawn_blocking(move || drop(connections)).await?;
    mm.loops.abort();
    mm.allocator.shutdown().await;
    // Wait for the relay while it makes progress (a broker that was just away may still be
    // taking the backlog): 10 s without progress, or 2 minutes in all. Rows left over are not
    // lost; they go out at the next start.
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut left = i64::MAX;
    while started.elapsed() < Duration::from_secs(120)
        && last_progress.elapsed() < Duration::from_secs(10)
    {
        let Ok(now) = mm.matchmaking.store.unsent_count().await else {
            break;
        };
        if now == 0 {
            break;
        }
        if now < left {
            left = now;
            last_progress = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    relay_task.abort();
    let _ = stop_tx.send(true);
    let _ = auth_server.await;
    let _ = mm_server.await;
    println!("croft stopped");
    outcome
}

fn report(
    played: anyhow::Result<(headless_bot::Summary, Vec<headless_bot::lobby::LobbyBot>)>,
    args: &UpArgs,
) -> anyhow::Result<()> {
    let (summary, bots) = played?;
    println!("{summary}");
    let ms = |d: &Duration| d.as_micros() as u64;
    let mut waits: Vec<u64> = bots
        .iter()
        .flat_map(|b| b.queue_waits.iter().map(ms))
        .collect();
    waits.sort_unstable();
    let mut starts: Vec<u64> = bots
        .iter()
        .filter_map(|b| b.login_to_match.as_ref().map(ms))
        .collect();
    starts.sort_unstable();
    let pct = |v: &[u64], q: f64| headless_bot::percentile(v, q) as f64 / 1000.0;
    println!(
        "login -> match start: p50 {:.1} ms p99 {:.1} ms ({} bots) | queue wait: p50 {:.1} ms p99 {:.1} ms ({} matches found)",
        pct(&starts, 0.5),
        pct(&starts, 0.99),
        starts.len(),
        pct(&waits, 0.5),
        pct(&waits, 0.99),
        waits.len()
    );
    let farmed: usize = bots.iter().map(|b| b.farmed.len()).sum();
    let crafted: usize = bots.iter().map(|b| b.crafted.len()).sum();
    let decks = bots.iter().filter(|b| b.deck.is_some()).count();
    let steps: usize = bots.iter().map(|b| b.hub_steps).sum();
    println!(
        "before queueing: {farmed} farm actions, {crafted} crafts, {decks} decks built, {steps} steps in the common area ({} bots)",
        bots.len()
    );
    let over_ws: Vec<_> = bots.iter().filter(|b| b.websocket).collect();
    if !over_ws.is_empty() {
        let ws_matches: usize = over_ws
            .iter()
            .flat_map(|b| b.played.iter())
            .filter(|p| matches!(p.state, headless_bot::PlayerState::Finished(_)))
            .count();
        let ws_moves: u64 = over_ws
            .iter()
            .flat_map(|b| b.played.iter())
            .map(|p| p.stats.moves_sent)
            .sum();
        println!(
            "over WebSocket: {} bots, {ws_matches} matches finished, {ws_moves} moves",
            over_ws.len()
        );
    }
    for f in &summary.failures {
        eprintln!("failed: {f}");
    }
    let Some(matches) = args.matches else {
        return Ok(());
    };
    let expected = args.bots * matches;
    if summary.failed > 0 || summary.finished != expected {
        bail!(
            "{} of {expected} bot matches finished ({} failed)",
            summary.finished,
            summary.failed
        );
    }
    Ok(())
}

async fn wait_ready(
    child: &mut Child,
    file: &Path,
    timeout: Duration,
) -> anyhow::Result<server_connection::ReadyInfo> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("the connection server exited during start-up: {status}");
        }
        if let Ok(bytes) = std::fs::read(file)
            && let Ok(info) = serde_json::from_slice(&bytes)
        {
            return Ok(info);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the connection server did not become ready in {timeout:?}")
}
