//! Request accounting shared by the client and the simulator: the window that
//! counts requests against a request limit (the core's [`WindowLimit`], "N
//! requests in any W seconds", the shape of the account's API quota and of the
//! client's own budget), and the retry backoff (the core's). Time is tokio's, so tests run on a paused clock.

use std::collections::VecDeque;
use std::time::Duration;

pub use hostnic_core::config::limit::{LimitParseError, WindowLimit, scale_down};

use tokio::time::Instant;

/// The times of the requests made in the last window, oldest first. The limit is
/// passed to each query, so it can change at run time without losing the history.
#[derive(Debug, Clone, Default)]
pub struct SlidingWindow {
    stamps: VecDeque<Instant>,
}

impl SlidingWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets requests older than `window`.
    fn prune(&mut self, window: Duration, now: Instant) {
        while let Some(first) = self.stamps.front() {
            if *first + window <= now {
                self.stamps.pop_front();
            } else {
                break;
            }
        }
    }

    /// Requests made within `limit.window` before `now`.
    pub fn used(&mut self, limit: &WindowLimit, now: Instant) -> u32 {
        self.prune(limit.window, now);
        u32::try_from(self.stamps.len()).unwrap_or(u32::MAX)
    }

    /// How long until the window holds fewer than `limit.requests` requests again;
    /// zero when it already does.
    pub fn frees_in(&mut self, limit: &WindowLimit, now: Instant) -> Duration {
        self.prune(limit.window, now);
        let requests = limit.requests.max(1) as usize;
        if self.stamps.len() < requests {
            return Duration::ZERO;
        }
        // The request that must age out for one slot to free.
        let index = self.stamps.len() - requests;
        (self.stamps[index] + limit.window).saturating_duration_since(now)
    }

    /// Records a request at `now`, whether or not it fits.
    pub fn record(&mut self, now: Instant) {
        self.stamps.push_back(now);
    }

    /// Records a request at `now` if it fits; otherwise the time until one fits.
    pub fn try_acquire(&mut self, limit: &WindowLimit, now: Instant) -> Result<(), Duration> {
        match self.frees_in(limit, now) {
            d if d.is_zero() => {
                self.record(now);
                Ok(())
            }
            d => Err(d),
        }
    }

    /// Forgets every request.
    pub fn clear(&mut self) {
        self.stamps.clear();
    }
}

/// The delays between retries of retryable failures: the core's one backoff
/// rule. The retry layer waits between `delay(n)` and twice that (capped at
/// `max`) before retry `n`, the jitter drawn by tower's `ExponentialBackoff`.
pub use hostnic_core::backoff::ExponentialBackoff as Backoff;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_window_admits_n_then_frees_a_slot_when_the_oldest_ages_out() {
        let limit = WindowLimit::new(3, Duration::from_secs(10));
        let mut w = SlidingWindow::new();
        let t0 = Instant::now();
        w.try_acquire(&limit, t0).unwrap();
        w.try_acquire(&limit, t0 + Duration::from_secs(2)).unwrap();
        w.try_acquire(&limit, t0 + Duration::from_secs(4)).unwrap();
        // Full: the first request frees its slot at t0 + 10.
        let now = t0 + Duration::from_secs(5);
        assert_eq!(w.try_acquire(&limit, now), Err(Duration::from_secs(5)));
        assert_eq!(w.used(&limit, now), 3);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(w.used(&limit, later), 2);
        w.try_acquire(&limit, later).unwrap();
        assert_eq!(
            w.frees_in(&limit, later),
            Duration::from_secs(2),
            "next to age out is the one from t0 + 2"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn recorded_overflow_keeps_the_window_closed_longer() {
        // The simulator records rejected requests too: hammering a full window
        // pushes the moment it frees further out.
        let limit = WindowLimit::new(2, Duration::from_secs(10));
        let mut w = SlidingWindow::new();
        let t0 = Instant::now();
        for s in [0, 1, 2, 3] {
            w.record(t0 + Duration::from_secs(s));
        }
        // Four requests in the window, two allowed: the third oldest (t0 + 2) must age out.
        assert_eq!(
            w.frees_in(&limit, t0 + Duration::from_secs(5)),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn backoff_bounds_double_up_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let ceiling = |n| b.delay(n).saturating_mul(2).min(b.max);
        assert_eq!(b.delay(0), Duration::from_millis(100));
        assert_eq!(ceiling(0), Duration::from_millis(200));
        assert_eq!(b.delay(3), Duration::from_millis(800));
        assert_eq!(ceiling(3), Duration::from_secs(1));
        assert_eq!(b.delay(60), Duration::from_secs(1));
    }
}
