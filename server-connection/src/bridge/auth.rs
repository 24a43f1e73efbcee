//! The auth service: its feed of revoked sessions, polled so revoked players are dropped.

use std::time::Duration;

use super::{Bridge, Reply};

impl Bridge {
    /// Polls the auth service's revocation feed, forever.
    pub async fn follow_revocations(self, every: Duration) {
        token::revocation::follow(
            &self.auth_feed,
            every,
            |fresh| {
                self.reply(Reply::Revoked(fresh));
                true
            },
            |e| {
                metrics::counter!("croft_connection_revocation_poll_errors_total").increment(1);
                tracing::debug!(error = %e, "revocation feed unavailable");
            },
        )
        .await
    }
}
