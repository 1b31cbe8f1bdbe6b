//! The pool's retry state per kind of operation, checkpointed with the node.
//! The delays themselves are [`ExponentialBackoff::spread`]'s.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::ExponentialBackoff;
use crate::types::Timestamp;

/// Retry state of one kind of operation: consecutive failures and the earliest
/// time of the next attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// Consecutive failures so far.
    pub failures: u32,
    /// No attempt before this time.
    pub not_before: Timestamp,
}

impl Backoff {
    /// True when an attempt may be made at `now`.
    pub fn ready(&self, now: Timestamp) -> bool {
        now >= self.not_before
    }

    /// Records a failure at `now`: the delay doubles from `base` up to `max`, with
    /// ±20 % jitter derived from `seed` and the failure count (so tests are repeatable
    /// while many nodes do not retry in lockstep).
    pub fn fail(&mut self, now: Timestamp, base: Duration, max: Duration, seed: u64) {
        self.failures = self.failures.saturating_add(1);
        let delay = ExponentialBackoff::new(base, max).spread(self.failures - 1, seed);
        self.not_before = now.plus(delay);
    }

    /// Records a success: the next attempt may happen at once.
    pub fn succeed(&mut self) {
        *self = Backoff::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_within_jitter_and_is_capped() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(10);
        let mut b = Backoff::default();
        let now = Timestamp(1_000_000);
        let mut expected = 1000u64;
        for _ in 0..8 {
            b.fail(now, base, max, 42);
            let d = b.not_before.0 - now.0;
            let nominal = expected.min(10_000);
            assert!(
                d >= nominal * 8 / 10 && d <= nominal * 12 / 10,
                "delay {d} vs {nominal}"
            );
            expected *= 2;
        }
        assert!(!b.ready(now));
        b.succeed();
        assert!(b.ready(now));
    }

    #[test]
    fn jitter_is_deterministic_per_seed() {
        let mut a = Backoff::default();
        let mut b = Backoff::default();
        a.fail(
            Timestamp(0),
            Duration::from_secs(5),
            Duration::from_secs(60),
            7,
        );
        b.fail(
            Timestamp(0),
            Duration::from_secs(5),
            Duration::from_secs(60),
            7,
        );
        assert_eq!(a, b);
    }
}
