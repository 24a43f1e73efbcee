//! The async side of the connection server: database and matchmaking calls, the revocation
//! feed, matchmaking updates and the admin API run on a tokio runtime; the Bevy loop sends
//! [`Job`]s and reads [`Reply`]s without ever waiting for them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use contracts::ApiError;
use contracts::auth::AuthFeedClient;
use contracts::auth::v1::RevocationsQuery;
use contracts::connection::v1::{
    NOTIFICATION_MAX_CHARS, NOTIFICATIONS, Notification, STATUS, Status,
};
use contracts::matchmaking::MatchmakingClient;
use contracts::matchmaking::v1::{RejoinRequest, TicketRequest, Update, UpdateKind, UpdatesQuery};
use shared_sim::protocol::ErrorCode;
use store::{Friend, FriendError, RequestOutcome, Store};
use token::revocation::RevocationSet;
use tokio::sync::mpsc::UnboundedReceiver;

pub type UserId = u64;

/// Work the Bevy loop hands to the async side.
#[derive(Debug, Clone)]
pub enum Job {
    /// A player connected: their name and friends.
    Load {
        user: UserId,
        tag: [u8; 16],
    },
    Friends {
        user: UserId,
    },
    FindMatch {
        user: UserId,
    },
    CancelMatch {
        user: UserId,
        quiet: bool,
    },
    Rejoin {
        user: UserId,
    },
    FriendRequest {
        user: UserId,
        username: String,
    },
    FriendAccept {
        user: UserId,
        other: UserId,
    },
    FriendDecline {
        user: UserId,
        other: UserId,
    },
    FriendRemove {
        user: UserId,
        other: UserId,
    },
    /// Inventory, crafting and decks.
    Game {
        user: UserId,
        request: crate::game::GameRequest,
    },
}

/// What comes back.
#[derive(Debug, Clone)]
pub enum Reply {
    Loaded {
        user: UserId,
        username: String,
        friends: Vec<Friend>,
    },
    LoadFailed {
        user: UserId,
        /// The session tag of the connection it was for.
        tag: [u8; 16],
        message: String,
    },
    Friends {
        user: UserId,
        friends: Vec<Friend>,
    },
    /// A friend operation changed these users' lists; the Bevy side refreshes them.
    FriendsChanged {
        users: Vec<UserId>,
    },
    FriendRequestReceived {
        to: UserId,
        from: UserId,
        from_name: String,
    },
    FriendAccepted {
        users: [UserId; 2],
    },
    FriendRemoved {
        users: [UserId; 2],
    },
    Queued {
        user: UserId,
    },
    Cancelled {
        user: UserId,
    },
    Matchmaking(Update),
    Failed {
        user: UserId,
        code: ErrorCode,
        message: String,
    },
    /// Sessions revoked since the last poll (session tags).
    Revoked(Vec<[u8; 16]>),
    Broadcast(String),
    /// An event from the bus (other connection servers, the outbox).
    Bus(events::Envelope),
    /// A message for one player, as it is.
    Send {
        user: UserId,
        message: shared_sim::protocol::LobbyServerMessage,
    },
}

/// The netcode token bytes of a connect token as matchmaking sends it (standard base64).
pub(crate) fn token_bytes(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// Lanes that run players' game requests, each in order.
const GAME_LANES: usize = 8;

#[derive(Clone)]
pub struct Bridge {
    pub store: Store,
    pub matchmaking: MatchmakingClient,
    pub auth_feed: AuthFeedClient,
    /// The credential of the admin API (the clients carry their own copy).
    pub service_token: Arc<str>,
    pub server_id: String,
    pub replies: tokio::sync::mpsc::UnboundedSender<Reply>,
    /// The card data (recipes, deck rules, starter kit).
    pub data: shared_sim::data::DataHandle,
}

impl Bridge {
    pub(crate) fn reply(&self, r: Reply) {
        // The Bevy side is gone only when the server stops.
        let _ = self.replies.send(r);
    }

    pub(crate) fn failed(&self, user: UserId, code: ErrorCode, message: impl Into<String>) {
        self.reply(Reply::Failed {
            user,
            code,
            message: message.into(),
        });
    }

    pub(crate) fn store_failed(&self, user: UserId, e: &dyn std::fmt::Display) {
        tracing::warn!(user, error = %e, "database call failed");
        self.failed(
            user,
            ErrorCode::Unavailable,
            "the service is unavailable; try again",
        );
    }

    /// Runs jobs: matchmaking calls in order on one task, the rest concurrently.
    pub async fn run_jobs(self, mut jobs: UnboundedReceiver<Job>) {
        let (mm_tx, mut mm_rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let mm = self.clone();
        tokio::spawn(async move {
            while let Some(job) = mm_rx.recv().await {
                mm.matchmaking_job(job).await;
            }
        });
        // A player's own requests (craft, save a deck, choose it) run in the order sent: each
        // player's go through one of a few lanes, in order; different players run side by side.
        let lanes: Vec<tokio::sync::mpsc::UnboundedSender<Job>> = (0..GAME_LANES)
            .map(|_| {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
                let this = self.clone();
                tokio::spawn(async move {
                    while let Some(job) = rx.recv().await {
                        this.store_job(job).await;
                    }
                });
                tx
            })
            .collect();
        let limit = Arc::new(tokio::sync::Semaphore::new(32));
        while let Some(job) = jobs.recv().await {
            match job {
                Job::FindMatch { .. } | Job::CancelMatch { .. } | Job::Rejoin { .. } => {
                    let _ = mm_tx.send(job);
                }
                Job::Game { user, .. } => {
                    let _ = lanes[(user % GAME_LANES as u64) as usize].send(job);
                }
                other => {
                    // The permit is taken inside the task, so slow database work never holds
                    // up the matchmaking calls behind it.
                    let this = self.clone();
                    let limit = limit.clone();
                    tokio::spawn(async move {
                        let Ok(_permit) = limit.acquire_owned().await else {
                            return;
                        };
                        this.store_job(other).await;
                    });
                }
            }
        }
    }

    async fn store_job(&self, job: Job) {
        match job {
            Job::Load { user, tag } => {
                let loaded = async {
                    let u = self.store.user_by_id(user as i64).await?;
                    if u.as_ref().is_some_and(|u| !u.disabled)
                        && crate::game::grant_starter(&self.store, &self.data.get(), user).await?
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
                    Ok(()) => self.reply(Reply::FriendsChanged {
                        users: vec![user, other],
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

    async fn matchmaking_job(&self, job: Job) {
        match job {
            Job::FindMatch { user } => {
                let request = TicketRequest {
                    user_id: user,
                    server: self.server_id.clone(),
                };
                match self.matchmaking.create_ticket(&request).await {
                    Ok(_) => self.reply(Reply::Queued { user }),
                    Err(e) if e.status() == Some(409) => self.failed(
                        user,
                        ErrorCode::NotAllowed,
                        "already in a match or being matched",
                    ),
                    Err(e) => {
                        tracing::warn!(user, error = %e, "matchmaking refused a ticket");
                        self.failed(user, ErrorCode::Unavailable, "matchmaking is unavailable")
                    }
                }
            }
            Job::CancelMatch { user, quiet } => {
                let cancelled = self.matchmaking.cancel_ticket(user).await;
                if quiet {
                    return;
                }
                match cancelled {
                    // Not queued (any more) is also "not queued now".
                    Ok(()) => self.reply(Reply::Cancelled { user }),
                    Err(e) if e.status() == Some(404) => self.reply(Reply::Cancelled { user }),
                    Err(e) if e.status() == Some(409) => self.failed(
                        user,
                        ErrorCode::NotAllowed,
                        "too late to cancel: a match is being set up",
                    ),
                    Err(_) => {
                        self.failed(user, ErrorCode::Unavailable, "matchmaking is unavailable")
                    }
                }
            }
            Job::Rejoin { user } => {
                let request = RejoinRequest {
                    user_id: user,
                    server: self.server_id.clone(),
                };
                match self.matchmaking.rejoin(&request).await {
                    Ok(j) => self.reply(Reply::Matchmaking(Update {
                        seq: 0,
                        user_id: user,
                        kind: UpdateKind::MatchFound {
                            match_id: j.match_id,
                            server_addr: j.server_addr,
                            connect_token: j.connect_token,
                            ws_url: j.ws_url,
                        },
                    })),
                    Err(e) if e.status() == Some(404) => {
                        self.failed(user, ErrorCode::NotAllowed, "you are not in a match")
                    }
                    Err(e @ contracts::CallError::BadAnswer { .. }) => {
                        self.failed(user, ErrorCode::Unavailable, format!("bad answer: {e}"))
                    }
                    Err(_) => {
                        self.failed(user, ErrorCode::Unavailable, "matchmaking is unavailable")
                    }
                }
            }
            _ => {}
        }
    }

    /// Long-polls matchmaking for this server's updates, forever.
    pub async fn follow_matchmaking(self) {
        let mut after = 0u64;
        loop {
            let query = UpdatesQuery {
                server: self.server_id.clone(),
                after,
                wait_ms: 20_000,
            };
            match self
                .matchmaking
                .updates(&query, Duration::from_secs(30))
                .await
            {
                Ok(page) => {
                    if page.last_seq < after {
                        // Matchmaking restarted and numbers from 1 again: take everything.
                        tracing::warn!(after, last = page.last_seq, "matchmaking restarted");
                        after = 0;
                        continue;
                    }
                    for u in page.updates {
                        after = after.max(u.seq);
                        self.reply(Reply::Matchmaking(u));
                    }
                }
                Err(e) => {
                    metrics::counter!("croft_connection_matchmaking_poll_errors_total")
                        .increment(1);
                    tracing::debug!(error = %e, "matchmaking updates unavailable");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Polls the auth service's revocation feed, forever.
    pub async fn follow_revocations(self, every: Duration) {
        let mut set = RevocationSet::starting_at(store::now_ms(), 5 * 60 * 1000);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let query = RevocationsQuery {
                since: set.since,
                skip: set.skip,
            };
            match self.auth_feed.revocations(&query).await {
                Ok(feed) => {
                    let fresh = set.apply(&feed);
                    set.prune(store::now_ms() - 10 * 60 * 1000);
                    if !fresh.is_empty() {
                        self.reply(Reply::Revoked(fresh));
                    }
                }
                Err(e) => {
                    metrics::counter!("croft_connection_revocation_poll_errors_total").increment(1);
                    tracing::debug!(error = %e, "revocation feed unavailable");
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Admin API
// ------------------------------------------------------------------------------------------

#[derive(Clone)]
struct AdminState {
    bridge: Bridge,
    status: Arc<std::sync::Mutex<Status>>,
}

/// `POST /v1/notifications` (broadcast) and `GET /v1/status`, behind the service credential.
pub fn admin_router(bridge: Bridge, status: Arc<std::sync::Mutex<Status>>) -> Router {
    Router::new()
        .route(NOTIFICATIONS, post(notify))
        .route(STATUS, get(status_handler))
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024))
        .with_state(AdminState { bridge, status })
}

fn authorized(state: &AdminState, headers: &HeaderMap) -> bool {
    let given = headers.get("authorization").and_then(|v| v.to_str().ok());
    token::bearer_matches(given, &state.bridge.service_token)
}

async fn notify(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Result<Json<Notification>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    if !authorized(&state, &headers) {
        return Err(ApiError::unauthorized());
    }
    let Ok(Json(req)) = body else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "expected {\"text\": \"...\"}",
        ));
    };
    let n = req.text.chars().count();
    if n == 0 || n > NOTIFICATION_MAX_CHARS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_text",
            "a notification has 1 to 1024 characters",
        ));
    }
    state.bridge.reply(Reply::Broadcast(req.text));
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "status": "queued" })),
    ))
}

async fn status_handler(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<Json<Status>, ApiError> {
    if !authorized(&state, &headers) {
        return Err(ApiError::unauthorized());
    }
    Ok(Json(
        state.status.lock().map(|s| s.clone()).unwrap_or_default(),
    ))
}
