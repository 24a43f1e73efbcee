//! The game itself, shared by every server, the bot and client SDKs: card data and its
//! validation, the match rules as pure functions, and the wire protocol. No sockets, no logging.

pub mod data;
pub mod farm;
pub mod hub;
#[cfg(feature = "plugin")]
pub mod plugin;
pub mod protocol;
pub mod rng;
pub mod rules;
pub mod view;

pub use data::GameData;
#[cfg(feature = "plugin")]
pub use plugin::{MatchPlugin, MatchSystems};

/// A match's id, below 2^53 so JSON readers in any language keep it exact.
pub type MatchId = u64;
/// A player's account id.
pub type UserId = u64;
