//! The account's API request quota: at most N requests in any window of W
//! seconds per access key. Every request counts — signed or not, answered with
//! an error or not, and the ones refused for the quota too, so a client that
//! hammers a locked account keeps itself locked. Over it, the answer is a 2500
//! whose message says *request* quota, distinct from the resource quotas.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;
use tokio::time::Instant;

use super::state::{ApiError, now};
use crate::errors::QUOTA_EXCEEDED;
use crate::limits::{SlidingWindow, WindowLimit};

/// How many request-quota answers the log keeps (the newest); the total is counted beyond.
pub const REJECTION_LOG_CAP: usize = 10_000;

/// One request-quota 2500 the simulator sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuotaRejection {
    /// Wall-clock time, `YYYY-MM-DDTHH:MM:SSZ`.
    pub at: String,
    /// Simulated seconds since the simulator started (real seconds × time scale).
    pub sim_secs: f64,
    /// The access key the request named.
    pub access_key_id: String,
    /// The action it asked for.
    pub action: String,
}

/// The quota of one access key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyQuota {
    /// Requests in the current window (refused ones included).
    pub used: u32,
    /// Requests still allowed in it.
    pub remaining: u32,
    /// Simulated seconds until a request is allowed again (0 when one is now).
    pub frees_in_secs: f64,
}

/// The quota's configuration and state, as `/_sim/quota` answers it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuotaReport {
    /// `N/W` or `off`.
    pub quota: String,
    /// N, when on.
    pub limit: Option<u32>,
    /// W in simulated seconds, when on.
    pub window_secs: Option<f64>,
    /// Simulated seconds per real second.
    pub time_scale: f64,
    /// Per access key (keys that made a request in the window).
    pub keys: BTreeMap<String, KeyQuota>,
    /// Request-quota 2500s sent since start.
    pub rejections_total: u64,
    /// The newest of them (at most [`REJECTION_LOG_CAP`]), oldest first.
    pub rejections: Vec<QuotaRejection>,
}

/// The quota book of the simulator.
#[derive(Debug)]
pub struct QuotaBook {
    limit: Option<WindowLimit>,
    time_scale: f64,
    started: Instant,
    windows: HashMap<String, SlidingWindow>,
    rejections: VecDeque<QuotaRejection>,
    rejections_total: u64,
}

impl QuotaBook {
    /// A book for `limit` (simulated time; `None`: off) at `time_scale`.
    pub fn new(limit: Option<WindowLimit>, time_scale: f64) -> Self {
        Self {
            limit,
            time_scale: time_scale.max(1e-3),
            started: Instant::now(),
            windows: HashMap::new(),
            rejections: VecDeque::new(),
            rejections_total: 0,
        }
    }

    /// The limit in real time.
    fn real(&self) -> Option<WindowLimit> {
        self.limit.map(|l| l.scaled(self.time_scale))
    }

    /// Counts a request of `key` for `action`; the request-quota 2500 when the
    /// window was already full.
    pub fn admit(&mut self, key: &str, action: &str, now_at: Instant) -> Result<(), ApiError> {
        let (Some(limit), Some(real)) = (self.limit, self.real()) else {
            return Ok(());
        };
        let window = self.windows.entry(key.to_string()).or_default();
        let used = window.used(&real, now_at);
        window.record(now_at);
        if used < limit.requests {
            return Ok(());
        }
        self.rejections_total += 1;
        if self.rejections.len() == REJECTION_LOG_CAP {
            self.rejections.pop_front();
        }
        self.rejections.push_back(QuotaRejection {
            at: now(),
            sim_secs: now_at.duration_since(self.started).as_secs_f64() * self.time_scale,
            access_key_id: key.to_string(),
            action: action.to_string(),
        });
        Err(ApiError::new(
            QUOTA_EXCEEDED,
            format!(
                "QuotaExceeded, the API request quota of access key [{key}] is exceeded: at most [{}] requests in [{}] seconds, please try again later",
                limit.requests,
                limit.window.as_secs_f64()
            ),
        ))
    }

    /// Changes the limit (`None`: off). The requests already counted stay counted.
    pub fn set(&mut self, limit: Option<WindowLimit>) {
        self.limit = limit;
        if limit.is_none() {
            self.windows.clear();
        }
    }

    /// Forgets every counted request (the quota is free again); the log stays.
    pub fn reset(&mut self) {
        self.windows.clear();
    }

    /// The state at `now_at`.
    pub fn report(&mut self, now_at: Instant) -> QuotaReport {
        let real = self.real();
        let scale = self.time_scale;
        let mut keys = BTreeMap::new();
        if let Some(real) = real {
            self.windows.retain(|key, w| {
                let used = w.used(&real, now_at);
                if used > 0 {
                    keys.insert(
                        key.clone(),
                        KeyQuota {
                            used,
                            remaining: real.requests.saturating_sub(used),
                            frees_in_secs: w.frees_in(&real, now_at).as_secs_f64() * scale,
                        },
                    );
                }
                used > 0
            });
        }
        QuotaReport {
            quota: self
                .limit
                .map_or_else(|| "off".to_string(), |l| l.to_string()),
            limit: self.limit.map(|l| l.requests),
            window_secs: self.limit.map(|l| l.window.as_secs_f64()),
            time_scale: scale,
            keys,
            rejections_total: self.rejections_total,
            rejections: self.rejections.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn every_request_counts_and_the_window_frees_in_scaled_time() {
        // 3 requests per simulated hour at 3600x: a real second.
        let mut q = QuotaBook::new(Some(WindowLimit::new(3, Duration::from_secs(3600))), 3600.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            q.admit("AK", "DescribeNics", t0).unwrap();
        }
        let err = q.admit("AK", "CreateNics", t0).unwrap_err();
        assert_eq!(err.code, 2500);
        assert!(
            crate::errors::is_request_quota_message(&err.message),
            "{}",
            err.message
        );
        // Another key has its own quota.
        q.admit("OTHER", "DescribeNics", t0).unwrap();
        let r = q.report(t0 + Duration::from_millis(500));
        assert_eq!(r.keys["AK"].used, 4, "the refused request counts too");
        assert_eq!(r.keys["AK"].remaining, 0);
        // Half a real second is half a simulated hour.
        assert!(
            (r.keys["AK"].frees_in_secs - 1800.0).abs() < 1.0,
            "{:?}",
            r.keys["AK"]
        );
        assert_eq!(r.rejections_total, 1);
        assert_eq!(r.rejections[0].action, "CreateNics");
        assert_eq!(r.rejections[0].access_key_id, "AK");
        assert_eq!(r.quota, "3/3600");
        // A real second later the window is empty.
        q.admit("AK", "DescribeNics", t0 + Duration::from_secs(1))
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn off_counts_nothing_and_a_new_limit_applies_at_once() {
        let mut q = QuotaBook::new(None, 1.0);
        let t0 = Instant::now();
        for _ in 0..10_000 {
            q.admit("AK", "DescribeNics", t0).unwrap();
        }
        assert!(q.report(t0).keys.is_empty());
        q.set(Some(WindowLimit::new(1, Duration::from_secs(60))));
        q.admit("AK", "DescribeNics", t0).unwrap();
        assert_eq!(q.admit("AK", "DescribeNics", t0).unwrap_err().code, 2500);
        q.reset();
        q.admit("AK", "DescribeNics", t0).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_log_keeps_the_newest_rejections() {
        let mut q = QuotaBook::new(Some(WindowLimit::new(1, Duration::from_secs(60))), 1.0);
        let t0 = Instant::now();
        for _ in 0..REJECTION_LOG_CAP + 6 {
            let _ = q.admit("AK", "DescribeNics", t0);
        }
        let r = q.report(t0);
        assert_eq!(r.rejections_total, REJECTION_LOG_CAP as u64 + 5);
        assert_eq!(r.rejections.len(), REJECTION_LOG_CAP);
    }
}
