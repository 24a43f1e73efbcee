//! Farms in the store: loading one (advanced to now) and the one writer task per process that
//! writes actions and snapshots in order, off the tick.

use std::collections::HashMap;
use std::sync::Arc;

use shared_sim::GameData;
use shared_sim::farm::{FARM_TICKS_PER_SECOND, Farm};
use shared_sim::plugin::UserId;
use store::ItemChange;
use tokio::sync::mpsc::UnboundedReceiver;

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
    /// The epoch of this instance's lease on the farm, carried by every write.
    pub epoch: i64,
}

/// Loads `user`'s farm (a new one if they have none) and inventory, advanced to now, for the
/// holder of its lease at `epoch`.
pub async fn load(
    store: &store::Store,
    data: Arc<GameData>,
    user: UserId,
    epoch: i64,
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
        epoch,
    })
}

/// What the writer task does, in order. The farm goes as it is: the writer encodes it, so
/// the tick only clones a few plots.
#[derive(Debug)]
/// Every write carries the epoch of the lease it was made under; the store refuses it when
/// another instance has taken the farm since.
pub enum FarmWrite {
    Snapshot {
        user: UserId,
        farm: Farm,
        version: i64,
        epoch: i64,
    },
    Action {
        user: UserId,
        seq: u32,
        changes: Vec<ItemChange>,
        farm: Farm,
        version: i64,
        epoch: i64,
    },
    /// The farm is closed and written: give its lease up.
    Release { user: UserId, epoch: i64 },
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
    /// Another instance holds the farm now: nothing was written, and this one must let it go.
    Lost {
        user: UserId,
        seq: Option<u32>,
    },
}

/// Encodes `farm` and writes it (with `changes`) under the lease at `epoch`; errors are logged
/// and counted here.
async fn write(
    store: &store::Store,
    user: UserId,
    changes: &[ItemChange],
    farm: &Farm,
    version: i64,
    epoch: i64,
) -> Result<store::FarmWrite, store::StoreError> {
    let event = farmed(user, changes);
    let r = match encode(farm) {
        Ok(state) => {
            store
                .farm_write_fenced(user as i64, changes, &state, version, epoch, event.as_ref())
                .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = &r {
        tracing::warn!(user, error = %e, "farm not written");
        metrics::counter!("croft_instance_farm_write_errors_total").increment(1);
    }
    r
}

/// The `items_farmed` event of an action's inventory changes (none without changes).
fn farmed(user: UserId, changes: &[ItemChange]) -> Option<store::OutboxEvent> {
    if changes.is_empty() {
        return None;
    }
    let changes = changes
        .iter()
        .map(|c| match c {
            ItemChange::Take(item, n) => events::ItemDelta {
                item: item.clone(),
                delta: -i64::from(*n),
            },
            ItemChange::Add { id, amount, .. } => events::ItemDelta {
                item: id.clone(),
                delta: i64::from(*amount),
            },
        })
        .collect();
    let event = events::Event::ItemsFarmed {
        user_id: user as i64,
        changes,
    };
    Some(event.outbox("instance"))
}

fn lost(user: UserId, seq: Option<u32>) -> WriteDone {
    tracing::warn!(
        user,
        "farm write fenced: another instance holds the farm now"
    );
    metrics::counter!("croft_instance_farm_writes_fenced_total").increment(1);
    WriteDone::Lost { user, seq }
}

/// Runs the writes in order until the sender is dropped; `holder` is this instance's name on
/// farm leases.
pub async fn writer(
    store: store::Store,
    holder: String,
    mut writes: UnboundedReceiver<FarmWrite>,
    done: std::sync::mpsc::Sender<WriteDone>,
) {
    while let Some(w) = writes.recv().await {
        let result = match w {
            FarmWrite::Snapshot {
                user,
                farm,
                version,
                epoch,
            } => match write(&store, user, &[], &farm, version, epoch).await {
                Ok(store::FarmWrite::Fenced) => lost(user, None),
                r => WriteDone::Snapshot {
                    user,
                    ok: r.is_ok(),
                },
            },
            FarmWrite::Action {
                user,
                seq,
                changes,
                farm,
                version,
                epoch,
            } => match write(&store, user, &changes, &farm, version, epoch).await {
                Ok(store::FarmWrite::Fenced) => lost(user, Some(seq)),
                r => WriteDone::Action {
                    user,
                    seq,
                    outcome: r
                        .map(|w| w == store::FarmWrite::Written)
                        .map_err(|e| e.to_string()),
                },
            },
            FarmWrite::Release { user, epoch } => {
                if let Err(e) = store.release_farm_lease(user as i64, &holder, epoch).await {
                    tracing::warn!(user, error = %e, "farm lease not released (it expires)");
                }
                continue;
            }
        };
        if done.send(result).is_err() {
            return;
        }
    }
}
