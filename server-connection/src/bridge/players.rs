//! The database side of a player's lobby session: loading the account and friends, and the
//! friend requests, answers and removals.

use shared_sim::protocol::ErrorCode;
use store::{FriendError, RequestOutcome};

use super::{Bridge, Job, Reply, UserId};

impl Bridge {
    pub(super) async fn store_job(&self, job: Job) {
        match job {
            Job::Load { user, tag } => {
                let loaded = async {
                    let u = self.store.user_by_id(user as i64).await?;
                    if u.as_ref().is_some_and(|u| !u.disabled)
                        && super::game::grant_starter(&self.store, &self.data.get(), user).await?
                    {
                        tracing::info!(user, "starter kit granted");
                    }
                    let friends = self.store.friends(user as i64).await?;
                    Ok::<_, store::StoreError>((u, friends))
                }
                .await;
                match loaded {
                    Ok((Some(u), friends)) if !u.disabled => self.reply(Reply::Loaded {
                        user,
                        username: u.username,
                        friends,
                    }),
                    Ok(_) => self.reply(Reply::LoadFailed {
                        user,
                        tag,
                        message: "unknown or disabled account".into(),
                    }),
                    Err(e) => {
                        tracing::warn!(user, error = %e, "cannot load a player");
                        self.reply(Reply::LoadFailed {
                            user,
                            tag,
                            message: "the service is unavailable; try again".into(),
                        })
                    }
                }
            }
            Job::Friends { user } => match self.store.friends(user as i64).await {
                Ok(friends) => self.reply(Reply::Friends { user, friends }),
                Err(e) => self.store_failed(user, &e),
            },
            Job::FriendRequest { user, username } => {
                let event = |to| {
                    events::Event::FriendRequest {
                        from_user_id: user as i64,
                        to_user_id: to,
                    }
                    .outbox("connection")
                };
                match self
                    .store
                    .request_friend(user as i64, &username, event)
                    .await
                {
                    Ok(RequestOutcome::Requested { to, .. }) => {
                        let from_name = self
                            .store
                            .user_by_id(user as i64)
                            .await
                            .ok()
                            .flatten()
                            .map(|u| u.username)
                            .unwrap_or_default();
                        self.reply(Reply::FriendRequestReceived {
                            to: to as u64,
                            from: user,
                            from_name,
                        });
                        self.reply(Reply::FriendsChanged {
                            users: vec![user, to as u64],
                        });
                    }
                    Ok(RequestOutcome::Accepted { with, .. }) => {
                        self.reply(Reply::FriendAccepted {
                            users: [user, with as u64],
                        });
                        self.reply(Reply::FriendsChanged {
                            users: vec![user, with as u64],
                        });
                    }
                    Ok(RequestOutcome::Unchanged { .. }) => {
                        self.reply(Reply::FriendsChanged { users: vec![user] })
                    }
                    Err(e) => self.friend_error(user, e),
                }
            }
            Job::FriendAccept { user, other } => {
                match self.store.accept_friend(user as i64, other as i64).await {
                    Ok(()) => {
                        self.reply(Reply::FriendAccepted {
                            users: [user, other],
                        });
                        self.reply(Reply::FriendsChanged {
                            users: vec![user, other],
                        });
                    }
                    Err(e) => self.friend_error(user, e),
                }
            }
            Job::FriendDecline { user, other } => {
                match self.store.decline_friend(user as i64, other as i64).await {
                    Ok(()) => self.reply(Reply::FriendDeclined {
                        users: [user, other],
                    }),
                    Err(e) => self.friend_error(user, e),
                }
            }
            Job::FriendRemove { user, other } => {
                match self.store.remove_friend(user as i64, other as i64).await {
                    Ok(true) => {
                        self.reply(Reply::FriendRemoved {
                            users: [user, other],
                        });
                        self.reply(Reply::FriendsChanged {
                            users: vec![user, other],
                        });
                    }
                    Ok(false) => self.failed(user, ErrorCode::UnknownUser, "not a friend"),
                    Err(e) => self.store_failed(user, &e),
                }
            }
            Job::Game { user, request } => self.game_job(user, request).await,
            Job::FindMatch { .. } | Job::CancelMatch { .. } | Job::Rejoin { .. } => {}
        }
    }

    fn friend_error(&self, user: UserId, e: FriendError) {
        match e {
            FriendError::UnknownUser(name) => self.failed(
                user,
                ErrorCode::UnknownUser,
                format!("no user named `{name}`"),
            ),
            FriendError::Yourself => {
                self.failed(user, ErrorCode::NotAllowed, "you cannot befriend yourself")
            }
            FriendError::NoRequest(other) => self.failed(
                user,
                ErrorCode::NotAllowed,
                format!("no pending request from user {other}"),
            ),
            FriendError::Store(e) => self.store_failed(user, &e),
        }
    }
}
