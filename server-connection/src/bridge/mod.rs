//! The async side of the connection server: the Bevy loop sends [`Job`]s and reads [`Reply`]s
//! without ever waiting for them.

mod admin;
mod auth;
pub mod game;
mod matchmaking;
mod players;

use std::sync::Arc;

use contracts::auth::AuthFeedClient;
use contracts::matchmaking::MatchmakingClient;
use contracts::matchmaking::v1::Update;
use shared_sim::protocol::ErrorCode;
use store::{Friend, Store};
use tokio::sync::mpsc::UnboundedReceiver;

pub use admin::admin_router;
pub use game::GameRequest;

pub type UserId = u64;

/// Work the Bevy loop hands to the async side.
/// A session tag as matchmaking takes it: hex, or nothing for a session without one.
pub(crate) fn session_tag(tag: [u8; 16]) -> Option<String> {
    (tag != [0; 16]).then(|| token::revocation::tag_hex(&tag))
}

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
        /// The session's tag, for the instance's connect token.
        tag: [u8; 16],
    },
    CancelMatch {
        user: UserId,
        quiet: bool,
    },
    Rejoin {
        user: UserId,
        tag: [u8; 16],
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
        request: GameRequest,
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
    /// The first declined the second's request.
    FriendDeclined {
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

/// The connection server's clients of its backends, one file per backend it talks to (the
/// database for players and their things, matchmaking, auth, the admin API).
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
}
