//! Farms: each player's farm is hosted here like a match, many per process, while its player
//! is on it.

pub mod storage;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bevy::prelude::*;
use shared_sim::GameData;
use shared_sim::farm::{FARM_TICKS_PER_SECOND, Farm, FarmAction, FarmEffect, FarmError};
use shared_sim::plugin::UserId;
use shared_sim::protocol::ServerMessage;
use store::ItemChange;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

pub use storage::{FarmWrite, LoadedFarm, WriteDone, farm_tick_now, load, writer};

/// A farm without its player is closed this long after they left.
pub const CLOSE_AFTER: Duration = Duration::from_secs(10);

/// Unsaved changes are written at most this often.
pub const SAVE_EVERY: Duration = Duration::from_secs(1);

/// The farms' step of the simulation tick (`FixedUpdate`).
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FarmSystems;

/// Hosts farms: a [`Farms`] resource (without a writer until the server gives it one: then
/// every action that needs the store fails with `Unavailable`), its inbox and its outbox.
///
/// It runs the farms on the simulation tick from a [`FarmInbox`] (arrivals, departures,
/// actions) into a [`FarmOutbox`] (messages for players, closed farms); it knows no sockets.
/// Writes go through one background task per process ([`storage::writer`]), in order:
/// - an action that changes the inventory (planting takes a seed, harvesting adds produce) is
///   one store transaction with the farm's new state; the client hears `FarmActionResult` only
///   after it committed, so a crash never loses a harvest the player saw, and the farm takes
///   the new state only then;
/// - other changes (watering, clearing) are applied at once and the farm is written at most
///   once a second while it has unsaved changes, so a kill -9 loses at most that second.
///   Growth itself is never written: it is recomputed from the farm tick on load.
///
/// A farm whose player left is written (if it must be) and closed after [`CLOSE_AFTER`].
pub struct FarmPlugin;

impl Plugin for FarmPlugin {
    fn build(&self, app: &mut App) {
        if !app.world().contains_resource::<Farms>() {
            app.insert_resource(Farms::new(None, std::sync::mpsc::channel().1));
        }
        app.init_resource::<FarmInbox>()
            .init_resource::<FarmOutbox>()
            .add_systems(FixedUpdate, farm_system.in_set(FarmSystems));
    }
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

#[derive(Resource, Default, Debug)]
pub struct FarmInbox(pub Vec<FarmInput>);

/// What the farms hand back.
#[derive(Debug, Clone, PartialEq)]
pub enum FarmOutput {
    /// For the player on their farm.
    ToPlayer {
        user: UserId,
        message: ServerMessage,
    },
    /// The farm was written and is no longer hosted here.
    Closed(UserId),
    /// Another instance holds the farm now: it is no longer hosted here, and its player must
    /// go (their next connection opens it where it is).
    Lost(UserId),
}

#[derive(Resource, Default, Debug)]
pub struct FarmOutbox(pub Vec<FarmOutput>);

impl FarmOutbox {
    fn send(&mut self, user: UserId, message: ServerMessage) {
        self.0.push(FarmOutput::ToPlayer { user, message });
    }
}

struct Pending {
    seq: u32,
    farm: Farm,
    changes: Vec<ItemChange>,
}

/// Times are the server's real time since start (`Time<Real>::elapsed`).
struct Hosted {
    farm: Farm,
    version: i64,
    /// This instance's lease epoch on the farm.
    epoch: i64,
    items: HashMap<String, u32>,
    data: Arc<GameData>,
    connected: bool,
    left_at: Option<Duration>,
    dirty: bool,
    last_save: Duration,
    pending: Option<Pending>,
    /// A snapshot write is in flight (no second one until it is done).
    saving: bool,
}

impl Hosted {
    fn all_saved(&self) -> bool {
        !self.dirty && !self.saving && self.pending.is_none()
    }
}

/// The farms this process hosts.
#[derive(Resource)]
pub struct Farms {
    hosted: HashMap<UserId, Hosted>,
    writes: Option<UnboundedSender<FarmWrite>>,
    done: std::sync::Mutex<std::sync::mpsc::Receiver<WriteDone>>,
    last_growth: Duration,
}

impl Farms {
    /// Farms that write through `writes` and hear back on `done`; `None`: no database, no farms.
    pub fn new(
        writes: Option<UnboundedSender<FarmWrite>>,
        done: std::sync::mpsc::Receiver<WriteDone>,
    ) -> Farms {
        Farms {
            hosted: HashMap::new(),
            writes,
            done: std::sync::Mutex::new(done),
            last_growth: Duration::ZERO,
        }
    }

    /// A writer channel pair for [`Farms::new`] and [`writer`].
    pub fn channels() -> (
        UnboundedSender<FarmWrite>,
        tokio::sync::mpsc::UnboundedReceiver<FarmWrite>,
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

    /// Starts hosting a loaded farm at `now` (a second open of the same farm changes nothing).
    ///
    /// Matchmaking opens one through `POST /v1/farms`, which loads it from the store and brings
    /// its plots forward by the time that passed (closed form: [`Farm::advance_to`]).
    pub fn open(&mut self, loaded: LoadedFarm, now: Duration) {
        self.hosted.entry(loaded.user).or_insert_with(|| Hosted {
            farm: loaded.farm,
            version: loaded.version,
            epoch: loaded.epoch,
            items: loaded.items,
            data: loaded.data,
            connected: false,
            left_at: Some(now),
            dirty: false,
            last_save: now,
            pending: None,
            saving: false,
        });
        metrics::gauge!("croft_instance_farms").set(self.hosted.len() as f64);
    }

    /// Stops hosting `user`'s farm at once, unsaved changes and all: another instance holds
    /// its lease now, and only that one may write it.
    pub fn lose(&mut self, user: UserId, outbox: &mut FarmOutbox) {
        if self.hosted.remove(&user).is_some() {
            tracing::warn!(user, "farm lost to another instance");
            outbox.0.push(FarmOutput::Lost(user));
        }
    }

    /// Whether every farm change is written (the drain waits for it).
    pub fn all_saved(&self) -> bool {
        self.hosted.values().all(Hosted::all_saved)
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

/// Every simulation tick: write results, client input, growth, periodic saves and closing.
fn farm_system(
    mut farms: ResMut<Farms>,
    mut inbox: ResMut<FarmInbox>,
    mut outbox: ResMut<FarmOutbox>,
    time: Res<Time<Real>>,
) {
    let farms = &mut *farms;
    let now = time.elapsed();
    // 1. What the writer finished.
    let done: Vec<WriteDone> = match farms.done.lock() {
        Ok(rx) => rx.try_iter().collect(),
        Err(_) => Vec::new(),
    };
    for d in done {
        written(farms, d, now, &mut outbox);
    }
    // 2. Input from the clients.
    for input in std::mem::take(&mut inbox.0) {
        match input {
            FarmInput::Joined(user) => {
                if let Some(h) = farms.hosted.get_mut(&user) {
                    h.connected = true;
                    h.left_at = None;
                    h.farm.advance_to(&h.data.crops, farm_tick_now());
                    outbox.send(user, state_of(h));
                }
            }
            FarmInput::Left(user) => {
                if let Some(h) = farms.hosted.get_mut(&user) {
                    h.connected = false;
                    h.left_at = Some(now);
                }
            }
            FarmInput::Action { user, seq, action } => {
                act(farms, user, seq, &action, &mut outbox);
            }
        }
    }
    // 3. Growth: once a farm tick, connected players see their plots change.
    if now.saturating_sub(farms.last_growth)
        >= Duration::from_secs(1) / FARM_TICKS_PER_SECOND as u32
    {
        farms.last_growth = now;
        let tick = farm_tick_now();
        for (user, h) in farms.hosted.iter_mut() {
            let before = h.farm.plots.clone();
            h.farm.advance_to(&h.data.crops, tick);
            if h.connected && h.farm.plots != before {
                outbox.send(*user, state_of(h));
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
                epoch: h.epoch,
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
            !h.connected && h.left_at.is_some_and(|t| now - t >= CLOSE_AFTER) && h.all_saved()
        })
        .map(|(u, _)| *u)
        .collect();
    for user in closing {
        if let Some(h) = farms.hosted.remove(&user) {
            farms.write(FarmWrite::Release {
                user,
                epoch: h.epoch,
            });
        }
        outbox.0.push(FarmOutput::Closed(user));
        tracing::info!(user, "farm closed");
    }
    metrics::gauge!("croft_instance_farms").set(farms.hosted.len() as f64);
}

/// The writer finished `d`: a snapshot is saved (or dirty again), an action committed (the
/// farm takes its new state) or was refused.
fn written(farms: &mut Farms, d: WriteDone, now: Duration, outbox: &mut FarmOutbox) {
    match d {
        WriteDone::Lost { user, seq } => {
            let connected = farms.hosted.get(&user).is_some_and(|h| h.connected);
            if let (Some(seq), true) = (seq, connected) {
                let error = Some(FarmError::Unavailable);
                outbox.send(user, ServerMessage::FarmActionResult { seq, error });
            }
            farms.lose(user, outbox);
        }
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
                return;
            };
            let Some(p) = h.pending.take() else {
                return;
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
                    h.farm.advance_to(&h.data.crops, farm_tick_now());
                    apply_changes(&mut h.items, &p.changes);
                    h.last_save = now;
                    None
                }
                // The store refused: the inventory changed elsewhere (a craft); the farm keeps
                // its old state and the item count is taken as gone.
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
                // The state first: a client that hears the result already has the plots it
                // chooses its next action on (messages are reliable and ordered).
                outbox.send(user, state_of(h));
                outbox.send(user, ServerMessage::FarmActionResult { seq, error });
            }
        }
    }
}

/// A player's farming action: refused, applied at once (no item changes), or handed to the
/// writer (the answer comes when it committed).
fn act(farms: &mut Farms, user: UserId, seq: u32, action: &FarmAction, outbox: &mut FarmOutbox) {
    let Some(h) = farms.hosted.get_mut(&user) else {
        return;
    };
    let refuse = |outbox: &mut FarmOutbox, error: FarmError| {
        outbox.send(
            user,
            ServerMessage::FarmActionResult {
                seq,
                error: Some(error),
            },
        );
    };
    if h.pending.is_some() {
        return refuse(outbox, FarmError::Busy);
    }
    h.farm.advance_to(&h.data.crops, farm_tick_now());
    let mut next = h.farm.clone();
    let items = &h.items;
    let data = &h.data;
    let result = next.apply(
        &data.crops,
        action,
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
    let result_label = if result.is_ok() { "ok" } else { "refused" };
    metrics::counter!("croft_instance_farm_actions_total", "result" => result_label).increment(1);
    if let Err(e) = result {
        return refuse(outbox, e);
    }
    if changes.is_empty() {
        h.farm = next;
        h.dirty = true;
        outbox.send(user, state_of(h));
        outbox.send(user, ServerMessage::FarmActionResult { seq, error: None });
        return;
    }
    h.version += 1;
    let write = FarmWrite::Action {
        user,
        seq,
        changes: changes.clone(),
        farm: next.clone(),
        version: h.version,
        epoch: h.epoch,
    };
    h.pending = Some(Pending {
        seq,
        farm: next,
        changes,
    });
    if farms
        .writes
        .as_ref()
        .is_some_and(|tx| tx.send(write).is_ok())
    {
        // Unsaved watering goes with this write (it holds the whole farm).
        h.dirty = false;
    } else {
        h.pending = None;
        refuse(outbox, FarmError::Unavailable);
    }
}
