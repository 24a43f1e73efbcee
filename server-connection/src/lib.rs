//! The Global Connection Server: a headless Bevy app holding every online player's persistent
//! connection for presence, friends, chat, global notifications and the matchmaking relay.

pub mod bridge;
pub mod config;
pub mod lobby;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use bevy::app::{PluginGroupBuilder, ScheduleRunnerPlugin};
use bevy::prelude::*;
use serde::{Deserialize, Serialize};

pub use config::ConnectionConfig;
use lobby::{Limits, Lobby, LobbyNet, LobbyPlugin, LobbySet};

/// Where a started connection server listens; written to `--ready-file` as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadyInfo {
    pub http: SocketAddr,
    pub udp: Vec<SocketAddr>,
    pub server_id: String,
    /// The WebSocket URL, when `--ws` is set.
    #[serde(default)]
    pub ws: Option<String>,
}

#[derive(Resource, Clone)]
struct Stop(Arc<AtomicBool>);

/// The service credential, from a file or `CROFT_SERVICE_TOKEN`.
pub fn load_service_token(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    Ok(token::load_secret(
        file,
        "CROFT_SERVICE_TOKEN",
        "service credential",
        24,
    )?)
}

/// Runs until SIGTERM or Ctrl-C.
///
/// The players' connections are secure netcode, one socket per 1024 clients; presence, friends,
/// chat, global notifications and the matchmaking relay are [`lobby::LobbyPlugin`]'s. Database
/// and service calls run on a tokio runtime beside the Bevy loop (see [`bridge`]).
pub fn run(config: ConnectionConfig) -> anyhow::Result<()> {
    telemetry::init_logging("server-connection", telemetry::LogTarget::Stdout);
    // The recorder before anything registers the metric handles it keeps (the WebSocket
    // transport's counters; a handle taken before would count nowhere).
    telemetry::metrics_handle();
    let key = token::NetcodeKey::load(config.netcode_key_file.as_deref())
        .context("loading the netcode key")?;
    let service_token = load_service_token(config.service_token_file.as_deref())?;
    let database = config.db.url()?;
    let data = shared_sim::GameData::load_dir(&config.cards)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("loading card data from {}", config.cards.display()))?;
    let server_id = match &config.server_id {
        Some(id) => id.clone(),
        None => {
            let mut b = [0u8; 6];
            getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
            format!(
                "conn-{}",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            )
        }
    };
    let public_ip = match (config.public_ip, &config.public_ip_file) {
        (Some(ip), _) => Some(ip),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the public IP from {}", path.display()))?;
            Some(text.trim().parse::<std::net::IpAddr>().with_context(|| {
                format!("{}: `{}` is not an IP address", path.display(), text.trim())
            })?)
        }
        (None, None) => None,
    };
    let mut shards =
        shared_net::bind_shards(config.udp, public_ip, None, config.sockets(), *key.bytes())?;
    let udp: Vec<SocketAddr> = shards.iter().map(|s| s.public_addr).collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("connection-io")
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    let ws = shared_net::ws::start(
        &config.ws,
        &runtime,
        *key.bytes(),
        udp.clone(),
        shared_net::ws::WsLimits::default(),
    )?
    .map(|ws| {
        shards.push(ws.shard);
        ws.url
    });
    let store = runtime
        .block_on(store::Store::open(
            &database,
            &store::PoolSettings::default(),
            config.db.skip_migrations,
        ))
        .with_context(|| format!("opening the database {}", store::redact(&database)))?;
    let (reply_tx, reply_rx) = tokio::sync::mpsc::unbounded_channel();
    let reply_tx_bus = reply_tx.clone();
    let (job_tx, job_rx) = tokio::sync::mpsc::unbounded_channel();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let service_token: std::sync::Arc<str> = service_token.into();
    let bridge = bridge::Bridge {
        store,
        matchmaking: contracts::matchmaking::MatchmakingClient::new(
            http.clone(),
            &config.matchmaking_url,
            service_token.clone(),
        ),
        auth_feed: contracts::auth::AuthFeedClient::new(http, &config.auth_url),
        service_token,
        server_id: server_id.clone(),
        replies: reply_tx,
        data: shared_sim::data::DataHandle::new(data),
    };
    card_reload::watch(
        config.cards.clone(),
        bridge.data.clone(),
        Duration::from_secs(2),
        card_reload::log_reload,
    )
    .context("starting the card data watch")?;
    let status = Arc::new(std::sync::Mutex::new(
        contracts::connection::v1::Status::default(),
    ));
    let readiness = telemetry::Readiness::new(false);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(config.http))
        .with_context(|| format!("binding {}", config.http))?;
    let http = listener.local_addr()?;
    let router = bridge::admin_router(bridge.clone(), status.clone())
        .merge(telemetry::router(readiness.clone()))
        .layer(axum::middleware::from_fn(telemetry::http_metrics));
    runtime.spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "admin HTTP server failed");
        }
    });
    runtime.spawn(bridge.clone().run_jobs(job_rx));
    runtime.spawn(bridge.clone().follow_matchmaking());
    runtime.spawn(
        bridge
            .clone()
            .follow_revocations(Duration::from_millis(config.revocation_poll_ms.max(100))),
    );
    let stop = Stop(Arc::new(AtomicBool::new(false)));
    let (bus_stop_tx, bus_stop_rx) = tokio::sync::watch::channel(false);
    {
        let stop = stop.clone();
        runtime.spawn(async move {
            telemetry::shutdown_signal().await;
            tracing::info!("shutdown requested");
            stop.0.store(true, Ordering::SeqCst);
        });
    }
    // The bus: this server's presence, chat and notifications go out; the other servers'
    // come in, through a consumer group of this server's own (stable across restarts).
    let mut bus = None;
    let mut consumer_task = None;
    if let Some(brokers) = &config.kafka {
        let me = format!("connection:{server_id}");
        let producer =
            events::bus::BusProducer::new(brokers, &config.topic_prefix, Duration::from_secs(60))
                .context("creating the bus producer")?;
        let counters = Arc::new(events::bus::ConsumerCounters::default());
        let mut consumer = events::bus::ConsumerConfig::new(
            brokers,
            &format!("{}croft-connection-{server_id}", config.topic_prefix),
            &[
                "presence_changed",
                "chat_message",
                "notification",
                "connection_alive",
                "friend_changed",
            ],
        );
        consumer.topic_prefix = config.topic_prefix.clone();
        consumer.skip_producer = Some(me.clone());
        let replies = reply_tx_bus.clone();
        let c = counters.clone();
        consumer_task = Some(runtime.spawn(async move {
            let sink = move |env| {
                let _ = replies.send(bridge::Reply::Bus(env));
            };
            if let Err(e) = events::bus::consume(consumer, c, bus_stop_rx, sink).await {
                tracing::error!(error = %e, "the bus consumer stopped");
            }
        }));
        let mut boot = [0u8; 8];
        getrandom::fill(&mut boot).context("no OS randomness")?;
        bus = Some(lobby::LobbyBus {
            producer,
            me,
            counters,
            // Below 2^53, so JSON readers in any language keep it exact.
            boot: u64::from_le_bytes(boot) >> 11,
        });
    }
    let hz = config.hz.max(1);
    let upkeep = (config.keepalive_ms * u64::from(hz) / 1000).max(1);
    for s in &mut shards {
        s.transport.set_upkeep_every(upkeep);
    }
    let limits = Limits {
        chat_per_10s: config.chat_per_10s,
        max_messages_per_second: config.max_messages_per_second,
        bad_message_budget: config.bad_message_budget,
        // Clients that send new messages get their acks at once (see `lobby/transport.rs`);
        // this full flush acknowledges the rest (a resent message whose ack was lost) well
        // inside the client's 600 ms resend time. It sends nothing when no ack is owed.
        idle_flush_frames: (250 * u64::from(hz)).div_ceil(1000).max(1),
    };
    let mut lobby = Lobby::new(job_tx, reply_rx, limits, status);
    lobby.bus = bus;
    let mut app = App::new();
    app.insert_resource(lobby)
        .insert_resource(LobbyNet::new(shards))
        .insert_resource(stop)
        .add_plugins(ConnectionPlugins { hz });
    let ready = ReadyInfo {
        http,
        udp: udp.clone(),
        server_id: server_id.clone(),
        ws,
    };
    if let Some(path) = &config.ready_file {
        std::fs::write(path, serde_json::to_vec(&ready)?)
            .with_context(|| format!("writing ready file {}", path.display()))?;
    }
    tracing::info!(%http, ?udp, %server_id, "connection server ready");
    readiness.set(true);
    // `disconnect_all` (in `stop_system`) published and flushed the players' offline presence;
    // the consumer commits its offsets on the way out.
    let exit = app.run();
    let _ = bus_stop_tx.send(true);
    if let Some(task) = consumer_task {
        let _ =
            runtime.block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await });
    }
    if ready.ws.is_some() {
        // The WebSocket tasks write the close (1001) they were handed at the disconnect.
        std::thread::sleep(Duration::from_millis(250));
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::info!(?exit, "connection server stopped");
    Ok(())
}

/// Everything a connection server's app runs: Bevy's minimal plugins at `hz` frames a second,
/// the lobby, and the stop on SIGTERM. The server inserts [`Lobby`], [`LobbyNet`] and the stop
/// flag.
pub struct ConnectionPlugins {
    pub hz: u32,
}

impl PluginGroup for ConnectionPlugins {
    fn build(self) -> PluginGroupBuilder {
        let frame = Duration::from_secs_f64(1.0 / f64::from(self.hz.max(1)));
        PluginGroupBuilder::start::<Self>()
            .add_group(MinimalPlugins)
            .set(ScheduleRunnerPlugin::run_loop(frame))
            .add(LobbyPlugin)
            .add(StopPlugin)
    }
}

/// Disconnects everyone (their offline presence goes out) and exits once the stop flag is set.
struct StopPlugin;

impl Plugin for StopPlugin {
    fn build(&self, app: &mut App) {
        app.add_systems(
            Update,
            stop_system
                .after(LobbySet::Send)
                .run_if(resource_exists::<Stop>.and_then(resource_exists::<LobbyNet>)),
        );
    }
}

fn stop_system(
    stop: Res<Stop>,
    mut lobby: ResMut<Lobby>,
    mut net: ResMut<LobbyNet>,
    mut exit: MessageWriter<AppExit>,
) {
    if stop.0.load(Ordering::SeqCst) {
        net.disconnect_all(&mut lobby);
        exit.write(AppExit::Success);
    }
}
