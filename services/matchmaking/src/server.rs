//! `croft matchmaking`: the matchmaking service alone, with its instance allocator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::allocator::{Allocator, LocalAllocator, LocalConfig};
use crate::queue::QueueConfig;
use crate::service::{Matchmaking, router, spawn_loops};

/// The leader lease: a killed leader is replaced within this (plus one pass), and a leader
/// stalled this long loses its lease (its steps are fenced from then on).
pub const DEFAULT_LEADER_LEASE_MS: u64 = 1500;

#[derive(clap::Args, Debug, Clone)]
pub struct MatchmakingConfig {
    /// Internal HTTP API for connection servers (service credential required).
    #[arg(long, env = "CROFT_MATCHMAKING_HTTP", default_value = "127.0.0.1:7002")]
    pub http: SocketAddr,
    #[command(flatten)]
    pub db: store::DatabaseArgs,
    /// Redis holding the queue, the matches being placed and run, the connection servers'
    /// mailboxes and the leader lease, shared by every replica (`redis://host:port/db`).
    /// Without it this replica keeps them in memory and must be the only one.
    #[arg(long, env = "CROFT_REDIS_URL")]
    pub redis: Option<String>,
    /// Prefix of matchmaking's Redis keys (one hash tag keeps them in one Cluster slot).
    #[arg(long, env = "CROFT_REDIS_PREFIX", default_value = "{croft}:mm:")]
    pub redis_prefix: String,
    /// How long the leader's lease lasts without renewal (renewed every pass, 10 per second):
    /// a killed leader's successor places matches after at most this long.
    #[arg(long, env = "CROFT_LEADER_LEASE_MS", default_value_t = DEFAULT_LEADER_LEASE_MS)]
    pub leader_lease_ms: u64,
    /// The netcode private key, to mint instance connect tokens (else env CROFT_NETCODE_KEY).
    #[arg(long, env = "CROFT_NETCODE_KEY_FILE")]
    pub netcode_key_file: Option<PathBuf>,
    /// The credential connection servers present (else env CROFT_SERVICE_TOKEN).
    #[arg(long, env = "CROFT_SERVICE_TOKEN_FILE")]
    pub service_token_file: Option<PathBuf>,
    /// The instance servers' control credential (else env CROFT_CONTROL_TOKEN).
    #[arg(long, env = "CROFT_CONTROL_TOKEN_FILE")]
    pub control_token_file: Option<PathBuf>,
    #[arg(long, env = "CROFT_CARDS", default_value = "assets/cards")]
    pub cards: PathBuf,
    /// Players per match.
    #[arg(long, env = "CROFT_MATCH_SIZE", default_value_t = 2)]
    pub match_size: usize,
    #[arg(long, env = "CROFT_TICKET_TIMEOUT_SECONDS", default_value_t = 120)]
    pub ticket_timeout_seconds: u64,
    #[arg(long, env = "CROFT_RATING_WINDOW", default_value_t = 100)]
    pub rating_window: u32,
    #[arg(long, env = "CROFT_RATING_WINDOW_GROWTH", default_value_t = 50)]
    pub rating_window_growth_per_second: u32,
    #[arg(long, env = "CROFT_RATING_WINDOW_MAX", default_value_t = 1000)]
    pub rating_window_max: u32,
    /// The program (and leading arguments) that starts an instance server; default: this
    /// binary's `instance` subcommand.
    #[arg(long, env = "CROFT_INSTANCE_COMMAND", value_delimiter = ' ')]
    pub instance_command: Vec<String>,
    /// Instance servers kept running when idle.
    #[arg(long, env = "CROFT_WARM_INSTANCES", default_value_t = 1)]
    pub warm_instances: usize,
    #[arg(long, env = "CROFT_MAX_INSTANCES", default_value_t = 4)]
    pub max_instances: usize,
    /// Matches per instance server.
    #[arg(long, env = "CROFT_INSTANCE_MAX_MATCHES", default_value_t = 500)]
    pub instance_max_matches: usize,
    /// Start another instance when this share of the slots is taken.
    #[arg(long, env = "CROFT_SCALE_UP_AT", default_value_t = 0.75)]
    pub scale_up_at: f64,
    /// Stop an idle instance beyond the warm pool after this many seconds.
    #[arg(long, env = "CROFT_IDLE_STOP_SECONDS", default_value_t = 60)]
    pub idle_stop_seconds: u64,
    /// Kafka brokers the instance servers publish `game_started` / `game_ended` to.
    #[arg(long, env = "CROFT_KAFKA_BROKERS")]
    pub kafka: Option<String>,
    #[arg(long, env = "CROFT_KAFKA_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
    /// Run the outbox relay here: publish the outbox (every service's events) to --kafka.
    /// Among replicas it runs on the leader only; other processes must not run one.
    #[arg(long, env = "CROFT_OUTBOX_RELAY", requires = "kafka")]
    pub outbox_relay: bool,
    /// Where instance servers come from: `local` (child processes of this one), `fleet`
    /// (instances run by something else, at the control URLs of `--instances`, shared by every
    /// replica), `agones` (GameServerAllocations on a Fleet) or `kubernetes` (ready pods by
    /// label, scaling their Deployment).
    #[arg(long, env = "CROFT_ALLOCATOR", default_value = "local", value_parser = ["local", "fleet", "agones", "kubernetes"])]
    pub allocator: String,
    /// The instances' control API URLs (fleet), comma-separated.
    #[arg(long, env = "CROFT_INSTANCES", value_delimiter = ',')]
    pub instances: Vec<String>,
    /// The namespace the instance servers run in (agones, kubernetes).
    #[arg(long, env = "CROFT_INSTANCE_NAMESPACE", default_value = "default")]
    pub instance_namespace: String,
    /// The Fleet to allocate from (agones).
    #[arg(long, env = "CROFT_AGONES_FLEET", default_value = "instances")]
    pub agones_fleet: String,
    /// Label selector of the instance pods (kubernetes).
    #[arg(
        long,
        env = "CROFT_INSTANCE_SELECTOR",
        default_value = "app.kubernetes.io/name=server-instance"
    )]
    pub instance_selector: String,
    /// The instance Deployment, scaled up when every pod is full (kubernetes).
    #[arg(long, env = "CROFT_INSTANCE_DEPLOYMENT", default_value = "instance")]
    pub instance_deployment: String,
    /// The most replicas the allocator scales the Deployment to (kubernetes).
    #[arg(long, env = "CROFT_INSTANCE_MAX_REPLICAS", default_value_t = 20)]
    pub instance_max_replicas: i32,
    /// The instances' control API port (pods may name theirs in `croft.dev/control-port`).
    #[arg(long, env = "CROFT_INSTANCE_CONTROL_PORT", default_value_t = 7100)]
    pub instance_control_port: u16,
    /// Local instances also accept WebSocket clients (web exports), each on a port of its own
    /// (local allocator).
    #[arg(long, env = "CROFT_INSTANCE_WS")]
    pub instance_ws: bool,
    /// The auth service's internal listener, handed to local instances for its feed of revoked
    /// sessions (`--auth-url`), so that a logged-out or banned player is dropped there too.
    #[arg(long, env = "CROFT_INSTANCE_AUTH_URL")]
    pub instance_auth_url: Option<String>,
    /// Where instance logs, ready files and match logs go.
    #[arg(long, env = "CROFT_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
}

impl MatchmakingConfig {
    pub fn queue(&self) -> anyhow::Result<QueueConfig> {
        if self.match_size != 2 {
            anyhow::bail!(
                "the card game seats two players: --match-size {} is not supported by the instance servers",
                self.match_size
            );
        }
        Ok(QueueConfig {
            match_size: self.match_size,
            ticket_timeout: Duration::from_secs(self.ticket_timeout_seconds),
            initial_window: self.rating_window,
            widen_per_second: self.rating_window_growth_per_second,
            max_window: self.rating_window_max,
        })
    }

    /// The local allocator's configuration; `control_token` is the instances' credential.
    pub fn local(&self, control_token: String) -> anyhow::Result<LocalConfig> {
        let command = if self.instance_command.is_empty() {
            let exe = std::env::current_exe().context("locating this binary")?;
            vec![exe.display().to_string(), "instance".into()]
        } else {
            self.instance_command.clone()
        };
        let mut local = LocalConfig::new(command, control_token, self.data_dir.join("instances"));
        local.warm = self.warm_instances;
        local.max_instances = self.max_instances.max(1);
        local.max_matches = self.instance_max_matches;
        local.scale_up_at = self.scale_up_at;
        local.idle_stop_after = Duration::from_secs(self.idle_stop_seconds);
        local.extra_args = vec!["--cards".into(), self.cards.display().to_string()];
        if let Some(f) = &self.netcode_key_file {
            local.extra_args.push("--netcode-key-file".into());
            local.extra_args.push(f.display().to_string());
        }
        if let Some(b) = &self.kafka {
            local.extra_args.extend([
                "--kafka".into(),
                b.clone(),
                "--topic-prefix".into(),
                self.topic_prefix.clone(),
            ]);
        }
        if self.instance_ws {
            local
                .extra_args
                .extend(["--ws".into(), "127.0.0.1:0".into()]);
        }
        if let Some(url) = &self.instance_auth_url {
            local.extra_args.extend(["--auth-url".into(), url.clone()]);
        }
        if let Some(f) = &self.control_token_file {
            local.extra_args.push("--control-token-file".into());
            local.extra_args.push(f.display().to_string());
        }
        // Instances host farms from the same database (a URL in a file stays in the file).
        match &self.db.database_url_file {
            Some(f) => local
                .extra_args
                .extend(["--database-url-file".into(), f.display().to_string()]),
            None => local
                .extra_args
                .extend(["--database".into(), self.db.database.clone()]),
        }
        Ok(local)
    }
}

/// The running service: its state, its loops and its allocator.
pub struct Running {
    pub matchmaking: Arc<Matchmaking>,
    pub loops: tokio::task::JoinHandle<()>,
    pub allocator: Arc<dyn Allocator>,
}

/// Starts the warm pool and the loops over `store`.
pub async fn start(config: &MatchmakingConfig, store: store::Store) -> anyhow::Result<Running> {
    let queue = config.queue()?;
    let control = match &config.redis {
        Some(url) => control_store::ControlStore::redis(url, &config.redis_prefix)
            .context("the Redis URL (--redis)")?,
        None => control_store::ControlStore::local(),
    };
    if let Err(e) = control.ping().await {
        // Not fatal: the replica serves 503s and forms nothing until Redis answers.
        tracing::warn!(error = %e, "the control store does not answer yet");
    }
    tracing::info!(store = control.kind(), "matchmaking state");
    let data = shared_sim::GameData::load_dir(&config.cards)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("loading card data from {}", config.cards.display()))?;
    if data.starter_decks.is_empty() {
        anyhow::bail!("the card data has no starter decks");
    }
    let key = token::NetcodeKey::load(config.netcode_key_file.as_deref())
        .context("loading the netcode key")?;
    let service_token = token::load_secret(
        config.service_token_file.as_deref(),
        "CROFT_SERVICE_TOKEN",
        "service credential",
        24,
    )?;
    let control_token = token::load_control_token(config.control_token_file.as_deref())?;
    let watch_client = contracts::instance::InstanceClient::new(
        reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .context("an HTTP client")?,
        control_token.clone(),
    );
    let allocator: Arc<dyn Allocator> = match config.allocator.as_str() {
        "fleet" => Arc::new(
            crate::fleet::FleetAllocator::new(&config.instances, control_token)
                .context("the instance fleet")?,
        ),
        "agones" | "kubernetes" => {
            let mode = if config.allocator == "agones" {
                crate::kube::KubeMode::Agones {
                    fleet: config.agones_fleet.clone(),
                }
            } else {
                crate::kube::KubeMode::Plain {
                    selector: config.instance_selector.clone(),
                    deployment: config.instance_deployment.clone(),
                    max_replicas: config.instance_max_replicas,
                }
            };
            let mut kube_config =
                crate::kube::KubeConfig::new(&config.instance_namespace, mode, control_token);
            kube_config.control_port = config.instance_control_port;
            // In a pod: the service account's token and the cluster's CA.
            let client = ::kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API")?;
            Arc::new(crate::kube::KubeAllocator::new(client, kube_config)?)
        }
        _ => {
            let local = config.local(control_token)?;
            Arc::new(
                LocalAllocator::start(local)
                    .await
                    .context("starting the instance pool")?,
            )
        }
    };
    let data_handle = shared_sim::data::DataHandle::new(data);
    card_reload::watch(
        config.cards.clone(),
        data_handle.clone(),
        Duration::from_secs(2),
        card_reload::log_reload,
    )
    .context("starting the card data watch")?;
    let matchmaking = Matchmaking::new(
        queue,
        store,
        control,
        Duration::from_millis(config.leader_lease_ms.max(100)),
        allocator.clone(),
        token::ConnectTokenIssuer::new(key),
        data_handle.clone(),
        service_token,
    );
    matchmaking.watch_instances(watch_client);
    let loops = spawn_loops(matchmaking.clone(), Duration::from_millis(100));
    Ok(Running {
        matchmaking,
        loops,
        allocator,
    })
}

/// Runs the outbox relay while this replica leads, so replicas over one database publish each
/// row once (a relay stopped mid-batch leaves its rows unsent; the next one sends them, and
/// consumers drop the rare copy by event id).
async fn relay_on_leader(
    mm: Arc<Matchmaking>,
    store: store::Store,
    config: events::relay::RelayConfig,
) {
    let mut task: Option<tokio::task::JoinHandle<()>> = None;
    let mut check = tokio::time::interval(Duration::from_millis(250));
    loop {
        check.tick().await;
        match (
            mm.is_leader(),
            task.as_ref().is_some_and(|t| !t.is_finished()),
        ) {
            (true, false) => match events::relay::Relay::new(store.clone(), config.clone()) {
                Ok(relay) => {
                    tracing::info!("outbox relay started (leader)");
                    task = Some(tokio::spawn(relay.run(Duration::from_millis(200))));
                }
                Err(e) => tracing::error!(error = %e, "cannot start the outbox relay"),
            },
            (false, true) => {
                tracing::info!("outbox relay stopped (no longer leader)");
                if let Some(t) = task.take() {
                    t.abort();
                }
            }
            _ => {}
        }
    }
}

/// Serves until SIGTERM or Ctrl-C, then drains the instance pool.
pub async fn serve(config: MatchmakingConfig) -> anyhow::Result<()> {
    telemetry::init_logging("matchmaking", telemetry::LogTarget::Stdout);
    let database = config.db.url()?;
    let store = config
        .db
        .open(&store::PoolSettings::default())
        .await
        .with_context(|| format!("opening the database {}", store::redact(&database)))?;
    let running = start(&config, store.clone()).await?;
    let relay = match (&config.kafka, config.outbox_relay) {
        (Some(brokers), true) => {
            let mut relay_config = events::relay::RelayConfig::new(brokers);
            relay_config.topic_prefix = config.topic_prefix.clone();
            // Checked once here, so a bad configuration stops the start.
            events::relay::Relay::new(store.clone(), relay_config.clone())
                .context("creating the outbox relay")?;
            tracing::info!(%brokers, "outbox relay runs on the leader replica");
            Some(tokio::spawn(relay_on_leader(
                running.matchmaking.clone(),
                store,
                relay_config,
            )))
        }
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("binding {}", config.http))?;
    tracing::info!(addr = %listener.local_addr()?, "matchmaking listening");
    let app = router(running.matchmaking.clone())
        .merge(telemetry::router(telemetry::Readiness::new(true)))
        .layer(axum::middleware::from_fn(telemetry::http_metrics));
    axum::serve(listener, app)
        .with_graceful_shutdown(telemetry::shutdown_signal())
        .await?;
    running.loops.abort();
    running.matchmaking.resign().await;
    running.allocator.shutdown().await;
    if let Some(relay) = relay {
        relay.abort();
    }
    Ok(())
}
