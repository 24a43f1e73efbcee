//! The contracts between croft's processes: every request, answer, feed and file one process
//! reads from another, in versioned modules (`v1`), with the paths they travel on and typed
//! async clients (feature `client`). Servers route on the same path constants the clients call.
//!
//! The game clients' wire protocol (netcode and WebSocket messages) is `shared_sim::protocol`;
//! this crate is the HTTP and file side.

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
