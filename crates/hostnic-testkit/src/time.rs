//! Time for in-process agents living in a simulator's `--time-scale K`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hostnic_core::ports::Clock;
use hostnic_core::types::Timestamp;

/// The core's clock running `scale` times faster than the wall clock: milliseconds
/// since the Unix epoch at creation, then `scale` simulated milliseconds per real
/// one. Clones share the origin, so every agent of a harness lives in one time.
#[derive(Debug, Clone, Copy)]
pub struct ScaledClock {
    origin: Instant,
    epoch_ms: u64,
    scale: f64,
}

impl ScaledClock {
    /// A clock at the wall clock's now, running `scale` times faster.
    pub fn new(scale: f64) -> Self {
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        Self {
            origin: Instant::now(),
            epoch_ms,
            scale: scale.max(1e-3),
        }
    }

    /// Simulated time since the clock was made.
    pub fn elapsed(&self) -> Duration {
        self.origin.elapsed().mul_f64(self.scale)
    }

    /// Simulated seconds per real second.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// `simulated` as real time.
    pub fn real(&self, simulated: Duration) -> Duration {
        simulated.div_f64(self.scale)
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.epoch_ms + self.elapsed().as_millis() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_millisecond_is_scale_simulated_ones() {
        let c = ScaledClock::new(1000.0);
        let a = c.now();
        std::thread::sleep(Duration::from_millis(20));
        let b = c.now();
        // 20 real ms at least: 20 simulated seconds at least.
        assert!(b.0 - a.0 >= 20_000, "{} ms", b.0 - a.0);
        assert_eq!(c.real(Duration::from_secs(60)), Duration::from_millis(60));
    }
}
