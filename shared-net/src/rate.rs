//! A fixed-window rate limit for per-player counters (chat, messages), on the caller's clock.

use std::time::Duration;

/// How many events since the window opened; times are the app's real time (`Time<Real>`).
#[derive(Debug, Clone, Copy)]
pub struct RateWindow {
    opened: Duration,
    count: u32,
}

impl RateWindow {
    pub fn new(now: Duration) -> Self {
        Self {
            opened: now,
            count: 0,
        }
    }

    /// Counts one event at `now`; false when it is over `limit` in this `span`.
    pub fn allow(&mut self, limit: u32, span: Duration, now: Duration) -> bool {
        if now.saturating_sub(self.opened) >= span {
            *self = Self::new(now);
        }
        self.count += 1;
        self.count <= limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_to_its_limit_and_reopens_after_its_span() {
        let span = Duration::from_secs(10);
        let mut w = RateWindow::new(Duration::ZERO);
        for _ in 0..3 {
            assert!(w.allow(3, span, Duration::from_secs(1)));
        }
        assert!(!w.allow(3, span, Duration::from_secs(9)));
        assert!(w.allow(3, span, Duration::from_secs(10)));
    }
}
