//! Sessions and refresh tokens: opening a session with its first token, rotation with reuse
//! detection (a reused token revokes its whole family and session), logout and revocation.

use sqlx::Row;

use crate::{OutboxEvent, Store, StoreError, UserId, insert_event_tx, now_ms};

/// What presenting a refresh token led to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// Rotated: the old token is used up; the new one is stored. Carries the session's user.
    Rotated {
        user_id: UserId,
        session_id: String,
    },
    /// The token was already used: its whole family and its session are now revoked.
    ReuseDetected {
        session_id: String,
    },
    Expired,
    Revoked,
    Unknown,
}

/// A new refresh token: its hash (never the token itself), family and expiry.
#[derive(Clone, Debug)]
pub struct NewRefresh {
    pub token_hash: String,
    pub family_id: String,
    pub expires_at: i64,
}

impl Store {
    /// Opens a session with its first refresh token and the `user_login` event, atomically.
    pub async fn open_session(
        &self,
        user_id: UserId,
        session_id: &str,
        refresh: &NewRefresh,
        event: &OutboxEvent,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO sessions (session_id, user_id, created_at) VALUES ($1, $2, $3)")
            .bind(session_id)
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, session_id, user_id, issued_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&refresh.token_hash)
        .bind(&refresh.family_id)
        .bind(session_id)
        .bind(user_id)
        .bind(now)
        .bind(refresh.expires_at)
        .execute(&mut *tx)
        .await?;
        insert_event_tx(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Uses up the refresh token with hash `old_hash` and stores `new_hash` in its family.
    /// Presenting a token twice revokes the family; two concurrent uses cannot both win.
    pub async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        new_expires_at: i64,
    ) -> Result<RefreshOutcome, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
                        "SELECT r.family_id, r.session_id, r.user_id, r.expires_at, r.used_at, r.revoked_at, s.revoked_at AS session_revoked, \
             u.disabled FROM refresh_tokens r JOIN sessions s ON s.session_id = r.session_id \
             JOIN users u ON u.id = r.user_id WHERE r.token_hash = $1",
        )
        .bind(old_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(RefreshOutcome::Unknown);
        };
        let family: String = row.try_get("family_id")?;
        let session_id: String = row.try_get("session_id")?;
        let user_id: i64 = row.try_get("user_id")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        let used_at: Option<i64> = row.try_get("used_at")?;
        let revoked_at: Option<i64> = row.try_get("revoked_at")?;
        let session_revoked: Option<i64> = row.try_get("session_revoked")?;
        let disabled: i32 = row.try_get("disabled")?;
        if revoked_at.is_some() || session_revoked.is_some() || disabled != 0 {
            return Ok(RefreshOutcome::Revoked);
        }
        if used_at.is_some() {
            revoke_session_tx(&mut tx, &session_id, now).await?;
            tx.commit().await?;
            return Ok(RefreshOutcome::ReuseDetected { session_id });
        }
        if expires_at <= now {
            return Ok(RefreshOutcome::Expired);
        }
        let claimed = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
        )
        .bind(now)
        .bind(old_hash)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() != 1 {
            // Another request used it between our read and our write: that is reuse too.
            revoke_session_tx(&mut tx, &session_id, now).await?;
            tx.commit().await?;
            return Ok(RefreshOutcome::ReuseDetected { session_id });
        }
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, session_id, user_id, issued_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(new_hash)
        .bind(&family)
        .bind(&session_id)
        .bind(user_id)
        .bind(now)
        .bind(new_expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RefreshOutcome::Rotated {
            user_id,
            session_id,
        })
    }

    /// Revokes a session and every refresh token in it (logout).
    pub async fn revoke_session(&self, session_id: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        revoke_session_tx(&mut tx, session_id, now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Logout: revokes the session and writes `event` (the `user_logout` envelope) in the same
    /// transaction.
    pub async fn logout(&self, session_id: &str, event: &OutboxEvent) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        revoke_session_tx(&mut tx, session_id, now_ms()).await?;
        insert_event_tx(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// `Some(true)` if the session exists and was revoked, `Some(false)` if live, `None` if unknown.
    pub async fn session_revoked(&self, session_id: &str) -> Result<Option<bool>, StoreError> {
        let row = sqlx::query("SELECT revoked_at FROM sessions WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            None => Ok(None),
            Some(r) => Ok(Some(r.try_get::<Option<i64>, _>("revoked_at")?.is_some())),
        }
    }
}

/// Revokes a session and all its refresh tokens. A refresh family lives in exactly one session
/// (opened with it, rotated within it), so this is also how a reused family is revoked.
async fn revoke_session_tx(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    session_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE session_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(session_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1 WHERE session_id = $2 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(session_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
