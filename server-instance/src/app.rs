//! The instance server's Bevy app: [`InstancePlugins`] holds the places (matches, farms, hubs)
//! and [`ServerPlugin`], which ties them to the sockets, the control API and the event bus.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bevy::app::{PluginGroupBuilder, ScheduleRunnerPlugin};
use bevy::prelude::*;
use shared_sim::plugin::{
    CardMatch, CommandKind, MatchCommand, MatchInbox, MatchIndex, MatchOutbox, MatchOutput,
    MatchPlugin, MatchSystems, spawn_match,
};

use crate::control::ControlCommand;
use crate::farm::{FarmOutbox, FarmOutput, FarmPlugin, FarmSystems, Farms};
use crate::hub::{HubOutbox, HubOutput, HubPlugin, HubSystems, Hubs};
use crate::net::{self, NetServer, NetSystems};
use crate::persist::RecordSink;
use crate::places::matches::{Absences, expire_absences};
use crate::places::{Place, Refusal};
use crate::{Control, agones, bus};
use shared_sim::protocol::ErrorCode;

/// Players of an ended match are disconnected this long after the end (time for the final
/// events to be delivered and acknowledged).
const CLOSE_AFTER_END: Duration = Duration::from_secs(2);

/// Everything an instance server's app runs: Bevy's minimal plugins (a frame `net_hz` times a
/// second), the places and [`ServerPlugin`]. The server inserts [`NetServer`], [`Control`] and
/// [`RecordSink`]; without them the places run alone.
pub struct InstancePlugins {
    /// Simulation ticks a second.
    pub tick_hz: u32,
    /// Frames a second (sockets are drained every frame); at least `tick_hz`.
    pub net_hz: u32,
    /// Seconds an ended match stays addressable.
    pub linger_seconds: u32,
    /// Time a dropped player has to come back to their match.
    pub grace: Duration,
    /// Seconds running matches get to finish on shutdown before they are aborted.
    pub drain_seconds: u32,
    /// Chat messages a player may send in the common area per 10 seconds.
    pub hub_chat_per_10s: u32,
}

impl PluginGroup for InstancePlugins {
    fn build(self) -> PluginGroupBuilder {
        let hz = self.net_hz.max(self.tick_hz).max(1);
        let frame = Duration::from_secs_f64(1.0 / f64::from(hz));
        PluginGroupBuilder::start::<Self>()
            .add_group(MinimalPlugins)
            .set(ScheduleRunnerPlugin::run_loop(frame))
            .add(MatchPlugin {
                tick_hz: self.tick_hz,
                linger_seconds: self.linger_seconds,
            })
            .add(FarmPlugin)
            .add(HubPlugin {
                chat_per_10s: self.hub_chat_per_10s,
                moves_every_ticks: HubPlugin::moves_every_ticks_at(self.tick_hz),
            })
            .add(ServerPlugin {
                grace: self.grace,
                drain_seconds: self.drain_seconds,
            })
    }
}

/// Sockets, control commands, outbox routing and the drain, around the places.
///
/// It ties the places to the sockets, the control API and the event bus: it applies control
/// commands, routes every place's outbox, and drains on shutdown.
pub struct ServerPlugin {
    pub grace: Duration,
    pub drain_seconds: u32,
}

#[derive(Resource)]
struct Drain {
    seconds: u32,
    deadline: Option<Instant>,
    aborted: std::collections::HashSet<shared_sim::MatchId>,
}

#[derive(Resource, Default)]
struct TickTimer(Option<Instant>);

impl Plugin for ServerPlugin {
    fn build(&self, app: &mut App) {
        app.insert_resource(Absences::new(self.grace))
            .insert_resource(Drain {
                seconds: self.drain_seconds,
                deadline: None,
                aborted: Default::default(),
            })
            .init_resource::<TickTimer>()
            .init_resource::<bus::EventBus>()
            .configure_sets(PostUpdate, NetSystems::Send)
            .configure_sets(
                FixedUpdate,
                NetSystems::Deliver
                    .before(MatchSystems::Receive)
                    .before(FarmSystems)
                    .before(HubSystems),
            )
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
                    .chain()
                    .run_if(wired),
            )
            .add_systems(
                FixedUpdate,
                (
                    start_tick_timer.before(NetSystems::Deliver),
                    agones::health_ping,
                    net::deliver_messages
                        .in_set(NetSystems::Deliver)
                        .run_if(wired),
                    expire_absences
                        .after(NetSystems::Deliver)
                        .before(MatchSystems::Receive),
                    finish_tick_timer
                        .after(MatchSystems::Broadcast)
                        .after(FarmSystems)
                        .after(HubSystems),
                ),
            )
            .add_systems(
                PostUpdate,
                (route_outboxes, net::send_system, drain_system)
                    .chain()
                    .in_set(NetSystems::Send)
                    .run_if(wired),
            );
    }
}

/// Whether the server gave the app its sockets and control API (tests run the places alone).
fn wired(net: Option<Res<NetServer>>, control: Option<Res<Control>>) -> bool {
    net.is_some() && control.is_some()
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
    let now = world.resource::<Time<Real>>().elapsed();
    for cmd in pending {
        match cmd {
            ControlCommand::Create { spec, shard } => {
                let data = shared.data();
                evict_ended_match(world, spec.match_id);
                match spawn_match(world, data, &spec) {
                    Ok(_) => {
                        // Players who never show up forfeit like players who drop.
                        world
                            .resource_mut::<Absences>()
                            .expect(spec.match_id, &spec.players, now);
                        metrics::counter!("croft_instance_matches_started_total").increment(1);
                        world
                            .resource::<bus::EventBus>()
                            .started(events::Event::GameStarted {
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
                tracing::info!(user = loaded.user, epoch = loaded.epoch, "farm open");
                world.resource_mut::<Farms>().open(*loaded, now);
            }
            ControlCommand::LoseFarm(user) => {
                world.resource_scope(|world, mut farms: Mut<Farms>| {
                    farms.lose(user, &mut world.resource_mut::<FarmOutbox>());
                });
            }
            ControlCommand::KeepHub { hub_id, user, name } => {
                world.resource_mut::<Hubs>().expect(hub_id, user, name, now);
            }
            ControlCommand::Drain => {
                tracing::info!("draining: no new matches");
            }
            ControlCommand::Revoke(tags) => {
                world.resource_mut::<NetServer>().revoke(tags, now);
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

/// What the places produced goes to the players' connections, the control API's books, the
/// match log and the event bus.
#[allow(clippy::too_many_arguments)]
fn route_outboxes(
    mut matches: ResMut<MatchOutbox>,
    mut farms: ResMut<FarmOutbox>,
    mut hubs: ResMut<HubOutbox>,
    mut absences: ResMut<Absences>,
    mut net: ResMut<NetServer>,
    control: Res<Control>,
    sink: Res<RecordSink>,
    bus: Res<bus::EventBus>,
) {
    for output in matches.0.drain(..) {
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
                match_ended(&record, &control, &bus);
                absences.forget(record.match_id, &record.players);
                for user in record.players {
                    net.close_later(record.match_id, user, CLOSE_AFTER_END);
                }
                if sink.0.send(*record).is_err() {
                    tracing::error!("match log writer is gone; record lost");
                }
            }
        }
    }
    let on_farm = |p: &Place| *p == Place::Farm;
    for output in farms.0.drain(..) {
        match output {
            FarmOutput::ToPlayer { user, message } => {
                net.send_if(user, on_farm, &message);
            }
            FarmOutput::Closed(user) => control.shared.close_farm(user),
            FarmOutput::Lost(user) => {
                control.shared.close_farm(user);
                if net.sessions.get(&user).is_some_and(|s| on_farm(&s.place)) {
                    net.kick(
                        user,
                        Refusal::new(
                            ErrorCode::Unavailable,
                            "your farm moved to another server; enter it again",
                            "farm_lost",
                        ),
                    );
                }
            }
        }
    }
    let in_hub = |p: &Place| matches!(p, Place::Hub(_));
    for output in hubs.0.drain(..) {
        match output {
            HubOutput::ToPlayer { user, message } => {
                net.send_if(user, in_hub, &message);
            }
            HubOutput::ToPlayers { users, message } => {
                let bytes = shared_net::Bytes::from(message.encode());
                for user in users {
                    if net.sessions.get(&user).is_some_and(|s| in_hub(&s.place)) {
                        net.send_bytes(user, bytes.clone());
                    }
                }
            }
            HubOutput::Arrived(user) => {
                if let Ok(mut book) = control.shared.hub_book.lock() {
                    book.arrived(user);
                }
            }
            HubOutput::Released(user) => {
                if let Ok(mut book) = control.shared.hub_book.lock() {
                    book.release(user);
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

/// A match ended: its slot is free, and the logs, metrics, bus and results feed hear of it.
fn match_ended(record: &shared_sim::plugin::MatchRecord, control: &Control, bus: &bus::EventBus) {
    let reason = format!("{:?}", record.result.reason);
    let winner = record.result.winner.map(|s| record.players[s.index()]);
    metrics::counter!("croft_instance_matches_ended_total", "reason" => reason.clone())
        .increment(1);
    tracing::info!(
        event = "game_ended",
        match_id = record.match_id,
        winner = ?winner,
        reason,
        turns = record.turns,
        inputs = record.log.len(),
        "match ended"
    );
    control.shared.release(record.match_id);
    let event = events::Event::GameEnded {
        match_id: record.match_id,
        players: record.players.to_vec(),
        winner,
        reason: reason.clone(),
        turns: record.turns,
    };
    let ended = contracts::instance::v1::EndedMatch {
        seq: 0,
        match_id: record.match_id,
        players: record.players,
        winner,
        reason,
        turns: record.turns,
        data_version: record.data_version,
    };
    bus.ended(ended, event, &control.shared);
}

fn drain_system(
    control: Res<Control>,
    mut drain: ResMut<Drain>,
    matches: Query<&CardMatch>,
    mut inbox: ResMut<MatchInbox>,
    mut net: ResMut<NetServer>,
    farms: Res<Farms>,
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
    if running.is_empty() && control.shared.running() == 0 && farms.all_saved() {
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
