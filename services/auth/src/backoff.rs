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
    /// Attempts admitted and not finished yet: they count like failures until they end, so
    /// guesses sent at once get no more tries than guesses sent one after another.
    pending: u32,
}

#[derive(Debug)]
struct Tracker<K> {
    free: u32,
    max_wait: Duration,
    capacity: usize,
    entries: Mutex<HashMap<K, Failures>>,
}

impl<K: Eq + Hash + Clone> Tracker<K> {
    fn new(free: u32, max_wait: Duration, capacity: usize) -> Self {
        Self {
            free,
            max_wait,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one attempt for `key`, or the seconds to wait. In one step with the count, so
    /// concurrent attempts cannot all pass a check made before any of them failed: beyond the
    /// free failures only one attempt at a time is admitted, and only once the wait is over.
    fn begin(&self, key: &K, now: Instant) -> Result<(), u64> {
        let Ok(mut entries) = self.entries.lock() else {
            return Ok(());
        };
        if let Some(f) = entries.get_mut(key) {
            if f.until > now {
                return Err((f.until.duration_since(now).as_secs_f64().ceil() as u64).max(1));
            }
            if f.pending > 0 && f.count + f.pending > self.free {
                return Err(1);
            }
            f.pending += 1;
            return Ok(());
        }
        self.make_room(&mut entries, now);
        entries.insert(
            key.clone(),
            Failures {
                count: 0,
                until: now,
                last: now,
                pending: 1,
            },
        );
        Ok(())
    }

    /// Ends an attempt [`Tracker::begin`] admitted: a failure counts (and may start a wait),
    /// anything else only frees its place.
    fn finish(&self, key: &K, failed: bool, now: Instant) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if !entries.contains_key(key) {
            if !failed {
                return;
            }
            self.make_room(&mut entries, now);
        }
        let f = entries.entry(key.clone()).or_insert(Failures {
            count: 0,
            until: now,
            last: now,
            pending: 0,
        });
        f.pending = f.pending.saturating_sub(1);
        if !failed {
            if f.count == 0 && f.pending == 0 {
                // Nothing to remember: attempts that never failed take no room.
                entries.remove(key);
            }
            return;
        }
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

    /// Keeps the map under its capacity: drops entries idle for longer than the longest wait,
    /// then, if it is still full, a tenth of it: keys not waiting before keys waiting, the least
    /// recently failed first; never the whole map, so a flood of new keys cannot wipe lockouts.
    fn make_room(&self, entries: &mut HashMap<K, Failures>, now: Instant) {
        if entries.len() < self.capacity {
            return;
        }
        let horizon = self.max_wait;
        entries.retain(|_, f| f.pending > 0 || now.duration_since(f.last) < horizon);
        if entries.len() < self.capacity {
            return;
        }
        let mut ages: Vec<(bool, Instant, K)> = entries
            .iter()
            .filter(|(_, f)| f.pending == 0)
            .map(|(k, f)| (f.until > now, f.last, k.clone()))
            .collect();
        ages.sort_unstable_by_key(|(waiting, last, _)| (*waiting, *last));
        let drop = (self.capacity / 10).max(1).min(ages.len());
        for (_, _, k) in ages.into_iter().take(drop) {
            entries.remove(&k);
        }
        tracing::warn!(
            dropped = drop,
            "login backoff full: dropped the oldest entries"
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}

/// The per-account key: the account with the client's address (prefix), so failures from one
/// address cannot lock the account's owner out from theirs.
type AccountKey = (String, Option<IpAddr>);

/// Login failures per account and per client address, and the waits they impose.
///
/// Unknown usernames are tracked like known ones, so the answers reveal nothing.
#[derive(Debug)]
pub struct LoginBackoff {
    accounts: Tracker<AccountKey>,
    addresses: Tracker<IpAddr>,
}

impl Default for LoginBackoff {
    fn default() -> Self {
        Self::new(5, 20, Duration::from_secs(15 * 60))
    }
}

/// One admitted login attempt. Say how it ended with [`LoginAttempt::failed`] or
/// [`LoginAttempt::succeeded`]; dropped without either (an error on the way), it only frees its
/// place.
#[must_use]
pub struct LoginAttempt<'a> {
    backoff: &'a LoginBackoff,
    account: AccountKey,
    ended: bool,
}

impl LoginAttempt<'_> {
    /// The password was wrong (or the account unknown).
    pub fn failed(mut self) {
        self.end(true);
    }

    /// The password was right: the account's failures from this address are forgotten.
    pub fn succeeded(mut self) {
        self.end(false);
        self.backoff.accounts.clear(&self.account);
    }

    fn end(&mut self, failed: bool) {
        if self.ended {
            return;
        }
        self.ended = true;
        let now = Instant::now();
        self.backoff.accounts.finish(&self.account, failed, now);
        if let Some(ip) = self.account.1 {
            self.backoff.addresses.finish(&ip, failed, now);
        }
    }
}

impl Drop for LoginAttempt<'_> {
    fn drop(&mut self) {
        self.end(false);
    }
}

impl LoginBackoff {
    /// `account_free` / `address_free` failures are free; then waits double up to `max_wait`.
    pub fn new(account_free: u32, address_free: u32, max_wait: Duration) -> Self {
        Self::with_capacity(account_free, address_free, max_wait, MAX_TRACKED)
    }

    /// [`LoginBackoff::new`] tracking at most `capacity` accounts and as many addresses.
    pub fn with_capacity(
        account_free: u32,
        address_free: u32,
        max_wait: Duration,
        capacity: usize,
    ) -> Self {
        Self {
            accounts: Tracker::new(account_free, max_wait, capacity),
            addresses: Tracker::new(address_free, max_wait, capacity),
        }
    }

    /// Admits a login attempt for `account` from `ip` (an address prefix), or the seconds the
    /// caller must wait.
    pub fn begin(&self, account: &str, ip: Option<IpAddr>) -> Result<LoginAttempt<'_>, u64> {
        let now = Instant::now();
        let key = (account.to_string(), ip);
        self.accounts.begin(&key, now)?;
        if let Some(ip) = ip
            && let Err(wait) = self.addresses.begin(&ip, now)
        {
            self.accounts.finish(&key, false, now);
            return Err(wait);
        }
        Ok(LoginAttempt {
            backoff: self,
            account: key,
            ended: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(b: &LoginBackoff, account: &str, ip: Option<IpAddr>) {
        b.begin(account, ip).expect("admitted").failed();
    }

    #[test]
    fn waits_start_after_the_free_failures_and_success_clears() {
        let b = LoginBackoff::new(2, 100, Duration::from_secs(60));
        let ip: Option<IpAddr> = Some([10, 0, 0, 1].into());
        fail(&b, "alice", ip);
        fail(&b, "alice", ip);
        // A success forgets them: three more failures are tried before the wait.
        b.begin("alice", ip).unwrap().succeeded();
        for _ in 0..3 {
            fail(&b, "alice", ip);
        }
        assert_eq!(b.begin("alice", ip).err(), Some(1));
        assert!(b.begin("bob", ip).is_ok(), "other accounts are not blocked");
    }

    #[test]
    fn attempts_at_once_are_counted_before_they_end() {
        let b = LoginBackoff::new(3, 100, Duration::from_secs(60));
        let attempts: Vec<_> = (0..12)
            .filter_map(|_| b.begin("carol", None).ok())
            .collect();
        assert_eq!(attempts.len(), 4, "the free failures and one more");
        for a in attempts {
            a.failed();
        }
        assert!(b.begin("carol", None).is_err());
        // An attempt that ended in an error (dropped) gives its place back.
        let b = LoginBackoff::new(0, 100, Duration::from_secs(60));
        drop(b.begin("dan", None).unwrap());
        assert!(b.begin("dan", None).is_ok());
    }

    #[test]
    fn another_address_cannot_lock_the_owner_out() {
        let b = LoginBackoff::new(2, 100, Duration::from_secs(60));
        let attacker: Option<IpAddr> = Some([10, 0, 0, 66].into());
        let owner: Option<IpAddr> = Some([10, 0, 1, 1].into());
        for _ in 0..3 {
            fail(&b, "erin", attacker);
        }
        assert!(b.begin("erin", attacker).is_err());
        assert!(b.begin("erin", owner).is_ok());
    }

    #[test]
    fn addresses_are_limited_across_accounts_and_waits_are_capped() {
        let b = LoginBackoff::new(100, 3, Duration::from_secs(4));
        let addr: IpAddr = [10, 0, 0, 2].into();
        let ip = Some(addr);
        for i in 0..4 {
            fail(&b, &format!("user{i}"), ip);
        }
        assert!(b.begin("someone-else", ip).is_err());
        for _ in 0..20 {
            b.addresses.finish(&addr, true, Instant::now());
        }
        let f = b.addresses.entries.lock().unwrap()[&addr];
        assert_eq!(f.count, 24);
        assert!(f.until.duration_since(f.last) <= Duration::from_secs(4));
    }

    #[test]
    fn a_full_map_drops_failures_before_lockouts_and_never_everything() {
        let b = LoginBackoff::with_capacity(1, 1000, Duration::from_secs(600), 100);
        let victim = Some([10, 0, 9, 9].into());
        fail(&b, "frank", victim);
        fail(&b, "frank", victim);
        assert!(b.begin("frank", victim).is_err());
        // A flood of failed logins under fresh names fills the map ten times over.
        for i in 0..1_000 {
            fail(&b, &format!("flood{i}"), None);
        }
        let tracked = b.accounts.len();
        assert!((90..=100).contains(&tracked), "{tracked} accounts tracked");
        assert!(b.begin("frank", victim).is_err(), "the lockout survived");
        // Attempts that never fail take no room at all.
        let b = LoginBackoff::with_capacity(1, 1000, Duration::from_secs(600), 100);
        for i in 0..1_000 {
            drop(b.begin(&format!("probe{i}"), None).unwrap());
        }
        assert_eq!(b.accounts.len(), 0);
    }
}
