//! The matchmaking service: tickets, cancels and rejoins in the order players sent them, and
//! the long poll of this server's mailbox of updates.

use std::time::Duration;

use contracts::matchmaking::v1::{RejoinRequest, TicketRequest, Update, UpdateKind, UpdatesQuery};
use shared_sim::protocol::ErrorCode;

use super::{Bridge, Job, Reply};

impl Bridge {
    pub(super) async fn matchmaking_job(&self, job: Job) {
        match job {
            Job::FindMatch { user, tag } => {
                let request = TicketRequest {
                    user_id: user,
                    server: self.server_id.clone(),
                    session_tag: super::session_tag(tag),
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
            Job::Rejoin { user, tag } => {
                let request = RejoinRequest {
                    user_id: user,
                    server: self.server_id.clone(),
                    session_tag: super::session_tag(tag),
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
}
