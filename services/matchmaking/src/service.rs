//! The matchmaking service: the HTTP API connection servers call, the loop that forms and places
//! matches, and the loop that collects ended and lost matches from the allocator.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use contracts::ApiError;
use contracts::instance::v1::CreateMatchRequest;
use contracts::matchmaking::v1::{
    FARMS, FarmRequest, FarmResponse, HUB, HubPlaceRequest, HubPlaceResponse, REJOIN,
    RejoinRequest, RejoinResponse, STATUS, Status, TICKETS, TicketRequest, TicketResponse, UPDATES,
    Update, UpdateKind, UpdatesQuery, UpdatesResponse,
};
use control_store::{Cancelled, ControlError, ControlStore, Enqueued, Group, Home, Lease, Ticket};
use serde::{Deserialize, Serialize};
use store::Store;
use token::ConnectTokenIssuer;

use crate::allocator::{AllocEvent, Allocator, Placement};
use crate::queue::{MatchId, Queue, QueueConfig, UserId};

mod lost;
pub use lost::{INSTANCE_SILENCE, MAILBOX_SILENCE, MATCH_ABSENCE};

/// What the control store keeps about a match: who formed it, when, and where it runs once
/// placed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MatchState {
    /// The lease epoch of the leader that formed it: a later leader finishes what an earlier
    /// one left half placed.
    epoch: u64,
    formed_ms: u64,
    placement: Option<Placement>,
    /// Each player's session tag (hex), carried into their connect tokens.
    #[serde(default)]
    tags: Vec<(UserId, String)>,
}

impl MatchState {
    fn tag_of(&self, user: UserId) -> [u8; 16] {
        self.tags
            .iter()
            .find(|(u, _)| *u == user)
            .and_then(|(_, t)| token::revocation::tag_from_hex(t))
            .unwrap_or_default()
    }
}

/// A session tag from a request: 32 hex digits, or none.
fn session_tag(tag: Option<&str>) -> Result<[u8; 16], ApiError> {
    match tag {
        None => Ok([0; 16]),
        Some(t) => token::revocation::tag_from_hex(t).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "session_tag must be 32 hex digits",
            )
        }),
    }
}

pub struct Matchmaking {
    pub config: QueueConfig,
    pub store: Store,
    /// Tickets, matches, mailboxes and the leader lease: in this process, or in Redis shared
    /// by the replicas.
    pub control: ControlStore,
    pub allocator: Arc<dyn Allocator>,
    pub issuer: ConnectTokenIssuer,
    /// The card data: a player's chosen deck is checked against it, and a player without
    /// one plays their starter deck.
    pub data: shared_sim::data::DataHandle,
    service_token: String,
    /// This replica's name in the leader lease (unique per run).
    holder: String,
    lease_ttl: Duration,
    /// The lease while this replica leads formation and placement.
    lease: Mutex<Option<Lease>>,
    /// Matches this replica is placing now (a later tick does not start them again).
    placing: Mutex<HashSet<MatchId>>,
    /// Ended matches not yet recorded or closed (the database or the store was away).
    unclosed: Mutex<Vec<AllocEvent>>,
    /// When the leader next closes placed matches whose result is in the database.
    next_sweep: Mutex<Instant>,
    /// A sweep runs (on a task of its own, so that instances or a database slow to answer
    /// never hold up the formation pass).
    sweeping: std::sync::atomic::AtomicBool,
    /// The instances of placed matches, watched by the leader (set by `watch_instances`).
    watch: std::sync::OnceLock<lost::InstanceWatch>,
}

/// How often the leader closes placed matches whose instance recorded their result.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn body(kind: &UpdateKind) -> String {
    serde_json::to_string(kind).unwrap_or_default()
}

fn unavailable(e: ControlError) -> ApiError {
    tracing::warn!(error = %e, "control store");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "try again shortly",
    )
}

impl Matchmaking {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: QueueConfig,
        store: Store,
        control: ControlStore,
        lease_ttl: Duration,
        allocator: Arc<dyn Allocator>,
        issuer: ConnectTokenIssuer,
        data: shared_sim::data::DataHandle,
        service_token: String,
    ) -> Arc<Self> {
        let holder = format!(
            "{}-{}-{:08x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "matchmaking".into()),
            std::process::id(),
            random_u64().unwrap_or(0) as u32
        );
        Arc::new(Self {
            config,
            store,
            control,
            allocator,
            issuer,
            data,
            service_token,
            holder,
            lease_ttl,
            lease: Mutex::new(None),
            placing: Mutex::new(HashSet::new()),
            unclosed: Mutex::new(Vec::new()),
            next_sweep: Mutex::new(Instant::now()),
            sweeping: std::sync::atomic::AtomicBool::new(false),
            watch: std::sync::OnceLock::new(),
        })
    }

    fn lease_slot(&self) -> MutexGuard<'_, Option<Lease>> {
        self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn placing(&self) -> MutexGuard<'_, HashSet<MatchId>> {
        self.placing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the control store says `home` is hosted. A store that does not answer costs the
    /// hint only: the farm's lease in the database still decides where it opens.
    async fn home(&self, home: Home) -> Option<String> {
        self.control.home(home).await.unwrap_or_else(|e| {
            tracing::warn!(?home, error = %e, "cannot read a home; any instance may be asked");
            None
        })
    }

    /// Records that `home` is hosted on `host` now, if it moved. An unchanged home is not
    /// written again: it expires a day after it was set, and the opening after that records
    /// it anew.
    async fn moved_home(&self, home: Home, was: Option<String>, host: &str) {
        if was.as_deref() == Some(host) {
            return;
        }
        if let Err(e) = self.control.set_home(home, host).await {
            tracing::warn!(?home, host, error = %e, "cannot record a home");
        }
    }

    /// Whether this replica leads now (as of its last tick).
    pub fn is_leader(&self) -> bool {
        self.lease_slot().is_some()
    }

    /// Takes or renews the leader lease: the lease, and whether it is new to this replica.
    async fn lead(&self) -> Option<(Lease, bool)> {
        let got = self.control.lead(&self.holder, self.lease_ttl).await;
        let mut slot = self.lease_slot();
        match got {
            Ok(Some(lease)) => {
                let new = slot.as_ref() != Some(&lease);
                if new {
                    tracing::info!(holder = %self.holder, epoch = lease.epoch, "leading match formation");
                }
                *slot = Some(lease.clone());
                metrics::gauge!("croft_matchmaking_leader").set(1.0);
                Some((lease, new))
            }
            Ok(None) => {
                if slot.take().is_some() {
                    tracing::warn!(holder = %self.holder, "no longer leading match formation");
                }
                metrics::gauge!("croft_matchmaking_leader").set(0.0);
                None
            }
            Err(e) => {
                // The lease may run out meanwhile; steps taken with it are fenced then.
                tracing::warn!(error = %e, "cannot renew the leader lease");
                slot.clone().map(|l| (l, false))
            }
        }
    }

    /// Gives the leader lease up (a replica that stops), so another leads at once.
    pub async fn resign(&self) {
        if self.lease_slot().take().is_some()
            && let Err(e) = self.control.resign(&self.holder).await
        {
            tracing::warn!(error = %e, "cannot give the leader lease up");
        }
    }

    /// One pass, on the leader only: expire old tickets, form matches, place them; a replica
    /// that just became leader first finishes the placements its predecessor left.
    pub async fn tick(self: &Arc<Self>) {
        let Some((lease, new)) = self.lead().await else {
            return;
        };
        if new {
            self.resume(&lease).await;
        }
        let sweep = {
            let mut next = self.next_sweep.lock().unwrap_or_else(|e| e.into_inner());
            let due = Instant::now() >= *next;
            if due {
                *next = Instant::now() + SWEEP_EVERY;
            }
            due
        };
        if sweep
            && !self
                .sweeping
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let (this, lease) = (self.clone(), lease.clone());
            tokio::spawn(async move {
                this.sweep().await;
                this.drop_silent_tickets(&lease).await;
                this.sweeping
                    .store(false, std::sync::atomic::Ordering::SeqCst);
            });
        }
        let tickets = match self.control.tickets().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the queue");
                return;
            }
        };
        let (now, now_wall) = (Instant::now(), now_ms());
        let mut queue = Queue::new(self.config.clone());
        for t in &tickets {
            let waited = Duration::from_millis(now_wall.saturating_sub(t.enqueued_ms));
            let at = now.checked_sub(waited).unwrap_or(now);
            queue.enqueue(t.user_id, t.rating, &t.server, at);
        }
        let by_user: std::collections::HashMap<UserId, &Ticket> =
            tickets.iter().map(|t| (t.user_id, t)).collect();
        let expired = queue.expire(now);
        let groups = queue.form(now);
        metrics::gauge!("croft_matchmaking_queued").set(tickets.len() as f64);
        metrics::gauge!("croft_matchmaking_oldest_wait_seconds")
            .set(queue.oldest_wait(now).as_secs_f64());
        let left = body(&UpdateKind::QueueLeft {
            reason: "timed_out".into(),
        });
        for gone in expired {
            let Some(t) = by_user.get(&gone.user_id) else {
                continue;
            };
            match self.control.expire(&lease, t, &left).await {
                Ok(true) => {
                    metrics::counter!("croft_matchmaking_tickets_timed_out_total").increment(1)
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot expire a ticket");
                    return;
                }
            }
        }
        let mut formed = Vec::with_capacity(groups.len());
        for group in groups {
            let Ok(match_id) = random_match_id() else {
                tracing::error!("no OS randomness for a match id");
                return;
            };
            let users: Vec<UserId> = group.iter().map(|t| t.user_id).collect();
            let state = MatchState {
                epoch: lease.epoch,
                formed_ms: now_wall,
                placement: None,
                tags: users
                    .iter()
                    .filter_map(|u| {
                        let t = by_user.get(u)?;
                        (!t.tag.is_empty()).then(|| (*u, t.tag.clone()))
                    })
                    .collect(),
            };
            formed.push((match_id, users, group, state));
        }
        let states: Vec<String> = formed
            .iter()
            .map(|(.., state)| serde_json::to_string(state).unwrap_or_default())
            .collect();
        let batch: Vec<Group<'_>> = formed
            .iter()
            .zip(&states)
            .map(|((match_id, users, ..), state)| Group {
                match_id: *match_id,
                users,
                state,
            })
            .collect();
        let taken = match self.control.form_many(&lease, &batch).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot form matches");
                return;
            }
        };
        drop(batch);
        for ((match_id, users, group, state), taken) in formed.into_iter().zip(taken) {
            // Not taken: a player cancelled meanwhile; the others wait for the next pass.
            if !taken {
                continue;
            }
            for t in &group {
                metrics::histogram!("croft_matchmaking_queue_wait_seconds")
                    .record(now.saturating_duration_since(t.enqueued_at).as_secs_f64());
            }
            self.spawn_placement(lease.clone(), match_id, users, state);
        }
    }

    fn spawn_placement(
        self: &Arc<Self>,
        lease: Lease,
        match_id: MatchId,
        users: Vec<UserId>,
        formed: MatchState,
    ) {
        if !self.placing().insert(match_id) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            this.start_match(&lease, match_id, users, formed).await;
            this.placing().remove(&match_id);
        });
    }

    /// Finishes the matches an earlier leader formed and did not place (it was killed or
    /// paused while allocating): placed again under the same match id.
    async fn resume(self: &Arc<Self>, lease: &Lease) {
        let records = match self.control.matches().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the formed matches");
                return;
            }
        };
        for r in records {
            let Ok(state) = serde_json::from_str::<MatchState>(&r.state) else {
                tracing::error!(match_id = r.match_id, "unreadable match state");
                continue;
            };
            if state.placement.is_none() && state.epoch < lease.epoch {
                tracing::info!(
                    match_id = r.match_id,
                    "placing a match an earlier leader formed"
                );
                metrics::counter!("croft_matchmaking_placements_resumed_total").increment(1);
                let users = r.players.iter().map(|(u, _)| *u).collect();
                self.spawn_placement(lease.clone(), r.match_id, users, state);
            }
        }
    }

    /// Closes every placed match whose result is in the database: instances record their
    /// results themselves, so a match placed by a replica that died (or whose ended report was
    /// lost) still frees its players. Then aborts the placed matches whose instance is gone.
    async fn sweep(&self) {
        let records = match self.control.matches().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the placed matches");
                return;
            }
        };
        metrics::gauge!("croft_matchmaking_matches_open").set(records.len() as f64);
        let placed: Vec<i64> = records
            .iter()
            .filter(|r| {
                serde_json::from_str::<MatchState>(&r.state).is_ok_and(|s| s.placement.is_some())
            })
            .map(|r| r.match_id as i64)
            .collect();
        if placed.is_empty() {
            return;
        }
        let recorded = match self.store.recorded_matches(&placed).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read recorded results");
                return;
            }
        };
        let recorded_ids: Vec<i64> = recorded.iter().map(|(id, _)| *id).collect();
        for (id, reason) in recorded {
            let match_id = id as MatchId;
            let ended = body(&UpdateKind::MatchEnded {
                match_id,
                aborted: reason == "Aborted",
            });
            match self.control.close(match_id, &ended).await {
                Ok(true) => {
                    metrics::counter!("croft_matchmaking_matches_closed_total", "how" => "recorded")
                        .increment(1);
                    tracing::info!(match_id, reason, "match closed from its recorded result");
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(match_id, error = %e, "cannot close a match"),
            }
        }
        self.abort_lost(&records, &recorded_ids).await;
    }

    /// The deck `user` queues with: their chosen deck while it is valid by the current card
    /// data, else their starter deck (also when the database does not answer: the match goes
    /// ahead).
    async fn deck_of(&self, user: UserId) -> Vec<String> {
        let data = self.data.get();
        match self.store.active_deck(user as i64).await {
            Ok(Some(cards)) => match data.resolve_deck(&cards) {
                Ok(_) => return cards,
                Err(e) => {
                    tracing::warn!(user, error = %e, "chosen deck no longer valid; starter deck")
                }
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(user, error = %e, "cannot read the chosen deck; starter deck"),
        }
        data.starter_deck_for(user)
            .map(|d| d.cards.clone())
            .unwrap_or_default()
    }

    /// Allocates a formed match, then records where it runs and tells its players in one
    /// step; a match that cannot be placed is released and its players told.
    async fn start_match(
        &self,
        lease: &Lease,
        match_id: MatchId,
        users: Vec<UserId>,
        formed: MatchState,
    ) {
        let placed = match users.as_slice() {
            [a, b] => {
                let request = CreateMatchRequest {
                    match_id,
                    players: [*a, *b],
                    decks: Some([self.deck_of(*a).await, self.deck_of(*b).await]),
                    starter_decks: None,
                    seed: None,
                };
                self.allocator
                    .allocate(request)
                    .await
                    .map_err(|e| e.to_string())
            }
            _ => Err(format!(
                "the card game seats two players, not {}",
                users.len()
            )),
        };
        let placement = match placed {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, ?users, "cannot place a match");
                let left = body(&UpdateKind::QueueLeft {
                    reason: "no_capacity".into(),
                });
                if let Err(e) = self.control.release(lease, match_id, &left).await {
                    tracing::warn!(match_id, error = %e, "cannot release a match");
                }
                return;
            }
        };
        let mut mails = Vec::with_capacity(users.len());
        for user in &users {
            match self.issuer.mint_instance_for(
                placement.server_addr,
                *user,
                match_id,
                formed.tag_of(*user),
            ) {
                Ok(token) => mails.push((
                    *user,
                    body(&UpdateKind::MatchFound {
                        match_id,
                        server_addr: placement.server_addr,
                        connect_token: token::encode_token(&token),
                        ws_url: placement.ws_url.clone(),
                    }),
                )),
                Err(e) => tracing::error!(error = %e, "cannot mint an instance token"),
            }
        }
        let state = MatchState {
            epoch: lease.epoch,
            formed_ms: now_ms(),
            placement: Some(placement.clone()),
            tags: formed.tags,
        };
        let state = serde_json::to_string(&state).unwrap_or_default();
        match self.control.place(lease, match_id, &state, &mails).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(match_id, "the match was closed while it was placed");
                return;
            }
            Err(e) => {
                // Fenced: a newer leader places it; unavailable: the next leader resumes it.
                // The instance's copy, never announced, ends when no player comes.
                metrics::counter!("croft_matchmaking_placements_lost_total").increment(1);
                tracing::warn!(match_id, error = %e, "placement not recorded");
                return;
            }
        }
        let event = events::Event::MatchFound {
            match_id,
            players: users.clone(),
            instance: placement.instance.clone(),
            server_addr: placement.server_addr.to_string(),
        }
        .outbox("matchmaking");
        if let Err(e) = self.store.insert_event(&event).await {
            // The match goes ahead; the event is what is lost, and that is logged and counted.
            metrics::counter!("croft_matchmaking_event_errors_total").increment(1);
            tracing::error!(match_id, error = %e, "cannot write the match_found event");
        }
        metrics::counter!("croft_matchmaking_matches_formed_total").increment(1);
        tracing::info!(match_id, ?users, instance = %placement.instance, addr = %placement.server_addr, "match found");
    }

    /// Collects ended and lost matches from this replica's allocator: records them and frees
    /// their players (both idempotent, so replicas may overlap). What the database or the
    /// control store refused is tried again on the next pass.
    pub async fn collect(&self) {
        let mut events = std::mem::take(&mut *self.unclosed());
        events.extend(self.allocator.poll().await);
        let mut again = Vec::new();
        for event in events {
            if !self.close(&event).await {
                again.push(event);
            }
        }
        metrics::gauge!("croft_matchmaking_unclosed_matches").set(again.len() as f64);
        self.unclosed().extend(again);
    }

    fn unclosed(&self) -> MutexGuard<'_, Vec<AllocEvent>> {
        self.unclosed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one ended match and frees its players: whether both are done.
    async fn close(&self, event: &AllocEvent) -> bool {
        let (match_id, players, aborted, winner, reason, turns, record) = match event {
            AllocEvent::Ended(e) => (
                e.match_id,
                e.players,
                false,
                e.winner,
                e.reason.clone(),
                e.turns,
                serde_json::to_string(e).unwrap_or_default(),
            ),
            AllocEvent::Aborted {
                match_id,
                players,
                instance,
            } => (
                *match_id,
                *players,
                true,
                None,
                "Aborted".to_string(),
                0,
                serde_json::json!({ "instance_lost": instance }).to_string(),
            ),
        };
        let data_version = match event {
            AllocEvent::Ended(e) => e.data_version.to_string(),
            _ => String::new(),
        };
        let result = store::MatchResult {
            match_id: match_id as i64,
            players: [players[0] as i64, players[1] as i64],
            winner: winner.map(|w| w as i64),
            reason: reason.clone(),
            turns: turns as i32,
            data_version,
            record,
        };
        match self.store.record_match(&result).await {
            Ok(()) | Err(store::StoreError::Conflict(_)) => {}
            Err(e) => {
                metrics::counter!("croft_matchmaking_record_errors_total").increment(1);
                tracing::error!(match_id, error = %e, "cannot record a match result; retrying");
                return false;
            }
        }
        let ended = body(&UpdateKind::MatchEnded { match_id, aborted });
        match self.control.close(match_id, &ended).await {
            Ok(true) => {
                let how = if aborted { "aborted" } else { "ended" };
                metrics::counter!("croft_matchmaking_matches_closed_total", "how" => how)
                    .increment(1);
                tracing::info!(match_id, aborted, reason, "match closed");
                true
            }
            Ok(false) => true,
            Err(e) => {
                metrics::counter!("croft_matchmaking_close_errors_total").increment(1);
                tracing::error!(match_id, error = %e, "cannot close a match; retrying");
                false
            }
        }
    }
}

/// Runs the formation loop (every `every`) and the collection loop (every second) in one
/// task, so that aborting the returned handle stops both.
pub fn spawn_loops(mm: Arc<Matchmaking>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let collect = async {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                mm.collect().await;
            }
        };
        let form = async {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                mm.tick().await;
            }
        };
        tokio::join!(collect, form);
    })
}

fn random_u64() -> Result<u64, String> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| format!("no OS randomness: {e}"))?;
    Ok(u64::from_le_bytes(b))
}

/// Match ids stay below 2^53 so that JSON readers in any language keep them exact.
fn random_match_id() -> Result<MatchId, String> {
    Ok((random_u64()? >> 11).max(1))
}

// ------------------------------------------------------------------------------------------
// HTTP API
// ------------------------------------------------------------------------------------------

fn check_auth(mm: &Matchmaking, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers.get("authorization").and_then(|v| v.to_str().ok());
    if token::bearer_matches(given, &mm.service_token) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

/// The HTTP API connection servers call, with the service credential.
pub fn router(mm: Arc<Matchmaking>) -> Router {
    Router::new()
        .route(TICKETS, post(create_ticket))
        .route(&format!("{TICKETS}/{{user_id}}"), delete(cancel_ticket))
        .route(UPDATES, get(updates))
        .route(REJOIN, post(rejoin))
        .route(FARMS, post(open_farm))
        .route(HUB, post(open_hub))
        .route(STATUS, get(status))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(mm)
}

fn json_body<T>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    Ok(body?.0)
}

async fn create_ticket(
    State(mm): State<Arc<Matchmaking>>,
    headers: HeaderMap,
    body: Result<Json<TicketRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<TicketResponse>, ApiError> {
    check_auth(&mm, &headers)?;
    let req = json_body(body)?;
    let rating = match mm.store.rating(req.user_id as i64).await {
        Ok(r) => r,
        Err(store::StoreError::NotFound) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_user",
                "no such user",
            ));
        }
        Err(e) => {
            tracing::warn!(error = %e, "rating lookup failed");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "try again shortly",
            ));
        }
    };
    let tag = session_tag(req.session_tag.as_deref())?;
    let ticket = Ticket {
        user_id: req.user_id,
        rating,
        enqueued_ms: now_ms(),
        server: req.server,
        tag: if tag == [0; 16] {
            String::new()
        } else {
            token::revocation::tag_hex(&tag)
        },
    };
    match mm.control.enqueue(&ticket).await.map_err(unavailable)? {
        Enqueued::New => {
            metrics::counter!("croft_matchmaking_tickets_total").increment(1);
            Ok(Json(TicketResponse {
                status: "queued".into(),
            }))
        }
        Enqueued::Existing => Ok(Json(TicketResponse {
            status: "already_queued".into(),
        })),
        Enqueued::InMatch(m) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "in_match",
            format!("already in match {m}"),
        )),
        Enqueued::Forming(_) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "forming",
            "a match is being set up",
        )),
    }
}

async fn cancel_ticket(
    State(mm): State<Arc<Matchmaking>>,
    headers: HeaderMap,
    Path(user_id): Path<UserId>,
) -> Result<StatusCode, ApiError> {
    check_auth(&mm, &headers)?;
    match mm.control.cancel(user_id).await.map_err(unavailable)? {
        Cancelled::Cancelled => Ok(StatusCode::NO_CONTENT),
        Cancelled::Forming => Err(ApiError::new(
            StatusCode::CONFLICT,
            "forming",
            "too late to cancel: a match is being set up",
        )),
        Cancelled::NotQueued => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_queued",
            "no ticket for this user",
        )),
    }
}

async fn updates(
    State(mm): State<Arc<Matchmaking>>,
    headers: HeaderMap,
    query: Result<Query<UpdatesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UpdatesResponse>, ApiError> {
    check_auth(&mm, &headers)?;
    let Query(q) = query?;
    let deadline = Instant::now() + Duration::from_millis(q.wait_ms.min(30_000));
    let mut watch = mm.control.mail_watch();
    loop {
        let (mail, last_seq) = mm
            .control
            .mail_after(&q.server, q.after, now_ms())
            .await
            .map_err(unavailable)?;
        let now = Instant::now();
        if !mail.is_empty() || now >= deadline {
            let updates = mail
                .into_iter()
                .filter_map(|m| match serde_json::from_str(&m.body) {
                    Ok(kind) => Some(Update {
                        seq: m.seq,
                        user_id: m.user_id,
                        kind,
                    }),
                    Err(e) => {
                        tracing::error!(seq = m.seq, error = %e, "unreadable update skipped");
                        None
                    }
                })
                .collect();
            return Ok(Json(UpdatesResponse { updates, last_seq }));
        }
        watch.wait(deadline - now).await;
    }
}

async fn rejoin(
    State(mm): State<Arc<Matchmaking>>,
    headers: HeaderMap,
    body: Result<Json<RejoinRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<RejoinResponse>, ApiError> {
    check_auth(&mm, &headers)?;
    let req = json_body(body)?;
    let tag = session_tag(req.session_tag.as_deref())?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_in_match", "not in a match");
    let (match_id, state) = mm
        .control
        .rejoin(req.user_id, &req.server)
        .await
        .map_err(unavailable)?
        .ok_or_else(not_found)?;
    let placement = serde_json::from_str::<MatchState>(&state)
        .ok()
        .and_then(|s| s.placement)
        .ok_or_else(not_found)?;
    let token = mm
        .issuer
        .mint_instance_for(placement.server_addr, req.user_id, match_id, tag)
        .map_err(|e| {
            tracing::error!(error = %e, "cannot mint a rejoin token");
            ApiError::internal()
        })?;
    Ok(Json(RejoinResponse {
        match_id,
        server_addr: placement.server_addr,
        connect_token: token::encode_token(&token),
        ws_url: placement.ws_url,
    }))
}

async fn open_farm(
    State(mm): State<Arc<Matchmaking>>,
    headers: HeaderMap,
    body: Result<Json<FarmRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<FarmResponse>, ApiError> {
    check_auth(&mm, &headers)?;
    let req = json_body(body)?;
    let tag = session_tag(req.session_tag.as_deref())?;
    let home = Home::Farm(req.user_id);
    let was = mm.home(home).await;
    let (host, endpoint) = mm
        .allocator
        .open_farm(req.user_id, was.clone())
        .await
        .map_err(|e| {
            tracing::warn!(user = req.user_id, error = %e, "no farm opened");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_farm",
                "no instance server could open the farm; try again",
            )
        })?;
    mm.moved_home(home, was, &host).await;
    let token = mm
        .issuer
        .mint_farm_for(endpoint.server_addr, req.user_id, tag)
        .map_err(|e| {
            tracing::error!(error = %e, "cannot mint a farm token");
            ApiError::internal()
        })?;
    Ok(Json(FarmResponse {
        server_addr: endpoint.server_addr,
        connect_token: token::encode_token(&token),
        ws_url: endpoint.ws_url,
    }))
}

async fn open_hub(
    State(mm): State<Arc<Matchmaking>>,
    headers: HeaderMap,
    body: Result<Json<HubPlaceRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<HubPlaceResponse>, ApiError> {
    check_auth(&mm, &headers)?;
    let req = json_body(body)?;
    let tag = session_tag(req.session_tag.as_deref())?;
    let was = mm.home(Home::Hub).await;
    let (host, (hub_id, endpoint)) = mm
        .allocator
        .open_hub(req.user_id, req.name, was.clone())
        .await
        .map_err(|e| {
            tracing::warn!(user = req.user_id, error = %e, "no place in the common area");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_hub",
                "the common area is unavailable; try again",
            )
        })?;
    mm.moved_home(Home::Hub, was, &host).await;
    let token = mm
        .issuer
        .mint_hub_for(endpoint.server_addr, req.user_id, hub_id, tag)
        .map_err(|e| {
            tracing::error!(error = %e, "cannot mint a hub token");
            ApiError::internal()
        })?;
    Ok(Json(HubPlaceResponse {
        hub_id,
        server_addr: endpoint.server_addr,
        connect_token: token::encode_token(&token),
        ws_url: endpoint.ws_url,
    }))
}

async fn status(
    State(mm): State<Arc<Matchmaking>>,
    headers: HeaderMap,
) -> Result<Json<Status>, ApiError> {
    check_auth(&mm, &headers)?;
    let (queued, matches_running) = mm.control.counts().await.map_err(unavailable)?;
    Ok(Json(Status {
        queued,
        matches_running,
        allocator: mm.allocator.status().await,
    }))
}
