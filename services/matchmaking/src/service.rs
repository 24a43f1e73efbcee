//! The matchmaking service: the HTTP API connection servers call, the loop that forms and places
//! matches, and the loop that collects ended and lost matches from the allocator.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
use store::Store;
use token::ConnectTokenIssuer;
use tokio::sync::Notify;

use crate::allocator::{AllocEvent, Allocator, Placement};
use crate::queue::{Enqueued, MatchId, Queue, QueueError, UserId};

/// Updates for one connection server, kept until it acknowledges them (`after`).
#[derive(Default)]
struct Mailbox {
    next_seq: u64,
    items: VecDeque<Update>,
}

/// A running match: where it is, and each player's connection server.
type Placed = (Placement, Vec<(UserId, String)>);

/// Most unacknowledged updates kept per connection server (one that went away stops reading).
const MAILBOX_LIMIT: usize = 100_000;

pub struct Matchmaking {
    pub queue: Mutex<Queue>,
    pub store: Store,
    pub allocator: Arc<dyn Allocator>,
    pub issuer: ConnectTokenIssuer,
    /// The card data: a player's chosen deck is checked against it, and a player without
    /// one plays their starter deck.
    pub data: shared_sim::data::DataHandle,
    service_token: String,
    mailboxes: Mutex<HashMap<String, Mailbox>>,
    notify: Notify,
    /// Where each running match is (for reconnect tokens), and the connection server of each
    /// of its players (for `MatchEnded`).
    placements: Mutex<HashMap<MatchId, Placed>>,
}

impl Matchmaking {
    pub fn new(
        queue: Queue,
        store: Store,
        allocator: Arc<dyn Allocator>,
        issuer: ConnectTokenIssuer,
        data: shared_sim::data::DataHandle,
        service_token: String,
    ) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(queue),
            store,
            allocator,
            issuer,
            data,
            service_token,
            mailboxes: Mutex::new(HashMap::new()),
            notify: Notify::new(),
            placements: Mutex::new(HashMap::new()),
        })
    }

    fn push(&self, server: &str, user_id: UserId, kind: UpdateKind) {
        if let Ok(mut boxes) = self.mailboxes.lock() {
            let mb = boxes.entry(server.to_string()).or_default();
            mb.next_seq += 1;
            if mb.items.len() >= MAILBOX_LIMIT {
                mb.items.pop_front();
                metrics::counter!("croft_matchmaking_updates_dropped_total").increment(1);
            }
            mb.items.push_back(Update {
                seq: mb.next_seq,
                user_id,
                kind,
            });
        }
        self.notify.notify_waiters();
    }

    fn updates_after(&self, server: &str, after: u64) -> (Vec<Update>, u64) {
        let Ok(mut boxes) = self.mailboxes.lock() else {
            return (Vec::new(), after);
        };
        let mb = boxes.entry(server.to_string()).or_default();
        while mb.items.front().is_some_and(|u| u.seq <= after) {
            mb.items.pop_front();
        }
        (mb.items.iter().cloned().collect(), mb.next_seq)
    }

    fn placements(&self) -> std::sync::MutexGuard<'_, HashMap<MatchId, Placed>> {
        self.placements.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One pass: expire old tickets, form matches, place them.
    pub async fn tick(self: &Arc<Self>) {
        let now = Instant::now();
        let (expired, groups, queued, oldest) = {
            let mut q = self.lock_queue();
            let expired = q.expire(now);
            let groups = q.form(now);
            (expired, groups, q.queued(), q.oldest_wait(now))
        };
        metrics::gauge!("croft_matchmaking_queued").set(queued as f64);
        metrics::gauge!("croft_matchmaking_oldest_wait_seconds").set(oldest.as_secs_f64());
        for t in expired {
            metrics::counter!("croft_matchmaking_tickets_timed_out_total").increment(1);
            self.push(
                &t.server,
                t.user_id,
                UpdateKind::QueueLeft {
                    reason: "timed_out".into(),
                },
            );
        }
        for group in groups {
            let this = self.clone();
            let waits: Vec<f64> = group
                .iter()
                .map(|t| now.saturating_duration_since(t.enqueued_at).as_secs_f64())
                .collect();
            for w in waits {
                metrics::histogram!("croft_matchmaking_queue_wait_seconds").record(w);
            }
            tokio::spawn(async move { this.start_match(group).await });
        }
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

    async fn start_match(&self, group: Vec<crate::queue::Ticket>) {
        let users: Vec<UserId> = group.iter().map(|t| t.user_id).collect();
        let placed = match (random_match_id(), users.as_slice()) {
            (Ok(match_id), [a, b]) => {
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
                    .map(|p| (match_id, p))
                    .map_err(|e| e.to_string())
            }
            (Err(e), _) => Err(e),
            _ => Err(format!(
                "the card game seats two players, not {}",
                users.len()
            )),
        };
        let (match_id, placement) = match placed {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, ?users, "cannot place a match");
                self.lock_queue().release(&users);
                for t in &group {
                    self.push(
                        &t.server,
                        t.user_id,
                        UpdateKind::QueueLeft {
                            reason: "no_capacity".into(),
                        },
                    );
                }
                return;
            }
        };
        self.lock_queue().assign(match_id, &users);
        let routes = group
            .iter()
            .map(|t| (t.user_id, t.server.clone()))
            .collect();
        self.placements()
            .insert(match_id, (placement.clone(), routes));
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
        for t in &group {
            match self
                .issuer
                .mint_instance(placement.server_addr, t.user_id, match_id)
            {
                Ok(token) => self.push(
                    &t.server,
                    t.user_id,
                    UpdateKind::MatchFound {
                        match_id,
                        server_addr: placement.server_addr,
                        connect_token: token::encode_token(&token),
                        ws_url: placement.ws_url.clone(),
                    },
                ),
                Err(e) => tracing::error!(error = %e, "cannot mint an instance token"),
            }
        }
    }

    /// Collects ended and lost matches: records them and frees their players.
    pub async fn collect(&self) {
        for event in self.allocator.poll().await {
            let (match_id, players, aborted, winner, reason, turns, record) = match &event {
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
            let data_version = match &event {
                AllocEvent::Ended(e) => e.data_version.to_string(),
                _ => String::new(),
            };
            match self
                .store
                .record_match(
                    match_id as i64,
                    [players[0] as i64, players[1] as i64],
                    winner.map(|w| w as i64),
                    &reason,
                    turns as i32,
                    &data_version,
                    &record,
                )
                .await
            {
                Ok(()) | Err(store::StoreError::Conflict(_)) => {}
                Err(e) => {
                    metrics::counter!("croft_matchmaking_record_errors_total").increment(1);
                    tracing::error!(match_id, error = %e, "cannot record a match result");
                }
            }
            self.lock_queue().match_ended(match_id);
            let routes = self
                .placements()
                .remove(&match_id)
                .map(|(_, r)| r)
                .unwrap_or_default();
            let reason_label = if aborted { "aborted" } else { "ended" };
            metrics::counter!("croft_matchmaking_matches_closed_total", "how" => reason_label)
                .increment(1);
            tracing::info!(match_id, aborted, reason, "match closed");
            for (p, server) in routes {
                self.push(&server, p, UpdateKind::MatchEnded { match_id, aborted });
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
    let result = mm
        .lock_queue()
        .enqueue(req.user_id, rating, &req.server, Instant::now());
    match result {
        Ok(Enqueued::New) => {
            metrics::counter!("croft_matchmaking_tickets_total").increment(1);
            Ok(Json(TicketResponse {
                status: "queued".into(),
            }))
        }
        Ok(Enqueued::Existing) => Ok(Json(TicketResponse {
            status: "already_queued".into(),
        })),
        Err(QueueError::InMatch(m)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "in_match",
            format!("already in match {m}"),
        )),
        Err(QueueError::Forming) => Err(ApiError::new(
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
    let mut q = mm.lock_queue();
    if q.cancel(user_id).is_some() {
        return Ok(StatusCode::NO_CONTENT);
    }
    if q.is_forming(user_id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "forming",
            "too late to cancel: a match is being set up",
        ));
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "not_queued",
        "no ticket for this user",
    ))
}

async fn updates(
    State(mm): State<Arc<Matchmaking>>,
    headers: HeaderMap,
    query: Result<Query<UpdatesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UpdatesResponse>, ApiError> {
    check_auth(&mm, &headers)?;
    let Query(q) = query?;
    let deadline = Instant::now() + Duration::from_millis(q.wait_ms.min(30_000));
    loop {
        let notified = mm.notify.notified();
        let (updates, last_seq) = mm.updates_after(&q.server, q.after);
        if !updates.is_empty() || Instant::now() >= deadline {
            return Ok(Json(UpdatesResponse { updates, last_seq }));
        }
        let _ = tokio::time::timeout_at(deadline.into(), notified).await;
    }
}

async fn rejoin(
    State(mm): State<Arc<Matchmaking>>,
    headers: HeaderMap,
    body: Result<Json<RejoinRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<RejoinResponse>, ApiError> {
    check_auth(&mm, &headers)?;
    let req = json_body(body)?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_in_match", "not in a match");
    let match_id = mm
        .lock_queue()
        .match_of(req.user_id)
        .ok_or_else(not_found)?;
    let placement = {
        let mut placements = mm.placements();
        let (placement, routes) = placements.get_mut(&match_id).ok_or_else(not_found)?;
        for (user, server) in routes.iter_mut() {
            if *user == req.user_id {
                *server = req.server.clone();
            }
        }
        placement.clone()
    };
    let token = mm
        .issuer
        .mint_instance(placement.server_addr, req.user_id, match_id)
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
    let endpoint = mm.allocator.open_farm(req.user_id).await.map_err(|e| {
        tracing::warn!(user = req.user_id, error = %e, "no farm opened");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_farm",
            "no instance server could open the farm; try again",
        )
    })?;
    let token = mm
        .issuer
        .mint_farm(endpoint.server_addr, req.user_id)
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
    let (hub_id, endpoint) = mm
        .allocator
        .open_hub(req.user_id, req.name)
        .await
        .map_err(|e| {
            tracing::warn!(user = req.user_id, error = %e, "no place in the common area");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_hub",
                "the common area is unavailable; try again",
            )
        })?;
    let token = mm
        .issuer
        .mint_hub(endpoint.server_addr, req.user_id, hub_id)
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
    let (queued, matches_running) = {
        let q = mm.lock_queue();
        (q.queued(), q.matches_running())
    };
    Ok(Json(Status {
        queued,
        matches_running,
        allocator: mm.allocator.status().await,
    }))
}
