//! Repeated login failures slow down per account and per client address: after a free number of
//! failures each further one doubles the wait (capped), and a success clears the account.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked at most per tracker.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    until: Instant,
    last: Instant,
}

#[derive(Debug)]
struct Tracker<K> {
    free: u32,
    max_wait: Duration,
    entries: Mutex<HashMap<K, Failures>>,
}

impl<K: Eq + Hash + Clone> Tracker<K> {
    fn new(free: u32, max_wait: Duration) -> Self {
        Self {
            free,
            max_wait,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds to wait before `key` may try again, if any.
    fn blocked(&self, key: &K, now: Instant) -> Option<u64> {
        let entries = self.entries.lock().ok()?;
        let f = entries.get(key)?;
        (f.until > now).then(|| (f.until.duration_since(now).as_secs_f64().ceil() as u64).max(1))
    }

    fn fail(&self, key: K, now: Instant) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= MAX_TRACKED {
            let horizon = self.max_wait;
            entries.retain(|_, f| now.duration_since(f.last) < horizon);
            if entries.len() >= MAX_TRACKED {
                // Still full of recent failures: start over rather than grow without bound.
                entries.clear();
            }
        }
        let f = entries.entry(key).or_insert(Failures {
            count: 0,
            until: now,
            last: now,
        });
        f.count += 1;
        f.last = now;
        if f.count > self.free {
            let exp = (f.count - self.free - 1).min(20);
            let wait = Duration::from_secs(1u64 << exp).min(self.max_wait);
            f.until = now + wait;
        }
    }

    fn clear(&self, key: &K) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
    }
}

/// Login failures per account and per client address, and the waits they impose.
///
/// Unknown usernames are tracked like known ones, so the answers reveal nothing.
#[derive(Debug)]
pub struct LoginBackoff {
    accounts: Tracker<String>,
    addresses: Tracker<IpAddr>,
}

impl Default for LoginBackoff {
    fn default() -> Self {
        Self::new(5, 20, Duration::from_secs(15 * 60))
    }
}

impl LoginBackoff {
    /// `account_free` / `address_free` failures are free; then waits double up to `max_wait`.
    pub fn new(account_free: u32, address_free: u32, max_wait: Duration) -> Self {
        Self {
            accounts: Tracker::new(account_free, max_wait),
            addresses: Tracker::new(address_free, max_wait),
        }
    }

    /// Seconds the caller must wait before trying, if blocked.
    pub fn check(&self, account: &str, ip: Option<IpAddr>) -> Option<u64> {
        let now = Instant::now();
        let a = self.accounts.blocked(&account.to_string(), now);
        let b = ip.and_then(|ip| self.addresses.blocked(&ip, now));
        a.max(b)
    }

    pub fn failed(&self, account: &str, ip: Option<IpAddr>) {
        let now = Instant::now();
        self.accounts.fail(account.to_string(), now);
        if let Some(ip) = ip {
            self.addresses.fail(ip, now);
        }
    }

    pub fn succeeded(&self, account: &str) {
        self.accounts.clear(&account.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_start_after_the_free_failures_and_success_clears() {
        let b = LoginBackoff::new(2, 100, Duration::from_secs(60));
        let ip: IpAddr = [10, 0, 0, 1].into();
        b.failed("alice", Some(ip));
        b.failed("alice", Some(ip));
        assert_eq!(b.check("alice", Some(ip)), None);
        b.failed("alice", Some(ip));
        assert_eq!(b.check("alice", Some(ip)), Some(1));
        b.failed("alice", Some(ip));
        assert_eq!(b.check("alice", Some(ip)), Some(2));
        assert_eq!(
            b.check("bob", Some(ip)),
            None,
            "other accounts are not blocked"
        );
        b.succeeded("alice");
        assert_eq!(b.check("alice", Some(ip)), None);
    }

    #[test]
    fn addresses_are_limited_across_accounts_and_waits_are_capped() {
        let b = LoginBackoff::new(100, 3, Duration::from_secs(4));
        let ip: IpAddr = [10, 0, 0, 2].into();
        for i in 0..10 {
            b.failed(&format!("user{i}"), Some(ip));
        }
        assert_eq!(b.check("someone-new", Some(ip)), Some(4));
        assert_eq!(b.check("someone-new", Some([10, 0, 0, 3].into())), None);
    }
}
