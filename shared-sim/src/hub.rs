//! The common area: a shared hub where online players see each other, walk and chat locally.
//! Positions are integer units on a bounded plane.

use serde::{Deserialize, Serialize};

/// The hub spans `0..=WIDTH` by `0..=HEIGHT` units.
pub const WIDTH: i32 = 20_000;
pub const HEIGHT: i32 = 20_000;
/// Where players appear.
pub const SPAWN: (i32, i32) = (WIDTH / 2, HEIGHT / 2);
/// Units per second a player may walk.
pub const MAX_SPEED: i32 = 3_000;
/// Moves are measured over at least this long, so two moves sent back to back are not
/// refused for arriving close together.
pub const MIN_MOVE_INTERVAL_MS: u64 = 100;
/// Tolerance on the speed check, in percent.
pub const SPEED_SLACK_PERCENT: i64 = 25;
/// Local chat reaches players within this distance.
pub const CHAT_RADIUS: i32 = 4_000;
/// Players one hub shard holds by default; more open another shard.
pub const DEFAULT_CAPACITY: usize = 300;

/// A player in the hub as others see them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubPlayer {
    pub user_id: u64,
    pub name: String,
    pub x: i32,
    pub y: i32,
}

/// Why a move was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MoveError {
    #[error("outside the hub")]
    OutOfBounds,
    #[error("faster than a player walks")]
    TooFast,
}

/// Walking time a move is credited with at most: enough to cross the whole hub, so a move after
/// a long idle is judged like one after a short walk (and the arithmetic cannot overflow).
pub const MAX_MOVE_CREDIT_MS: u64 = 60_000;

/// Checks a move from `from` to `to` made `elapsed_ms` after the previous one. A move is
/// accepted when it stays in bounds and is no faster than [`MAX_SPEED`] (with a little slack
/// for network jitter).
pub fn check_move(from: (i32, i32), to: (i32, i32), elapsed_ms: u64) -> Result<(), MoveError> {
    if !(0..=WIDTH).contains(&to.0) || !(0..=HEIGHT).contains(&to.1) {
        return Err(MoveError::OutOfBounds);
    }
    let dx = i64::from(to.0) - i64::from(from.0);
    let dy = i64::from(to.1) - i64::from(from.1);
    let ms = elapsed_ms.clamp(MIN_MOVE_INTERVAL_MS, MAX_MOVE_CREDIT_MS) as i64;
    // distance <= speed * t * (1 + slack), compared squared in integers.
    let allowed = i64::from(MAX_SPEED) * ms * (100 + SPEED_SLACK_PERCENT) / 100_000;
    if dx * dx + dy * dy > allowed * allowed {
        return Err(MoveError::TooFast);
    }
    Ok(())
}

/// Whether `b` hears local chat from `a`.
pub fn within_chat(a: (i32, i32), b: (i32, i32)) -> bool {
    let dx = i64::from(a.0) - i64::from(b.0);
    let dy = i64::from(a.1) - i64::from(b.1);
    dx * dx + dy * dy <= i64::from(CHAT_RADIUS) * i64::from(CHAT_RADIUS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_are_checked_for_bounds_and_speed() {
        assert_eq!(check_move(SPAWN, (SPAWN.0 + 300, SPAWN.1), 100), Ok(()));
        // 3000 units/s for 100 ms is 300 units (375 with slack).
        assert_eq!(
            check_move(SPAWN, (SPAWN.0 + 400, SPAWN.1), 100),
            Err(MoveError::TooFast)
        );
        // Moves arriving together are measured over the minimum interval.
        assert_eq!(check_move(SPAWN, (SPAWN.0 + 300, SPAWN.1), 0), Ok(()));
        assert_eq!(check_move(SPAWN, (SPAWN.0 + 3000, SPAWN.1), 1000), Ok(()));
        assert_eq!(
            check_move((0, 0), (-1, 0), 1000),
            Err(MoveError::OutOfBounds)
        );
        assert_eq!(
            check_move((WIDTH, HEIGHT), (WIDTH, HEIGHT + 1), 1000),
            Err(MoveError::OutOfBounds)
        );
        assert_eq!(
            check_move((0, 0), (i32::MAX, 0), u64::MAX / 1_000_000),
            Err(MoveError::OutOfBounds)
        );
    }

    #[test]
    fn a_move_after_a_long_idle_is_checked_without_overflow() {
        let month_ms = 30 * 24 * 3600 * 1000;
        assert_eq!(check_move(SPAWN, (SPAWN.0 + 1, SPAWN.1), month_ms), Ok(()));
        assert_eq!(check_move((0, 0), (WIDTH, HEIGHT), u64::MAX), Ok(()));
    }

    #[test]
    fn chat_is_local() {
        assert!(within_chat((0, 0), (CHAT_RADIUS, 0)));
        assert!(!within_chat((0, 0), (CHAT_RADIUS, 1)));
    }
}
