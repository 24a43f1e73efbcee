//! The control interface matchmaking calls: create a match, read capacity, start draining.
//! HTTP on its own port, guarded by a service credential.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use contracts::ApiError;
use contracts::instance::v1::{
    CAPACITY, Capacity, CreateMatchRequest, CreateMatchResponse, DRAIN, EndedMatch, FARMS, HUB,
    HubRequest, HubResponse, MATCHES, MatchesQuery, MatchesReport, OpenFarmRequest,
    OpenFarmResponse,
};
use shared_sim::GameData;
use shared_sim::plugin::{MatchId, MatchSpec, UserId};
use tokio::sync::mpsc::UnboundedSender;

/// Most matches one netcode socket seats: 1024 clients at most, two per match, less headroom
/// for players of just-ended matches whose connections are still closing.
pub const MATCHES_PER_SHARD: usize = 448;

/// What the async side tells the tick.
#[derive(Debug)]
pub enum ControlCommand {
    Create {
        spec: MatchSpec,
        shard: usize,
    },
    /// Host a farm loaded from the store.
    OpenFarm(Box<crate::farm::LoadedFarm>),
    /// The farm's lease went to another instance: stop hosting it.
    LoseFarm(UserId),
    /// A place in hub shard `hub_id` is kept for `user`.
    KeepHub {
        hub_id: u32,
        user: UserId,
        name: String,
    },
    Drain,
    /// The auth service revoked these session tags: their players are dropped.
    Revoke(Vec<[u8; 16]>),
}

/// State shared by the control API and the Bevy app.
pub struct ControlShared {
    /// The card data new matches and farms start with (hot reload swaps it; what runs keeps
    /// the `Arc` it started with).
    pub data: shared_sim::data::DataHandle,
    /// Live matches: the shard each is seated on and its players.
    pub live: Mutex<HashMap<MatchId, (usize, [UserId; 2])>>,
    pub shard_addrs: Vec<SocketAddr>,
    pub max_matches: usize,
    pub draining: AtomicBool,
    pub clients_connected: AtomicUsize,
    /// Cleared when draining starts, so orchestrators stop routing here.
    pub readiness: telemetry::Readiness,
    /// Recently ended matches, numbered, for the allocator to collect (`GET /v1/matches`).
    ended: Mutex<(u64, std::collections::VecDeque<EndedMatch>)>,
    token: String,
    /// Farms open or opening here, with the epoch of their lease once it is taken.
    farms: Mutex<HashMap<UserId, Option<i64>>>,
    pub max_farms: usize,
    /// This process's name on farm leases (unique per run, so a restart is a new holder).
    pub holder: String,
    /// How long a farm lease lasts unless renewed; renewed every third of it.
    pub farm_lease: std::time::Duration,
    /// Where farms are loaded from (`None`: no farms on this server).
    pub store: Option<store::Store>,
    /// Places kept in the common-area shards.
    pub hub_book: Mutex<crate::hub::HubBook>,
    /// Players per hub shard.
    pub hub_capacity: usize,
    /// The WebSocket endpoint, given to clients with every place (`--ws`).
    pub ws_url: Option<String>,
}

/// How many ended matches the control API remembers for collection.
pub const ENDED_KEPT: usize = 10_000;

impl ControlShared {
    pub fn new(
        data: Arc<GameData>,
        shard_addrs: Vec<SocketAddr>,
        max_matches: usize,
        token: String,
        readiness: telemetry::Readiness,
    ) -> Self {
        Self {
            data: shared_sim::data::DataHandle::from_arc(data),
            live: Mutex::new(HashMap::new()),
            shard_addrs,
            max_matches,
            draining: AtomicBool::new(false),
            clients_connected: AtomicUsize::new(0),
            readiness,
            ended: Mutex::new((0, std::collections::VecDeque::new())),
            token,
            farms: Mutex::new(Default::default()),
            max_farms: 0,
            holder: format!("instance-{}-{:016x}", std::process::id(), rand_u64()),
            farm_lease: std::time::Duration::from_secs(15),
            store: None,
            hub_book: Mutex::new(Default::default()),
            hub_capacity: shared_sim::hub::DEFAULT_CAPACITY,
            ws_url: None,
        }
    }

    /// Hosts farms from `store`, at most `max` at once.
    pub fn with_farms(mut self, store: store::Store, max: usize) -> Self {
        self.store = Some(store);
        self.max_farms = max;
        self
    }

    pub fn farm_count(&self) -> usize {
        self.farms.lock().map(|f| f.len()).unwrap_or(0)
    }

    /// The farms whose leases this process holds: (user, epoch).
    pub fn farm_leases(&self) -> Vec<(UserId, i64)> {
        self.farms
            .lock()
            .map(|f| f.iter().filter_map(|(u, e)| Some((*u, (*e)?))).collect())
            .unwrap_or_default()
    }

    /// The tick closed `user`'s farm (or lost it).
    pub fn close_farm(&self, user: UserId) {
        if let Ok(mut f) = self.farms.lock() {
            f.remove(&user);
        }
    }

    /// Remembers an ended match for the allocator (the oldest are forgotten past [`ENDED_KEPT`]).
    pub fn push_ended(&self, mut ended: EndedMatch) {
        if let Ok(mut guard) = self.ended.lock() {
            let (seq, list) = &mut *guard;
            *seq += 1;
            ended.seq = *seq;
            if list.len() >= ENDED_KEPT {
                list.pop_front();
            }
            list.push_back(ended);
        }
    }

    pub fn report(&self, after: u64) -> MatchesReport {
        let mut live: Vec<MatchId> = self
            .live
            .lock()
            .map(|l| l.keys().copied().collect())
            .unwrap_or_default();
        live.sort_unstable();
        let ended = self
            .ended
            .lock()
            .map(|g| g.1.iter().filter(|e| e.seq > after).cloned().collect())
            .unwrap_or_default();
        MatchesReport {
            live,
            ended,
            draining: self.draining.load(Ordering::SeqCst),
            boot: self.holder.clone(),
        }
    }

    pub fn start_draining(&self) {
        self.readiness.set(false);
        // Under the slot lock, so no create can pass its draining check and reserve after.
        let _live = self.live.lock();
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn release(&self, id: MatchId) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(&id);
        }
    }

    pub fn running(&self) -> usize {
        self.live.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// Matches this server can hold at once.
    pub fn capacity(&self) -> usize {
        self.max_matches
            .min(self.shard_addrs.len() * MATCHES_PER_SHARD)
    }

    /// Match slots a new match could take now: none while draining.
    pub fn free(&self, running: usize) -> usize {
        if self.draining.load(Ordering::SeqCst) {
            0
        } else {
            self.capacity().saturating_sub(running)
        }
    }

    pub fn data(&self) -> Arc<GameData> {
        self.data.get()
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let value = headers.get("authorization").and_then(|v| v.to_str().ok());
        token::bearer_matches(value, &self.token)
    }
}

#[derive(Clone)]
struct ControlState {
    shared: Arc<ControlShared>,
    commands: UnboundedSender<ControlCommand>,
}

/// The control API's routes: HTTP on its own port, guarded by a service credential; `/metrics`,
/// `/healthz` and `/readyz` sit beside it without the credential.
///
/// Requests are checked and the slot reserved right here on the async side, so a caller gets its
/// answer without waiting for a game tick; the tick then spawns the match from the channel.
pub fn router(shared: Arc<ControlShared>, commands: UnboundedSender<ControlCommand>) -> Router {
    Router::new()
        .route(MATCHES, post(create_match).get(list_matches))
        .route(CAPACITY, get(capacity))
        .route(DRAIN, post(drain))
        .route(FARMS, post(open_farm))
        .route(HUB, post(keep_hub_place))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(ControlState { shared, commands })
}

fn check_auth(state: &ControlState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.shared.authorized(headers) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

async fn capacity(
    State(state): State<ControlState>,
    headers: HeaderMap,
) -> Result<Json<Capacity>, ApiError> {
    check_auth(&state, &headers)?;
    let s = &state.shared;
    let running = s.running();
    let draining = s.draining.load(Ordering::SeqCst);
    Ok(Json(Capacity {
        max_matches: s.capacity(),
        running,
        free: s.free(running),
        draining,
        clients_connected: s.clients_connected.load(Ordering::Relaxed),
    }))
}

async fn list_matches(
    State(state): State<ControlState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<MatchesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<MatchesReport>, ApiError> {
    check_auth(&state, &headers)?;
    let axum::extract::Query(q) = query?;
    Ok(Json(state.shared.report(q.after)))
}

async fn drain(
    State(state): State<ControlState>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    check_auth(&state, &headers)?;
    state.shared.start_draining();
    let _ = state.commands.send(ControlCommand::Drain);
    Ok(StatusCode::ACCEPTED)
}

async fn create_match(
    State(state): State<ControlState>,
    headers: HeaderMap,
    body: Result<Json<CreateMatchRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreateMatchResponse>), ApiError> {
    check_auth(&state, &headers)?;
    let Json(req) = body?;
    let shared = &state.shared;
    if shared.draining.load(Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this instance is shutting down",
        ));
    }
    let data = shared.data();
    let decks = match (req.decks, req.starter_decks) {
        (Some(decks), None) => decks,
        (None, Some(names)) => {
            let resolve = |name: &String| {
                data.starter_deck(name)
                    .map(|d| d.cards.clone())
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "unknown_deck",
                            format!("no starter deck `{name}`"),
                        )
                    })
            };
            [resolve(&names[0])?, resolve(&names[1])?]
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_decks",
                "give exactly one of `decks` and `starter_decks`",
            ));
        }
    };
    let seed = match req.seed {
        Some(seed) => seed,
        None => {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).map_err(|e| {
                tracing::error!(error = %e, "no OS randomness for a match seed");
                ApiError::internal()
            })?;
            u64::from_le_bytes(b)
        }
    };
    let spec = MatchSpec {
        match_id: req.match_id,
        players: req.players,
        decks,
        seed,
    };
    // Same checks the tick will run, so that a 201 means the match will exist.
    shared_sim::plugin::CardMatch::new(data, &spec, 0, 1).map_err(|e| {
        let code = match e {
            shared_sim::plugin::CreateMatchError::Deck { .. } => "bad_deck",
            _ => "bad_players",
        };
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
    })?;
    let shard = {
        let mut live = shared.live.lock().map_err(|_| ApiError::internal())?;
        if shared.draining.load(Ordering::SeqCst) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "draining",
                "this instance is shutting down",
            ));
        }
        if live.contains_key(&spec.match_id) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "exists",
                format!("match {} exists", spec.match_id),
            ));
        }
        if live.len() >= shared.capacity() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "full",
                "no free match slot",
            ));
        }
        if let Some(busy) = spec
            .players
            .iter()
            .find(|p| live.values().any(|(_, players)| players.contains(p)))
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "player_busy",
                format!("user {busy} is already in a match here"),
            ));
        }
        let mut per_shard = vec![0usize; shared.shard_addrs.len()];
        for (s, _) in live.values() {
            per_shard[*s] += 1;
        }
        let Some((shard, _)) = per_shard
            .iter()
            .enumerate()
            .filter(|(_, n)| **n < MATCHES_PER_SHARD)
            .min_by_key(|(_, n)| **n)
        else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "full",
                "no free match slot",
            ));
        };
        live.insert(spec.match_id, (shard, spec.players));
        shard
    };
    let match_id = spec.match_id;
    if state
        .commands
        .send(ControlCommand::Create { spec, shard })
        .is_err()
    {
        shared.release(match_id);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "the server is stopping",
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(CreateMatchResponse {
            match_id,
            server_addr: shared.shard_addrs[shard],
            ws_url: shared.ws_url.clone(),
        }),
    ))
}

async fn open_farm(
    State(state): State<ControlState>,
    headers: HeaderMap,
    body: Result<Json<OpenFarmRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<OpenFarmResponse>), ApiError> {
    check_auth(&state, &headers)?;
    let Json(req) = body?;
    let shared = &state.shared;
    let unavailable = |code: &'static str, msg: &str| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, msg.to_string())
    };
    let Some(store) = shared.store.clone() else {
        return Err(unavailable(
            "no_farms",
            "this instance has no database and hosts no farms",
        ));
    };
    if req.user_id == 0 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_user",
            "user 0 does not exist",
        ));
    }
    let server_addr = shared.shard_addrs[(req.user_id as usize) % shared.shard_addrs.len()];
    let answer = Json(OpenFarmResponse {
        user_id: req.user_id,
        server_addr,
        ws_url: shared.ws_url.clone(),
    });
    {
        let mut farms = shared
            .farms
            .lock()
            .map_err(|_| unavailable("internal", "internal error"))?;
        if shared.draining.load(Ordering::SeqCst) {
            return Err(unavailable("draining", "this instance is shutting down"));
        }
        if farms.contains_key(&req.user_id) {
            return Ok((StatusCode::OK, answer));
        }
        if farms.len() >= shared.max_farms {
            return Err(unavailable("full", "no free farm slot"));
        }
        farms.insert(req.user_id, None);
    }
    // One host at a time: the lease, or the farm stays where it is.
    let ttl = shared.farm_lease.as_millis() as i64;
    let epoch = match store
        .acquire_farm_lease(req.user_id as i64, &shared.holder, store::now_ms(), ttl)
        .await
    {
        Ok(Some(epoch)) => epoch,
        Ok(None) => {
            shared.close_farm(req.user_id);
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "farm_elsewhere",
                "the farm is open on another instance",
            ));
        }
        Err(e) => {
            shared.close_farm(req.user_id);
            tracing::warn!(user = req.user_id, error = %e, "farm lease not taken");
            return Err(unavailable("unavailable", "the farm could not be loaded"));
        }
    };
    if let Ok(mut farms) = shared.farms.lock()
        && let Some(slot) = farms.get_mut(&req.user_id)
    {
        *slot = Some(epoch);
    }
    let loaded = match crate::farm::load(&store, shared.data(), req.user_id, epoch).await {
        Ok(l) => l,
        Err(e) => {
            shared.close_farm(req.user_id);
            let _ = store
                .release_farm_lease(req.user_id as i64, &shared.holder, epoch)
                .await;
            tracing::warn!(user = req.user_id, error = %e, "farm not loaded");
            return Err(unavailable("unavailable", "the farm could not be loaded"));
        }
    };
    if state
        .commands
        .send(ControlCommand::OpenFarm(Box::new(loaded)))
        .is_err()
    {
        shared.close_farm(req.user_id);
        let _ = store
            .release_farm_lease(req.user_id as i64, &shared.holder, epoch)
            .await;
        return Err(unavailable("stopping", "the server is stopping"));
    }
    Ok((StatusCode::CREATED, answer))
}

async fn keep_hub_place(
    State(state): State<ControlState>,
    headers: HeaderMap,
    body: Result<Json<HubRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<HubResponse>, ApiError> {
    check_auth(&state, &headers)?;
    let Json(req) = body?;
    let shared = &state.shared;
    let name = req.name.trim().to_string();
    if req.user_id == 0 || name.is_empty() || name.chars().count() > 64 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_player",
            "a user id above 0 and a name of 1 to 64 characters",
        ));
    }
    if shared.draining.load(Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this instance is shutting down",
        ));
    }
    let hub_id = shared
        .hub_book
        .lock()
        .map_err(|_| ApiError::internal())?
        .keep(req.user_id, shared.hub_capacity, std::time::Instant::now());
    if state
        .commands
        .send(ControlCommand::KeepHub {
            hub_id,
            user: req.user_id,
            name,
        })
        .is_err()
    {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "the server is stopping",
        ));
    }
    Ok(Json(HubResponse {
        hub_id,
        server_addr: shared.shard_addrs[(hub_id as usize) % shared.shard_addrs.len()],
        ws_url: shared.ws_url.clone(),
    }))
}

/// A random number for names that must differ between runs.
fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

/// Renews this process's farm leases every third of their length until the runtime stops;
/// a farm whose lease was lost is taken off the tick ([`ControlCommand::LoseFarm`]).
pub async fn renew_farm_leases(
    shared: Arc<ControlShared>,
    commands: UnboundedSender<ControlCommand>,
) {
    let Some(store) = shared.store.clone() else {
        return;
    };
    let ttl = shared.farm_lease;
    let mut every = tokio::time::interval(ttl / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        for (user, epoch) in shared.farm_leases() {
            let renewed = store
                .renew_farm_lease(
                    user as i64,
                    &shared.holder,
                    epoch,
                    store::now_ms(),
                    ttl.as_millis() as i64,
                )
                .await;
            match renewed {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(user, epoch, "farm lease lost");
                    let _ = commands.send(ControlCommand::LoseFarm(user));
                }
                // The database is down: keep the farm; a new holder can only take it after
                // the lease expires, and then the fenced writes tell us.
                Err(e) => tracing::warn!(user, error = %e, "farm lease not renewed"),
            }
        }
    }
}

/// Polls the auth service's feed of revoked sessions into `commands`, until the app is gone:
/// players whose session was revoked (a logout, a ban) are dropped from their match (forfeit),
/// farm or place in the common area.
pub async fn follow_revocations(
    feed: contracts::auth::AuthFeedClient,
    commands: UnboundedSender<ControlCommand>,
    every: std::time::Duration,
) {
    token::revocation::follow(
        &feed,
        every,
        |fresh| commands.send(ControlCommand::Revoke(fresh)).is_ok(),
        |e| {
            metrics::counter!("croft_instance_revocation_poll_errors_total").increment(1);
            tracing::debug!(error = %e, "revocation feed unavailable");
        },
    )
    .await
}
