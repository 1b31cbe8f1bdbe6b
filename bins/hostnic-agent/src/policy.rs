//! NetworkPolicy enforcement in the agent: the core's
//! [`PolicyEnforcer`](hostnic_core::policy::PolicyEnforcer) driven by a tokio task.
//!
//! The enforcer decides (compile, program, what is learned and enforced); this
//! module decides *when*: one task owns the syncs, so at most one is in flight.
//! Requests are numbered: an ADD records its pod, takes the next number and
//! waits until a sync that *started* after it (and so saw the pod) has
//! committed. Bursts of changes and requests coalesce into the next sync, which
//! always takes the latest view. Failed syncs are retried with backoff, and
//! every few minutes the dataplane checks the kernel instead of diffing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use hostnic_core::backoff::ExponentialBackoff;
use hostnic_core::policy::{PodRef, PolicyEnforcer};
use hostnic_core::ports::{PolicyDataplane, PolicySource};
use tokio::sync::{Notify, watch};

use crate::metrics::Metrics;
use crate::shared::Shared;
use crate::shutdown::stopped;

/// How often the task syncs without being asked (catches pods reconcile removed).
const RESYNC: Duration = Duration::from_secs(30);
/// Every this many unasked resyncs, the dataplane forgets what it programmed and
/// checks the kernel (about every 5 minutes).
const FULL_RESYNC_EVERY: u32 = 10;
/// Retry delays after failed syncs.
const RETRY: ExponentialBackoff =
    ExponentialBackoff::new(Duration::from_millis(200), Duration::from_secs(5));

/// What the agent enforces policy with; `None` in [`Deps`](crate::Deps) turns
/// enforcement off.
pub struct PolicyDeps {
    /// The cluster's policies, namespaces and pods.
    pub source: Arc<dyn PolicySource>,
    /// The node's datapath for policy.
    pub dataplane: Box<dyn PolicyDataplane>,
}

/// The enforcer and the task's request bookkeeping, shared by the policy task,
/// the CNI server and the HTTP endpoint.
pub(crate) struct Enforcement {
    pub enforcer: PolicyEnforcer,
    /// Number of the latest sync request.
    requested: AtomicU64,
    wake: Notify,
    /// Number of the latest request a committed sync covered.
    done: watch::Sender<u64>,
    metrics: Arc<Metrics>,
}

impl Enforcement {
    pub(crate) fn new(deps: PolicyDeps, metrics: Arc<Metrics>) -> Self {
        Self {
            enforcer: PolicyEnforcer::new(deps.source, deps.dataplane),
            requested: AtomicU64::new(0),
            wake: Notify::new(),
            done: watch::channel(0).0,
            metrics,
        }
    }

    /// The policy task: syncs at start (once the source listed), on every change,
    /// on request, every [`RESYNC`], and retries failures with backoff.
    pub(crate) async fn run(self: Arc<Self>, shared: Arc<Shared>) {
        let mut changes = self.enforcer.source().changes();
        let mut shutdown = shared.shutdown.clone();
        let mut retry = RETRY.delays();
        let mut pause = RESYNC;
        let mut quiet_resyncs = 0u32;
        loop {
            let ticket = self.requested.load(Ordering::SeqCst);
            // Changes until now are covered by the sync below.
            while let Some(Some(())) = changes.next().now_or_never() {}
            if self.enforcer.source().is_synced() {
                let local = shared.engine.with_state(PolicyEnforcer::local_assignments);
                let report = self.enforcer.sync(&local).await;
                self.record(&report);
                match report.result {
                    Ok(()) => {
                        self.done.send_modify(|d| *d = (*d).max(ticket));
                        retry.reset();
                        pause = RESYNC;
                    }
                    Err(e) => {
                        pause = retry.next_delay();
                        tracing::warn!(error = %e, retry_in = ?pause, "network policy sync failed");
                    }
                }
            }
            let changed = async {
                if changes.next().await.is_none() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = changed => {}
                _ = tokio::time::sleep(pause) => {
                    quiet_resyncs += 1;
                    if quiet_resyncs >= FULL_RESYNC_EVERY {
                        quiet_resyncs = 0;
                        self.enforcer.forget_programmed().await;
                    }
                }
                _ = stopped(&mut shutdown) => return,
            }
        }
    }

    fn record(&self, report: &hostnic_core::policy::SyncReport) {
        let m = &self.metrics;
        m.observe("hostnic_policy_sync_duration_seconds", &[], report.elapsed);
        match &report.result {
            Ok(()) => {
                m.inc("hostnic_policy_syncs_total", &[("result", "ok")]);
                if let Some(latency) = report.enforcement_latency {
                    m.observe("hostnic_policy_enforcement_latency_seconds", &[], latency);
                }
            }
            Err(_) => {
                m.inc("hostnic_policy_syncs_total", &[("result", "error")]);
                m.inc("hostnic_errors_total", &[("area", "policy")]);
            }
        }
    }

    /// Makes sure the pod's labels are known before its ADD plumbs anything: the
    /// source must have listed once, and the pod be in its cache or readable
    /// directly. Fails (for a retryable error) when that cannot happen by `deadline`.
    pub(crate) async fn learn(
        &self,
        namespace: &str,
        name: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(), String> {
        if !self.enforcer.source().is_synced() {
            let synced = tokio::time::timeout_at(deadline, self.enforcer.wait_synced()).await;
            if !matches!(synced, Ok(true)) {
                return Err("the network policy source has not listed policies yet".into());
            }
        }
        match tokio::time::timeout_at(deadline, self.enforcer.learn(namespace, name)).await {
            Ok(learned) => learned,
            Err(_) => Err(format!(
                "no answer about pod {} in time",
                PodRef::new(namespace, name)
            )),
        }
    }

    /// Asks for a sync and waits until one that started after this call committed.
    pub(crate) async fn sync_now(&self, deadline: tokio::time::Instant) -> Result<(), String> {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut done = self.done.subscribe();
        self.wake.notify_one();
        match tokio::time::timeout_at(deadline, done.wait_for(|d| *d >= ticket)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err("the policy task stopped".into()),
            Err(_) => Err(match self.enforcer.last_error() {
                Some(e) => format!("network policy not programmed in time: {e}"),
                None => "network policy not programmed in time".into(),
            }),
        }
    }

    /// Asks for a sync without waiting for it.
    pub(crate) fn request(&self) {
        self.requested.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
    }
}
