//! The control plane's shared state: queue tickets, formed and placed matches, the connection
//! servers' mailboxes, farm and common-area homes and the leader lease, behind one interface with two implementations
//! (in-process for the embedded default, Redis for replicas) that one conformance suite tests.

use std::time::Duration;

mod local;
mod remote;
pub mod testing;

pub use local::Local;
pub use remote::RedisStore;

pub type UserId = u64;
pub type MatchId = u64;

/// Most unacknowledged messages kept per mailbox (a connection server that went away stops
/// reading; its oldest messages go first).
pub const MAILBOX_LIMIT: usize = 100_000;

/// How often a long poll over Redis looks for mail another replica wrote.
pub const REDIS_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The shared store cannot be reached or did not answer in time: retry later (HTTP 503).
    #[error("control store unavailable: {0}")]
    Unavailable(String),
    /// The caller's lease is no longer the current one: another replica leads, and this step
    /// was not taken.
    #[error("fenced: this replica no longer holds the lease")]
    Fenced,
    /// The URL or the arguments are wrong.
    #[error("invalid control store request: {0}")]
    Invalid(String),
    /// What the store holds cannot be read.
    #[error("unreadable control state: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, ControlError>;

/// A player waiting for a match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub user_id: UserId,
    pub rating: i32,
    /// Wall-clock milliseconds since the Unix epoch (replicas share no monotonic clock).
    pub enqueued_ms: u64,
    /// The connection server that relays this player's updates.
    pub server: String,
    /// The tag of the player's session (hex; empty: none), for the match's connect tokens.
    pub tag: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    New,
    /// Already queued: the old ticket (and its waiting time) is kept; its server and session
    /// tag are updated.
    Existing,
    /// The player's match is being placed.
    Forming(MatchId),
    InMatch(MatchId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    Cancelled,
    /// Too late: the player's match is being placed.
    Forming,
    NotQueued,
}

/// Where a player is, past the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seat {
    Forming(MatchId),
    InMatch(MatchId),
}

/// A match the control plane knows: formed (being placed) or placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchRecord {
    pub match_id: MatchId,
    /// The caller's own description (what `form` and `place` wrote).
    pub state: String,
    /// Each player and the connection server that relays their updates, by user id.
    pub players: Vec<(UserId, String)>,
}

/// One message for a player, in their connection server's mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub seq: u64,
    pub user_id: UserId,
    pub body: String,
}

/// One match to form: its id, its players and the caller's state for it.
#[derive(Debug, Clone, Copy)]
pub struct Group<'a> {
    pub match_id: MatchId,
    pub users: &'a [UserId],
    pub state: &'a str,
}

/// The leader lease as one replica holds it: steps taken with it are refused once another
/// replica holds the lease (the epoch is the fencing token; it grows with every new holder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub epoch: u64,
}

/// What has a home on one instance server: a player's farm, or the common area (one for
/// everyone, so that everyone meets there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Home {
    Farm(UserId),
    Hub,
}

impl Home {
    pub(crate) fn key(self) -> String {
        match self {
            Home::Farm(u) => format!("farm:{u}"),
            Home::Hub => "hub".into(),
        }
    }
}

/// How long a home is remembered after it was last set (a player's farm that nobody opened for
/// a day may open anywhere; its lease in the database still holds it in one place).
pub const HOME_TTL: Duration = Duration::from_secs(24 * 3600);

/// The control plane's shared state.
#[derive(Clone)]
pub enum ControlStore {
    Local(std::sync::Arc<Local>),
    Redis(RedisStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            ControlStore::Local($s) => $e,
            ControlStore::Redis($s) => $e,
        }
    };
}

impl ControlStore {
    /// The embedded default: state in this process, gone when it exits.
    pub fn local() -> Self {
        Self::Local(std::sync::Arc::new(Local::new(MAILBOX_LIMIT)))
    }

    /// Redis at `url` (`redis://host:port/db`), every key under `prefix`. Connects lazily and
    /// reconnects by itself; calls fail fast with [`ControlError::Unavailable`] while it is down.
    pub fn redis(url: &str, prefix: &str) -> Result<Self> {
        Ok(Self::Redis(RedisStore::new(url, prefix, MAILBOX_LIMIT)?))
    }

    /// The same store with another mailbox limit (tests of the limit).
    pub fn with_mailbox_limit(self, limit: usize) -> Self {
        match self {
            Self::Local(_) => Self::Local(std::sync::Arc::new(Local::new(limit))),
            Self::Redis(r) => Self::Redis(r.with_mailbox_limit(limit)),
        }
    }

    /// Which implementation this is, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Local(_) => "in-process",
            Self::Redis(_) => "redis",
        }
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> Result<()> {
        dispatch!(self, s => s.ping().await)
    }

    /// Queues a player, unless they are already queued, forming or in a match.
    pub async fn enqueue(&self, ticket: &Ticket) -> Result<Enqueued> {
        dispatch!(self, s => s.enqueue(ticket).await)
    }

    pub async fn cancel(&self, user: UserId) -> Result<Cancelled> {
        dispatch!(self, s => s.cancel(user).await)
    }

    /// Every queued ticket, oldest first.
    pub async fn tickets(&self) -> Result<Vec<Ticket>> {
        let mut t = dispatch!(self, s => s.tickets().await)?;
        t.sort_by_key(|t| (t.enqueued_ms, t.user_id));
        Ok(t)
    }

    /// Queued tickets and known matches.
    pub async fn counts(&self) -> Result<(usize, usize)> {
        dispatch!(self, s => s.counts().await)
    }

    /// Takes or renews the leader lease for `ttl`: the lease when `holder` has it after the
    /// call, `None` when another replica does.
    pub async fn lead(&self, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let epoch = dispatch!(self, s => s.lead(holder, ttl_ms).await)?;
        Ok((epoch > 0).then(|| Lease {
            holder: holder.to_string(),
            epoch,
        }))
    }

    /// Gives the lease up if `holder` has it (a replica that stops), so the next one leads at once.
    pub async fn resign(&self, holder: &str) -> Result<()> {
        dispatch!(self, s => s.resign(holder).await)
    }

    /// Moves `users`' tickets into a new match record (state `state`), all or none: `false`
    /// when one of the tickets is no longer queued (cancelled, or the match id is taken).
    pub async fn form(
        &self,
        lease: &Lease,
        match_id: MatchId,
        users: &[UserId],
        state: &str,
    ) -> Result<bool> {
        let got = self
            .form_many(
                lease,
                &[Group {
                    match_id,
                    users,
                    state,
                }],
            )
            .await?;
        Ok(got.first().copied().unwrap_or(false))
    }

    /// [`Self::form`] for many matches in one step (one round trip to Redis): whether each
    /// was formed.
    pub async fn form_many(&self, lease: &Lease, groups: &[Group<'_>]) -> Result<Vec<bool>> {
        for g in groups {
            let mut seen = std::collections::HashSet::new();
            if g.users.is_empty() || !g.users.iter().all(|u| seen.insert(*u)) {
                return Err(ControlError::Invalid(
                    "a match needs distinct players".into(),
                ));
            }
        }
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, s => s.form(lease, groups).await)
    }

    /// Removes `ticket` if it is still queued unchanged (the same wait, rating and connection
    /// server) and mails `body` to its player: `false` when it is gone, was replaced or moved.
    pub async fn expire(&self, lease: &Lease, ticket: &Ticket, body: &str) -> Result<bool> {
        dispatch!(self, s => s.expire(lease, ticket, body).await)
    }

    /// Records where a formed match runs (`state`) and mails each player their message, in one
    /// step: nothing is announced that is not recorded. `false` when the match is unknown.
    pub async fn place(
        &self,
        lease: &Lease,
        match_id: MatchId,
        state: &str,
        mails: &[(UserId, String)],
    ) -> Result<bool> {
        dispatch!(self, s => s.place(lease, match_id, state, mails).await)
    }

    /// Forgets a match that could not be placed and mails `body` to each of its players.
    pub async fn release(&self, lease: &Lease, match_id: MatchId, body: &str) -> Result<bool> {
        dispatch!(self, s => s.finish(Some(lease), match_id, body).await)
    }

    /// Forgets a match that ended and mails `body` to each of its players. Idempotent: `false`
    /// when the match was already closed.
    pub async fn close(&self, match_id: MatchId, body: &str) -> Result<bool> {
        dispatch!(self, s => s.finish(None, match_id, body).await)
    }

    /// Where the player is, if not just queued or idle.
    pub async fn seat(&self, user: UserId) -> Result<Option<Seat>> {
        dispatch!(self, s => s.seat(user).await)
    }

    /// The player's placed match and its state, after moving their updates to `server`.
    pub async fn rejoin(&self, user: UserId, server: &str) -> Result<Option<(MatchId, String)>> {
        dispatch!(self, s => s.rejoin(user, server).await)
    }

    /// Every known match, formed or placed.
    pub async fn matches(&self) -> Result<Vec<MatchRecord>> {
        let mut m = dispatch!(self, s => s.matches().await)?;
        m.sort_by_key(|m| m.match_id);
        for r in &mut m {
            r.players.sort();
        }
        Ok(m)
    }

    /// Acknowledges `server`'s mail up to `after` and returns the rest with the last number
    /// given; notes that `server` asked (at `now_ms`, wall clock), see [`Self::mailboxes_seen`].
    pub async fn mail_after(
        &self,
        server: &str,
        after: u64,
        now_ms: u64,
    ) -> Result<(Vec<Mail>, u64)> {
        dispatch!(self, s => s.mail_after(server, after, now_ms).await)
    }

    /// Each connection server that has read its mailbox, with when it last did (wall-clock
    /// milliseconds): one that stopped asking is gone, and its players with it.
    pub async fn mailboxes_seen(&self) -> Result<Vec<(String, u64)>> {
        let mut seen = dispatch!(self, s => s.mailboxes_seen().await)?;
        seen.sort();
        Ok(seen)
    }

    /// The instance server that hosted `home` when a replica last opened it, so that every
    /// replica asks that one first. A hint: the farm's lease in the database decides who hosts
    /// it, and an instance that no longer answers is passed over.
    pub async fn home(&self, home: Home) -> Result<Option<String>> {
        dispatch!(self, s => s.home(&home.key()).await)
    }

    /// Notes that `host` hosts `home` now, for [`HOME_TTL`].
    pub async fn set_home(&self, home: Home, host: &str) -> Result<()> {
        self.set_home_for(home, host, HOME_TTL).await
    }

    /// [`Self::set_home`] remembered for `ttl` (tests of the expiry).
    pub async fn set_home_for(&self, home: Home, host: &str, ttl: Duration) -> Result<()> {
        if host.is_empty() {
            return Err(ControlError::Invalid("a home needs a host".into()));
        }
        let ttl_ms = ttl.as_millis().max(1) as u64;
        dispatch!(self, s => s.set_home(&home.key(), host, ttl_ms).await)
    }

    /// A watch on new mail, for long polls: take it before reading the mailbox, then
    /// [`MailWatch::wait`] after, and no message written in between is missed.
    pub fn mail_watch(&self) -> MailWatch {
        let (signal, poll) = match self {
            Self::Local(s) => (&s.signal, None),
            Self::Redis(s) => (&*s.signal, Some(REDIS_POLL)),
        };
        let mut rx = signal.subscribe();
        rx.borrow_and_update();
        MailWatch { rx, poll }
    }

    /// Deletes everything under this store's prefix (tests).
    pub async fn clear(&self) -> Result<()> {
        dispatch!(self, s => s.clear().await)
    }
}

/// Wakes a long poll when mail may have arrived: in-process on every new message; over Redis on
/// this replica's own, and otherwise every [`REDIS_POLL`] (another replica may have written).
pub struct MailWatch {
    rx: tokio::sync::watch::Receiver<u64>,
    poll: Option<Duration>,
}

impl MailWatch {
    /// Returns when mail may have arrived since the last call (or since the watch was taken),
    /// or after `limit`.
    pub async fn wait(&mut self, limit: Duration) {
        let limit = self.poll.map_or(limit, |p| limit.min(p));
        if let Ok(Ok(())) = tokio::time::timeout(limit, self.rx.changed()).await {
            self.rx.borrow_and_update();
        }
    }
}

pub(crate) fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T> {
    s.parse()
        .map_err(|_| ControlError::Corrupt(format!("{what}: {s:?}")))
}
