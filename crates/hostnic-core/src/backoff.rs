//! Exponential backoff, defined once for every retry loop of hostnic.
//!
//! [`ExponentialBackoff`] is a policy: the delay before retry `n` (0-based) is
//! `initial · 2ⁿ`, capped at `max`. It is pure (no clock, no sleep, no
//! randomness of its own), so the core's pool planner, the agent's start-up
//! retries, the policy task and the Kubernetes watches all use the same rule and
//! sleep with whatever runtime they have. Two ways to spread a fleet's retries
//! apart are offered: [`ExponentialBackoff::spread`] (±20 % derived from a seed, so
//! tests repeat) and [`ExponentialBackoff::equal_jitter`] (`[d/2, d]` from a unit
//! value the caller draws).
//!
//! Why not a crate: the pool's backoff is part of the checkpointed state (a
//! failure count and a timestamp) and its jitter must be deterministic per node;
//! `backon`'s builders are stateful iterators with random jitter. The rule itself
//! is a few lines; what matters is that it exists once.

use std::time::Duration;

/// Doubling delays from `initial` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExponentialBackoff {
    /// The delay before the first retry.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl ExponentialBackoff {
    /// Delays doubling from `initial` up to `max`.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// The nominal delay before retry `attempt` (0-based): `initial · 2^attempt`,
    /// at most `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// [`delay`](Self::delay) spread by ±20 %, the spread derived from `seed` and
    /// `attempt`: repeatable in tests, different across nodes with different seeds.
    pub fn spread(&self, attempt: u32, seed: u64) -> Duration {
        let jitter = splitmix64(seed ^ u64::from(attempt + 1)) % 401; // 0..=400 ‰
        let factor = 800 + jitter; // 0.8..=1.2
        let ms = (self.delay(attempt).as_millis() as u64).saturating_mul(factor) / 1000;
        Duration::from_millis(ms)
    }

    /// "Equal jitter": a delay in `[d/2, d]` for `d = delay(attempt)`, placed by
    /// `unit` in `[0, 1]` (the caller's random draw).
    pub fn equal_jitter(&self, attempt: u32, unit: f64) -> Duration {
        let half = self.delay(attempt) / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// A retry loop's delays, starting at `initial`.
    pub fn delays(self) -> Delays {
        Delays {
            policy: self,
            attempt: 0,
        }
    }
}

/// The successive delays of one retry loop (see [`ExponentialBackoff::delays`]).
#[derive(Debug, Clone)]
pub struct Delays {
    policy: ExponentialBackoff,
    attempt: u32,
}

impl Delays {
    /// The delay before the next retry; each call doubles the next one.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.policy.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// A success: the next delay is `initial` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// True after at least one failure since the last [`reset`](Self::reset).
    pub fn failing(&self) -> bool {
        self.attempt > 0
    }
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.next_delay())
    }
}

/// A small, well-mixed hash (SplitMix64), used for jitter.
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_initial_and_stop_at_max() {
        let b = ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first: Vec<u64> = b.delays().take(6).map(|d| d.as_millis() as u64).collect();
        assert_eq!(first, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(60), Duration::from_secs(1));
    }

    #[test]
    fn reset_starts_over() {
        let mut d =
            ExponentialBackoff::new(Duration::from_millis(200), Duration::from_secs(10)).delays();
        assert!(!d.failing());
        d.next_delay();
        d.next_delay();
        assert!(d.failing());
        d.reset();
        assert_eq!(d.next_delay(), Duration::from_millis(200));
    }

    #[test]
    fn spread_stays_within_twenty_percent_and_repeats_per_seed() {
        let b = ExponentialBackoff::new(Duration::from_secs(1), Duration::from_secs(10));
        for attempt in 0..8 {
            let nominal = b.delay(attempt).as_millis() as u64;
            let d = b.spread(attempt, 42).as_millis() as u64;
            assert!(
                d >= nominal * 8 / 10 && d <= nominal * 12 / 10,
                "{d} vs {nominal}"
            );
            assert_eq!(b.spread(attempt, 42), b.spread(attempt, 42));
        }
    }

    #[test]
    fn equal_jitter_is_between_half_and_the_whole_delay() {
        let b = ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.equal_jitter(1, 0.0), Duration::from_millis(100));
        assert_eq!(b.equal_jitter(1, 1.0), Duration::from_millis(200));
        assert_eq!(b.equal_jitter(1, 7.0), Duration::from_millis(200));
    }
}
