//! The contracts between croft's processes: every request, answer, feed and file one process
//! reads from another, in versioned modules (`v1`), with their paths and typed async clients.

pub mod auth;
pub mod connection;
pub mod error;
pub mod instance;
pub mod matchmaking;

#[cfg(feature = "client")]
mod call;
#[cfg(feature = "client")]
pub use call::CallError;

#[cfg(feature = "server")]
pub use error::ApiError;
pub use error::{ErrorBody, ErrorDetail};

/// A player's account id (the database's, always above 0).
pub type UserId = u64;
/// A match id, below 2^53 so JSON readers in any language keep it exact.
pub type MatchId = u64;
