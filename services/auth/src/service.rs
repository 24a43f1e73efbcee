//! The login service's HTTP API: login, refresh (rotating), logout, fresh connect tokens,
//! session introspection for game servers, and the JWKS document.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use contracts::auth::v1::{
    ADMIN_USERS, CONNECT_TOKEN, ConnectTokenResponse, CreateUserRequest, CreatedUser, INTROSPECT,
    IntrospectRequest, IntrospectResponse, JWKS, LOGIN, LOGOUT, LoginRequest, OPENAPI, REFRESH,
    REVOCATIONS, RefreshRequest, RevocationFeed, RevocationsQuery, RevokedTag, SessionTokens,
};
use contracts::{ApiError, ErrorBody, ErrorDetail};
use sha2::{Digest, Sha256};
use shared_sim::protocol::{TokenKind, TokenUserData};
use store::{NewRefresh, RefreshOutcome, Store, StoreError};
use token::ConnectTokenIssuer;
use token::jwt::{JwtError, JwtKeys};

use crate::backoff::{Backoff, LoginBackoff};
use crate::password::{PasswordError, Passwords};

#[derive(Clone)]
pub struct AuthState {
    pub store: Store,
    pub passwords: Passwords,
    pub jwt: Arc<RwLock<JwtKeys>>,
    pub connect: ConnectTokenIssuer,
    /// Connection servers a connect token may name.
    pub connection_servers: Vec<SocketAddr>,
    /// Their WebSocket URLs, for web clients.
    pub connection_ws_urls: Vec<String>,
    pub refresh_ttl: Duration,
    pub backoff: Arc<Backoff>,
    /// The edge's per-address token buckets when replicas share them (Redis); `None`: this
    /// process's own.
    pub shared_limits: Option<edge::Shared>,
    /// The admin credential; `None` turns the admin routes off.
    pub admin_token: Option<Arc<str>>,
    pub sessions: Arc<SessionCache>,
    /// Rotates the order of `connection_servers` in each connect token: netcode clients try the
    /// addresses in order, so consecutive logins start on different sockets and servers.
    pub next_server: Arc<std::sync::atomic::AtomicUsize>,
}

/// Session liveness answered from memory: a revocation is permanent, so a revoked answer is kept;
/// a live answer is re-read after `ttl`, which bounds how long a revocation made by another
/// replica takes to be seen here. Revocations made by this process are seen at once.
#[derive(Debug)]
pub struct SessionCache {
    ttl: Duration,
    entries: std::sync::Mutex<std::collections::HashMap<String, (bool, std::time::Instant)>>,
}

impl SessionCache {
    /// Entries beyond this are dropped wholesale (they are only a cache).
    const MAX_ENTRIES: usize = 1_000_000;

    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Default::default(),
        }
    }

    /// `Some(true)` revoked, `Some(false)` live, `None` unknown.
    pub async fn revoked(
        &self,
        store: &Store,
        session_id: &str,
    ) -> Result<Option<bool>, StoreError> {
        if let Ok(entries) = self.entries.lock()
            && let Some((revoked, at)) = entries.get(session_id)
            && (*revoked || at.elapsed() < self.ttl)
        {
            return Ok(Some(*revoked));
        }
        let answer = store.session_revoked(session_id).await?;
        if let Some(revoked) = answer {
            self.put(session_id, revoked);
        }
        Ok(answer)
    }

    pub fn mark_revoked(&self, session_id: &str) {
        self.put(session_id, true);
    }

    fn put(&self, session_id: &str, revoked: bool) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= Self::MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(session_id.to_string(), (revoked, std::time::Instant::now()));
        }
    }
}

/// "Unknown user or wrong password", the same for both.
fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "unknown user or wrong password",
    )
}

/// A database failure as an answer: the details go to the log.
fn store_error(e: StoreError) -> ApiError {
    {
        match e {
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::unavailable("unavailable", "try again shortly").retry_after(1)
            }
            StoreError::Conflict(what) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{what} already exists"),
            ),
            StoreError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", "not found"),
            other => {
                tracing::error!(error = %other, "database error");
                ApiError::internal()
            }
        }
    }
}

/// A failed password check as an answer: the details go to the log.
fn password_error(e: PasswordError) -> ApiError {
    {
        match e {
            PasswordError::Busy => {
                ApiError::unavailable("busy", "too many logins in progress").retry_after(1)
            }
            PasswordError::Length => invalid_credentials(),
            other => {
                tracing::error!(error = %other, "password check failed");
                ApiError::internal()
            }
        }
    }
}

/// What the internal listener (`--metrics`) serves besides `/metrics` and health, for servers
/// and operators inside the cluster (plain HTTP, no edge): the revocation feed, session
/// introspection, the admin API and their OpenAPI document. The public router answers 404 there.
pub fn internal_router(state: AuthState) -> Router {
    Router::new()
        .route(REVOCATIONS, get(revocations))
        .route(INTROSPECT, post(introspect))
        .route(ADMIN_USERS, post(admin_create_user))
        .route(OPENAPI, get(internal_openapi_json))
        .with_state(state)
}

/// What players reach (behind the edge): login, refresh, logout, connect tokens, the JWKS and
/// the public OpenAPI document.
pub fn router(state: AuthState) -> Router {
    Router::new()
        .route(LOGIN, post(login))
        .route(REFRESH, post(refresh))
        .route(LOGOUT, post(logout))
        .route(CONNECT_TOKEN, post(connect_token))
        .route(JWKS, get(jwks))
        .route(OPENAPI, get(openapi_json))
        .with_state(state)
}

/// Usernames longer than this cannot be created, so logins with them fail early.
pub const MAX_USERNAME_BYTES: usize = 64;

fn random_token(bytes: usize) -> Result<String, ApiError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| {
        tracing::error!(error = %e, "no OS randomness");
        ApiError::internal()
    })?;
    Ok(B64URL.encode(buf))
}

/// Refresh tokens are stored only as their SHA-256.
pub fn hash_refresh(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl AuthState {
    /// A service with the given parts and the defaults for everything else: login backoff, a
    /// 1 s session-liveness cache, no admin API.
    pub fn new(
        store: Store,
        passwords: Passwords,
        jwt: JwtKeys,
        connect: ConnectTokenIssuer,
        connection_servers: Vec<SocketAddr>,
        refresh_ttl: Duration,
    ) -> Self {
        Self {
            store,
            passwords,
            jwt: Arc::new(RwLock::new(jwt)),
            connect,
            connection_servers,
            connection_ws_urls: Vec::new(),
            refresh_ttl,
            backoff: Arc::new(Backoff::Local(LoginBackoff::default())),
            shared_limits: None,
            admin_token: None,
            sessions: Arc::new(SessionCache::new(Duration::from_secs(1))),
            next_server: Arc::default(),
        }
    }

    fn keys(&self) -> Result<std::sync::RwLockReadGuard<'_, JwtKeys>, ApiError> {
        self.jwt.read().map_err(|_| ApiError::internal())
    }

    fn tokens(
        &self,
        user_id: i64,
        session_id: &str,
        refresh_token: String,
    ) -> Result<SessionTokens, ApiError> {
        let keys = self.keys()?;
        let (access, exp) = keys.issue(user_id, session_id).map_err(internal)?;
        let expires_in = exp.saturating_sub(token::jwt::unix_now());
        drop(keys);
        let connect = self.connect_token(user_id, session_id)?;
        Ok(SessionTokens {
            token_type: "Bearer".into(),
            access_token: access,
            expires_in,
            refresh_token,
            connect_token: connect,
            connection_servers: self.connection_servers.clone(),
            connection_ws_urls: self.connection_ws_urls.clone(),
            user_id: user_id as u64,
            session_id: session_id.to_string(),
        })
    }

    fn connect_token(&self, user_id: i64, session_id: &str) -> Result<String, ApiError> {
        let data = TokenUserData {
            kind: TokenKind::Connection,
            user_id: user_id as u64,
            match_id: 0,
            session_id: token::revocation::session_tag(session_id),
        };
        let mut servers = self.connection_servers.clone();
        if !servers.is_empty() {
            let start = self
                .next_server
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let n = servers.len();
            servers.rotate_left(start % n);
        }
        let t = self.connect.mint(&servers, data).map_err(internal)?;
        Ok(token::encode_token(&t))
    }

    /// The caller's session from `Authorization: Bearer <access token>`, refused when revoked.
    async fn caller(&self, headers: &HeaderMap) -> Result<(i64, String), ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing_token",
                    "an access token is required",
                )
            })?;
        let claims = {
            let keys = self.keys()?;
            keys.verify(token)
        }
        .map_err(|e| match e {
            JwtError::Expired => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "token_expired",
                "the access token expired",
            ),
            _ => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the access token is not valid",
            ),
        })?;
        let user_id = claims.user_id().ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the access token is not valid",
            )
        })?;
        if self
            .sessions
            .revoked(&self.store, &claims.sid)
            .await
            .map_err(store_error)?
            != Some(false)
        {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "session_revoked",
                "this session has ended",
            ));
        }
        Ok((user_id, claims.sid))
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "token error");
    ApiError::internal()
}

fn json_body<T>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    Ok(body?.0)
}

#[utoipa::path(post, path = "/v1/auth/login", request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = SessionTokens),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "Unknown user or wrong password", body = ErrorBody),
        (status = 403, description = "Account disabled", body = ErrorBody),
        (status = 429, description = "Too many failures or requests; see Retry-After", body = ErrorBody),
        (status = 503, description = "Busy or database unavailable; see Retry-After", body = ErrorBody),
    ))]
async fn login(
    State(state): State<AuthState>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<SocketAddr>>>,
    body: Result<Json<LoginRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<SessionTokens>, ApiError> {
    let req = json_body(body)?;
    let ip =
        peer.map(|axum::Extension(axum::extract::ConnectInfo(addr))| edge::limit_key(addr.ip()));
    if req.username.len() > MAX_USERNAME_BYTES {
        // No such account can exist; answering here keeps attacker strings out of the backoff map.
        return Err(invalid_credentials());
    }
    let account = store::username_key(&req.username);
    // Admitted and counted in one step; an error on the way (the `?`s below) frees the place.
    let attempt = state.backoff.begin(&account, ip).await.map_err(|wait| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failures",
            "too many failed logins; wait before trying again",
        )
        .retry_after(wait)
    })?;
    let user = state
        .store
        .user_by_name(&req.username)
        .await
        .map_err(store_error)?;
    // Unknown users are checked against a dummy hash: same cost, same answer.
    let ok = state
        .passwords
        .verify(req.password, user.as_ref().map(|u| u.password_hash.clone()))
        .await
        .map_err(password_error)?;
    let user = match user {
        Some(u) if ok => u,
        _ => {
            attempt.failed().await;
            return Err(invalid_credentials());
        }
    };
    attempt.succeeded().await;
    if user.disabled {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "account_disabled",
            "this account is disabled",
        ));
    }
    let session_id = random_token(16)?;
    let refresh_token = random_token(32)?;
    let refresh = NewRefresh {
        token_hash: hash_refresh(&refresh_token),
        family_id: random_token(12)?,
        expires_at: store::now_ms() + state.refresh_ttl.as_millis() as i64,
    };
    let event = events::Event::UserLogin { user_id: user.id }.outbox("auth");
    state
        .store
        .open_session(user.id, &session_id, &refresh, &event)
        .await
        .map_err(store_error)?;
    tracing::info!(user_id = user.id, "login");
    Ok(Json(state.tokens(user.id, &session_id, refresh_token)?))
}

#[utoipa::path(post, path = "/v1/auth/refresh", request_body = RefreshRequest,
    responses(
        (status = 200, description = "Rotated", body = SessionTokens),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "Unknown, expired, reused (family revoked) or revoked token", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ))]
async fn refresh(
    State(state): State<AuthState>,
    body: Result<Json<RefreshRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<SessionTokens>, ApiError> {
    let req = json_body(body)?;
    let next = random_token(32)?;
    let expires = store::now_ms() + state.refresh_ttl.as_millis() as i64;
    let outcome = state
        .store
        .rotate_refresh(
            &hash_refresh(&req.refresh_token),
            &hash_refresh(&next),
            expires,
        )
        .await
        .map_err(store_error)?;
    match outcome {
        RefreshOutcome::Rotated {
            user_id,
            session_id,
        } => Ok(Json(state.tokens(user_id, &session_id, next)?)),
        RefreshOutcome::ReuseDetected { session_id } => {
            tracing::warn!("refresh token reuse: family revoked");
            state.sessions.mark_revoked(&session_id);
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "token_reused",
                "refresh token already used; session revoked",
            ))
        }
        RefreshOutcome::Expired => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "token_expired",
            "refresh token expired",
        )),
        RefreshOutcome::Revoked => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "session_revoked",
            "this session has ended",
        )),
        RefreshOutcome::Unknown => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "unknown refresh token",
        )),
    }
}

#[utoipa::path(post, path = "/v1/auth/logout", security(("bearer" = [])),
    responses(
        (status = 204, description = "Session revoked"),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
    ))]
async fn logout(
    State(state): State<AuthState>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (user_id, session_id) = state.caller(&headers).await?;
    let event = events::Event::UserLogout { user_id }.outbox("auth");
    state
        .store
        .logout(&session_id, &event)
        .await
        .map_err(store_error)?;
    state.sessions.mark_revoked(&session_id);
    tracing::info!(user_id, "logout");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/auth/connect-token", security(("bearer" = [])),
    responses(
        (status = 200, description = "A fresh netcode connect token", body = ConnectTokenResponse),
        (status = 401, description = "Missing, invalid or expired access token, or revoked session", body = ErrorBody),
    ))]
async fn connect_token(
    State(state): State<AuthState>,
    headers: HeaderMap,
) -> Result<Json<ConnectTokenResponse>, ApiError> {
    let (user_id, session_id) = state.caller(&headers).await?;
    Ok(Json(ConnectTokenResponse {
        connect_token: state.connect_token(user_id, &session_id)?,
        connection_servers: state.connection_servers.clone(),
        connection_ws_urls: state.connection_ws_urls.clone(),
    }))
}

/// Whether a session is still live: what game servers ask about the session in a connect token.
#[utoipa::path(post, path = "/v1/auth/introspect", request_body = IntrospectRequest,
    responses(
        (status = 200, description = "Whether the session is live", body = IntrospectResponse),
        (status = 400, description = "Malformed request", body = ErrorBody),
    ))]
async fn introspect(
    State(state): State<AuthState>,
    body: Result<Json<IntrospectRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<IntrospectResponse>, ApiError> {
    let req = json_body(body)?;
    let active = state
        .sessions
        .revoked(&state.store, &req.session_id)
        .await
        .map_err(store_error)?
        == Some(false);
    Ok(Json(IntrospectResponse { active }))
}

/// Most revocations in one page of the feed.
pub const REVOCATIONS_PAGE: i64 = 10_000;

/// The revocation feed game servers poll: tags of sessions revoked since a time. A tag is the
/// first 16 bytes of the SHA-256 of the session id (what connect tokens carry), so the feed
/// names no session and no user.
#[utoipa::path(get, path = "/v1/auth/revocations", params(RevocationsQuery),
    responses(
        (status = 200, description = "Revoked session tags, oldest first, and where to ask next", body = RevocationFeed),
        (status = 400, description = "Missing or malformed `since`", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ))]
async fn revocations(
    State(state): State<AuthState>,
    query: Result<axum::extract::Query<RevocationsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RevocationFeed>, ApiError> {
    let axum::extract::Query(q) = query?;
    let rows = state
        .store
        .revoked_since(q.since, q.skip.max(0), REVOCATIONS_PAGE)
        .await
        .map_err(store_error)?;
    let next_since = rows.last().map(|r| r.revoked_at).unwrap_or(q.since);
    // Rows of the last millisecond in this page, plus those skipped before if it is `since`.
    let same = rows.iter().filter(|r| r.revoked_at == next_since).count() as i64;
    let next_skip = if next_since == q.since {
        q.skip.max(0) + same
    } else {
        same
    };
    Ok(Json(RevocationFeed {
        revoked: rows
            .iter()
            .map(|r| RevokedTag {
                tag: token::revocation::tag_hex(&token::revocation::session_tag(&r.session_id)),
                revoked_at: r.revoked_at,
            })
            .collect(),
        next_since,
        next_skip,
    }))
}

#[utoipa::path(get, path = "/.well-known/jwks.json",
    responses((status = 200, description = "JWKS (RFC 7517) of the Ed25519 verification keys", body = Object)))]
async fn jwks(State(state): State<AuthState>) -> Result<Json<serde_json::Value>, ApiError> {
    let keys = state.keys()?;
    Ok(Json(keys.jwks()))
}

/// Creates an account (registration is external: this is for the studio's own tools).
#[utoipa::path(post, path = "/v1/admin/users", request_body = CreateUserRequest, security(("admin" = [])),
    responses(
        (status = 201, description = "Created", body = CreatedUser),
        (status = 400, description = "Bad username or weak password", body = ErrorBody),
        (status = 401, description = "No or wrong admin credential", body = ErrorBody),
        (status = 404, description = "Admin API disabled", body = ErrorBody),
        (status = 409, description = "Username taken", body = ErrorBody),
    ))]
async fn admin_create_user(
    State(state): State<AuthState>,
    headers: HeaderMap,
    body: Result<Json<CreateUserRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreatedUser>), ApiError> {
    let Some(expected) = state.admin_token.as_deref() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "admin API is disabled",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !token::bearer_matches(given, expected) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an admin credential is required",
        ));
    }
    let req = json_body(body)?;
    if req.username.trim().is_empty() || req.username.len() > MAX_USERNAME_BYTES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_username",
            "usernames have 1 to 64 characters",
        ));
    }
    let hash = state
        .passwords
        .hash(req.password)
        .await
        .map_err(|e| match e {
            PasswordError::Length => {
                ApiError::new(StatusCode::BAD_REQUEST, "weak_password", e.to_string())
            }
            other => password_error(other),
        })?;
    let user = state
        .store
        .create_user(&req.username, &hash)
        .await
        .map_err(store_error)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedUser {
            user_id: user.id,
            username: user.username,
        }),
    ))
}

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer =
            || SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        components.add_security_scheme("bearer", bearer());
        components.add_security_scheme("admin", bearer());
    }
}

/// The public OpenAPI 3 document, generated from the handlers' annotations and the types they
/// use.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "croft auth", description = "Login, sessions and tokens"),
    paths(login, refresh, logout, connect_token, jwks),
    components(schemas(LoginRequest, RefreshRequest, SessionTokens, ConnectTokenResponse, ErrorBody, ErrorDetail)),
    modifiers(&SecurityAddon)
)]
pub struct ApiDoc;

/// The internal listener's OpenAPI 3 document.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "croft auth (internal)", description = "Revocations, introspection and the admin API"),
    paths(introspect, revocations, admin_create_user),
    components(schemas(IntrospectRequest, IntrospectResponse, RevocationFeed, RevokedTag, CreateUserRequest, CreatedUser, ErrorBody, ErrorDetail)),
    modifiers(&SecurityAddon)
)]
pub struct InternalApiDoc;

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(<ApiDoc as utoipa::OpenApi>::openapi())
}

async fn internal_openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(<InternalApiDoc as utoipa::OpenApi>::openapi())
}
