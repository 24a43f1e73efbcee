//! The revocation check game servers run: connect tokens carry a session tag, and servers poll
//! the auth service's feed of revoked tags into a [`RevocationSet`].

use std::collections::HashMap;

use contracts::auth::v1::RevocationFeed;
use sha2::{Digest, Sha256};

/// The tag a connect token carries for `session_id`: the first 16 bytes of the SHA-256 of the
/// session id, never the id itself.
pub fn session_tag(session_id: &str) -> [u8; 16] {
    let digest = Sha256::digest(session_id.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

pub fn tag_hex(tag: &[u8; 16]) -> String {
    tag.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn tag_from_hex(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// The revoked tags a server knows, and where its next poll starts.
///
/// The auth service publishes the tags of revoked sessions as a feed
/// (`GET /v1/auth/revocations?since=MS`) that servers poll into this set.
#[derive(Debug, Default)]
pub struct RevocationSet {
    tags: HashMap<[u8; 16], i64>,
    pub since: i64,
    pub skip: i64,
}

impl RevocationSet {
    /// Starts `lookback_ms` before `now_ms`: connect tokens live for a minute and refreshes of
    /// revoked sessions fail, so only recent revocations can matter to a server that starts.
    pub fn starting_at(now_ms: i64, lookback_ms: i64) -> Self {
        Self {
            tags: HashMap::new(),
            since: now_ms - lookback_ms,
            skip: 0,
        }
    }

    /// Adds a page; returns the tags that are new to this set.
    pub fn apply(&mut self, feed: &RevocationFeed) -> Vec<[u8; 16]> {
        let mut fresh = Vec::new();
        for r in &feed.revoked {
            if let Some(tag) = tag_from_hex(&r.tag)
                && self.tags.insert(tag, r.revoked_at).is_none()
            {
                fresh.push(tag);
            }
        }
        if feed.next_since >= self.since {
            self.since = feed.next_since;
            self.skip = feed.next_skip;
        }
        fresh
    }

    pub fn is_revoked(&self, tag: &[u8; 16]) -> bool {
        self.tags.contains_key(tag)
    }

    /// Forgets revocations older than `before_ms` (their sessions can no longer connect).
    pub fn prune(&mut self, before_ms: i64) {
        self.tags.retain(|_, at| *at >= before_ms);
    }

    pub fn len(&self) -> usize {
        self.tags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }
}

/// Polls the auth service's revocation feed every `every`, forever (or until `fresh` answers
/// false): each page's newly revoked tags go to `fresh`, a failed poll to `failed`. Starts five
/// minutes back, which covers every connect token still valid, and forgets revocations older
/// than ten minutes.
#[cfg(feature = "feed")]
pub async fn follow(
    feed: &contracts::auth::AuthFeedClient,
    every: std::time::Duration,
    mut fresh: impl FnMut(Vec<[u8; 16]>) -> bool,
    mut failed: impl FnMut(&contracts::CallError),
) {
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    };
    let mut set = RevocationSet::starting_at(now_ms(), 5 * 60 * 1000);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let query = contracts::auth::v1::RevocationsQuery {
            since: set.since,
            skip: set.skip,
        };
        match feed.revocations(&query).await {
            Ok(page) => {
                let new = set.apply(&page);
                set.prune(now_ms() - 10 * 60 * 1000);
                if !new.is_empty() && !fresh(new) {
                    return;
                }
            }
            Err(e) => failed(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contracts::auth::v1::RevokedTag;

    #[test]
    fn tags_round_trip_and_feed_pages_merge() {
        let tag = session_tag("abc");
        assert_eq!(tag_from_hex(&tag_hex(&tag)), Some(tag));
        assert_eq!(tag_from_hex("zz"), None);
        let mut set = RevocationSet::starting_at(10_000, 5_000);
        assert_eq!(set.since, 5_000);
        let feed = RevocationFeed {
            revoked: vec![
                RevokedTag {
                    tag: tag_hex(&tag),
                    revoked_at: 6_000,
                },
                RevokedTag {
                    tag: "not hex".into(),
                    revoked_at: 6_000,
                },
            ],
            next_since: 6_000,
            next_skip: 2,
        };
        assert_eq!(set.apply(&feed), vec![tag]);
        // The same page again (inclusive cursor) adds nothing new.
        assert!(set.apply(&feed).is_empty());
        assert!(set.is_revoked(&tag));
        assert!(!set.is_revoked(&session_tag("other")));
        set.prune(7_000);
        assert!(set.is_empty());
    }
}
