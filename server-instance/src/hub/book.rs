//! The control API's book of hub places: which shard each player was given, so shards fill up
//! to their capacity before the next one opens.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use shared_sim::plugin::UserId;

/// A kept place nobody claimed is given up after this long (a connect token's lifetime, and
/// then some).
pub const KEEP_FOR: Duration = Duration::from_secs(90);

/// The places the control API handed out, by shard (kept under the control lock).
#[derive(Debug, Default)]
pub struct HubBook {
    /// Places per shard.
    pub shards: BTreeMap<u32, usize>,
    /// Where each player has a place, since when, and whether they arrived.
    pub members: HashMap<UserId, (u32, Instant, bool)>,
}

impl HubBook {
    /// A place for `user` (the one they have, else the first shard with room, else a new
    /// shard): the shard id.
    pub fn keep(&mut self, user: UserId, capacity: usize, now: Instant) -> u32 {
        self.expire(now);
        if let Some((hub, at, _)) = self.members.get_mut(&user) {
            *at = now;
            return *hub;
        }
        let hub = self
            .shards
            .iter()
            .find(|(_, n)| **n < capacity.max(1))
            .map(|(h, _)| *h)
            .unwrap_or_else(|| {
                // The lowest free id, so shard ids stay small as shards empty and refill.
                (1..).find(|h| !self.shards.contains_key(h)).unwrap_or(1)
            });
        *self.shards.entry(hub).or_default() += 1;
        self.members.insert(user, (hub, now, false));
        hub
    }

    pub fn arrived(&mut self, user: UserId) {
        if let Some(m) = self.members.get_mut(&user) {
            m.2 = true;
        }
    }

    pub fn release(&mut self, user: UserId) {
        if let Some((hub, _, _)) = self.members.remove(&user)
            && let Some(n) = self.shards.get_mut(&hub)
        {
            *n -= 1;
            if *n == 0 {
                self.shards.remove(&hub);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        let stale: Vec<UserId> = self
            .members
            .iter()
            .filter(|(_, (_, at, arrived))| !arrived && now.duration_since(*at) > KEEP_FOR)
            .map(|(u, _)| *u)
            .collect();
        for u in stale {
            self.release(u);
        }
    }

    pub fn players(&self) -> usize {
        self.members.len()
    }
}
