//! Request accounting shared by the client and the simulator: a request limit over
//! a sliding window ("N requests in any W seconds", the shape of the account's API
//! quota and of the client's own budget), the window that counts against it, and
//! the retry backoff settings. Time is tokio's, so tests run on a paused clock.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio::time::Instant;

/// At most `requests` requests in any window of `window`: the account quota
/// (2,000 per 3,600 s by default) or a client's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimit {
    /// Requests allowed per window (at least 1).
    pub requests: u32,
    /// The window's length (non-zero).
    pub window: Duration,
}

impl WindowLimit {
    /// The account's default API request quota: 2,000 requests per 3,600 s.
    pub const ACCOUNT_DEFAULT: WindowLimit = WindowLimit {
        requests: 2000,
        window: Duration::from_secs(3600),
    };

    /// `requests` per `window`.
    pub fn new(requests: u32, window: Duration) -> Self {
        Self { requests, window }
    }

    /// The same limit with its window `scale` times shorter (a simulated hour lived
    /// in `3600 / scale` seconds). `scale` below 1e-3 is taken as 1e-3.
    pub fn scaled(self, scale: f64) -> Self {
        Self {
            requests: self.requests,
            window: scale_down(self.window, scale),
        }
    }

    /// Parses `N/S` (`2000/3600`) or `off` (`None`).
    pub fn parse_optional(s: &str) -> Result<Option<Self>, LimitParseError> {
        if s.trim().eq_ignore_ascii_case("off") {
            Ok(None)
        } else {
            s.parse().map(Some)
        }
    }
}

/// `duration / scale`, with `scale` at least 1e-3.
pub fn scale_down(duration: Duration, scale: f64) -> Duration {
    duration.div_f64(scale.max(1e-3))
}

impl fmt::Display for WindowLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.window.as_secs_f64();
        if w.fract() == 0.0 {
            write!(f, "{}/{}", self.requests, w as u64)
        } else {
            write!(f, "{}/{w}", self.requests)
        }
    }
}

/// A request limit that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid request limit {input:?}: expected REQUESTS/SECONDS such as 2000/3600 (both positive), or off"
)]
pub struct LimitParseError {
    /// What was given.
    pub input: String,
}

impl FromStr for WindowLimit {
    type Err = LimitParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || LimitParseError {
            input: s.to_string(),
        };
        let (n, w) = s.trim().split_once('/').ok_or_else(err)?;
        let requests: u32 = n.trim().parse().map_err(|_| err())?;
        let secs: f64 = w.trim().parse().map_err(|_| err())?;
        if requests == 0 || !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
            return Err(err());
        }
        Ok(Self {
            requests,
            window: Duration::from_secs_f64(secs),
        })
    }
}

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

/// Exponential backoff with jitter between retries of retryable failures: the
/// delay before retry `n` (0-based) is `base * 2^n` plus up to the same again at
/// random, capped at `max`. The delays come from tower's `ExponentialBackoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay's lower bound.
    pub base: Duration,
    /// The cap.
    pub max: Duration,
}

impl Backoff {
    /// The lower bound of the delay before retry number `attempt` (0-based): `base * 2^attempt`, capped.
    pub fn floor(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(20));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The upper bound of that delay: twice the floor, capped.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.floor(attempt).saturating_mul(2).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_display_and_reject_nonsense() {
        let l: WindowLimit = "2000/3600".parse().unwrap();
        assert_eq!(l, WindowLimit::ACCOUNT_DEFAULT);
        assert_eq!(l.to_string(), "2000/3600");
        assert_eq!(
            " 5 / 0.5 ".parse::<WindowLimit>().unwrap().window,
            Duration::from_millis(500)
        );
        assert_eq!(WindowLimit::parse_optional("off").unwrap(), None);
        assert_eq!(WindowLimit::parse_optional("OFF").unwrap(), None);
        for bad in [
            "", "2000", "2000/", "/3600", "0/3600", "10/0", "-1/60", "10/-5", "a/b", "10/nan",
            "10/inf",
        ] {
            let err = bad.parse::<WindowLimit>().unwrap_err();
            assert!(err.to_string().contains("REQUESTS/SECONDS"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_scaled_limit_keeps_its_requests_and_shortens_its_window() {
        let l = WindowLimit::ACCOUNT_DEFAULT.scaled(60.0);
        assert_eq!(l.requests, 2000);
        assert_eq!(l.window, Duration::from_secs(60));
    }

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
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.floor(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(0), Duration::from_millis(200));
        assert_eq!(b.floor(3), Duration::from_millis(800));
        assert_eq!(b.ceiling(3), Duration::from_secs(1));
        assert_eq!(b.floor(60), Duration::from_secs(1));
    }
}
