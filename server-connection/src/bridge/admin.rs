//! The admin API operators call: `POST /v1/notifications` (a broadcast) and `GET /v1/status`,
//! behind the service credential.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use contracts::ApiError;
use contracts::connection::v1::{
    NOTIFICATION_MAX_CHARS, NOTIFICATIONS, Notification, STATUS, Status,
};

use super::{Bridge, Reply};

#[derive(Clone)]
struct AdminState {
    bridge: Bridge,
    status: Arc<std::sync::Mutex<Status>>,
}

/// `POST /v1/notifications` (broadcast) and `GET /v1/status`, behind the service credential.
pub fn admin_router(bridge: Bridge, status: Arc<std::sync::Mutex<Status>>) -> Router {
    Router::new()
        .route(NOTIFICATIONS, post(notify))
        .route(STATUS, get(status_handler))
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024))
        .with_state(AdminState { bridge, status })
}

fn authorized(state: &AdminState, headers: &HeaderMap) -> bool {
    let given = headers.get("authorization").and_then(|v| v.to_str().ok());
    token::bearer_matches(given, &state.bridge.service_token)
}

async fn notify(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Result<Json<Notification>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    if !authorized(&state, &headers) {
        return Err(ApiError::unauthorized());
    }
    let Ok(Json(req)) = body else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "expected {\"text\": \"...\"}",
        ));
    };
    let n = req.text.chars().count();
    if n == 0 || n > NOTIFICATION_MAX_CHARS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_text",
            "a notification has 1 to 1024 characters",
        ));
    }
    state.bridge.reply(Reply::Broadcast(req.text));
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "status": "queued" })),
    ))
}

async fn status_handler(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<Json<Status>, ApiError> {
    if !authorized(&state, &headers) {
        return Err(ApiError::unauthorized());
    }
    Ok(Json(
        state.status.lock().map(|s| s.clone()).unwrap_or_default(),
    ))
}
