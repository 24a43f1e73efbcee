//! Repeated login failures slow down per account and per client address: after a free number of
//! failures each further one doubles the wait (capped), and a success clears the account.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
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

/// Failures free per account (from one address), per address, and the longest wait.
pub const ACCOUNT_FREE: u32 = 5;
pub const ADDRESS_FREE: u32 = 20;
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);

impl Default for LoginBackoff {
    fn default() -> Self {
        Self::new(ACCOUNT_FREE, ADDRESS_FREE, MAX_WAIT)
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

/// Failures of one key in Redis: `count`, `until` (ms) and `pending` in a hash that expires.
/// ARGV: now (ms), the account's and the address's free failures, the key lifetime (ms);
/// KEYS: the account key, then the address key if any. Answers 0, or the seconds to wait.
const SHARED_BEGIN: &str = r#"
local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[4])
local function wait(key, free)
  local f = redis.call('HMGET', key, 'count', 'until', 'pending')
  local count, untl, pending = tonumber(f[1]) or 0, tonumber(f[2]) or 0, tonumber(f[3]) or 0
  if untl > now then return math.max(1, math.ceil((untl - now) / 1000)) end
  if pending > 0 and count + pending > free then return 1 end
  return 0
end
local w = wait(KEYS[1], tonumber(ARGV[2]))
if w > 0 then return w end
if KEYS[2] then
  w = wait(KEYS[2], tonumber(ARGV[3]))
  if w > 0 then return w end
end
for _, k in ipairs(KEYS) do
  redis.call('HINCRBY', k, 'pending', 1)
  redis.call('PEXPIRE', k, ttl)
end
return 0
"#;

/// ARGV: now (ms), failed (1/0), clear the account (1/0), the two free counts, the longest wait
/// (ms), the key lifetime (ms); KEYS as for [`SHARED_BEGIN`].
const SHARED_FINISH: &str = r#"
local now, failed, clear = tonumber(ARGV[1]), ARGV[2] == '1', ARGV[3] == '1'
local max_wait, ttl = tonumber(ARGV[6]), tonumber(ARGV[7])
local function finish(key, free)
  local f = redis.call('HMGET', key, 'count', 'pending')
  local count = tonumber(f[1]) or 0
  local pending = math.max(0, (tonumber(f[2]) or 0) - 1)
  if not failed then
    if count == 0 and pending == 0 then
      redis.call('DEL', key)
    else
      redis.call('HSET', key, 'pending', pending)
    end
    return
  end
  count = count + 1
  redis.call('HSET', key, 'count', count, 'pending', pending)
  if count > free then
    local exp = math.min(count - free - 1, 20)
    redis.call('HSET', key, 'until', now + math.min((2 ^ exp) * 1000, max_wait))
  end
  redis.call('PEXPIRE', key, ttl)
end
finish(KEYS[1], tonumber(ARGV[4]))
if KEYS[2] then finish(KEYS[2], tonumber(ARGV[5])) end
if clear then redis.call('DEL', KEYS[1]) end
return 1
"#;

/// The same rules as [`LoginBackoff`], kept in Redis so that every auth replica counts the same
/// failures. A replica that dies mid-attempt leaves its attempt pending until the key expires
/// (the longest wait plus a minute).
pub struct SharedBackoff {
    con: redis::aio::ConnectionManager,
    prefix: String,
    account_free: u32,
    address_free: u32,
    max_wait: Duration,
    begin: redis::Script,
    finish: redis::Script,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl SharedBackoff {
    pub fn new(
        store: &control_store::RedisStore,
        account_free: u32,
        address_free: u32,
        max_wait: Duration,
    ) -> Self {
        Self {
            con: store.connection(),
            prefix: store.prefix().to_string(),
            account_free,
            address_free,
            max_wait,
            begin: redis::Script::new(SHARED_BEGIN),
            finish: redis::Script::new(SHARED_FINISH),
        }
    }

    fn keys(&self, account: &AccountKey) -> Vec<String> {
        let ip = account.1.map(|ip| ip.to_string()).unwrap_or_default();
        let mut keys = vec![format!("{}a:{}|{ip}", self.prefix, account.0)];
        if account.1.is_some() {
            keys.push(format!("{}i:{ip}", self.prefix));
        }
        keys
    }

    fn ttl_ms(&self) -> u64 {
        (self.max_wait + Duration::from_secs(60)).as_millis() as u64
    }

    async fn begin(&self, account: &AccountKey) -> Result<Result<(), u64>, redis::RedisError> {
        let mut inv = self.begin.prepare_invoke();
        for k in self.keys(account) {
            inv.key(k);
        }
        inv.arg(now_ms())
            .arg(self.account_free)
            .arg(self.address_free)
            .arg(self.ttl_ms());
        let wait: u64 = inv.invoke_async(&mut self.con.clone()).await?;
        Ok(if wait == 0 { Ok(()) } else { Err(wait) })
    }

    async fn finish(&self, account: &AccountKey, failed: bool, clear: bool) {
        let mut inv = self.finish.prepare_invoke();
        for k in self.keys(account) {
            inv.key(k);
        }
        inv.arg(now_ms())
            .arg(u8::from(failed))
            .arg(u8::from(clear))
            .arg(self.account_free)
            .arg(self.address_free)
            .arg(self.max_wait.as_millis() as u64)
            .arg(self.ttl_ms());
        let done: Result<i64, _> = inv.invoke_async(&mut self.con.clone()).await;
        if let Err(e) = done {
            metrics::counter!("croft_auth_backoff_errors_total").increment(1);
            tracing::warn!(error = %e, "login backoff not updated in Redis");
        }
    }
}

/// The login backoff the service uses: in this process (the embedded default), or in Redis
/// shared by the replicas.
pub enum Backoff {
    Local(LoginBackoff),
    Shared(Arc<SharedBackoff>),
}

/// One admitted attempt of either kind; say how it ended.
#[must_use]
pub enum Attempt<'a> {
    /// `None` once ended.
    Local(Option<LoginAttempt<'a>>),
    Shared {
        backoff: Arc<SharedBackoff>,
        account: AccountKey,
        ended: bool,
    },
}

impl Backoff {
    /// Admits a login attempt, or the seconds to wait. Redis that does not answer admits (the
    /// password check and the per-address rate limit still apply), and counts the failure.
    pub async fn begin(&self, account: &str, ip: Option<IpAddr>) -> Result<Attempt<'_>, u64> {
        match self {
            Backoff::Local(b) => b.begin(account, ip).map(|a| Attempt::Local(Some(a))),
            Backoff::Shared(b) => {
                let key = (account.to_string(), ip);
                match b.begin(&key).await {
                    Ok(Ok(())) => {}
                    Ok(Err(wait)) => return Err(wait),
                    Err(e) => {
                        metrics::counter!("croft_auth_backoff_errors_total").increment(1);
                        tracing::warn!(error = %e, "login backoff unavailable in Redis");
                    }
                }
                Ok(Attempt::Shared {
                    backoff: b.clone(),
                    account: key,
                    ended: false,
                })
            }
        }
    }
}

impl Attempt<'_> {
    /// The password was wrong (or the account unknown).
    pub async fn failed(self) {
        self.end(true).await
    }

    /// The password was right: the account's failures from this address are forgotten.
    pub async fn succeeded(self) {
        self.end(false).await
    }

    async fn end(mut self, failed: bool) {
        match &mut self {
            Attempt::Local(a) => match a.take() {
                Some(a) if failed => a.failed(),
                Some(a) => a.succeeded(),
                None => {}
            },
            Attempt::Shared {
                backoff,
                account,
                ended,
            } => {
                *ended = true;
                backoff.finish(account, failed, !failed).await;
            }
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        // An error on the way: the attempt only frees its place (on a task, since this cannot
        // wait).
        if let Attempt::Shared {
            backoff,
            account,
            ended: false,
        } = self
        {
            let (backoff, account) = (backoff.clone(), account.clone());
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { backoff.finish(&account, false, false).await });
            }
        }
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

    /// One suite for both kinds: in this process and in the real Redis (CROFT_TEST_REDIS,
    /// default 127.0.0.1:6379; scripts/services starts it), each Redis run under its own keys.
    mod both {
        use super::super::*;

        async fn kinds(free: u32, address_free: u32) -> Vec<(&'static str, Backoff)> {
            let redis = control_store::testing::redis("auth-backoff").await;
            let max = Duration::from_secs(60);
            vec![
                (
                    "local",
                    Backoff::Local(LoginBackoff::new(free, address_free, max)),
                ),
                (
                    "redis",
                    Backoff::Shared(Arc::new(SharedBackoff::new(
                        &redis,
                        free,
                        address_free,
                        max,
                    ))),
                ),
            ]
        }

        #[tokio::test]
        async fn waits_start_after_the_free_failures_and_success_clears() {
            let ip: Option<IpAddr> = Some([10, 0, 0, 1].into());
            for (kind, b) in kinds(2, 100).await {
                for _ in 0..2 {
                    b.begin("alice", ip).await.expect(kind).failed().await;
                }
                b.begin("alice", ip).await.expect(kind).succeeded().await;
                for _ in 0..3 {
                    b.begin("alice", ip).await.expect(kind).failed().await;
                }
                let wait = b.begin("alice", ip).await.err();
                assert!(wait.is_some_and(|w| w >= 1), "{kind}: {wait:?}");
                // Another address may still try the account.
                let other: Option<IpAddr> = Some([10, 0, 0, 2].into());
                assert!(b.begin("alice", other).await.is_ok(), "{kind}");
            }
        }

        #[tokio::test]
        async fn guesses_sent_at_once_get_no_more_tries_than_guesses_in_turn() {
            let ip: Option<IpAddr> = Some([10, 0, 0, 3].into());
            for (kind, b) in kinds(2, 100).await {
                let b = Arc::new(b);
                let mut admitted = Vec::new();
                let mut refused = 0;
                for _ in 0..10 {
                    match b.begin("bob", ip).await {
                        Ok(a) => admitted.push(a),
                        Err(_) => refused += 1,
                    }
                }
                assert_eq!((admitted.len(), refused), (3, 7), "{kind}");
                for a in admitted {
                    a.failed().await;
                }
                assert!(b.begin("bob", ip).await.is_err(), "{kind}");
            }
        }

        /// The point of the shared kind: two replicas count the same failures.
        #[tokio::test]
        async fn two_replicas_count_the_same_failures() {
            let shared = control_store::testing::redis("auth-backoff").await;
            let (url, prefix) = (control_store::testing::redis_url(), shared.prefix());
            let replica = || {
                let redis = control_store::RedisStore::connect(&url, prefix).unwrap();
                Backoff::Shared(Arc::new(SharedBackoff::new(
                    &redis,
                    2,
                    100,
                    Duration::from_secs(60),
                )))
            };
            let (a, b) = (replica(), replica());
            let ip: Option<IpAddr> = Some([10, 0, 0, 6].into());
            a.begin("carol", ip).await.unwrap().failed().await;
            b.begin("carol", ip).await.unwrap().failed().await;
            a.begin("carol", ip).await.unwrap().failed().await;
            assert!(b.begin("carol", ip).await.is_err());
            assert!(a.begin("carol", ip).await.is_err());
        }

        #[tokio::test]
        async fn an_address_is_limited_across_accounts() {
            let ip: Option<IpAddr> = Some([10, 0, 0, 4].into());
            for (kind, b) in kinds(100, 3).await {
                for name in ["a", "b", "c"] {
                    b.begin(name, ip).await.expect(kind).failed().await;
                }
                b.begin("d", ip).await.expect(kind).failed().await;
                assert!(b.begin("e", ip).await.is_err(), "{kind}");
                assert!(
                    b.begin("e", Some([10, 0, 0, 5].into())).await.is_ok(),
                    "{kind}"
                );
            }
        }
    }
}
