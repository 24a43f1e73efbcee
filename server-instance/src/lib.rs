//! The instance server: a headless Bevy app that hosts many card matches, farms and
//! common-area shards in one process over secure netcode.

pub mod agones;
pub mod app;
pub mod bus;
pub mod config;
pub mod control;
pub mod farm;
pub mod hub;
pub mod net;
pub mod persist;
pub mod places;
pub mod results;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bevy::prelude::*;
use shared_sim::GameData;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

pub use app::InstancePlugins;
pub use config::InstanceConfig;
use contracts::instance::v1::ReadyInfo;
use control::{ControlCommand, ControlShared};
use net::NetServer;
use persist::RecordSink;

#[derive(Resource)]
pub(crate) struct Control {
    pub(crate) shared: Arc<ControlShared>,
    commands: UnboundedReceiver<ControlCommand>,
}

/// Runs the server until it is drained (SIGTERM, Ctrl-C or `POST /v1/drain`).
///
/// Matches, farms and hub places are created through an authenticated control API, and
/// finished matches are written to the match log by a background thread.
pub fn run(config: InstanceConfig) -> anyhow::Result<()> {
    telemetry::init_logging("server-instance", telemetry::LogTarget::Stdout);
    // The recorder before anything registers the metric handles it keeps (a handle taken
    // before would count nowhere).
    telemetry::metrics_handle();
    let data = GameData::load_dir(&config.cards)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("loading card data from {}", config.cards.display()))?;
    let key = token::NetcodeKey::load(config.netcode_key_file.as_deref())
        .context("loading the netcode key")?;
    let control_token = token::load_control_token(config.control_token_file.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("instance-control")
        .enable_all()
        .build()
        .context("starting the control runtime")?;
    let agones_settings = config.agones_settings();
    let agones = if config.agones {
        anyhow::ensure!(
            config.shards == 1,
            "--agones publishes one GameServer port: run with --shards 1 (got {})",
            config.shards
        );
        let link = runtime
            .block_on(agones::connect(&agones_settings))
            .context("connecting to the Agones SDK")?;
        tracing::info!(game_server = %link.name, public = %link.public, "Agones: GameServer found");
        Some(link)
    } else {
        None
    };
    let (public_ip, public_port) = match &agones {
        Some(link) => (Some(link.public.ip()), Some(link.public.port())),
        None => (config.public_ip, None),
    };
    let net = NetServer::bind(
        config.udp,
        public_ip,
        public_port,
        config.shards,
        *key.bytes(),
        net::SessionLimits {
            bad_message_budget: config.bad_message_budget,
            max_messages_per_second: config.max_messages_per_second,
            idle_flush_ticks: (u64::from(config.idle_flush_ms) * u64::from(config.tick_hz) / 1000)
                .max(1),
        },
    )?;
    let mut net = net;
    let upkeep = (u64::from(config.keepalive_ms) * u64::from(config.tick_hz) / 1000).max(1);
    for shard in &mut net.shards {
        shard.transport.set_upkeep_every(upkeep);
    }
    let ws = shared_net::ws::start(
        &config.ws,
        &runtime,
        *key.bytes(),
        net.public_addrs(),
        shared_net::ws::WsLimits::default(),
    )?
    .map(|ws| {
        net.add_websocket(ws.shard);
        ws.url
    });
    let readiness = telemetry::Readiness::new(false);
    let store = match (&config.database, &config.database_url_file) {
        (None, None) => None,
        (url, file) => {
            let url = store::resolve_url(url.as_deref().unwrap_or(""), file.as_deref())?;
            let store = runtime
                .block_on(store::Store::connect(&url, &store::PoolSettings::default()))
                .with_context(|| format!("connecting to {}", store::redact(&url)))?;
            // The services migrate; an instance only checks the schema is the one it knows.
            runtime
                .block_on(store.check_migrated())
                .context("checking the database schema")?;
            Some(store)
        }
    };
    let mut control_shared = ControlShared::new(
        Arc::new(data),
        net.public_addrs(),
        config.max_matches,
        control_token,
        readiness.clone(),
    );
    control_shared.hub_capacity = config.hub_capacity.max(1);
    control_shared.ws_url = ws.clone();
    let (farm_writes, farm_done) = match store {
        Some(store) => {
            control_shared = control_shared.with_farms(store.clone(), config.max_farms);
            control_shared.farm_lease = Duration::from_millis(config.farm_lease_ms.max(300));
            let (wt, wr, dt, dr) = farm::Farms::channels();
            runtime.spawn(farm::writer(store, control_shared.holder.clone(), wr, dt));
            (Some(wt), dr)
        }
        None => (None, std::sync::mpsc::channel().1),
    };
    let shared = Arc::new(control_shared);
    card_reload::watch(
        config.cards.clone(),
        shared.data.clone(),
        Duration::from_secs(2),
        card_reload::log_reload,
    )
    .context("starting the card data watch")?;
    let (tx, rx) = unbounded_channel();
    runtime.spawn(control::renew_farm_leases(shared.clone(), tx.clone()));
    if let Some(url) = &config.auth_url {
        let feed = contracts::auth::AuthFeedClient::new(reqwest::Client::new(), url);
        let every = Duration::from_millis(config.revocation_poll_ms.max(100));
        runtime.spawn(control::follow_revocations(feed, tx.clone(), every));
    }
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(config.http))
        .with_context(|| format!("binding control HTTP {}", config.http))?;
    let http_addr = listener.local_addr()?;
    let app_router = control::router(shared.clone(), tx.clone())
        .merge(telemetry::router(readiness.clone()))
        .layer(axum::middleware::from_fn(telemetry::http_metrics));
    runtime.spawn(async move {
        if let Err(e) = axum::serve(listener, app_router).await {
            tracing::error!(error = %e, "control HTTP server failed");
        }
    });
    {
        let shared = shared.clone();
        runtime.spawn(async move {
            telemetry::shutdown_signal().await;
            tracing::info!("shutdown requested: draining");
            shared.start_draining();
            let _ = tx.send(ControlCommand::Drain);
        });
    }
    let writer = persist::start(config.match_log.clone())
        .with_context(|| format!("opening match log {}", config.match_log.display()))?;
    let ready = ReadyInfo {
        http: http_addr,
        udp: net.public_addrs(),
        ws,
    };
    let (bus, bus_thread) = match &config.kafka {
        Some(brokers) => {
            let (bus, thread) = bus::start(brokers, &config.topic_prefix, config.event_queue)
                .context("starting the event producer")?;
            (bus, Some(thread))
        }
        None => (bus::EventBus::default(), None),
    };
    // With a database, results and game events go through the outbox (see results.rs).
    let (bus, results_writer) = match &shared.store {
        Some(store) => {
            let (tx, rx) = results::channel();
            let writer = runtime.spawn(results::writer(store.clone(), shared.clone(), rx));
            (bus.with_results(tx), Some(writer))
        }
        None => (bus, None),
    };
    let mut app = build_app(&config, net, shared.clone(), rx, writer.sink.clone());
    app.insert_resource(farm::Farms::new(farm_writes, farm_done));
    app.insert_resource(bus);
    if let Some(path) = &config.ready_file {
        std::fs::write(path, serde_json::to_vec(&ready)?)
            .with_context(|| format!("writing ready file {}", path.display()))?;
    }
    tracing::info!(http = %ready.http, udp = ?ready.udp, "instance server ready");
    readiness.set(true);
    let lifecycle = agones.map(|link| {
        let (lifecycle, health) =
            agones::Lifecycle::start(&runtime, link, shared.clone(), agones_settings);
        app.insert_resource(health);
        lifecycle
    });
    let exit = app.run();
    drop(app);
    // The app (and with it the results writer's sender) is gone: the writer finishes its queue.
    if let Some(writer) = results_writer {
        let finished =
            runtime.block_on(async { tokio::time::timeout(Duration::from_secs(10), writer).await });
        if finished.is_err() {
            metrics::counter!("croft_instance_results_unwritten_total").increment(1);
            tracing::error!(
                "results not all written in 10 s (the database is away): the rest are lost with this process"
            );
        }
    }
    // Every farm is written (the drain waited for it): give their leases up, so other
    // instances may open them at once.
    if let Some(store) = &shared.store {
        runtime.block_on(async {
            for (user, epoch) in shared.farm_leases() {
                if let Err(e) = store
                    .release_farm_lease(user as i64, &shared.holder, epoch)
                    .await
                {
                    tracing::warn!(user, error = %e, "farm lease not released (it expires)");
                }
            }
        });
    }
    if let Some(lifecycle) = lifecycle {
        lifecycle.finish(&runtime, Duration::from_secs(5));
    }
    if let Some(t) = bus_thread {
        let _ = t.join();
    }
    drop(writer.sink);
    let _ = writer.thread.join();
    if shared.ws_url.is_some() {
        // The WebSocket tasks write the close (1001) they were handed at the disconnect.
        std::thread::sleep(Duration::from_millis(250));
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::info!(?exit, "instance server stopped");
    Ok(())
}

fn build_app(
    config: &InstanceConfig,
    net: NetServer,
    shared: Arc<ControlShared>,
    commands: UnboundedReceiver<ControlCommand>,
    sink: RecordSink,
) -> App {
    let mut app = App::new();
    app.insert_resource(net)
        .insert_resource(sink)
        .insert_resource(Control { shared, commands })
        .add_plugins(InstancePlugins {
            tick_hz: config.tick_hz,
            net_hz: config.net_hz,
            linger_seconds: 10,
            grace: Duration::from_secs(u64::from(config.grace_seconds)),
            drain_seconds: config.drain_seconds,
            hub_chat_per_10s: config.hub_chat_per_10s,
        });
    app
}
