//! The player's side of the game: inventory, card collection, decks, farm state and one-time
//! grants, with the counts kept right under concurrency; the game rules are the caller's.

use sqlx::Row;

use crate::{OutboxEvent, Store, StoreError, UserId, insert_event_tx, now_ms};

/// What a recipe makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CraftOutput {
    Card(String),
    /// An item, with the most one inventory slot holds.
    Item {
        id: String,
        amount: i32,
        max_stack: i32,
    },
}

/// A recipe as the store applies it.
///
/// The game rules (what a recipe needs, what a deck may hold) are the caller's, from the card
/// data; the store keeps the counts right under concurrency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Craft {
    pub recipe: String,
    pub inputs: Vec<(String, i32)>,
    pub output: CraftOutput,
}

#[derive(Debug, thiserror::Error)]
pub enum CraftError {
    #[error("not enough `{item}` (needs {need})")]
    Missing { item: String, need: i32 },
    #[error("no room for more `{0}`")]
    Full(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for CraftError {
    fn from(e: sqlx::Error) -> Self {
        CraftError::Store(e.into())
    }
}

/// A saved deck.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeckRow {
    pub slot: i32,
    pub name: String,
    pub cards: Vec<String>,
}

/// A change of inventory that goes with a farm write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemChange {
    /// Take one or more of an item; refused (nothing written) if there are not enough.
    Take(String, i32),
    /// Add items, up to `max_stack` in the slot; refused if they do not fit.
    Add {
        id: String,
        amount: i32,
        max_stack: i32,
    },
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Any>;

async fn take_tx(tx: &mut Tx<'_>, user: UserId, item: &str, n: i32) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE inventory SET quantity = quantity - $1 WHERE user_id = $2 AND item_id = $3 AND quantity >= $1",
    )
    .bind(i64::from(n))
    .bind(user)
    .bind(item)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The two tables of counted things a player owns: (user, id, quantity) rows.
#[derive(Clone, Copy)]
enum Shelf {
    Inventory,
    Collection,
}

impl Shelf {
    /// (table, id column): fixed names, so the SQL built from them is never from input.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Shelf::Inventory => ("inventory", "item_id"),
            Shelf::Collection => ("collection", "card_id"),
        }
    }
}

/// Adds `n` to a counted row unless it would pass `max`.
async fn add_tx(
    tx: &mut Tx<'_>,
    shelf: Shelf,
    user: UserId,
    id: &str,
    n: i32,
    max: i32,
) -> Result<bool, StoreError> {
    if n > max {
        return Ok(false);
    }
    let (table, key) = shelf.names();
    let sql = format!(
        "INSERT INTO {table} (user_id, {key}, quantity) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id, {key}) DO UPDATE SET quantity = {table}.quantity + $3 \
         WHERE {table}.quantity + $3 <= $4"
    );
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user)
        .bind(id)
        .bind(i64::from(n))
        .bind(i64::from(max))
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

async fn counted(
    store: &Store,
    shelf: Shelf,
    user: UserId,
) -> Result<Vec<(String, i32)>, StoreError> {
    let (table, key) = shelf.names();
    let sql = format!(
        "SELECT {key} AS id, quantity FROM {table} WHERE user_id = $1 AND quantity > 0 ORDER BY {key}"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user)
        .fetch_all(store.pool())
        .await?;
    rows.iter()
        .map(|r| {
            let n: i64 = r.try_get("quantity")?;
            Ok((r.try_get("id")?, i32::try_from(n).unwrap_or(i32::MAX)))
        })
        .collect()
}

/// The most copies of one card a collection row holds (far above any deck limit).
pub const MAX_CARD_COPIES: i32 = 999;

impl Store {
    /// Items with a count above zero, by id.
    pub async fn inventory(&self, user: UserId) -> Result<Vec<(String, i32)>, StoreError> {
        counted(self, Shelf::Inventory, user).await
    }

    /// Cards owned, by id.
    pub async fn collection(&self, user: UserId) -> Result<Vec<(String, i32)>, StoreError> {
        counted(self, Shelf::Collection, user).await
    }

    /// Crafts once: inputs taken, output added and `event` written together, or nothing.
    ///
    /// One transaction: each input is taken by a conditional `UPDATE … WHERE quantity >= n` (a
    /// concurrent craft of the last item finds the row changed and takes nothing), the output
    /// is added, and the `item_crafted` outbox row is written, or none of it.
    pub async fn craft(
        &self,
        user: UserId,
        craft: &Craft,
        event: OutboxEvent,
    ) -> Result<(), CraftError> {
        let mut tx = self.pool().begin().await?;
        for (item, n) in &craft.inputs {
            if !take_tx(&mut tx, user, item, *n).await? {
                tx.rollback().await?;
                return Err(CraftError::Missing {
                    item: item.clone(),
                    need: *n,
                });
            }
        }
        let added = match &craft.output {
            CraftOutput::Card(card) => {
                add_tx(&mut tx, Shelf::Collection, user, card, 1, MAX_CARD_COPIES).await?
            }
            CraftOutput::Item {
                id,
                amount,
                max_stack,
            } => add_tx(&mut tx, Shelf::Inventory, user, id, *amount, *max_stack).await?,
        };
        if !added {
            tx.rollback().await?;
            let id = match &craft.output {
                CraftOutput::Card(c) => c.clone(),
                CraftOutput::Item { id, .. } => id.clone(),
            };
            return Err(CraftError::Full(id));
        }
        insert_event_tx(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Gives `items` and `cards` once per `grant_id` (a second call changes nothing and
    /// answers false).
    pub async fn grant_once(
        &self,
        user: UserId,
        grant_id: &str,
        items: &[(String, i32)],
        cards: &[(String, i32)],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO grants (user_id, grant_id, granted_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, grant_id) DO NOTHING",
        )
        .bind(user)
        .bind(grant_id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            tx.rollback().await?;
            return Ok(false);
        }
        for (item, n) in items {
            add_tx(&mut tx, Shelf::Inventory, user, item, *n, i32::MAX).await?;
        }
        for (card, n) in cards {
            add_tx(&mut tx, Shelf::Collection, user, card, *n, MAX_CARD_COPIES).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The saved decks by slot, and the active slot (`None`: the starter deck).
    pub async fn decks(&self, user: UserId) -> Result<(Vec<DeckRow>, Option<i32>), StoreError> {
        let rows =
            sqlx::query("SELECT slot, name, cards FROM decks WHERE user_id = $1 ORDER BY slot")
                .bind(user)
                .fetch_all(self.pool())
                .await?;
        let mut decks = Vec::with_capacity(rows.len());
        for r in &rows {
            let cards: String = r.try_get("cards")?;
            decks.push(DeckRow {
                slot: r.try_get("slot")?,
                name: r.try_get("name")?,
                cards: serde_json::from_str(&cards)
                    .map_err(|e| StoreError::Internal(format!("deck cards: {e}")))?,
            });
        }
        let active: Option<i32> = sqlx::query("SELECT active_deck FROM users WHERE id = $1")
            .bind(user)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)?
            .try_get("active_deck")?;
        Ok((decks, active))
    }

    /// Saves (or replaces) the deck in `slot`. The caller has checked it against the rules
    /// and the collection.
    pub async fn save_deck(
        &self,
        user: UserId,
        slot: i32,
        name: &str,
        cards: &[String],
    ) -> Result<(), StoreError> {
        let cards = serde_json::to_string(cards)
            .map_err(|e| StoreError::Internal(format!("deck cards: {e}")))?;
        sqlx::query(
            "INSERT INTO decks (user_id, slot, name, cards, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id, slot) DO UPDATE SET name = $3, cards = $4, updated_at = $5",
        )
        .bind(user)
        .bind(slot)
        .bind(name)
        .bind(cards)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Chooses the deck to queue with (`None`: the starter deck). A slot with no deck is
    /// `NotFound`.
    pub async fn set_active_deck(&self, user: UserId, slot: Option<i32>) -> Result<(), StoreError> {
        let done = match slot {
            Some(slot) => {
                sqlx::query(
                    "UPDATE users SET active_deck = $1 WHERE id = $2 \
                     AND EXISTS (SELECT 1 FROM decks WHERE user_id = $2 AND slot = $1)",
                )
                .bind(slot)
                .bind(user)
                .execute(self.pool())
                .await?
            }
            None => {
                sqlx::query("UPDATE users SET active_deck = NULL WHERE id = $1")
                    .bind(user)
                    .execute(self.pool())
                    .await?
            }
        };
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    /// The cards of the active deck, if one is chosen.
    pub async fn active_deck(&self, user: UserId) -> Result<Option<Vec<String>>, StoreError> {
        let row = sqlx::query(
            "SELECT d.cards FROM users u JOIN decks d ON d.user_id = u.id AND d.slot = u.active_deck \
             WHERE u.id = $1",
        )
        .bind(user)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            let cards: String = r.try_get("cards")?;
            serde_json::from_str(&cards)
                .map_err(|e| StoreError::Internal(format!("deck cards: {e}")))
        })
        .transpose()
    }

    /// The stored farm (JSON) and its version.
    pub async fn farm(&self, user: UserId) -> Result<Option<(String, i64)>, StoreError> {
        let row = sqlx::query("SELECT state, version FROM farms WHERE user_id = $1")
            .bind(user)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| Ok((r.try_get("state")?, r.try_get("version")?)))
            .transpose()
    }

    /// Farms stored.
    pub async fn farm_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM farms")
            .fetch_one(self.pool())
            .await?
            .try_get("n")?)
    }

    /// Writes a farm snapshot unless a newer version is stored; true if it was written.
    /// Farm snapshots carry a version, and an older snapshot never overwrites a newer one.
    pub async fn save_farm(
        &self,
        user: UserId,
        state: &str,
        version: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let written = save_farm_tx(&mut tx, user, state, version).await?;
        tx.commit().await?;
        Ok(written)
    }

    /// A farm action that changes the inventory: the changes and the farm snapshot together.
    /// `Ok(false)`: refused (an item was missing or did not fit, or a newer snapshot is
    /// stored), and nothing was written.
    ///
    /// A farm action that touches the inventory (planting takes a seed, harvesting adds
    /// produce) writes the farm's new state in the same transaction, so a crash never loses
    /// one without the other.
    pub async fn farm_action(
        &self,
        user: UserId,
        changes: &[ItemChange],
        state: &str,
        version: i64,
    ) -> Result<bool, StoreError> {
        let outcome = self
            .farm_write(user, changes, state, version, None, None)
            .await?;
        Ok(outcome == FarmWrite::Written)
    }

    /// [`Store::farm_action`] (or, without `changes`, [`Store::save_farm`]) by the holder of
    /// the farm's lease at `epoch`: [`FarmWrite::Fenced`] and nothing written when the lease
    /// has a newer epoch (another instance took the farm). `event` (the inventory change's
    /// outbox row) is written in the same transaction.
    pub async fn farm_write_fenced(
        &self,
        user: UserId,
        changes: &[ItemChange],
        state: &str,
        version: i64,
        epoch: i64,
        event: Option<&OutboxEvent>,
    ) -> Result<FarmWrite, StoreError> {
        self.farm_write(user, changes, state, version, Some(epoch), event)
            .await
    }

    async fn farm_write(
        &self,
        user: UserId,
        changes: &[ItemChange],
        state: &str,
        version: i64,
        epoch: Option<i64>,
        event: Option<&OutboxEvent>,
    ) -> Result<FarmWrite, StoreError> {
        let mut tx = self.pool().begin().await?;
        if let Some(epoch) = epoch {
            // A write to the lease row: it holds the row (Postgres) or the database (SQLite)
            // until the commit, so a new holder cannot take the farm in between.
            let held = sqlx::query(
                "UPDATE farm_leases SET epoch = epoch WHERE user_id = $1 AND epoch = $2",
            )
            .bind(user)
            .bind(epoch)
            .execute(&mut *tx)
            .await?;
            if held.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(FarmWrite::Fenced);
            }
        }
        for change in changes {
            let ok = match change {
                ItemChange::Take(item, n) => take_tx(&mut tx, user, item, *n).await?,
                ItemChange::Add {
                    id,
                    amount,
                    max_stack,
                } => add_tx(&mut tx, Shelf::Inventory, user, id, *amount, *max_stack).await?,
            };
            if !ok {
                tx.rollback().await?;
                return Ok(FarmWrite::Refused);
            }
        }
        if !save_farm_tx(&mut tx, user, state, version).await? {
            tx.rollback().await?;
            return Ok(FarmWrite::Refused);
        }
        if let Some(event) = event {
            insert_event_tx(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(FarmWrite::Written)
    }
}

/// What came of a farm write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FarmWrite {
    Written,
    /// An item was missing or did not fit, or a newer snapshot is stored: nothing written.
    Refused,
    /// The writer no longer holds the farm's lease: nothing written.
    Fenced,
}

async fn save_farm_tx(
    tx: &mut Tx<'_>,
    user: UserId,
    state: &str,
    version: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO farms (user_id, state, version, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id) DO UPDATE SET state = $2, version = $3, updated_at = $4 \
         WHERE farms.version < $3",
    )
    .bind(user)
    .bind(state)
    .bind(version)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}
