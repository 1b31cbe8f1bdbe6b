//! The controller's request budget across replicas, and the budget a round is
//! planned under.
//!
//! The QingCloud client of each process has its own budget (a hard stop). But a
//! new leader's client starts with an empty window while the previous leader's
//! requests still count against the account for up to an hour, so the leader
//! also keeps a [`Ledger`] of what it spent, carried on the Lease with every
//! renewal; a new leader starts from the previous one's ledger. A round may
//! spend what both allow.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hostnic_core::fleet::{Breaker, RoundBudget};
use hostnic_qingcloud::stats::{CallObserver, CallRecord};
use hostnic_qingcloud::{BreakerStatus, QingCloudClient, WindowLimit};

/// The Lease annotation holding the ledger.
pub const LEDGER_ANNOTATION: &str = "hostnic.io/requests-spent";

/// Requests spent per bucket of a sixtieth of the window, by wall-clock time, so
/// that the record means the same on another machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ledger {
    limit: WindowLimit,
    bucket_ms: u64,
    /// (bucket start, ms since the epoch; requests).
    buckets: VecDeque<(u64, u32)>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Ledger {
    /// An empty ledger for `limit`.
    pub fn new(limit: WindowLimit) -> Self {
        let bucket_ms = (limit.window.as_millis() as u64 / 60).max(1);
        Self {
            limit,
            bucket_ms,
            buckets: VecDeque::new(),
        }
    }

    fn trim(&mut self, now: u64) {
        let window = self.limit.window.as_millis() as u64;
        // A bucket counts until the window has passed its end (conservative).
        while self
            .buckets
            .front()
            .is_some_and(|(start, _)| start + self.bucket_ms + window <= now)
        {
            self.buckets.pop_front();
        }
    }

    /// Records `requests` made at `now` (ms since the epoch).
    pub fn spend_at(&mut self, requests: u32, now: u64) {
        let start = now - now % self.bucket_ms;
        match self.buckets.back_mut() {
            Some((s, n)) if *s == start => *n = n.saturating_add(requests),
            _ => self.buckets.push_back((start, requests)),
        }
        self.trim(now);
    }

    /// Requests spent within the window before `now`.
    pub fn used_at(&mut self, now: u64) -> u32 {
        self.trim(now);
        self.buckets.iter().map(|(_, n)| *n).sum()
    }

    /// Requests the window still allows now.
    pub fn remaining(&mut self) -> u32 {
        self.limit.requests.saturating_sub(self.used_at(now_ms()))
    }

    /// The record carried on the Lease: `[[bucket_start_ms, requests], …]`.
    pub fn encode(&mut self) -> String {
        self.trim(now_ms());
        serde_json::to_string(&self.buckets.iter().collect::<Vec<_>>()).unwrap_or_default()
    }

    /// Adds what another leader recorded (ignored if unreadable).
    pub fn absorb(&mut self, record: &str) {
        self.absorb_at(record, now_ms());
    }

    /// [`Ledger::absorb`] at `now` (ms since the epoch).
    pub fn absorb_at(&mut self, record: &str, now: u64) {
        let Ok(buckets) = serde_json::from_str::<Vec<(u64, u32)>>(record) else {
            tracing::warn!("unreadable request ledger on the lease; starting from none");
            return;
        };
        for (start, n) in buckets {
            let start = start - start % self.bucket_ms;
            match self.buckets.iter_mut().find(|(s, _)| *s == start) {
                Some((_, m)) => *m = (*m).max(n),
                None => self.buckets.push_back((start, n)),
            }
        }
        self.buckets.make_contiguous().sort();
        self.trim(now);
    }
}

/// Counts the client's requests (every attempt) into the ledger.
#[derive(Debug, Clone)]
pub struct LedgerObserver(pub Arc<Mutex<Ledger>>);

impl CallObserver for LedgerObserver {
    fn observe(&self, record: &CallRecord) {
        if record.attempts > 0 {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .spend_at(record.attempts, now_ms());
        }
    }
}

/// The budget a round may spend: what the client's budget and the ledger allow,
/// and the breaker (its probe due when the probe interval has passed).
pub fn round_budget(client: &QingCloudClient, ledger: &Mutex<Ledger>) -> RoundBudget {
    let client_left = client.budget().remaining;
    let ledger_left = ledger.lock().unwrap_or_else(|p| p.into_inner()).remaining();
    let breaker = client.breaker();
    let breaker = match breaker.status {
        BreakerStatus::Closed => Breaker::Closed,
        BreakerStatus::Probing => Breaker::Open { probe_due: false },
        BreakerStatus::Open => Breaker::Open {
            probe_due: breaker.next_probe_in().is_none_or(|d| d == Duration::ZERO),
        },
    };
    RoundBudget {
        available: client_left.min(ledger_left),
        breaker,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_counts_a_window_and_survives_a_round_trip() {
        let limit = WindowLimit::new(100, Duration::from_secs(3600));
        let mut l = Ledger::new(limit);
        let t0 = 1_000_000_000_000;
        l.spend_at(30, t0);
        l.spend_at(20, t0 + 120_000);
        assert_eq!(l.used_at(t0 + 130_000), 50);
        // An hour (plus a bucket) later the first requests no longer count.
        assert_eq!(l.used_at(t0 + 3_600_000 + 60_000 + 1), 20);
        let mut other = Ledger::new(limit);
        other.absorb_at("[[1000000000000, 30], [1000000120000, 20]]", t0 + 130_000);
        assert_eq!(other.used_at(t0 + 130_000), 50);
        other.absorb_at("garbage", t0 + 130_000);
        assert_eq!(other.used_at(t0 + 130_000), 50);
    }
}
