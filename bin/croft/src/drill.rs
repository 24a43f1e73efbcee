//! `croft drill`: the stack as separate processes (2 auth, 2 matchmaking, 2 connection servers,
//! instance servers, a broker; Postgres and Redis from the machine), bots playing the whole
//! flow, and meanwhile a kill -9 and restart of one process of each kind, a broker outage and a
//! database outage. At the end it checks that nothing was lost and prints what it found.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use headless_bot::Pacing;
use headless_bot::api::AuthApi;
use headless_bot::lobby::{DisruptionKind, LobbyBot};

#[derive(clap::Args, Debug)]
pub struct DrillArgs {
    /// Bots playing through the whole flow.
    #[arg(long, default_value_t = 20)]
    bots: usize,
    /// How long the bots play (the faults are spread over it); then they finish what they
    /// are in and the checks run.
    #[arg(long, default_value_t = 2.0)]
    minutes: f64,
    /// Instance servers (each killed instance comes back on its own ports).
    #[arg(long, default_value_t = 2)]
    instances: usize,
    /// Where keys, logs and ready files go (default: a new folder under the temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long, env = "CROFT_CARDS", default_value = "assets/cards")]
    cards: PathBuf,
    /// A Postgres server; the drill makes a fresh database on it and reaches it through a
    /// proxy of its own, which it cuts for the database outage.
    #[arg(
        long,
        env = "CROFT_DRILL_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres: String,
    /// Redis for the control plane (keys under a fresh prefix, deleted at the end).
    #[arg(
        long,
        env = "CROFT_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis: String,
    /// Milliseconds a bot waits before each move.
    #[arg(long, default_value_t = 50)]
    think_ms: u64,
    /// A soak instead of a drill: no faults; every process's memory (RSS) is sampled every
    /// `--sample-secs` and must stay flat after the first third of the run (at most 20% and
    /// 16 MiB above its size then; the broker, which keeps its topics in memory, is only
    /// reported), besides the drill's checks.
    #[arg(long)]
    soak: bool,
    /// Seconds between the soak's memory samples.
    #[arg(long, default_value_t = 60)]
    sample_secs: u64,
}

/// Matches a drill bot plays between visits to its farm, crafting bench and the common area.
const TEND_EVERY: usize = 4;

/// One process of the stack, restartable with the same command line.
struct Part {
    name: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Part {
    fn start(&mut self, exe: &Path) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(exe)
            .args(&self.args)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::up::terminate(&mut c, Duration::from_secs(15));
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A command line: `cmd`, then each flag with its value (an empty value: the flag alone).
fn command(cmd: &str, flags: &[(&str, String)]) -> Vec<String> {
    let mut out = vec![cmd.to_string()];
    for (flag, value) in flags {
        out.push(flag.to_string());
        if !value.is_empty() {
            out.push(value.clone());
        }
    }
    out
}

/// `n` free ports on 127.0.0.1 (UDP or TCP), kept for the run.
fn free_ports(n: usize, udp: bool) -> anyhow::Result<Vec<u16>> {
    (0..n)
        .map(|_| {
            Ok(if udp {
                std::net::UdpSocket::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port()
            } else {
                std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port()
            })
        })
        .collect()
}

/// A TCP proxy in front of Postgres that the drill can cut: while it is cut, open connections
/// are dropped and new ones refused, which is what the services see when the database dies.
struct DbProxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Bumped on every cut: connections of an older generation close.
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl DbProxy {
    async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(tokio::sync::watch::Sender::new(0u64));
        let (up2, gen2) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut cut = gen2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Ok(Self {
            addr,
            up,
            generation,
        })
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// What the faults did, for the report.
#[derive(Default)]
struct Faults {
    log: Vec<String>,
}

fn wait_file(path: &Path, part: &mut Part, timeout: Duration) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = part.exited() {
            bail!(
                "{} exited during start-up: {status} (log {})",
                part.name,
                part.log.display()
            );
        }
        if let Ok(bytes) = std::fs::read(path)
            && let Ok(v) = serde_json::from_slice(&bytes)
        {
            return Ok(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "{} was not ready in {timeout:?} (log {})",
        part.name,
        part.log.display()
    )
}

fn wait_http(url: &str, part: &mut Part, timeout: Duration) -> anyhow::Result<()> {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = part.exited() {
            bail!(
                "{} exited during start-up: {status} (log {})",
                part.name,
                part.log.display()
            );
        }
        if http.get(url).send().is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "{} did not answer {url} in {timeout:?} (log {})",
        part.name,
        part.log.display()
    )
}

/// Starts `parts` in order, each answering `/healthz` on its port in `health` before the next.
fn start_all(exe: &Path, parts: &mut [Part], health: &[u16]) -> anyhow::Result<()> {
    for (part, port) in parts.iter_mut().zip(health) {
        part.start(exe)?;
        let url = format!("http://127.0.0.1:{port}/healthz");
        wait_http(&url, part, Duration::from_secs(60))?;
    }
    Ok(())
}

/// Runs the drill; an error when anything was lost.
pub fn run(args: DrillArgs) -> anyhow::Result<()> {
    telemetry::init_logging("croft-drill", telemetry::LogTarget::Stderr);
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("croft-drill-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = std::fs::canonicalize(&dir)?;
    let cards = std::fs::canonicalize(&args.cards)
        .with_context(|| format!("card data folder {}", args.cards.display()))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let suffix = format!("{}_{:x}", std::process::id(), now_ms());
    let database = runtime.block_on(fresh_database(&args.postgres, &suffix))?;
    let target: SocketAddr = postgres_addr(&database)?;
    let proxy = runtime.block_on(DbProxy::start(target))?;
    let via_proxy = database.replacen(&target.to_string(), &proxy.addr.to_string(), 1);
    println!(
        "drill: folder {}, database {}",
        dir.display(),
        store::redact(&database)
    );
    let prefix = format!("{{croft-drill-{suffix}}}:");
    let outcome = drill(
        &args, &dir, &cards, &database, &via_proxy, &proxy, &prefix, &runtime,
    );
    // Redis keys of this run go; the database stays for a look (named in the output).
    let _runtime = runtime.enter();
    if let Ok(store) = control_store::ControlStore::redis(&args.redis, &format!("{prefix}mm:")) {
        let _ = runtime.block_on(store.clear());
    }
    if let Ok(store) = control_store::ControlStore::redis(&args.redis, &format!("{prefix}auth:")) {
        let _ = runtime.block_on(store.clear());
    }
    outcome
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn postgres_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .context("a postgres:// URL")?;
    let host = rest.split('/').next().unwrap_or(rest);
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    };
    std::net::ToSocketAddrs::to_socket_addrs(&host)?
        .next()
        .context("resolving the Postgres address")
}

async fn fresh_database(admin_url: &str, suffix: &str) -> anyhow::Result<String> {
    let admin = store::Store::connect(admin_url, &store::PoolSettings::default())
        .await
        .with_context(|| format!("connecting to {}", store::redact(admin_url)))?;
    let db = format!("croft_drill_{suffix}");
    admin
        .create_database(&db)
        .await
        .context("creating the drill's database")?;
    admin.close().await;
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or(admin_url.to_string());
    let url = format!("{base}/{db}");
    let store = store::Store::connect(&url, &store::PoolSettings::default()).await?;
    store.migrate().await?;
    store.close().await;
    Ok(url)
}

#[allow(clippy::too_many_arguments)]
fn drill(
    args: &DrillArgs,
    dir: &Path,
    cards: &Path,
    database: &str,
    via_proxy: &str,
    proxy: &DbProxy,
    prefix: &str,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the croft binary")?;
    let p = |f: &str| dir.join(f).display().to_string();
    crate::up::secret_file(&dir.join("netcode.key"), || {
        Ok(token::NetcodeKey::generate()?.to_hex())
    })?;
    crate::up::secret_file(&dir.join("jwt.key"), || {
        Ok(token::jwt::SigningKeyPair::generate()?.to_hex())
    })?;
    for f in [
        "service.token",
        "control.token",
        "admin.token",
        "bots.password",
    ] {
        crate::up::secret_file(&dir.join(f), || Ok(token::generate_secret()?))?;
    }
    let cards_s = cards.display().to_string();
    let part = |name: &str, args: Vec<String>| Part {
        name: name.to_string(),
        log: dir.join(format!("{name}.log")),
        args,
        child: None,
    };

    // The broker.
    let broker_ready = dir.join("broker.ready.json");
    let _ = std::fs::remove_file(&broker_ready);
    let mut broker = part(
        "broker",
        vec![
            "broker".into(),
            "--ready-file".into(),
            p("broker.ready.json"),
        ],
    );
    broker.start(&exe)?;
    let brokers = wait_file(&broker_ready, &mut broker, Duration::from_secs(30))?["brokers"]
        .as_str()
        .context("the broker's address")?
        .to_string();

    // Ports, fixed for the run so that a restarted process comes back where it was.
    let conn_udp = free_ports(2, true)?;
    let conn_http = free_ports(2, false)?;
    let auth_http = free_ports(2, false)?;
    let auth_internal = free_ports(2, false)?;
    let mm_http = free_ports(2, false)?;
    let inst_udp = free_ports(args.instances, true)?;
    let inst_http = free_ports(args.instances, false)?;
    let connection_list = conn_udp
        .iter()
        .map(|u| format!("127.0.0.1:{u}"))
        .collect::<Vec<_>>()
        .join(",");

    // What every part takes: the database (through the proxy) and the netcode key; the game
    // servers and matchmaking also the card data and the broker.
    let shared = [
        ("--database", via_proxy.to_string()),
        ("--netcode-key-file", p("netcode.key")),
    ];
    let game = [("--cards", cards_s.clone()), ("--kafka", brokers.clone())];

    // Auth replicas.
    let mut auths: Vec<Part> = (0..2)
        .map(|i| {
            part(
                &format!("auth-{}", i + 1),
                command(
                    "auth",
                    &[
                        &shared[..],
                        &[
                            ("--jwt-key-file", p("jwt.key")),
                            ("--admin-token-file", p("admin.token")),
                            ("--http", format!("127.0.0.1:{}", auth_http[i])),
                            ("--metrics", format!("127.0.0.1:{}", auth_internal[i])),
                            ("--connection-server", connection_list.clone()),
                            ("--redis", args.redis.clone()),
                            ("--redis-prefix", format!("{prefix}auth:")),
                            ("--data-dir", dir.display().to_string()),
                            // Every bot logs in from this one address.
                            ("--login-rate-per-minute", "60000".to_string()),
                        ],
                    ]
                    .concat(),
                ),
            )
        })
        .collect();
    start_all(&exe, &mut auths, &auth_internal)?;
    let auth_internal_url = format!("http://127.0.0.1:{}", auth_internal[0]);

    // Instance servers, run by the drill (not by matchmaking): both replicas place on them.
    let mut instances: Vec<Part> = (0..args.instances)
        .map(|i| {
            part(
                &format!("instance-{}", i + 1),
                command(
                    "instance",
                    &[
                        &shared[..],
                        &game[..],
                        &[
                            ("--udp", format!("127.0.0.1:{}", inst_udp[i])),
                            ("--http", format!("127.0.0.1:{}", inst_http[i])),
                            ("--control-token-file", p("control.token")),
                            ("--auth-url", auth_internal_url.clone()),
                            (
                                "--match-log",
                                p(&format!("instance-{}.matches.jsonl", i + 1)),
                            ),
                            ("--farm-lease-ms", "6000".to_string()),
                        ],
                    ]
                    .concat(),
                ),
            )
        })
        .collect();
    start_all(&exe, &mut instances, &inst_http)?;
    let instance_urls = inst_http
        .iter()
        .map(|h| format!("http://127.0.0.1:{h}"))
        .collect::<Vec<_>>()
        .join(",");

    // Matchmaking replicas.
    let mut mms: Vec<Part> = (0..2)
        .map(|i| {
            part(
                &format!("matchmaking-{}", i + 1),
                command(
                    "matchmaking",
                    &[
                        &shared[..],
                        &game[..],
                        &[
                            ("--http", format!("127.0.0.1:{}", mm_http[i])),
                            ("--redis", args.redis.clone()),
                            ("--redis-prefix", format!("{prefix}mm:")),
                            ("--allocator", "fleet".to_string()),
                            ("--instances", instance_urls.clone()),
                            ("--service-token-file", p("service.token")),
                            ("--control-token-file", p("control.token")),
                            ("--outbox-relay", String::new()),
                            ("--data-dir", dir.display().to_string()),
                        ],
                    ]
                    .concat(),
                ),
            )
        })
        .collect();
    start_all(&exe, &mut mms, &mm_http)?;
    let mm_url = format!("http://127.0.0.1:{}", mm_http[0]);

    // Connection servers; each names its matchmaking replica (the other one is its fallback
    // only through a restart: what dies here is the process, not the address).
    let mut conns: Vec<Part> = (0..2)
        .map(|i| {
            part(
                &format!("connection-{}", i + 1),
                command(
                    "connection",
                    &[
                        &shared[..],
                        &game[..],
                        &[
                            ("--udp", format!("127.0.0.1:{}", conn_udp[i])),
                            ("--http", format!("127.0.0.1:{}", conn_http[i])),
                            (
                                "--auth-url",
                                format!("http://127.0.0.1:{}", auth_internal[i]),
                            ),
                            (
                                "--matchmaking-url",
                                format!("http://127.0.0.1:{}", mm_http[i]),
                            ),
                            ("--service-token-file", p("service.token")),
                            ("--server-id", format!("drill-conn-{}", i + 1)),
                        ],
                    ]
                    .concat(),
                ),
            )
        })
        .collect();
    start_all(&exe, &mut conns, &conn_http)?;
    println!(
        "drill: up: 2 auth, 2 matchmaking, 2 connection servers, {} instances, broker {brokers}",
        args.instances
    );

    // Bot accounts through the admin API.
    let password = std::fs::read_to_string(dir.join("bots.password"))?
        .trim()
        .to_string();
    let admin = std::fs::read_to_string(dir.join("admin.token"))?
        .trim()
        .to_string();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut accounts = Vec::new();
    for i in 1..=args.bots {
        let name = format!("drill-{i}");
        let resp = http
            .post(format!("{auth_internal_url}/v1/admin/users"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({ "username": name, "password": password }))
            .send()?;
        if resp.status().as_u16() != 201 {
            bail!(
                "creating {name}: {} {}",
                resp.status(),
                resp.text().unwrap_or_default()
            );
        }
        accounts.push((name, password.clone()));
    }

    // The bots, on a thread of their own; the faults on this one.
    let data = Arc::new(shared_sim::GameData::load_dir(cards).map_err(|e| anyhow::anyhow!("{e}"))?);
    let pacing = Pacing {
        think: Duration::from_millis(args.think_ms),
        jitter: 0.2,
    };
    let play_for = Duration::from_secs_f64(args.minutes * 60.0);
    let stop = Arc::new(AtomicBool::new(false));
    let bases: Vec<String> = auth_http
        .iter()
        .map(|h| format!("http://127.0.0.1:{h}"))
        .collect();
    let bots_out: Arc<Mutex<Option<anyhow::Result<Vec<LobbyBot>>>>> = Arc::default();
    let ready = Arc::new(AtomicBool::new(false));
    let bot_thread = {
        let (stop, out, data, ready) =
            (stop.clone(), bots_out.clone(), data.clone(), ready.clone());
        std::thread::spawn(move || {
            let r = play(&bases, &accounts, &data, pacing, &ready, &stop);
            *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        })
    };
    // The faults start once every bot is in.
    let logins = Instant::now();
    while !ready.load(Ordering::SeqCst) {
        if bot_thread.is_finished() {
            return bots_failed(
                anyhow::anyhow!("the bots stopped while logging in"),
                &bots_out,
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "drill: {} bots logged in ({:.1} s); they play for {:.0} s",
        args.bots,
        logins.elapsed().as_secs_f64(),
        play_for.as_secs_f64()
    );
    let started = Instant::now();
    let at = |share: f64| started + play_for.mul_f64(share);
    // Waits until `t`; an error when the bots stopped early (their error is reported then).
    let sleep_until = |t: Instant| -> anyhow::Result<()> {
        while Instant::now() < t {
            if bot_thread.is_finished() {
                bail!("the bots stopped before the drill ended");
            }
            std::thread::sleep((t - Instant::now()).min(Duration::from_millis(200)));
        }
        Ok(())
    };
    let mut faults = Faults::default();
    let mut kills: Vec<(String, Instant)> = Vec::new();
    let note = |faults: &mut Faults, what: String| {
        println!("drill: {:>6.1} s  {what}", started.elapsed().as_secs_f64());
        faults.log.push(what);
    };
    // SIGKILL, then the same command line 2 s later.
    let mut kill_and_restart =
        |part: &mut Part, why: &str, faults: &mut Faults| -> anyhow::Result<()> {
            part.kill9();
            kills.push((part.name.clone(), Instant::now()));
            note(faults, format!("kill -9 {}{why}", part.name));
            std::thread::sleep(Duration::from_secs(2));
            part.start(&exe)?;
            note(faults, format!("restarted {}", part.name));
            Ok(())
        };

    let mut memory = Memory::default();
    if args.soak {
        // Memory of every process, sampled until the end.
        let every = Duration::from_secs(args.sample_secs.max(1));
        let mut next = started;
        while next <= at(1.0) {
            if let Err(e) = sleep_until(next) {
                return bots_failed(e, &bots_out);
            }
            let parts = std::iter::once(&broker)
                .chain(&auths)
                .chain(&mms)
                .chain(&conns)
                .chain(&instances);
            memory.sample(started.elapsed(), parts);
            next += every;
        }
    } else {
        // 1. The matchmaking leader.
        if let Err(e) = sleep_until(at(0.10)) {
            return bots_failed(e, &bots_out);
        }
        let leader = (0..2).find(|&i| is_leader(&http, mm_http[i])).unwrap_or(0);
        kill_and_restart(&mut mms[leader], " (the leader)", &mut faults)?;

        // 2. A connection server.
        if let Err(e) = sleep_until(at(0.25)) {
            return bots_failed(e, &bots_out);
        }
        kill_and_restart(&mut conns[0], "", &mut faults)?;

        // 3. An instance with matches running.
        if let Err(e) = sleep_until(at(0.40)) {
            return bots_failed(e, &bots_out);
        }
        let busy = (0..instances.len())
            .max_by_key(|&i| live_matches(&http, inst_http[i], &dir.join("control.token")))
            .unwrap_or(0);
        let live = live_matches(&http, inst_http[busy], &dir.join("control.token"));
        let why = format!(" ({live} matches running)");
        kill_and_restart(&mut instances[busy], &why, &mut faults)?;

        // 4. An auth replica.
        if let Err(e) = sleep_until(at(0.55)) {
            return bots_failed(e, &bots_out);
        }
        kill_and_restart(&mut auths[0], "", &mut faults)?;

        // 5. The broker, 10 s.
        if let Err(e) = sleep_until(at(0.70)) {
            return bots_failed(e, &bots_out);
        }
        broker.signal("-USR1");
        note(&mut faults, "broker down".into());
        std::thread::sleep(Duration::from_secs(10));
        broker.signal("-USR2");
        note(&mut faults, "broker up".into());

        // 6. Postgres, 5 s.
        if let Err(e) = sleep_until(at(0.85)) {
            return bots_failed(e, &bots_out);
        }
        proxy.cut();
        note(&mut faults, "database cut off".into());
        std::thread::sleep(Duration::from_secs(5));
        proxy.restore();
        note(&mut faults, "database back".into());
    }
    if let Err(e) = sleep_until(at(1.0)) {
        return bots_failed(e, &bots_out);
    }
    note(&mut faults, "bots wind down".into());
    stop.store(true, Ordering::SeqCst);
    let _ = bot_thread.join();
    let bots = bots_out
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .context("the bot thread ended without an answer")??;
    for part in mms
        .iter_mut()
        .chain(&mut conns)
        .chain(&mut auths)
        .chain(&mut instances)
    {
        if let Some(status) = part.exited() {
            println!("drill: {} exited on its own: {status}", part.name);
        }
    }

    let mut report = runtime.block_on(check(
        database,
        &mm_url,
        &dir.join("service.token"),
        &brokers,
        &bots,
        &kills,
        &data,
    ))?;
    if args.soak {
        report.extend(memory.report());
        let mut seated: Vec<u64> = bots
            .iter()
            .filter_map(|b| b.login_to_match.map(|d| d.as_millis() as u64))
            .collect();
        seated.sort_unstable();
        println!(
            "drill: login -> seated in a match: p50 {} ms, p99 {} ms, max {} ms ({} bots)",
            headless_bot::percentile(&seated, 0.5),
            headless_bot::percentile(&seated, 0.99),
            seated.last().copied().unwrap_or(0),
            seated.len()
        );
    }
    // Stop in order: connection servers, matchmaking, instances, auth, broker.
    for part in conns
        .iter_mut()
        .chain(&mut mms)
        .chain(&mut instances)
        .chain(&mut auths)
    {
        part.stop();
    }
    broker.stop();
    println!("drill: faults: {}", faults.log.join("; "));
    if report.is_empty() {
        println!("drill: nothing lost");
        Ok(())
    } else {
        for r in &report {
            eprintln!("drill: LOST: {r}");
        }
        bail!(
            "{} check(s) failed (logs in {})",
            report.len(),
            dir.display()
        )
    }
}

/// The soak's memory samples: (seconds into the run, RSS in KiB) per process.
#[derive(Default)]
struct Memory {
    samples: Vec<(String, Vec<(u64, u64)>)>,
}

impl Memory {
    fn sample<'a>(&mut self, at: Duration, parts: impl Iterator<Item = &'a Part>) {
        let mut line = Vec::new();
        for part in parts {
            let Some(kib) = part.child.as_ref().and_then(|c| rss_kib(c.id())) else {
                continue;
            };
            line.push(format!("{} {} MiB", part.name, kib / 1024));
            match self.samples.iter_mut().find(|(n, _)| *n == part.name) {
                Some((_, v)) => v.push((at.as_secs(), kib)),
                None => self
                    .samples
                    .push((part.name.clone(), vec![(at.as_secs(), kib)])),
            }
        }
        println!(
            "drill: {:>6.1} s  rss: {}",
            at.as_secs_f64(),
            line.join(", ")
        );
    }

    /// Processes whose memory grew after the warm-up (the first third of the samples): more
    /// than 20% and more than 16 MiB above the last warm-up sample (the broker excepted).
    fn report(&self) -> Vec<String> {
        let mut grew = Vec::new();
        for (name, v) in &self.samples {
            if v.len() < 3 {
                grew.push(format!(
                    "{name}: {} memory samples, too few to judge",
                    v.len()
                ));
                continue;
            }
            let warm = v[(v.len() - 1) / 3].1;
            let last = v[v.len() - 1].1;
            let peak = v.iter().map(|s| s.1).max().unwrap_or(0);
            println!(
                "drill: memory of {name}: {} MiB after warm-up, {} MiB at the end, peak {} MiB ({} samples)",
                warm / 1024,
                last / 1024,
                peak / 1024,
                v.len()
            );
            // `croft broker` keeps every topic's records in memory (its log, as Kafka's disk):
            // it grows with the events by design, so it is reported, not judged.
            if name != "broker" && last > warm + warm / 5 && last > warm + 16 * 1024 {
                grew.push(format!(
                    "{name}'s memory grew after warm-up: {} MiB -> {} MiB",
                    warm / 1024,
                    last / 1024
                ));
            }
        }
        grew
    }
}

/// A process's resident memory in KiB (Linux: `VmRSS` in `/proc/PID/status`).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The bots' own error when their thread ended early, else `e`.
fn bots_failed(
    e: anyhow::Error,
    out: &Mutex<Option<anyhow::Result<Vec<LobbyBot>>>>,
) -> anyhow::Result<()> {
    std::thread::sleep(Duration::from_millis(200));
    match out.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(Err(bots)) => Err(bots.context("the bots")),
        _ => Err(e),
    }
}

fn is_leader(http: &reqwest::blocking::Client, port: u16) -> bool {
    http.get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .and_then(|r| r.text())
        .is_ok_and(|t| {
            t.lines()
                .any(|l| l.starts_with("croft_matchmaking_leader") && l.trim_end().ends_with(" 1"))
        })
}

fn live_matches(http: &reqwest::blocking::Client, port: u16, token: &Path) -> usize {
    let token = std::fs::read_to_string(token).unwrap_or_default();
    http.get(format!("http://127.0.0.1:{port}/v1/matches"))
        .bearer_auth(token.trim())
        .send()
        .and_then(|r| r.json::<contracts::instance::v1::MatchesReport>())
        .map_or(0, |r| r.live.len())
}

/// Logs the bots in (spread over the auth replicas; those in keep playing meanwhile), sets
/// `ready`, plays until `stop`, then lets each finish what it is in (at most 3 minutes).
fn play(
    bases: &[String],
    accounts: &[(String, String)],
    data: &Arc<shared_sim::GameData>,
    pacing: Pacing,
    ready: &AtomicBool,
    stop: &AtomicBool,
) -> anyhow::Result<Vec<LobbyBot>> {
    let mut bots = Vec::with_capacity(accounts.len());
    for (i, (name, password)) in accounts.iter().enumerate() {
        let mut order = bases.to_vec();
        order.rotate_left(i % bases.len().max(1));
        let api = AuthApi::with_replicas(&order)?;
        let login = || {
            LobbyBot::login_by(
                &api,
                name,
                password,
                usize::MAX,
                data.clone(),
                pacing,
                false,
            )
        };
        // A busy auth service (429, 503) is asked again, for up to a minute.
        let deadline = Instant::now() + Duration::from_secs(60);
        let bot = loop {
            match login() {
                Ok(mut b) => {
                    // Farm and craft again every few matches, so faults hit those too.
                    b.tend_every = Some(TEND_EVERY);
                    break b;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("drill: {name}: login failed ({e:#}); retrying");
                    let wait = Instant::now() + Duration::from_millis(500);
                    while Instant::now() < wait {
                        bots.iter_mut().for_each(LobbyBot::poll);
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                Err(e) => return Err(e.context(format!("logging {name} in"))),
            }
        };
        bots.push(bot);
        bots.iter_mut().for_each(LobbyBot::poll);
    }
    ready.store(true, Ordering::SeqCst);
    while !stop.load(Ordering::SeqCst) {
        for b in bots.iter_mut() {
            b.poll();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    for b in bots.iter_mut() {
        b.wind_down();
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline && !bots.iter().all(|b| b.is_done()) {
        for b in bots.iter_mut() {
            b.poll();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(bots)
}

/// The end checks: what was lost, one line each (empty: nothing).
async fn check(
    database: &str,
    mm_url: &str,
    service_token: &Path,
    brokers: &str,
    bots: &[LobbyBot],
    kills: &[(String, Instant)],
    data: &shared_sim::GameData,
) -> anyhow::Result<Vec<String>> {
    let mut lost = Vec::new();
    let store = store::Store::connect(database, &store::PoolSettings::default()).await?;

    // Bots: every one finished.
    for b in bots {
        if !b.is_done() || matches!(b.state, headless_bot::lobby::BotState::Failed(_)) {
            lost.push(format!("bot {} did not finish: {:?}", b.username, b.state));
        }
    }
    let finished: usize = bots
        .iter()
        .flat_map(|b| &b.played)
        .filter(|p| matches!(p.state, headless_bot::PlayerState::Finished(_)))
        .count();
    let failed: usize = bots
        .iter()
        .flat_map(|b| &b.played)
        .filter(|p| matches!(p.state, headless_bot::PlayerState::Failed(_)))
        .count();
    println!("drill: bots played {finished} match seats to the end, {failed} lost with a fault");

    // Matchmaking settles: nobody queued, no match open (a match whose player never came ends
    // after the instance's no-show wait: the grace plus a token's lifetime).
    let token = std::fs::read_to_string(service_token)?.trim().to_string();
    let mm = contracts::matchmaking::MatchmakingClient::new(reqwest::Client::new(), mm_url, token);
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut status = None;
    while Instant::now() < deadline {
        match mm.status().await {
            Ok(s) if s.queued == 0 && s.matches_running == 0 => {
                status = Some(s);
                break;
            }
            Ok(s) => status = Some(s),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    match status {
        Some(s) if s.queued == 0 && s.matches_running == 0 => {}
        Some(s) => lost.push(format!(
            "matchmaking still has {} queued and {} matches open",
            s.queued, s.matches_running
        )),
        None => lost.push("matchmaking does not answer".into()),
    }

    // The outbox drains to the broker.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut unsent = i64::MAX;
    while Instant::now() < deadline {
        unsent = store.unsent_count().await.unwrap_or(i64::MAX);
        if unsent == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if unsent != 0 {
        lost.push(format!("{unsent} outbox events never reached the broker"));
    }

    // Every started match: one result, and a game_ended unless it was aborted.
    let rows = store.outbox(10_000_000).await?;
    let match_ids = |kind: &str| -> Vec<i64> {
        rows.iter()
            .filter(|r| r.event.event_type == kind)
            .filter_map(|r| {
                let v: serde_json::Value = serde_json::from_str(&r.event.payload).ok()?;
                v.pointer("/payload/match_id")
                    .or_else(|| v.get("match_id"))
                    .and_then(|m| m.as_u64())
                    .map(|m| m as i64)
            })
            .collect()
    };
    let mut started = match_ids("game_started");
    started.sort_unstable();
    started.dedup();
    let ended: HashSet<i64> = match_ids("game_ended").into_iter().collect();
    let results: HashMap<i64, String> = store
        .recorded_matches(&started)
        .await?
        .into_iter()
        .collect();
    let mut aborted = 0;
    for m in &started {
        match results.get(m) {
            None => lost.push(format!("match {m} started and has no result")),
            Some(r) if r == "Aborted" => aborted += 1,
            Some(_) if !ended.contains(m) => {
                lost.push(format!("match {m} has a result and no game_ended event"))
            }
            Some(_) => {}
        }
    }
    let on_broker = topic_messages(brokers, "game_ended")?;
    let outbox_ended = ended.len() as i64;
    if on_broker < outbox_ended {
        lost.push(format!(
            "the broker has {on_broker} game_ended messages for {outbox_ended} in the outbox"
        ));
    }
    println!(
        "drill: {} matches started: {} results ({aborted} aborted with their instance), {} game_ended in the outbox, {on_broker} on the broker",
        started.len(),
        results.len(),
        outbox_ended
    );

    // No item made or lost: each player holds their starter kit plus what their crafts and
    // farm actions changed, as the events written with those changes say.
    let mut held = 0;
    for b in bots {
        let user = b.user_id() as i64;
        let (want_items, want_cards) = ledger(data, b.user_id(), &rows, &mut lost);
        let nonzero = |v: Vec<(String, i32)>| -> HashMap<String, i64> {
            v.into_iter()
                .filter(|(_, n)| *n != 0)
                .map(|(i, n)| (i, i64::from(n)))
                .collect()
        };
        let items = nonzero(store.inventory(user).await?);
        let cards = nonzero(store.collection(user).await?);
        if items != want_items {
            lost.push(format!(
                "{}'s inventory {items:?} is not the starter kit plus their events {want_items:?}",
                b.username
            ));
        } else if cards != want_cards {
            lost.push(format!(
                "{}'s cards {cards:?} are not the starter cards plus their crafts {want_cards:?}",
                b.username
            ));
        } else {
            held += 1;
        }
    }
    let farmed = rows
        .iter()
        .filter(|r| r.event.event_type == "items_farmed")
        .count();
    let crafted = rows
        .iter()
        .filter(|r| r.event.event_type == "item_crafted")
        .count();
    println!(
        "drill: {held} of {} players hold exactly their starter kit plus {farmed} farm actions and {crafted} crafts",
        bots.len()
    );

    // Time from each kill to the affected players playing again: each lost lobby or match is
    // put on the last kill before it was noticed.
    let mut per_kill: Vec<Vec<u64>> = vec![Vec::new(); kills.len()];
    let mut never = 0;
    for d in bots.iter().flat_map(|b| &b.disruptions) {
        let Some(k) = kills.iter().rposition(|(_, at)| *at <= d.at) else {
            continue;
        };
        match d.back_after {
            Some(t) => per_kill[k].push((d.at + t).duration_since(kills[k].1).as_millis() as u64),
            None => never += 1,
        }
    }
    for ((what, _), mut v) in kills.iter().zip(per_kill) {
        v.sort_unstable();
        println!(
            "drill: kill -9 {what}: {} players affected, playing again after p50 {} ms, p99 {} ms",
            v.len(),
            headless_bot::percentile(&v, 0.5),
            headless_bot::percentile(&v, 0.99)
        );
    }
    let kinds = |k: DisruptionKind| {
        bots.iter()
            .flat_map(|b| &b.disruptions)
            .filter(|d| d.what == k)
            .count()
    };
    println!(
        "drill: lobby connections lost {}, matches lost {}",
        kinds(DisruptionKind::Lobby),
        kinds(DisruptionKind::Match)
    );
    if never > 0 {
        lost.push(format!(
            "{never} players lost their lobby or match and were not playing again by the end"
        ));
    }
    store.close().await;
    Ok(lost)
}

/// What `user` should hold: the starter kit, plus each `items_farmed` change and each
/// `item_crafted` recipe (inputs taken, output added) among the outbox `rows`.
fn ledger(
    data: &shared_sim::GameData,
    user: u64,
    rows: &[store::OutboxRow],
    lost: &mut Vec<String>,
) -> (HashMap<String, i64>, HashMap<String, i64>) {
    let mut items: HashMap<String, i64> = HashMap::new();
    let mut cards: HashMap<String, i64> = HashMap::new();
    for (id, n) in &data.rules.starter_items {
        *items.entry(id.clone()).or_default() += i64::from(*n);
    }
    if let Some(deck) = data.starter_deck_for(user) {
        for c in &deck.cards {
            *cards.entry(c.clone()).or_default() += 1;
        }
    }
    for r in rows {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.event.payload) else {
            continue;
        };
        let p = &v["payload"];
        if p["user_id"].as_i64() != Some(user as i64) {
            continue;
        }
        match r.event.event_type.as_str() {
            "items_farmed" => {
                for c in p["changes"].as_array().into_iter().flatten() {
                    let (Some(item), Some(delta)) = (c["item"].as_str(), c["delta"].as_i64())
                    else {
                        lost.push(format!("unreadable items_farmed change {c}"));
                        continue;
                    };
                    *items.entry(item.to_string()).or_default() += delta;
                }
            }
            "item_crafted" => {
                let recipe = p["recipe"].as_str().unwrap_or_default();
                let Some(def) = data.recipe(recipe) else {
                    lost.push(format!("item_crafted names no known recipe {recipe:?}"));
                    continue;
                };
                for (id, n) in &def.inputs {
                    *items.entry(id.clone()).or_default() -= i64::from(*n);
                }
                match &def.output {
                    shared_sim::data::RecipeOutput::Card(c) => {
                        *cards.entry(c.clone()).or_default() += 1
                    }
                    shared_sim::data::RecipeOutput::Item(id, n) => {
                        *items.entry(id.clone()).or_default() += i64::from(*n)
                    }
                }
            }
            _ => {}
        }
    }
    items.retain(|_, n| *n != 0);
    cards.retain(|_, n| *n != 0);
    (items, cards)
}

/// Messages on `topic` (all partitions), from the broker's watermarks.
fn topic_messages(brokers: &str, topic: &str) -> anyhow::Result<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "croft-drill")
        .create()?;
    let meta = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut total = 0;
    for t in meta.topics() {
        for part in t.partitions() {
            let (low, high) =
                consumer.fetch_watermarks(topic, part.id(), Duration::from_secs(10))?;
            total += high - low;
        }
    }
    Ok(total)
}
