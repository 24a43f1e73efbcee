//! Matchmaking: 1v1 queues with a widening rating window, match placement through an
//! [`Allocator`] (local processes by default), and the updates connection servers relay to players.

pub mod allocator;
pub mod fleet;
pub mod kube;
pub mod queue;
pub mod server;
pub mod service;

pub use allocator::{Allocator, LocalAllocator, LocalConfig};
pub use fleet::FleetAllocator;
pub use queue::{Queue, QueueConfig};
pub use service::{Matchmaking, router, spawn_loops};
