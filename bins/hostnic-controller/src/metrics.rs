//! Prometheus metrics in the text exposition format (0.0.4): counters and the
//! round histogram kept here, gauges filled in by the control loop, the cloud
//! client's numbers read at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use hostnic_core::fleet::Lane;
use hostnic_qingcloud::QingCloudClient;

/// Upper bounds (seconds) of the round duration histogram.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Gauges the control loop sets after every round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// 1 while this replica leads.
    pub leader: bool,
    /// Calls held back in the last round, by lane (the queue depth).
    pub queue: BTreeMap<Lane, u32>,
    /// Nodes by state: `ready`, `waiting`, `refused`.
    pub nodes: BTreeMap<&'static str, u32>,
    /// NICs of the cluster by state.
    pub nics: BTreeMap<&'static str, u32>,
    /// Jobs in flight.
    pub jobs: u32,
    /// Requests the controller's ledger counts in the budget window.
    pub ledger_used: u32,
}

#[derive(Debug, Default)]
struct Inner {
    /// (action, lane, result) → calls planned and made.
    calls: BTreeMap<(&'static str, Lane, String), u64>,
    rounds: u64,
    round_buckets: Vec<u64>,
    round_sum: f64,
    status_writes: BTreeMap<&'static str, u64>,
    events: BTreeMap<String, u64>,
    gauges: Gauges,
}

/// The controller's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A planned call was made, with `result` (`ok` or the error kind).
    pub fn call(&self, action: &'static str, lane: Lane, result: &str) {
        *self
            .lock()
            .calls
            .entry((action, lane, result.to_string()))
            .or_default() += 1;
    }

    /// A round (plan, calls, status writes) took `secs`.
    pub fn round(&self, secs: f64) {
        let mut inner = self.lock();
        inner.rounds += 1;
        if inner.round_buckets.is_empty() {
            inner.round_buckets = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                inner.round_buckets[i] += 1;
            }
        }
        inner.round_sum += secs;
    }

    /// A status write ended with `result` (`ok`, `conflict`, `error`).
    pub fn status_write(&self, result: &'static str) {
        *self.lock().status_writes.entry(result).or_default() += 1;
    }

    /// An event with `reason` was recorded.
    pub fn event(&self, reason: &str) {
        *self.lock().events.entry(reason.to_string()).or_default() += 1;
    }

    /// Sets the gauges.
    pub fn set_gauges(&self, gauges: Gauges) {
        self.lock().gauges = gauges;
    }

    /// Planned calls made so far, by action (tests, benchmarks).
    pub fn calls_by_action(&self) -> BTreeMap<&'static str, u64> {
        let mut out = BTreeMap::new();
        for ((action, _, _), n) in &self.lock().calls {
            *out.entry(*action).or_default() += n;
        }
        out
    }

    /// The text exposition, with the client's budget, breaker and request numbers.
    pub fn render(&self, client: &QingCloudClient) -> String {
        let inner = self.lock();
        let mut out = String::new();
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            &mut out,
            "hostnic_controller_calls_total",
            "counter",
            "Cloud calls the fleet planner made, by action, lane and result",
        );
        for ((action, lane, result), n) in &inner.calls {
            let _ = writeln!(
                out,
                "hostnic_controller_calls_total{{action=\"{action}\",lane=\"{lane}\",result=\"{result}\"}} {n}"
            );
        }
        family(
            &mut out,
            "hostnic_controller_cloud_requests_total",
            "counter",
            "QingCloud API requests (every attempt) by action",
        );
        for (action, s) in client.stats().snapshot() {
            let _ = writeln!(
                out,
                "hostnic_controller_cloud_requests_total{{action=\"{action}\"}} {}",
                s.calls + s.retries
            );
        }
        let budget = client.budget();
        family(
            &mut out,
            "hostnic_controller_budget_used",
            "gauge",
            "Requests in the budget window: this process's client, and the controller's ledger (all leaders)",
        );
        let _ = writeln!(
            out,
            "hostnic_controller_budget_used{{scope=\"process\"}} {}",
            budget.used
        );
        let _ = writeln!(
            out,
            "hostnic_controller_budget_used{{scope=\"controller\"}} {}",
            inner.gauges.ledger_used
        );
        family(
            &mut out,
            "hostnic_controller_budget_remaining",
            "gauge",
            "Requests the process's budget window still allows",
        );
        let _ = writeln!(
            out,
            "hostnic_controller_budget_remaining {}",
            budget.remaining
        );
        if let Some(limit) = budget.limit {
            family(
                &mut out,
                "hostnic_controller_budget_limit",
                "gauge",
                "The request budget per window",
            );
            let _ = writeln!(
                out,
                "hostnic_controller_budget_limit{{window_seconds=\"{}\"}} {}",
                limit.window.as_secs_f64(),
                limit.requests
            );
        }
        let breaker = client.breaker();
        family(
            &mut out,
            "hostnic_controller_breaker_state",
            "gauge",
            "The request-quota breaker: 1 for its current state",
        );
        for s in ["closed", "open", "probing"] {
            let _ = writeln!(
                out,
                "hostnic_controller_breaker_state{{state=\"{s}\"}} {}",
                u8::from(breaker.status.as_str() == s)
            );
        }
        family(
            &mut out,
            "hostnic_controller_breaker_trips_total",
            "counter",
            "Times the breaker opened",
        );
        let _ = writeln!(
            out,
            "hostnic_controller_breaker_trips_total {}",
            breaker.trips
        );
        family(
            &mut out,
            "hostnic_controller_queue_depth",
            "gauge",
            "Calls the last round held back for the budget or the breaker, by lane",
        );
        for lane in Lane::ALL {
            let n = inner.gauges.queue.get(&lane).copied().unwrap_or(0);
            let _ = writeln!(out, "hostnic_controller_queue_depth{{lane=\"{lane}\"}} {n}");
        }
        family(
            &mut out,
            "hostnic_controller_round_duration_seconds",
            "histogram",
            "Time of one round: plan, calls, status writes",
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let n = inner.round_buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "hostnic_controller_round_duration_seconds_bucket{{le=\"{b}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "hostnic_controller_round_duration_seconds_bucket{{le=\"+Inf\"}} {}\n\
             hostnic_controller_round_duration_seconds_sum {}\n\
             hostnic_controller_round_duration_seconds_count {}",
            inner.rounds, inner.round_sum, inner.rounds
        );
        family(
            &mut out,
            "hostnic_controller_leader",
            "gauge",
            "1 while this replica leads",
        );
        let _ = writeln!(
            out,
            "hostnic_controller_leader {}",
            u8::from(inner.gauges.leader)
        );
        family(
            &mut out,
            "hostnic_controller_nodes",
            "gauge",
            "HostnicNodes by state",
        );
        for (state, n) in &inner.gauges.nodes {
            let _ = writeln!(out, "hostnic_controller_nodes{{state=\"{state}\"}} {n}");
        }
        family(
            &mut out,
            "hostnic_controller_nics",
            "gauge",
            "NICs of the cluster by state",
        );
        for (state, n) in &inner.gauges.nics {
            let _ = writeln!(out, "hostnic_controller_nics{{state=\"{state}\"}} {n}");
        }
        family(
            &mut out,
            "hostnic_controller_jobs_in_flight",
            "gauge",
            "Attach and detach jobs followed",
        );
        let _ = writeln!(
            out,
            "hostnic_controller_jobs_in_flight {}",
            inner.gauges.jobs
        );
        family(
            &mut out,
            "hostnic_controller_status_writes_total",
            "counter",
            "HostnicNode status writes by result",
        );
        for (result, n) in &inner.status_writes {
            let _ = writeln!(
                out,
                "hostnic_controller_status_writes_total{{result=\"{result}\"}} {n}"
            );
        }
        family(
            &mut out,
            "hostnic_controller_events_total",
            "counter",
            "Events recorded by reason",
        );
        for (reason, n) in &inner.events {
            let _ = writeln!(
                out,
                "hostnic_controller_events_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out
    }
}
