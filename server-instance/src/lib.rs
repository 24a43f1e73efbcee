//! The instance server: a headless Bevy app that hosts many card matches in one process over
//! secure netcode, created through an authenticated control API, with finished matches written
//! to the match log by a background thread.

pub mod agones;
pub mod bus;
pub mod config;
pub mod control;
pub mod farm;
pub mod hub;
pub mod net;
pub mod persist;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use bevy::app::ScheduleRunnerPlugin;
use bevy::prelude::*;
use shared_sim::GameData;
use shared_sim::plugin::{
    CardMatch, CommandKind, MatchCommand, MatchInbox, MatchIndex, MatchOutbox, MatchOutput,
    MatchPlugin, MatchSystems, spawn_match,
};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

pub use config::InstanceConfig;
use contracts::instance::v1::ReadyInfo;
use control::{ControlCommand, ControlShared};
use net::{NetServer, NetSystems};
use persist::RecordSink;

#[derive(Resource)]
pub(crate) struct Control {
    pub(crate) shared: Arc<ControlShared>,
    commands: UnboundedReceiver<ControlCommand>,
}

/// Players of an ended match are disconnected this long after the end (time for the final
/// events to be delivered and acknowledged).
const CLOSE_AFTER_END: Duration = Duration::from_secs(2);

/// How long a new match waits for a player beyond the reconnect grace: a connect token's lifetime.
const NO_SHOW_EXTRA: Duration = Duration::from_secs(60);

#[derive(Resource)]
struct Drain {
    seconds: u32,
    deadline: Option<Instant>,
    aborted: std::collections::HashSet<shared_sim::MatchId>,
}

#[derive(Resource, Default)]
struct TickTimer(Option<Instant>);

/// Runs the server until it is drained (SIGTERM, Ctrl-C or `POST /v1/drain`).
pub fn run(config: InstanceConfig) -> anyhow::Result<()> {
    telemetry::init_logging("server-instance", telemetry::LogTarget::Stdout);
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
            grace: Duration::from_secs(u64::from(config.grace_seconds)),
            bad_message_budget: config.bad_message_budget,
            max_messages_per_second: config.max_messages_per_second,
            idle_flush_ticks: (u64::from(config.idle_flush_ms) * u64::from(config.tick_hz) / 1000)
                .max(1),
        },
    )?;
    let mut net = net;
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
            let (wt, wr, dt, dr) = farm::Farms::channels();
            runtime.spawn(farm::writer(store, wr, dt));
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
    let frame = Duration::from_secs_f64(1.0 / f64::from(config.net_hz.max(config.tick_hz).max(1)));
    let mut app = App::new();
    app.add_plugins(MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(frame)))
        .add_plugins(MatchPlugin {
            tick_hz: config.tick_hz,
            linger_seconds: 10,
        })
        .insert_resource(net)
        .insert_resource(sink)
        .insert_resource(Control { shared, commands })
        .insert_resource(Drain {
            seconds: config.drain_seconds,
            deadline: None,
            aborted: Default::default(),
        })
        .init_resource::<TickTimer>()
        .init_resource::<bus::EventBus>()
        .insert_resource(farm::Farms::new(None, std::sync::mpsc::channel().1))
        .init_resource::<hub::Hubs>()
        .configure_sets(PostUpdate, NetSystems::Send)
        .add_systems(
            PreUpdate,
            // Sockets first: a client can only connect after the control API answered, so
            // every place a connection drained here names was created by a command already
            // queued, and is applied before the tick admits the client. (A WebSocket client
            // connects within a millisecond of the answer; with the other order, a frame
            // preempted between the two systems admitted it before its match existed.)
            (
                net::drain_sockets.in_set(NetSystems::Receive),
                apply_control_commands,
            )
                .chain(),
        )
        .add_systems(
            FixedUpdate,
            (
                start_tick_timer.before(NetSystems::Deliver),
                agones::health_ping,
                net::deliver_messages
                    .in_set(NetSystems::Deliver)
                    .before(MatchSystems::Receive),
                finish_tick_timer.after(MatchSystems::Broadcast),
                farm::farm_system.after(NetSystems::Deliver),
                hub::hub_system.after(NetSystems::Deliver),
            ),
        )
        .add_systems(
            PostUpdate,
            (route_outbox, net::send_system, drain_system)
                .chain()
                .in_set(NetSystems::Send),
        );
    app
}

fn start_tick_timer(mut timer: ResMut<TickTimer>) {
    timer.0 = Some(Instant::now());
}

fn finish_tick_timer(mut timer: ResMut<TickTimer>) {
    if let Some(start) = timer.0.take() {
        metrics::histogram!("croft_instance_tick_seconds").record(start.elapsed().as_secs_f64());
    }
}

fn apply_control_commands(world: &mut World) {
    let mut pending = Vec::new();
    {
        let mut control = world.resource_mut::<Control>();
        while let Ok(cmd) = control.commands.try_recv() {
            pending.push(cmd);
        }
    }
    if pending.is_empty() {
        return;
    }
    let shared = world.resource::<Control>().shared.clone();
    for cmd in pending {
        match cmd {
            ControlCommand::Create { spec, shard } => {
                let data = shared.data();
                evict_ended_match(world, spec.match_id);
                match spawn_match(world, data, &spec) {
                    Ok(_) => {
                        // Players who never show up forfeit like players who drop.
                        let mut net = world.resource_mut::<NetServer>();
                        let until = Instant::now() + net.grace + NO_SHOW_EXTRA;
                        for user in spec.players {
                            let away = net::Away {
                                until,
                                joined_before: false,
                            };
                            net.away.insert((spec.match_id, user), away);
                        }
                        metrics::counter!("croft_instance_matches_started_total").increment(1);
                        world
                            .resource::<bus::EventBus>()
                            .emit(events::Event::GameStarted {
                                match_id: spec.match_id,
                                players: spec.players.to_vec(),
                            });
                        tracing::info!(
                            event = "game_started",
                            match_id = spec.match_id,
                            players = ?spec.players,
                            shard,
                            "match created"
                        );
                    }
                    Err(e) => {
                        shared.release(spec.match_id);
                        tracing::warn!(match_id = spec.match_id, error = %e, "match not created");
                    }
                }
            }
            ControlCommand::OpenFarm(loaded) => {
                tracing::info!(user = loaded.user, "farm open");
                world.resource_mut::<farm::Farms>().open(*loaded);
            }
            ControlCommand::KeepHub { hub_id, user, name } => {
                world.resource_mut::<hub::Hubs>().expect(hub_id, user, name);
            }
            ControlCommand::Drain => {
                tracing::info!("draining: no new matches");
            }
        }
    }
}

/// A finished match lingers for late messages; a new match reusing its id replaces it.
fn evict_ended_match(world: &mut World, id: shared_sim::MatchId) {
    let Some(entity) = world.resource::<MatchIndex>().0.get(&id).copied() else {
        return;
    };
    let ended = world
        .get::<CardMatch>(entity)
        .is_some_and(|m| m.state.is_over());
    if ended {
        world.resource_mut::<MatchIndex>().0.remove(&id);
        world.despawn(entity);
    }
}

fn route_outbox(
    mut outbox: ResMut<MatchOutbox>,
    mut net: ResMut<NetServer>,
    control: Res<Control>,
    sink: Res<RecordSink>,
    bus: Res<bus::EventBus>,
) {
    for output in outbox.0.drain(..) {
        match output {
            MatchOutput::ToPlayer {
                match_id,
                user_id,
                message,
            } => {
                if let shared_sim::protocol::ServerMessage::ActionRejected { reason, .. } = &message
                {
                    metrics::counter!("croft_instance_actions_rejected_total", "reason" => format!("{reason:?}"))
                        .increment(1);
                }
                // A player who is away gets a snapshot when they return.
                net.send_in_match(match_id, user_id, &message);
            }
            MatchOutput::Ended(record) => {
                let reason = format!("{:?}", record.result.reason);
                metrics::counter!("croft_instance_matches_ended_total", "reason" => reason.clone())
                    .increment(1);
                tracing::info!(
                    event = "game_ended",
                    match_id = record.match_id,
                    winner = ?record.result.winner.map(|s| record.players[s.index()]),
                    reason,
                    turns = record.turns,
                    inputs = record.log.len(),
                    "match ended"
                );
                control.shared.release(record.match_id);
                bus.emit(events::Event::GameEnded {
                    match_id: record.match_id,
                    players: record.players.to_vec(),
                    winner: record.result.winner.map(|s| record.players[s.index()]),
                    reason: reason.clone(),
                    turns: record.turns,
                });
                control
                    .shared
                    .push_ended(contracts::instance::v1::EndedMatch {
                        seq: 0,
                        match_id: record.match_id,
                        players: record.players,
                        winner: record.result.winner.map(|s| record.players[s.index()]),
                        reason,
                        turns: record.turns,
                        data_version: record.data_version,
                    });
                for user in record.players {
                    net.away.remove(&(record.match_id, user));
                    net.close_later(record.match_id, user, CLOSE_AFTER_END);
                }
                if sink.0.send(*record).is_err() {
                    tracing::error!("match log writer is gone; record lost");
                }
            }
        }
    }
    let running = control.shared.running();
    metrics::gauge!("croft_instance_matches_running").set(running as f64);
    metrics::gauge!("croft_instance_free_match_slots").set(control.shared.free(running) as f64);
    control
        .shared
        .clients_connected
        .store(net.connected(), Ordering::Relaxed);
}

fn drain_system(
    control: Res<Control>,
    mut drain: ResMut<Drain>,
    matches: Query<&CardMatch>,
    mut inbox: ResMut<MatchInbox>,
    mut net: ResMut<NetServer>,
    farms: Res<farm::Farms>,
    mut exit: MessageWriter<AppExit>,
) {
    if !control.shared.draining.load(Ordering::SeqCst) {
        return;
    }
    let now = Instant::now();
    let seconds = u64::from(drain.seconds);
    let deadline = *drain
        .deadline
        .get_or_insert(now + Duration::from_secs(seconds));
    let running: Vec<&CardMatch> = matches.iter().filter(|m| !m.state.is_over()).collect();
    // `running()` counts reservations too: a match accepted but not yet spawned keeps us up.
    // Farms' last changes are written before the process goes.
    if running.is_empty() && control.shared.running() == 0 && farm::all_saved(&farms) {
        net::disconnect_all(&mut net);
        exit.write(AppExit::Success);
        return;
    }
    if now >= deadline {
        for m in running {
            if drain.aborted.insert(m.id) {
                tracing::warn!(match_id = m.id, "drain deadline passed: aborting");
                inbox.0.push(MatchCommand {
                    match_id: m.id,
                    user_id: m.players[0],
                    kind: CommandKind::Abort,
                });
            }
        }
    }
}
