//! Farm leases: which instance hosts a farm, one at a time, with an epoch that fences out a
//! former host's writes.

use sqlx::Row;

use crate::{Store, StoreError, UserId};

/// A granted lease: `epoch` is new with every grant and must go with every write of the farm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FarmLease {
    pub user: UserId,
    pub holder: String,
    pub epoch: i64,
    /// Ms since the Unix epoch.
    pub expires_at: i64,
}

impl Store {
    /// Grants `holder` the lease on `user`'s farm until `now_ms + ttl_ms` when it is free or
    /// expired (a release or an expiry frees it): the new epoch, one more than any before.
    /// `None`: another holder's lease is still running. A holder that asks again while its
    /// own lease runs gets a new epoch too, so a restarted process with the same name never
    /// shares an epoch with its former self.
    pub async fn acquire_farm_lease(
        &self,
        user: UserId,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "INSERT INTO farm_leases (user_id, holder, epoch, expires_at) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (user_id) DO UPDATE SET holder = $2, epoch = farm_leases.epoch + 1, \
             expires_at = $3 \
             WHERE farm_leases.holder = $2 OR farm_leases.expires_at <= $4 \
             RETURNING epoch",
        )
        .bind(user)
        .bind(holder)
        .bind(now_ms + ttl_ms)
        .bind(now_ms)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| r.try_get("epoch")).transpose()?)
    }

    /// Extends a lease `holder` still has at `epoch` to `now_ms + ttl_ms`; false when it was
    /// lost (taken by another holder after it expired, or released).
    pub async fn renew_farm_lease(
        &self,
        user: UserId,
        holder: &str,
        epoch: i64,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE farm_leases SET expires_at = $4 \
             WHERE user_id = $1 AND holder = $2 AND epoch = $3 AND expires_at > 0",
        )
        .bind(user)
        .bind(holder)
        .bind(epoch)
        .bind(now_ms + ttl_ms)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a lease up (the farm was written and closed): the next holder may take it at once.
    /// The row stays, so epochs keep growing. False when the lease was not `holder`'s at `epoch`.
    pub async fn release_farm_lease(
        &self,
        user: UserId,
        holder: &str,
        epoch: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE farm_leases SET expires_at = 0 \
             WHERE user_id = $1 AND holder = $2 AND epoch = $3",
        )
        .bind(user)
        .bind(holder)
        .bind(epoch)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The lease on `user`'s farm as stored (released ones have `expires_at` 0).
    pub async fn farm_lease(&self, user: UserId) -> Result<Option<FarmLease>, StoreError> {
        let row = sqlx::query(
            "SELECT user_id, holder, epoch, expires_at FROM farm_leases WHERE user_id = $1",
        )
        .bind(user)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(FarmLease {
                user: r.try_get("user_id")?,
                holder: r.try_get("holder")?,
                epoch: r.try_get("epoch")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }
}
