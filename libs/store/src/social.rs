//! Friends, ratings and the revocation feed: what the connection servers and matchmaking read.

use sqlx::Row;

use crate::{OutboxEvent, Store, StoreError, UserId, insert_event_tx, now_ms};

/// A friend row as the listing user sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Friend {
    pub user_id: UserId,
    pub username: String,
    pub state: FriendState,
}

/// How a friend row stands from the listing user's side.
///
/// A friend request from A to B is the row (A, B, pending). Accepting turns it into the pair
/// (A, B, accepted) and (B, A, accepted) in one transaction; declining deletes the request;
/// removing deletes both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FriendState {
    Accepted,
    /// They asked the listing user.
    Incoming,
    /// The listing user asked them.
    Outgoing,
}

/// What a friend request led to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A new pending request.
    Requested { to: UserId, username: String },
    /// They had already asked us: the request accepted theirs.
    Accepted { with: UserId, username: String },
    /// Already friends or already asked: nothing changed.
    Unchanged { with: UserId },
}

#[derive(Debug, thiserror::Error)]
pub enum FriendError {
    #[error("no user named `{0}`")]
    UnknownUser(String),
    #[error("you cannot befriend yourself")]
    Yourself,
    #[error("no pending request from user {0}")]
    NoRequest(UserId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for FriendError {
    fn from(e: sqlx::Error) -> Self {
        FriendError::Store(e.into())
    }
}

/// A revoked session, as the revocation feed lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    pub session_id: String,
    pub revoked_at: i64,
}

impl Store {
    /// Asks `username` to be friends with `from`. A new request is written together with the
    /// outbox event `event(to)` makes (the caller's `friend_request` envelope).
    pub async fn request_friend(
        &self,
        from: UserId,
        username: &str,
        event: impl FnOnce(UserId) -> OutboxEvent,
    ) -> Result<RequestOutcome, FriendError> {
        let target = self
            .user_by_name(username)
            .await?
            .filter(|u| !u.disabled)
            .ok_or_else(|| FriendError::UnknownUser(username.to_string()))?;
        if target.id == from {
            return Err(FriendError::Yourself);
        }
        let mut tx = self.pool.begin().await?;
        let mine = friend_status(&mut tx, from, target.id).await?;
        let theirs = friend_status(&mut tx, target.id, from).await?;
        let outcome = match (mine.as_deref(), theirs.as_deref()) {
            (Some(_), _) => RequestOutcome::Unchanged { with: target.id },
            (None, Some("pending")) => {
                accept_tx(&mut tx, target.id, from).await?;
                RequestOutcome::Accepted {
                    with: target.id,
                    username: target.username.clone(),
                }
            }
            _ => {
                // A concurrent identical request may have inserted the row since the read.
                let done = sqlx::query(
                    "INSERT INTO friends (user_id, friend_id, status, created_at) VALUES ($1, $2, 'pending', $3) \
                     ON CONFLICT (user_id, friend_id) DO NOTHING",
                )
                .bind(from)
                .bind(target.id)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    tx.commit().await?;
                    return Ok(RequestOutcome::Unchanged { with: target.id });
                }
                insert_event_tx(&mut tx, &event(target.id)).await?;
                RequestOutcome::Requested {
                    to: target.id,
                    username: target.username.clone(),
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// `user` accepts the pending request from `requester`.
    pub async fn accept_friend(&self, user: UserId, requester: UserId) -> Result<(), FriendError> {
        let mut tx = self.pool.begin().await?;
        if friend_status(&mut tx, requester, user).await?.as_deref() != Some("pending") {
            return Err(FriendError::NoRequest(requester));
        }
        accept_tx(&mut tx, requester, user).await?;
        tx.commit().await?;
        Ok(())
    }

    /// `user` declines the pending request from `requester`.
    pub async fn decline_friend(&self, user: UserId, requester: UserId) -> Result<(), FriendError> {
        let done = sqlx::query(
            "DELETE FROM friends WHERE user_id = $1 AND friend_id = $2 AND status = 'pending'",
        )
        .bind(requester)
        .bind(user)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(FriendError::NoRequest(requester));
        }
        Ok(())
    }

    /// Ends a friendship or withdraws a request, in both directions. Returns whether anything
    /// was there.
    pub async fn remove_friend(&self, user: UserId, other: UserId) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM friends WHERE (user_id = $1 AND friend_id = $2) OR (user_id = $3 AND friend_id = $4)",
        )
        .bind(user)
        .bind(other)
        .bind(other)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Friends and requests in both directions, by username.
    pub async fn friends(&self, user: UserId) -> Result<Vec<Friend>, StoreError> {
        let rows = sqlx::query(
            "SELECT f.friend_id AS id, u.username AS username, f.status AS status, 0 AS incoming \
             FROM friends f JOIN users u ON u.id = f.friend_id WHERE f.user_id = $1 \
             UNION ALL \
             SELECT f.user_id AS id, u.username AS username, f.status AS status, 1 AS incoming \
             FROM friends f JOIN users u ON u.id = f.user_id \
             WHERE f.friend_id = $2 AND f.status = 'pending'",
        )
        .bind(user)
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let status: String = r.try_get("status")?;
            let incoming: i32 = r.try_get("incoming")?;
            let state = match (status.as_str(), incoming) {
                ("accepted", _) => FriendState::Accepted,
                (_, 0) => FriendState::Outgoing,
                _ => FriendState::Incoming,
            };
            out.push(Friend {
                user_id: r.try_get("id")?,
                username: r.try_get("username")?,
                state,
            });
        }
        out.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(out)
    }

    /// The matchmaking rating (1000 for new accounts).
    pub async fn rating(&self, user: UserId) -> Result<i32, StoreError> {
        let row = sqlx::query("SELECT rating FROM users WHERE id = $1")
            .bind(user)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(row.try_get("rating")?)
    }

    /// Sessions revoked at or after `since_ms`, in (time, id) order, skipping the first `skip`
    /// (those the caller already has from that millisecond), at most `limit`.
    pub async fn revoked_since(
        &self,
        since_ms: i64,
        skip: i64,
        limit: i64,
    ) -> Result<Vec<Revoked>, StoreError> {
        let rows = sqlx::query(
            "SELECT session_id, revoked_at FROM sessions WHERE revoked_at IS NOT NULL AND revoked_at >= $1 \
             ORDER BY revoked_at, session_id LIMIT $2 OFFSET $3",
        )
        .bind(since_ms)
        .bind(limit)
        .bind(skip)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Revoked {
                    session_id: r.try_get("session_id")?,
                    revoked_at: r.try_get("revoked_at")?,
                })
            })
            .collect()
    }
}

async fn friend_status(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user: UserId,
    friend: UserId,
) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query("SELECT status FROM friends WHERE user_id = $1 AND friend_id = $2")
        .bind(user)
        .bind(friend)
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|r| r.try_get("status")).transpose()
}

async fn accept_tx(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    requester: UserId,
    user: UserId,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE friends SET status = 'accepted' WHERE user_id = $1 AND friend_id = $2")
        .bind(requester)
        .bind(user)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO friends (user_id, friend_id, status, created_at) VALUES ($1, $2, 'accepted', $3) \
         ON CONFLICT (user_id, friend_id) DO UPDATE SET status = 'accepted'",
    )
    .bind(user)
    .bind(requester)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
