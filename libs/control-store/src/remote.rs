//! The control store in Redis: every step that reads and writes runs as one server-side script,
//! so it is atomic across replicas, and the fenced ones check the lease inside that script.
//!
//! Keys, all under the prefix (one hash tag, so a Redis Cluster keeps them in one slot):
//! `tk` tickets (user -> "rating:enqueued_ms|tag|server", one field, so a ticket costs one
//! write and the queue one read), `p` seats (user -> "f:match"
//! or "m:match"), `m` matches (id -> state), `r:<match>` routes (user -> server),
//! `b:<server>` a mailbox (sorted by sequence), `bs:<server>` its last sequence, `lead` the
//! leader lease (holder, with an expiry) and `epoch` its fencing token, `h:<home>` the instance
//! that hosts a farm or the common area (with an expiry).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};

use crate::{
    Cancelled, ControlError, Enqueued, Group, Lease, Mail, MatchId, MatchRecord, Result, Seat,
    Ticket, UserId, parse,
};

/// ARGV[1] is the prefix; the fenced scripts take the holder, the epoch and the mailbox limit as
/// ARGV[2..4].
const PRELUDE: &str = r#"
local P = ARGV[1]
local function fenced()
  return redis.call('GET', P..'lead') ~= ARGV[2] or redis.call('GET', P..'epoch') ~= ARGV[3]
end
local function mail(server, user, body)
  local seq = redis.call('INCR', P..'bs:'..server)
  local k = P..'b:'..server
  redis.call('ZADD', k, seq, seq..'|'..user..'|'..body)
  local n = redis.call('ZCARD', k)
  local limit = tonumber(ARGV[4])
  if n > limit then redis.call('ZREMRANGEBYRANK', k, 0, n - limit - 1) end
end
"#;

/// ARGV[2..]: tickets as (user, "rating:enqueued_ms", "tag|server"). Answers per ticket
/// "new", "existing" (its wait kept, its server and tag replaced) or the player's seat. The
/// seats of the whole batch are read in one `HMGET` (at most [`ENQUEUE_BATCH`] players, well
/// under Lua's `unpack` limit).
const ENQUEUE: &str = r#"
local users = {}
for i = 2, #ARGV, 3 do users[#users + 1] = ARGV[i] end
local seats = redis.call('HMGET', P..'p', unpack(users))
local out = {}
for k = 1, #users do
  local i = 2 + (k - 1) * 3
  local u, t, route = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if seats[k] then
    out[k] = seats[k]
  elseif redis.call('HSETNX', P..'tk', u, t..'|'..route) == 1 then
    out[k] = 'new'
  else
    local old = redis.call('HGET', P..'tk', u)
    local wait = string.match(old, '^[^|]*')
    redis.call('HSET', P..'tk', u, wait..'|'..route)
    out[k] = 'existing'
  end
end
return out
"#;

const CANCEL: &str = r#"
if redis.call('HDEL', P..'tk', ARGV[2]) == 1 then return 'cancelled' end
local st = redis.call('HGET', P..'p', ARGV[2])
if st and string.sub(st, 1, 2) == 'f:' then return 'forming' end
return 'none'
"#;

const LEAD: &str = r#"
local cur = redis.call('GET', P..'lead')
if not cur then
  redis.call('SET', P..'lead', ARGV[2], 'PX', ARGV[3])
  return redis.call('INCR', P..'epoch')
elseif cur == ARGV[2] then
  redis.call('PEXPIRE', P..'lead', ARGV[3])
  return tonumber(redis.call('GET', P..'epoch'))
end
return 0
"#;

const RESIGN: &str = r#"
if redis.call('GET', P..'lead') == ARGV[2] then redis.call('DEL', P..'lead') end
return 1
"#;

/// ARGV[5..]: groups, each as (match, state, player count, players...). Answers 1 per group
/// formed, 0 per group refused (a ticket gone, taken by an earlier group of the call, or the
/// match id taken). Each group costs its checks and its routes; the ticket deletions, seats
/// and match records of the whole call are written together at the end, in chunks that stay
/// under Lua's `unpack` limit (an even size, so field-value pairs stay whole).
const FORM: &str = r#"
if fenced() then return 'fenced' end
local out, taken, gone, seats, made = {}, {}, {}, {}, {}
local i = 5
while i <= #ARGV do
  local m, state, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local first, last = i + 3, i + 2 + n
  local ok = not taken['m'..m] and redis.call('HEXISTS', P..'m', m) == 0
  local routes = {}
  if ok then
    for j = first, last do
      local u = ARGV[j]
      local t = not taken[u] and redis.call('HGET', P..'tk', u)
      if not t then ok = false break end
      routes[#routes + 1] = u
      routes[#routes + 1] = string.match(t, '^[^|]*|[^|]*|(.*)$') or ''
    end
  end
  if ok then
    for j = first, last do
      local u = ARGV[j]
      taken[u] = true
      gone[#gone + 1] = u
      seats[#seats + 1] = u
      seats[#seats + 1] = 'f:'..m
    end
    taken['m'..m] = true
    redis.call('HSET', P..'r:'..m, unpack(routes))
    made[#made + 1] = m
    made[#made + 1] = state
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
  i = last + 1
end
local function chunked(cmd, key, list)
  for k = 1, #list, 1000 do
    redis.call(cmd, key, unpack(list, k, math.min(k + 999, #list)))
  end
end
chunked('HDEL', P..'tk', gone)
chunked('HSET', P..'p', seats)
chunked('HSET', P..'m', made)
return out
"#;

/// ARGV[5] user, ARGV[6] the ticket as stored, ARGV[7] body, ARGV[8] its connection server.
const EXPIRE: &str = r#"
if fenced() then return 'fenced' end
local t = redis.call('HGET', P..'tk', ARGV[5])
if not t then return 'gone' end
local wait, server = string.match(t, '^([^|]*)|[^|]*|(.*)$')
if wait ~= ARGV[6] or server ~= ARGV[8] then return 'gone' end
redis.call('HDEL', P..'tk', ARGV[5])
mail(server, ARGV[5], ARGV[7])
return 'ok'
"#;

/// ARGV[5] match, ARGV[6] state, then (user, body) pairs.
const PLACE: &str = r#"
if fenced() then return 'fenced' end
local m = ARGV[5]
if redis.call('HEXISTS', P..'m', m) == 0 then return 'gone' end
redis.call('HSET', P..'m', m, ARGV[6])
local routes = redis.call('HGETALL', P..'r:'..m)
for i = 1, #routes, 2 do redis.call('HSET', P..'p', routes[i], 'm:'..m) end
for i = 7, #ARGV, 2 do
  local server = redis.call('HGET', P..'r:'..m, ARGV[i])
  if server then mail(server, ARGV[i], ARGV[i + 1]) end
end
return 'ok'
"#;

/// ARGV[5] match, ARGV[6] body, ARGV[7] "1" when fenced (a release), "0" for a close.
const FINISH: &str = r#"
if ARGV[7] == '1' and fenced() then return 'fenced' end
local m = ARGV[5]
if redis.call('HDEL', P..'m', m) == 0 then return 'gone' end
local routes = redis.call('HGETALL', P..'r:'..m)
for i = 1, #routes, 2 do
  local u, server = routes[i], routes[i + 1]
  local st = redis.call('HGET', P..'p', u)
  if st == 'f:'..m or st == 'm:'..m then redis.call('HDEL', P..'p', u) end
  mail(server, u, ARGV[6])
end
redis.call('DEL', P..'r:'..m)
return 'ok'
"#;

const REJOIN: &str = r#"
local st = redis.call('HGET', P..'p', ARGV[2])
if not st or string.sub(st, 1, 2) ~= 'm:' then return false end
local m = string.sub(st, 3)
local state = redis.call('HGET', P..'m', m)
if not state then return false end
redis.call('HSET', P..'r:'..m, ARGV[2], ARGV[3])
return {m, state}
"#;

/// Most tickets in one enqueue script call.
const ENQUEUE_BATCH: usize = 512;

type EnqueueRequest = (Ticket, tokio::sync::oneshot::Sender<Result<Enqueued>>);

async fn enqueue_batches(
    con: ConnectionManager,
    prefix: String,
    scripts: Arc<Scripts>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<EnqueueRequest>,
) {
    let mut batch: Vec<EnqueueRequest> = Vec::with_capacity(ENQUEUE_BATCH);
    while rx.recv_many(&mut batch, ENQUEUE_BATCH).await > 0 {
        let mut inv = scripts.enqueue.prepare_invoke();
        inv.arg(&prefix);
        for (t, _) in &batch {
            inv.arg(t.user_id)
                .arg(format!("{}:{}", t.rating, t.enqueued_ms))
                .arg(format!("{}|{}", t.tag, t.server));
        }
        let got: std::result::Result<Vec<String>, RedisError> =
            inv.invoke_async(&mut con.clone()).await;
        match got {
            Ok(answers) if answers.len() == batch.len() => {
                for ((_, reply), a) in batch.drain(..).zip(answers) {
                    let _ = reply.send(enqueued(&a));
                }
            }
            Ok(answers) => {
                let e = format!("{} answers to {} tickets", answers.len(), batch.len());
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(ControlError::Corrupt(e.clone())));
                }
            }
            Err(e) => {
                let e = e.to_string();
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(ControlError::Unavailable(e.clone())));
                }
            }
        }
    }
}

fn enqueued(answer: &str) -> Result<Enqueued> {
    Ok(match answer {
        "new" => Enqueued::New,
        "existing" => Enqueued::Existing,
        seat => match parse_seat(seat)? {
            Seat::Forming(m) => Enqueued::Forming(m),
            Seat::InMatch(m) => Enqueued::InMatch(m),
        },
    })
}

struct Scripts {
    enqueue: Script,
    cancel: Script,
    lead: Script,
    resign: Script,
    form: Script,
    expire: Script,
    place: Script,
    finish: Script,
    rejoin: Script,
}

impl Scripts {
    fn new() -> Self {
        let s = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Self {
            enqueue: s(ENQUEUE),
            cancel: s(CANCEL),
            lead: s(LEAD),
            resign: s(RESIGN),
            form: s(FORM),
            expire: s(EXPIRE),
            place: s(PLACE),
            finish: s(FINISH),
            rejoin: s(REJOIN),
        }
    }
}

#[derive(Clone)]
pub struct RedisStore {
    con: ConnectionManager,
    prefix: String,
    limit: usize,
    scripts: Arc<Scripts>,
    pub(crate) signal: Arc<tokio::sync::watch::Sender<u64>>,
    /// The enqueue batcher's queue, started on first use.
    batcher: Arc<std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<EnqueueRequest>>>,
}

fn unavailable(e: RedisError) -> ControlError {
    ControlError::Unavailable(e.to_string())
}

fn unexpected(what: &str, got: &str) -> ControlError {
    ControlError::Corrupt(format!("{what} answered {got:?}"))
}

impl RedisStore {
    pub(crate) fn new(url: &str, prefix: &str, limit: usize) -> Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| ControlError::Invalid(format!("Redis URL: {e}")))?;
        // Fail fast while Redis is down (callers answer 503 and retry), reconnect behind.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let con = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| ControlError::Invalid(format!("Redis connection: {e}")))?;
        Ok(Self {
            con,
            prefix: prefix.to_string(),
            limit: limit.max(1),
            scripts: Arc::new(Scripts::new()),
            signal: Arc::new(tokio::sync::watch::Sender::new(0)),
            batcher: Arc::new(std::sync::OnceLock::new()),
        })
    }

    /// Redis at `url`, keys under `prefix` (see [`crate::ControlStore::redis`]).
    pub fn connect(url: &str, prefix: &str) -> Result<Self> {
        Self::new(url, prefix, crate::MAILBOX_LIMIT)
    }

    /// The prefix of every key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The managed connection (reconnecting, with short time-outs), for other services' own
    /// scripts under the same prefix.
    pub fn connection(&self) -> ConnectionManager {
        self.con.clone()
    }

    pub(crate) fn with_mailbox_limit(mut self, limit: usize) -> Self {
        self.limit = limit.max(1);
        self
    }

    fn key(&self, k: &str) -> String {
        format!("{}{k}", self.prefix)
    }

    fn mailed(&self) {
        self.signal.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Runs a fenced script: `Fenced` and `gone` become an error and `false`.
    async fn fenced(&self, script: &Script, lease: &Lease, args: &[String]) -> Result<bool> {
        let mut inv = script.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(&lease.holder)
            .arg(lease.epoch)
            .arg(self.limit);
        for a in args {
            inv.arg(a);
        }
        let got: String = inv
            .invoke_async(&mut self.con.clone())
            .await
            .map_err(unavailable)?;
        match got.as_str() {
            "ok" => Ok(true),
            "gone" => Ok(false),
            "fenced" => Err(ControlError::Fenced),
            other => Err(unexpected("a fenced step", other)),
        }
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.con.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Queues a ticket. Tickets enqueued at the same time share one script call: a batcher
    /// task takes whatever waits (up to [`ENQUEUE_BATCH`]) while the previous call runs.
    pub(crate) async fn enqueue(&self, t: &Ticket) -> Result<Enqueued> {
        let tx = self.batcher.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(enqueue_batches(
                self.con.clone(),
                self.prefix.clone(),
                self.scripts.clone(),
                rx,
            ));
            tx
        });
        let (reply, answer) = tokio::sync::oneshot::channel();
        tx.send((t.clone(), reply))
            .map_err(|_| ControlError::Unavailable("the enqueue batcher stopped".into()))?;
        answer
            .await
            .map_err(|_| ControlError::Unavailable("the enqueue batcher stopped".into()))?
    }

    pub(crate) async fn cancel(&self, user: UserId) -> Result<Cancelled> {
        let got: String = self
            .scripts
            .cancel
            .arg(&self.prefix)
            .arg(user)
            .invoke_async(&mut self.con.clone())
            .await
            .map_err(unavailable)?;
        match got.as_str() {
            "cancelled" => Ok(Cancelled::Cancelled),
            "forming" => Ok(Cancelled::Forming),
            "none" => Ok(Cancelled::NotQueued),
            other => Err(unexpected("cancel", other)),
        }
    }

    pub(crate) async fn tickets(&self) -> Result<Vec<Ticket>> {
        let tickets: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.key("tk"))
            .query_async(&mut self.con.clone())
            .await
            .map_err(unavailable)?;
        tickets
            .into_iter()
            .map(|(user, t)| {
                let mut parts = t.splitn(3, '|');
                let (Some(wait), Some(tag), Some(server)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(unexpected("a ticket", &t));
                };
                let (rating, enqueued) = wait
                    .split_once(':')
                    .ok_or_else(|| unexpected("a ticket", &t))?;
                Ok(Ticket {
                    user_id: parse("a ticket's user", &user)?,
                    rating: parse("a ticket's rating", rating)?,
                    enqueued_ms: parse("a ticket's time", enqueued)?,
                    server: server.to_string(),
                    tag: tag.to_string(),
                })
            })
            .collect()
    }

    pub(crate) async fn counts(&self) -> Result<(usize, usize)> {
        redis::pipe()
            .cmd("HLEN")
            .arg(self.key("tk"))
            .cmd("HLEN")
            .arg(self.key("m"))
            .query_async(&mut self.con.clone())
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn lead(&self, holder: &str, ttl_ms: u64) -> Result<u64> {
        self.scripts
            .lead
            .arg(&self.prefix)
            .arg(holder)
            .arg(ttl_ms)
            .invoke_async(&mut self.con.clone())
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn resign(&self, holder: &str) -> Result<()> {
        let _: i64 = self
            .scripts
            .resign
            .arg(&self.prefix)
            .arg(holder)
            .invoke_async(&mut self.con.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn form(&self, lease: &Lease, groups: &[Group<'_>]) -> Result<Vec<bool>> {
        let mut inv = self.scripts.form.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(&lease.holder)
            .arg(lease.epoch)
            .arg(self.limit);
        for g in groups {
            inv.arg(g.match_id).arg(g.state).arg(g.users.len());
            for u in g.users {
                inv.arg(*u);
            }
        }
        let got: redis::Value = inv
            .invoke_async(&mut self.con.clone())
            .await
            .map_err(unavailable)?;
        match got {
            redis::Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    redis::Value::Int(n) => Ok(n == 1),
                    other => Err(unexpected("form", &format!("{other:?}"))),
                })
                .collect(),
            other => match redis::from_redis_value::<String>(other) {
                Ok(s) if s == "fenced" => Err(ControlError::Fenced),
                Ok(s) => Err(unexpected("form", &s)),
                Err(e) => Err(unexpected("form", &e.to_string())),
            },
        }
    }

    pub(crate) async fn expire(&self, lease: &Lease, t: &Ticket, body: &str) -> Result<bool> {
        let args = [
            t.user_id.to_string(),
            format!("{}:{}", t.rating, t.enqueued_ms),
            body.to_string(),
            t.server.clone(),
        ];
        let done = self.fenced(&self.scripts.expire, lease, &args).await?;
        self.mailed();
        Ok(done)
    }

    pub(crate) async fn place(
        &self,
        lease: &Lease,
        match_id: MatchId,
        state: &str,
        mails: &[(UserId, String)],
    ) -> Result<bool> {
        let mut args = vec![match_id.to_string(), state.to_string()];
        for (u, body) in mails {
            args.push(u.to_string());
            args.push(body.clone());
        }
        let done = self.fenced(&self.scripts.place, lease, &args).await?;
        self.mailed();
        Ok(done)
    }

    pub(crate) async fn finish(
        &self,
        lease: Option<&Lease>,
        match_id: MatchId,
        body: &str,
    ) -> Result<bool> {
        let unfenced = Lease {
            holder: String::new(),
            epoch: 0,
        };
        let args = [
            match_id.to_string(),
            body.to_string(),
            if lease.is_some() { "1" } else { "0" }.to_string(),
        ];
        let done = self
            .fenced(&self.scripts.finish, lease.unwrap_or(&unfenced), &args)
            .await?;
        self.mailed();
        Ok(done)
    }

    pub(crate) async fn seat(&self, user: UserId) -> Result<Option<Seat>> {
        let got: Option<String> = redis::cmd("HGET")
            .arg(self.key("p"))
            .arg(user)
            .query_async(&mut self.con.clone())
            .await
            .map_err(unavailable)?;
        got.map(|s| parse_seat(&s)).transpose()
    }

    pub(crate) async fn rejoin(
        &self,
        user: UserId,
        server: &str,
    ) -> Result<Option<(MatchId, String)>> {
        let got: Option<(String, String)> = self
            .scripts
            .rejoin
            .arg(&self.prefix)
            .arg(user)
            .arg(server)
            .invoke_async(&mut self.con.clone())
            .await
            .map_err(unavailable)?;
        got.map(|(m, state)| Ok((parse("a match id", &m)?, state)))
            .transpose()
    }

    pub(crate) async fn matches(&self) -> Result<Vec<MatchRecord>> {
        let mut con = self.con.clone();
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.key("m"))
            .query_async(&mut con)
            .await
            .map_err(unavailable)?;
        let all: Vec<(String, String)> = all.into_iter().collect();
        let mut out = Vec::with_capacity(all.len());
        // The routes of up to 500 matches per round trip.
        for chunk in all.chunks(500) {
            let mut pipe = redis::pipe();
            for (id, _) in chunk {
                pipe.cmd("HGETALL").arg(self.key(&format!("r:{id}")));
            }
            let routes: Vec<HashMap<String, String>> =
                pipe.query_async(&mut con).await.map_err(unavailable)?;
            for ((id, state), routes) in chunk.iter().zip(routes) {
                let players = routes
                    .into_iter()
                    .map(|(u, s)| Ok((parse("a player", &u)?, s)))
                    .collect::<Result<Vec<_>>>()?;
                out.push(MatchRecord {
                    match_id: parse("a match id", id)?,
                    state: state.clone(),
                    players,
                });
            }
        }
        Ok(out)
    }

    pub(crate) async fn mail_after(
        &self,
        server: &str,
        after: u64,
        now_ms: u64,
    ) -> Result<(Vec<Mail>, u64)> {
        let k = self.key(&format!("b:{server}"));
        let (items, last): (Vec<String>, Option<u64>) = redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(self.key("seen"))
            .arg(server)
            .arg(now_ms)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&k)
            .arg("-inf")
            .arg(after)
            .ignore()
            .cmd("ZRANGEBYSCORE")
            .arg(&k)
            .arg(format!("({after}"))
            .arg("+inf")
            .cmd("GET")
            .arg(self.key(&format!("bs:{server}")))
            .query_async(&mut self.con.clone())
            .await
            .map_err(unavailable)?;
        let mail = items
            .iter()
            .map(|m| {
                let mut parts = m.splitn(3, '|');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(seq), Some(user), Some(body)) => Ok(Mail {
                        seq: parse("a mail's number", seq)?,
                        user_id: parse("a mail's player", user)?,
                        body: body.to_string(),
                    }),
                    _ => Err(unexpected("a mailbox", m)),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((mail, last.unwrap_or(0)))
    }

    pub(crate) async fn mailboxes_seen(&self) -> Result<Vec<(String, u64)>> {
        let seen: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.key("seen"))
            .query_async(&mut self.con.clone())
            .await
            .map_err(unavailable)?;
        seen.into_iter()
            .map(|(s, t)| Ok((s, parse("a mailbox's last read", &t)?)))
            .collect()
    }

    pub(crate) async fn home(&self, key: &str) -> Result<Option<String>> {
        redis::cmd("GET")
            .arg(self.key(&format!("h:{key}")))
            .query_async(&mut self.con.clone())
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn set_home(&self, key: &str, host: &str, ttl_ms: u64) -> Result<()> {
        let _: () = redis::cmd("SET")
            .arg(self.key(&format!("h:{key}")))
            .arg(host)
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut self.con.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn clear(&self) -> Result<()> {
        let mut con = self.con.clone();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(500)
                .query_async(&mut con)
                .await
                .map_err(unavailable)?;
            if !keys.is_empty() {
                let _: i64 = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut con)
                    .await
                    .map_err(unavailable)?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

fn parse_seat(s: &str) -> Result<Seat> {
    match s.split_once(':') {
        Some(("f", m)) => Ok(Seat::Forming(parse("a seat", m)?)),
        Some(("m", m)) => Ok(Seat::InMatch(parse("a seat", m)?)),
        _ => Err(unexpected("a seat", s)),
    }
}
