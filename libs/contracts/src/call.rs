//! How the typed clients call: JSON over HTTP with a bearer credential, and one error type that
//! tells "no answer" (the request may have been acted on) from "answered no".

use serde::de::DeserializeOwned;

use crate::ErrorBody;

/// Why a call to another croft process did not give the expected answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No answer (refused connection, time-out, reset): the request may or may not have
    /// reached the other side.
    #[error("{what}: no answer: {message}")]
    Unreachable { what: String, message: String },
    /// An answer other than 2xx, with the error body's code when it had one.
    #[error("{what}: answered {status}: {code}: {message}")]
    Refused {
        what: String,
        status: u16,
        code: String,
        message: String,
    },
    /// A 2xx answer that is not the expected JSON.
    #[error("{what}: unreadable answer: {message}")]
    BadAnswer { what: String, message: String },
}

impl CallError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error code of a refusal (`draining`, `full`, `in_match`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

/// Most bytes of a non-JSON error answer kept in a [`CallError::Refused`].
const REFUSAL_TEXT: usize = 512;

/// Sends `request` and reads a 2xx answer's JSON.
pub(crate) async fn json<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
    what: String,
) -> Result<T, CallError> {
    let response = send(request, &what).await?;
    response.json().await.map_err(|e| CallError::BadAnswer {
        what,
        message: e.to_string(),
    })
}

/// Sends `request` and expects any 2xx answer, whatever its body.
pub(crate) async fn empty(request: reqwest::RequestBuilder, what: String) -> Result<(), CallError> {
    send(request, &what).await.map(|_| ())
}

async fn send(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<reqwest::Response, CallError> {
    let response = request.send().await.map_err(|e| CallError::Unreachable {
        what: what.to_string(),
        message: e.to_string(),
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => (body.error.code, body.error.message),
        Err(_) => (
            String::new(),
            text.chars().take(REFUSAL_TEXT).collect::<String>(),
        ),
    };
    Err(CallError::Refused {
        what: what.to_string(),
        status: status.as_u16(),
        code,
        message,
    })
}

/// `base` without a trailing `/`, so `base + path` has exactly one.
pub(crate) fn trim_base(base: &str) -> String {
    base.trim_end_matches('/').to_string()
}
