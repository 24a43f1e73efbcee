//! The one JSON error every croft HTTP API answers with, `{"error": {"code", "message"}}`, and
//! (feature `server`) the axum answer that writes it.

use serde::{Deserialize, Serialize};

/// Every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_credentials`, `unauthorized`, `bad_request`, `busy`,
    /// `rate_limited`, `draining`, `full`, ...
    pub code: String,
    /// For people; never contains internals.
    pub message: String,
}

#[cfg(feature = "server")]
pub use server::ApiError;

#[cfg(feature = "server")]
mod server {
    use axum::Json;
    use axum::extract::rejection::{JsonRejection, QueryRejection};
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::{IntoResponse, Response};

    use super::{ErrorBody, ErrorDetail};

    /// An error answer with a stable code; internal details go to the log only, never here.
    #[derive(Debug)]
    pub struct ApiError {
        pub status: StatusCode,
        pub code: &'static str,
        pub message: String,
        /// Seconds for a `Retry-After` header.
        pub retry_after: Option<u64>,
    }

    impl ApiError {
        pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
            Self {
                status,
                code,
                message: message.into(),
                retry_after: None,
            }
        }

        /// 401 for a missing or wrong service credential.
        pub fn unauthorized() -> Self {
            Self::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid service credential is required",
            )
        }

        pub fn bad_request(message: impl Into<String>) -> Self {
            Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
        }

        /// 500 without details: the caller logs what went wrong.
        pub fn internal() -> Self {
            Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }

        /// 503 with the given code.
        pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
            Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }

        pub fn retry_after(mut self, seconds: u64) -> Self {
            self.retry_after = Some(seconds);
            self
        }
    }

    impl IntoResponse for ApiError {
        fn into_response(self) -> Response {
            let body = ErrorBody {
                error: ErrorDetail {
                    code: self.code.to_string(),
                    message: self.message,
                },
            };
            let mut response = (self.status, Json(body)).into_response();
            if let Some(secs) = self.retry_after
                && let Ok(v) = HeaderValue::from_str(&secs.to_string())
            {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
    }

    /// A body that is not the expected JSON: 400 with axum's explanation (413 when it is
    /// over the route's size limit).
    impl From<JsonRejection> for ApiError {
        fn from(e: JsonRejection) -> Self {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Self::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "request body too large",
                )
            } else {
                Self::bad_request(e.body_text())
            }
        }
    }

    /// A query string that does not parse: 400 with axum's explanation.
    impl From<QueryRejection> for ApiError {
        fn from(e: QueryRejection) -> Self {
            Self::bad_request(e.body_text())
        }
    }
}

#[cfg(all(test, feature = "server"))]
mod tests {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    use super::*;

    #[tokio::test]
    async fn an_api_error_answers_with_the_json_body_and_retry_after() {
        let response = ApiError::unavailable("busy", "too many logins in progress")
            .retry_after(3)
            .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "3");
        let bytes = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body.error.code, "busy");
        assert_eq!(body.error.message, "too many logins in progress");
    }
}
