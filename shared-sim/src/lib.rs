//! The game itself, shared by every server, the bot and client SDKs: card data and its
//! validation, the match rules as pure functions, the wire protocol, and the Bevy plugin that
//! runs matches in `FixedUpdate`. No sockets, no async runtime, no database.

pub mod data;
pub mod farm;
pub mod hub;
pub mod plugin;
pub mod protocol;
pub mod rng;
pub mod rules;
pub mod view;

pub use data::GameData;
pub use plugin::{MatchId, MatchPlugin, MatchSystems, UserId};
