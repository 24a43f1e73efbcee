//! The in-process control store of the embedded default: the same rules as the Redis one, under
//! one lock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::{
    Cancelled, ControlError, Enqueued, Group, Lease, Mail, MatchId, MatchRecord, Result, Seat,
    Ticket, UserId,
};

#[derive(Default)]
struct State {
    tickets: HashMap<UserId, Ticket>,
    seats: HashMap<UserId, Seat>,
    /// Each match's state and its players' connection servers.
    matches: HashMap<MatchId, (String, Vec<(UserId, String)>)>,
    boxes: HashMap<String, (u64, VecDeque<Mail>)>,
    /// When each connection server last read its mailbox (wall-clock ms).
    seen: HashMap<String, u64>,
    lead: Option<(String, Instant)>,
    epoch: u64,
    /// Farm and common-area homes: host, and until when it is remembered.
    homes: HashMap<String, (String, Instant)>,
}

/// Past this many homes, expired ones are dropped on the next write.
const HOMES_PRUNE_AT: usize = 4096;

pub struct Local {
    state: Mutex<State>,
    limit: usize,
    pub(crate) signal: tokio::sync::watch::Sender<u64>,
}

impl Local {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            limit: limit.max(1),
            signal: tokio::sync::watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mail(&self, st: &mut State, server: &str, user_id: UserId, body: &str) {
        let (seq, items) = st.boxes.entry(server.to_string()).or_default();
        *seq += 1;
        if items.len() >= self.limit {
            items.pop_front();
        }
        items.push_back(Mail {
            seq: *seq,
            user_id,
            body: body.to_string(),
        });
        self.signal.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn check(st: &State, lease: &Lease) -> Result<()> {
        match &st.lead {
            Some((holder, until))
                if *holder == lease.holder
                    && st.epoch == lease.epoch
                    && *until > Instant::now() =>
            {
                Ok(())
            }
            _ => Err(ControlError::Fenced),
        }
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        Ok(())
    }

    pub(crate) async fn enqueue(&self, t: &Ticket) -> Result<Enqueued> {
        let mut st = self.lock();
        match st.seats.get(&t.user_id) {
            Some(Seat::Forming(m)) => return Ok(Enqueued::Forming(*m)),
            Some(Seat::InMatch(m)) => return Ok(Enqueued::InMatch(*m)),
            None => {}
        }
        if let Some(old) = st.tickets.get_mut(&t.user_id) {
            old.server = t.server.clone();
            old.tag = t.tag.clone();
            return Ok(Enqueued::Existing);
        }
        st.tickets.insert(t.user_id, t.clone());
        Ok(Enqueued::New)
    }

    pub(crate) async fn cancel(&self, user: UserId) -> Result<Cancelled> {
        let mut st = self.lock();
        if st.tickets.remove(&user).is_some() {
            return Ok(Cancelled::Cancelled);
        }
        Ok(match st.seats.get(&user) {
            Some(Seat::Forming(_)) => Cancelled::Forming,
            _ => Cancelled::NotQueued,
        })
    }

    pub(crate) async fn tickets(&self) -> Result<Vec<Ticket>> {
        Ok(self.lock().tickets.values().cloned().collect())
    }

    pub(crate) async fn counts(&self) -> Result<(usize, usize)> {
        let st = self.lock();
        Ok((st.tickets.len(), st.matches.len()))
    }

    pub(crate) async fn lead(&self, holder: &str, ttl_ms: u64) -> Result<u64> {
        let mut st = self.lock();
        let now = Instant::now();
        let until = now + Duration::from_millis(ttl_ms);
        match &mut st.lead {
            Some((h, t)) if *t > now && h == holder => {
                *t = until;
                Ok(st.epoch)
            }
            Some((_, t)) if *t > now => Ok(0),
            _ => {
                st.lead = Some((holder.to_string(), until));
                st.epoch += 1;
                Ok(st.epoch)
            }
        }
    }

    pub(crate) async fn resign(&self, holder: &str) -> Result<()> {
        let mut st = self.lock();
        if st.lead.as_ref().is_some_and(|(h, _)| h == holder) {
            st.lead = None;
        }
        Ok(())
    }

    pub(crate) async fn form(&self, lease: &Lease, groups: &[Group<'_>]) -> Result<Vec<bool>> {
        let mut st = self.lock();
        Self::check(&st, lease)?;
        let mut out = Vec::with_capacity(groups.len());
        for g in groups {
            if !g.users.iter().all(|u| st.tickets.contains_key(u))
                || st.matches.contains_key(&g.match_id)
            {
                out.push(false);
                continue;
            }
            let mut routes = Vec::with_capacity(g.users.len());
            for u in g.users {
                if let Some(t) = st.tickets.remove(u) {
                    routes.push((*u, t.server));
                }
                st.seats.insert(*u, Seat::Forming(g.match_id));
            }
            st.matches.insert(g.match_id, (g.state.to_string(), routes));
            out.push(true);
        }
        Ok(out)
    }

    pub(crate) async fn expire(&self, lease: &Lease, ticket: &Ticket, body: &str) -> Result<bool> {
        let mut st = self.lock();
        Self::check(&st, lease)?;
        let same = st.tickets.get(&ticket.user_id).is_some_and(|t| {
            t.rating == ticket.rating
                && t.enqueued_ms == ticket.enqueued_ms
                && t.server == ticket.server
        });
        if !same {
            return Ok(false);
        }
        let Some(t) = st.tickets.remove(&ticket.user_id) else {
            return Ok(false);
        };
        self.mail(&mut st, &t.server, t.user_id, body);
        Ok(true)
    }

    pub(crate) async fn place(
        &self,
        lease: &Lease,
        match_id: MatchId,
        state: &str,
        mails: &[(UserId, String)],
    ) -> Result<bool> {
        let mut st = self.lock();
        Self::check(&st, lease)?;
        let Some((s, routes)) = st.matches.get_mut(&match_id) else {
            return Ok(false);
        };
        *s = state.to_string();
        let routes = routes.clone();
        for (u, _) in &routes {
            st.seats.insert(*u, Seat::InMatch(match_id));
        }
        for (user, body) in mails {
            if let Some((_, server)) = routes.iter().find(|(u, _)| u == user) {
                self.mail(&mut st, server, *user, body);
            }
        }
        Ok(true)
    }

    pub(crate) async fn finish(
        &self,
        lease: Option<&Lease>,
        match_id: MatchId,
        body: &str,
    ) -> Result<bool> {
        let mut st = self.lock();
        if let Some(lease) = lease {
            Self::check(&st, lease)?;
        }
        let Some((_, routes)) = st.matches.remove(&match_id) else {
            return Ok(false);
        };
        for (u, server) in routes {
            if matches!(st.seats.get(&u), Some(Seat::Forming(m) | Seat::InMatch(m)) if *m == match_id)
            {
                st.seats.remove(&u);
            }
            self.mail(&mut st, &server, u, body);
        }
        Ok(true)
    }

    pub(crate) async fn seat(&self, user: UserId) -> Result<Option<Seat>> {
        Ok(self.lock().seats.get(&user).copied())
    }

    pub(crate) async fn rejoin(
        &self,
        user: UserId,
        server: &str,
    ) -> Result<Option<(MatchId, String)>> {
        let mut st = self.lock();
        let Some(Seat::InMatch(m)) = st.seats.get(&user).copied() else {
            return Ok(None);
        };
        let Some((state, routes)) = st.matches.get_mut(&m) else {
            return Ok(None);
        };
        for (u, s) in routes.iter_mut() {
            if *u == user {
                *s = server.to_string();
            }
        }
        Ok(Some((m, state.clone())))
    }

    pub(crate) async fn matches(&self) -> Result<Vec<MatchRecord>> {
        Ok(self
            .lock()
            .matches
            .iter()
            .map(|(id, (state, players))| MatchRecord {
                match_id: *id,
                state: state.clone(),
                players: players.clone(),
            })
            .collect())
    }

    pub(crate) async fn mail_after(
        &self,
        server: &str,
        after: u64,
        now_ms: u64,
    ) -> Result<(Vec<Mail>, u64)> {
        let mut st = self.lock();
        st.seen.insert(server.to_string(), now_ms);
        let Some((seq, items)) = st.boxes.get_mut(server) else {
            return Ok((Vec::new(), 0));
        };
        while items.front().is_some_and(|m| m.seq <= after) {
            items.pop_front();
        }
        Ok((items.iter().cloned().collect(), *seq))
    }

    pub(crate) async fn mailboxes_seen(&self) -> Result<Vec<(String, u64)>> {
        Ok(self
            .lock()
            .seen
            .iter()
            .map(|(s, t)| (s.clone(), *t))
            .collect())
    }

    pub(crate) async fn home(&self, key: &str) -> Result<Option<String>> {
        let st = self.lock();
        Ok(st
            .homes
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(host, _)| host.clone()))
    }

    pub(crate) async fn set_home(&self, key: &str, host: &str, ttl_ms: u64) -> Result<()> {
        let mut st = self.lock();
        let now = Instant::now();
        if st.homes.len() >= HOMES_PRUNE_AT {
            st.homes.retain(|_, (_, until)| *until > now);
        }
        let until = now + Duration::from_millis(ttl_ms);
        st.homes.insert(key.to_string(), (host.to_string(), until));
        Ok(())
    }

    pub(crate) async fn clear(&self) -> Result<()> {
        *self.lock() = State::default();
        Ok(())
    }
}
