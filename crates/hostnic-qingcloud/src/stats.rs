//! Per-action call counters and latency, and an observer hook the agent turns
//! into metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hostnic_core::ports::CloudErrorKind;
use serde::Serialize;

/// What one API call (all its attempts) ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// The action, e.g. `DescribeNics`.
    pub action: String,
    /// Time from the first attempt to the final answer, backoff included.
    pub duration: Duration,
    /// How many HTTP attempts were made (1 without retries).
    pub attempts: u32,
    /// The final `ret_code` (0 on success; `None` when the API never answered).
    pub ret_code: Option<i64>,
    /// The error kind when the call failed.
    pub error: Option<CloudErrorKind>,
}

/// Receives a record of every finished call (e.g. to feed Prometheus).
pub trait CallObserver: Send + Sync {
    /// Called once per call after its last attempt.
    fn observe(&self, record: &CallRecord);
}

/// Aggregated numbers for one action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ActionStats {
    /// Calls made.
    pub calls: u64,
    /// Calls that failed in the end.
    pub errors: u64,
    /// Extra attempts made by retries.
    pub retries: u64,
    /// Sum of call durations.
    pub total_latency: Duration,
    /// Slowest call.
    pub max_latency: Duration,
    /// Final `ret_code`s of the failed calls that the API answered, and how often.
    pub ret_codes: BTreeMap<i64, u64>,
}

/// Per-action statistics of a client; always on, cheap.
#[derive(Debug, Default)]
pub struct CallStats {
    by_action: Mutex<BTreeMap<String, ActionStats>>,
}

impl CallStats {
    /// A copy of the current numbers, by action.
    pub fn snapshot(&self) -> BTreeMap<String, ActionStats> {
        self.by_action
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl CallObserver for CallStats {
    fn observe(&self, record: &CallRecord) {
        let mut map = self.by_action.lock().unwrap_or_else(|e| e.into_inner());
        let s = map.entry(record.action.clone()).or_default();
        s.calls += 1;
        s.retries += u64::from(record.attempts.saturating_sub(1));
        s.total_latency += record.duration;
        s.max_latency = s.max_latency.max(record.duration);
        if record.error.is_some() {
            s.errors += 1;
            if let Some(code) = record.ret_code {
                *s.ret_codes.entry(code).or_default() += 1;
            }
        }
    }
}
