//! The login service: password hashing (argon2id, OWASP parameters, bounded) and the HTTP API
//! for sessions and tokens. The REST edge (rate limits, TLS, OpenAPI) wraps this router.

pub mod backoff;
pub mod limits;
pub mod password;
pub mod server;
pub mod service;

pub use password::{PasswordError, Passwords};
