//! The auth service: its feed of revoked sessions, polled so revoked players are dropped.

use std::time::Duration;

use contracts::auth::v1::RevocationsQuery;
use token::revocation::RevocationSet;

use super::{Bridge, Reply};

impl Bridge {
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
