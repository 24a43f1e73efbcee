//! Farms: each player's farm is hosted here like a match, many per process, while its player
//! is on it. Matchmaking opens one through `POST /v1/farms`, which loads it from the store and
//! brings its plots forward by the time that passed (closed form: [`Farm::advance_to`]).
//!
//! Writes go through one background task per process, in order, never on the tick:
//! - an action that changes the inventory (planting takes a seed, harvesting adds produce) is
//!   one store transaction with the farm's new state; the client hears `FarmActionResult` only
//!   after it committed, so a crash never loses a harvest the player saw, and the farm takes
//!   the new state only then;
//! - other changes (watering, clearing) are applied at once and the farm is written at most
//!   once a second while it has unsaved changes, so a kill -9 loses at most that second.
//!   Growth itself is never written: it is recomputed from the farm tick on load.
//!
//! A farm whose player left is written (if it must be) and closed after [`CLOSE_AFTER`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bevy::prelude::*;
use shared_sim::GameData;
use shared_sim::farm::{FARM_TICKS_PER_SECOND, Farm, FarmAction, FarmEffect, FarmError};
use shared_sim::plugin::UserId;
use shared_sim::protocol::ServerMessage;
use store::ItemChange;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::net::NetServer;

/// A farm without its player is closed this long after they left.
pub const CLOSE_AFTER: Duration = Duration::from_secs(10);

/// Unsaved changes are written at most this often.
pub const SAVE_EVERY: Duration = Duration::from_secs(1);

/// The farm tick of the wall clock.
pub fn farm_tick_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() * FARM_TICKS_PER_SECOND)
        .unwrap_or(0)
}

/// A farm as the store held it, ready to be hosted.
#[derive(Debug, Clone)]
pub struct LoadedFarm {
    pub user: UserId,
    pub farm: Farm,
    pub version: i64,
    pub items: HashMap<String, u32>,
    pub data: Arc<GameData>,
}

/// Loads `user`'s farm (a new one if they have none) and inventory, advanced to now.
pub async fn load(
    store: &store::Store,
    data: Arc<GameData>,
    user: UserId,
) -> Result<LoadedFarm, store::StoreError> {
    let now = farm_tick_now();
    let (mut farm, version) = match store.farm(user as i64).await? {
        Some((json, version)) => match serde_json::from_str::<Farm>(&json) {
            Ok(farm) => (farm, version),
            Err(e) => {
                return Err(store::StoreError::Internal(format!(
                    "farm of user {user} does not parse: {e}"
                )));
            }
        },
        None => (Farm::new(data.rules.farm_plots, now), 0),
    };
    // More plots in the data than on the farm: the farm grows; fewer: it keeps its plots.
    if farm.plots.len() < data.rules.farm_plots {
        farm.plots.resize(data.rules.farm_plots, Default::default());
    }
    farm.advance_to(&data.crops, now);
    let items = store
        .inventory(user as i64)
        .await?
        .into_iter()
        .map(|(id, n)| (id, n.max(0) as u32))
        .collect();
    Ok(LoadedFarm {
        user,
        farm,
        version,
        items,
        data,
    })
}

/// What the writer task does, in order. The farm goes as it is: the writer encodes it, so
/// the tick only clones a few plots.
#[derive(Debug)]
pub enum FarmWrite {
    Snapshot {
        user: UserId,
        farm: Farm,
        version: i64,
    },
    Action {
        user: UserId,
        seq: u32,
        changes: Vec<ItemChange>,
        farm: Farm,
        version: i64,
    },
}

fn encode(farm: &Farm) -> Result<String, store::StoreError> {
    serde_json::to_string(farm)
        .map_err(|e| store::StoreError::Internal(format!("farm does not encode: {e}")))
}

/// What came of a write.
#[derive(Debug)]
pub enum WriteDone {
    Snapshot {
        user: UserId,
        ok: bool,
    },
    Action {
        user: UserId,
        seq: u32,
        outcome: Result<bool, String>,
    },
}

/// Runs the writes in order until the sender is dropped.
pub async fn writer(
    store: store::Store,
    mut writes: UnboundedReceiver<FarmWrite>,
    done: std::sync::mpsc::Sender<WriteDone>,
) {
    while let Some(w) = writes.recv().await {
        let result = match w {
            FarmWrite::Snapshot {
                user,
                farm,
                version,
            } => {
                let r = match encode(&farm) {
                    Ok(state) => store.save_farm(user as i64, &state, version).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = &r {
                    tracing::warn!(user, error = %e, "farm snapshot not written");
                    metrics::counter!("croft_instance_farm_write_errors_total").increment(1);
                }
                WriteDone::Snapshot {
                    user,
                    ok: r.is_ok(),
                }
            }
            FarmWrite::Action {
                user,
                seq,
                changes,
                farm,
                version,
            } => {
                let r = match encode(&farm) {
                    Ok(state) => {
                        store
                            .farm_action(user as i64, &changes, &state, version)
                            .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = &r {
                    tracing::warn!(user, error = %e, "farm action not written");
                    metrics::counter!("croft_instance_farm_write_errors_total").increment(1);
                }
                WriteDone::Action {
                    user,
                    seq,
                    outcome: r.map_err(|e| e.to_string()),
                }
            }
        };
        if done.send(result).is_err() {
            return;
        }
    }
}

struct Pending {
    seq: u32,
    farm: Farm,
    changes: Vec<ItemChange>,
}

struct Hosted {
    farm: Farm,
    version: i64,
    items: HashMap<String, u32>,
    data: Arc<GameData>,
    connected: bool,
    left_at: Option<Instant>,
    dirty: bool,
    last_save: Instant,
    pending: Option<Pending>,
    /// A snapshot write is in flight (no second one until it is done).
    saving: bool,
}

/// What the network side hands the farms.
#[derive(Debug)]
pub enum FarmInput {
    Joined(UserId),
    Left(UserId),
    Action {
        user: UserId,
        seq: u32,
        action: FarmAction,
    },
}

/// The farms this process hosts.
#[derive(Resource)]
pub struct Farms {
    hosted: HashMap<UserId, Hosted>,
    pub inbox: Vec<FarmInput>,
    writes: Option<UnboundedSender<FarmWrite>>,
    done: std::sync::Mutex<std::sync::mpsc::Receiver<WriteDone>>,
    last_growth: Instant,
}

impl Farms {
    /// Farms that write through `writes` and hear back on `done`; `None`: no database, no farms.
    pub fn new(
        writes: Option<UnboundedSender<FarmWrite>>,
        done: std::sync::mpsc::Receiver<WriteDone>,
    ) -> Farms {
        Farms {
            hosted: HashMap::new(),
            inbox: Vec::new(),
            writes,
            done: std::sync::Mutex::new(done),
            last_growth: Instant::now(),
        }
    }

    /// A writer channel pair for [`Farms::new`] and [`writer`].
    pub fn channels() -> (
        UnboundedSender<FarmWrite>,
        UnboundedReceiver<FarmWrite>,
        std::sync::mpsc::Sender<WriteDone>,
        std::sync::mpsc::Receiver<WriteDone>,
    ) {
        let (wt, wr) = unbounded_channel();
        let (dt, dr) = std::sync::mpsc::channel();
        (wt, wr, dt, dr)
    }

    pub fn hosts(&self, user: UserId) -> bool {
        self.hosted.contains_key(&user)
    }

    /// Starts hosting a loaded farm (a second open of the same farm changes nothing).
    pub fn open(&mut self, loaded: LoadedFarm) {
        self.hosted.entry(loaded.user).or_insert_with(|| Hosted {
            farm: loaded.farm,
            version: loaded.version,
            items: loaded.items,
            data: loaded.data,
            connected: false,
            left_at: Some(Instant::now()),
            dirty: false,
            last_save: Instant::now(),
            pending: None,
            saving: false,
        });
        metrics::gauge!("croft_instance_farms").set(self.hosted.len() as f64);
    }

    fn write(&self, w: FarmWrite) -> bool {
        self.writes.as_ref().is_some_and(|tx| tx.send(w).is_ok())
    }
}

fn state_of(h: &Hosted) -> ServerMessage {
    let mut items: Vec<(String, u32)> = h
        .items
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    items.sort();
    ServerMessage::FarmState {
        tick: h.farm.tick,
        plots: h.farm.plots.clone(),
        items,
    }
}

fn apply_changes(items: &mut HashMap<String, u32>, changes: &[ItemChange]) {
    for c in changes {
        match c {
            ItemChange::Take(id, n) => {
                let e = items.entry(id.clone()).or_default();
                *e = e.saturating_sub(*n as u32);
            }
            ItemChange::Add { id, amount, .. } => {
                *items.entry(id.clone()).or_default() += *amount as u32;
            }
        }
    }
}

/// Runs on every simulation tick (`FixedUpdate`): write results, client input, growth,
/// periodic saves and closing.
pub(crate) fn farm_system(
    mut farms: ResMut<Farms>,
    mut net: ResMut<NetServer>,
    control: Res<crate::Control>,
) {
    let farms = &mut *farms;
    let now = Instant::now();
    // 1. What the writer finished.
    let done: Vec<WriteDone> = match farms.done.lock() {
        Ok(rx) => rx.try_iter().collect(),
        Err(_) => Vec::new(),
    };
    for d in done {
        match d {
            WriteDone::Snapshot { user, ok } => {
                if let Some(h) = farms.hosted.get_mut(&user) {
                    h.saving = false;
                    if !ok {
                        h.dirty = true;
                    }
                }
            }
            WriteDone::Action { user, seq, outcome } => {
                let Some(h) = farms.hosted.get_mut(&user) else {
                    continue;
                };
                let Some(p) = h.pending.take() else {
                    continue;
                };
                if p.seq != seq {
                    tracing::error!(
                        user,
                        seq,
                        pending = p.seq,
                        "farm write answered out of order"
                    );
                }
                let error = match outcome {
                    Ok(true) => {
                        h.farm = p.farm;
                        h.farm
                            .advance_to(&h.data.crops, crate::farm::farm_tick_now());
                        apply_changes(&mut h.items, &p.changes);
                        h.last_save = now;
                        None
                    }
                    // The store refused: the inventory changed elsewhere (a craft); the farm
                    // keeps its old state and the item count is taken as gone.
                    Ok(false) => {
                        for c in &p.changes {
                            if let ItemChange::Take(id, _) = c {
                                h.items.insert(id.clone(), 0);
                            }
                        }
                        Some(match p.changes.first() {
                            Some(ItemChange::Add { .. }) => FarmError::InventoryFull,
                            _ => FarmError::MissingSeed,
                        })
                    }
                    Err(_) => Some(FarmError::Unavailable),
                };
                if h.connected {
                    net.send(user, &ServerMessage::FarmActionResult { seq, error });
                    net.send(user, &state_of(h));
                }
            }
        }
    }
    // 2. Input from the clients.
    let inbox = std::mem::take(&mut farms.inbox);
    for input in inbox {
        match input {
            FarmInput::Joined(user) => {
                if let Some(h) = farms.hosted.get_mut(&user) {
                    h.connected = true;
                    h.left_at = None;
                    h.farm.advance_to(&h.data.crops, farm_tick_now());
                    net.send(user, &state_of(h));
                }
            }
            FarmInput::Left(user) => {
                if let Some(h) = farms.hosted.get_mut(&user) {
                    h.connected = false;
                    h.left_at = Some(now);
                }
            }
            FarmInput::Action { user, seq, action } => {
                let Some(h) = farms.hosted.get_mut(&user) else {
                    continue;
                };
                if h.pending.is_some() {
                    net.send(
                        user,
                        &ServerMessage::FarmActionResult {
                            seq,
                            error: Some(FarmError::Busy),
                        },
                    );
                    continue;
                }
                h.farm.advance_to(&h.data.crops, farm_tick_now());
                let mut next = h.farm.clone();
                let items = &h.items;
                let data = &h.data;
                let result = next.apply(
                    &data.crops,
                    &action,
                    |seed| items.get(seed).copied().unwrap_or(0) > 0,
                    |item, n| {
                        let max = data.item(item).map_or(99, |i| i.max_stack.max(0) as u32);
                        items.get(item).copied().unwrap_or(0) + n <= max
                    },
                );
                let changes = match &result {
                    Ok(FarmEffect::Consumed(seed)) => vec![ItemChange::Take(seed.clone(), 1)],
                    Ok(FarmEffect::Produced(item, n)) => vec![ItemChange::Add {
                        id: item.clone(),
                        amount: *n as i32,
                        max_stack: data.item(item).map_or(99, |i| i.max_stack),
                    }],
                    _ => Vec::new(),
                };
                match result {
                    Err(e) => {
                        metrics::counter!("croft_instance_farm_actions_total", "result" => "refused")
                            .increment(1);
                        net.send(
                            user,
                            &ServerMessage::FarmActionResult {
                                seq,
                                error: Some(e),
                            },
                        );
                    }
                    Ok(_) if changes.is_empty() => {
                        metrics::counter!("croft_instance_farm_actions_total", "result" => "ok")
                            .increment(1);
                        h.farm = next;
                        h.dirty = true;
                        net.send(user, &ServerMessage::FarmActionResult { seq, error: None });
                        net.send(user, &state_of(h));
                    }
                    Ok(_) => {
                        metrics::counter!("croft_instance_farm_actions_total", "result" => "ok")
                            .increment(1);
                        h.version += 1;
                        let write = FarmWrite::Action {
                            user,
                            seq,
                            changes: changes.clone(),
                            farm: next.clone(),
                            version: h.version,
                        };
                        h.pending = Some(Pending {
                            seq,
                            farm: next,
                            changes,
                        });
                        // Unsaved watering goes with this write (it holds the whole farm).
                        h.dirty = false;
                        let sent = farms
                            .writes
                            .as_ref()
                            .is_some_and(|tx| tx.send(write).is_ok());
                        if !sent {
                            h.pending = None;
                            net.send(
                                user,
                                &ServerMessage::FarmActionResult {
                                    seq,
                                    error: Some(FarmError::Unavailable),
                                },
                            );
                        }
                    }
                }
            }
        }
    }
    // 3. Growth: once a farm tick, connected players see their plots change.
    if now.duration_since(farms.last_growth)
        >= Duration::from_secs(1) / FARM_TICKS_PER_SECOND as u32
    {
        farms.last_growth = now;
        let tick = farm_tick_now();
        for (user, h) in farms.hosted.iter_mut() {
            let before = h.farm.plots.clone();
            h.farm.advance_to(&h.data.crops, tick);
            if h.connected && h.farm.plots != before {
                net.send(*user, &state_of(h));
            }
        }
    }
    // 4. Unsaved changes, at most once a second per farm.
    let mut writes = Vec::new();
    for (user, h) in farms.hosted.iter_mut() {
        if h.dirty && !h.saving && h.pending.is_none() && now - h.last_save >= SAVE_EVERY {
            h.version += 1;
            h.dirty = false;
            h.saving = true;
            h.last_save = now;
            writes.push(FarmWrite::Snapshot {
                user: *user,
                farm: h.farm.clone(),
                version: h.version,
            });
        }
    }
    for w in writes {
        farms.write(w);
    }
    // 5. Close farms whose player left, once nothing is unsaved.
    let closing: Vec<UserId> = farms
        .hosted
        .iter()
        .filter(|(_, h)| {
            !h.connected
                && h.left_at.is_some_and(|t| now - t >= CLOSE_AFTER)
                && !h.dirty
                && !h.saving
                && h.pending.is_none()
        })
        .map(|(u, _)| *u)
        .collect();
    for user in closing {
        farms.hosted.remove(&user);
        control.shared.close_farm(user);
        tracing::info!(user, "farm closed");
    }
    metrics::gauge!("croft_instance_farms").set(farms.hosted.len() as f64);
}

/// Whether every farm change is written (the drain waits for it).
pub fn all_saved(farms: &Farms) -> bool {
    farms
        .hosted
        .values()
        .all(|h| !h.dirty && !h.saving && h.pending.is_none())
}
