//! [`Shared`]: what the agent's tasks (the CNI server, the pool and reconcile
//! loops, the event tasks, the policy task, the HTTP endpoint) share, and the
//! small decisions they take on it.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hostnic_core::engine::{Engine, PoolRound};
use hostnic_core::pool::Readiness;
use hostnic_core::ports::{Clock, Cloud, HostNetwork, NodeReporter, PodSource};
use hostnic_core::reconcile::{ReconcileReport, UsageCounts};
use hostnic_core::types::PodInfo;
use tokio::sync::{Notify, watch};

use crate::metrics::{Gauges, Metrics};
use crate::policy::Enforcement;
use crate::settings::Settings;
use crate::store::FileStore;
use hostnic_core::identity::NodeIdentity as Identity;

/// The engine as the agent runs it: ports chosen at start, behind `Arc<dyn …>`.
pub(crate) type AgentEngine =
    Engine<Arc<dyn Cloud>, Arc<dyn HostNetwork>, Arc<dyn Clock>, FileStore>;

/// What the agent's tasks share.
pub(crate) struct Shared {
    pub engine: AgentEngine,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub identity: Identity,
    pub pods: Option<Arc<dyn PodSource>>,
    /// Where capacity and NIC shortages are reported, if anywhere.
    pub reporter: Option<Arc<dyn NodeReporter>>,
    /// The QingCloud client, for its breaker and budget gauges.
    pub client: Option<hostnic_qingcloud::QingCloudClient>,
    /// Simulated seconds per real second (1 in production).
    pub time_scale: f64,
    /// NetworkPolicy enforcement, when on.
    pub policy: Option<Arc<Enforcement>>,
    /// Wakes the pool loop (ADD found the pool empty, DEL, pod pending, NIC link).
    pub pool_wake: Notify,
    /// Woken after every pool round (ADDs waiting for a NIC).
    pub round_done: Notify,
    /// Runs a reconcile now (one of the node's NIC links vanished).
    pub reconcile_wake: Notify,
    /// ADDs currently waiting for a NIC.
    pub waiting_adds: AtomicU32,
    /// Which attachments those ADDs are for (one that got its NIC and is being
    /// plumbed wants nothing more from the pool).
    pub waiting: Mutex<std::collections::BTreeSet<hostnic_core::types::AttachmentId>>,
    /// Pods the pod source reports pending (scheduled, no sandbox yet).
    pub pending_pods: AtomicU32,
    /// Which pods those are (`namespace`, `name`).
    pub pending: Mutex<std::collections::BTreeSet<(String, String)>>,
    /// The last pool round had no failure.
    pub cloud_ok: AtomicBool,
    /// The agent can serve an ADD (the conflist is written on the first `true`).
    pub ready: AtomicBool,
    /// Held shared by every plugin request while it calls the engine, exclusively by
    /// reconcile: a reconcile must not see an ADD's plumbing before the ADD recorded it
    /// (it would remove it as an orphan) nor a DEL's half-removed plumbing.
    pub plumbing: tokio::sync::RwLock<()>,
    pub last_round: Mutex<Option<PoolRound>>,
    pub last_reconcile: Mutex<Option<(ReconcileReport, u64)>>,
    pub started: Instant,
    pub shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// `d` of the agent's time (its settings, its constants) as real time: `d` in
    /// production, `d / K` on a time scale of K.
    pub fn real(&self, d: std::time::Duration) -> std::time::Duration {
        d.div_f64(self.time_scale)
    }

    /// The pool's usage now, its `max_nics` and the number of attachments.
    pub fn usage(&self) -> (UsageCounts, u32, u32) {
        let now = self.engine.clock().now();
        self.engine.with_state(|s| {
            (
                s.usage_counts(now),
                s.config().max_nics,
                s.attachments().len() as u32,
            )
        })
    }

    /// Whether the node can serve an ADD: the core's one rule, for `/readyz`,
    /// the conflist and CNI STATUS alike.
    pub fn readiness(&self) -> (Readiness, UsageCounts, u32) {
        let (counts, max, pods) = self.usage();
        let cloud_ok = self.cloud_ok.load(Ordering::SeqCst);
        let blocked = self.engine.with_state(|s| s.growth_blocked().cloned());
        (
            Readiness::of_pool(&counts, max, cloud_ok, blocked.as_ref()),
            counts,
            pods,
        )
    }

    /// NICs wanted soon: the core's rule on the waiting ADDs and pending pods.
    pub fn demand(&self) -> u32 {
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.is_empty() && pending.is_empty() {
            return 0;
        }
        self.engine.with_state(|s| s.demand(&waiting, &pending))
    }

    /// Demand for the pool: waiting ADDs and pending pods.
    pub fn update_demand(&self) {
        self.engine.set_demand(self.demand());
    }

    /// Pods from the pod source, when it is authoritative and answers.
    pub async fn authoritative_pods(&self) -> Option<Vec<PodInfo>> {
        let source = self.pods.as_ref()?;
        match source.pods().await {
            Ok(pods) => {
                let pending: std::collections::BTreeSet<(String, String)> = pods
                    .iter()
                    .filter(|p| p.pending)
                    .map(|p| (p.namespace.clone(), p.name.clone()))
                    .collect();
                self.pending_pods
                    .store(pending.len() as u32, Ordering::SeqCst);
                *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = pending;
                Some(pods)
            }
            Err(e) => {
                tracing::warn!(error = %e, "pod source unavailable; reconciling without pods");
                self.metrics
                    .inc("hostnic_errors_total", &[("area", "pods")]);
                None
            }
        }
    }

    /// Recomputes readiness; writes the conflist the first time the node is ready.
    pub fn refresh_readiness(&self) {
        let ready = self.readiness().0.is_ready();
        let was = self.ready.swap(ready, Ordering::SeqCst);
        if ready
            && was
            && self.settings.other_conflists == crate::settings::OtherConflists::MoveAside
            && !crate::cniconf::shadowing(&self.settings).is_empty()
        {
            // Written again after the first move (an old DaemonSet still running).
            let _ = crate::cniconf::move_aside(&self.settings);
        }
        if ready && !was {
            match crate::cniconf::install(&self.settings) {
                Ok(()) => tracing::info!(
                    dir = %self.settings.cni_conf_dir.display(),
                    "ready: CNI configuration written"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "cannot write the CNI configuration");
                    self.metrics
                        .inc("hostnic_errors_total", &[("area", "cniconf")]);
                    // Try again on the next round.
                    self.ready.store(false, Ordering::SeqCst);
                }
            }
        }
    }

    /// Gauges for `/metrics`.
    pub fn gauges(&self) -> Gauges {
        let (c, max, pods) = self.usage();
        let min_free = self.engine.with_state(|s| s.config().min_free);
        Gauges {
            nics: vec![
                ("free", c.free),
                ("assigned", c.assigned),
                ("cooling", c.cooling),
                ("preparing", c.preparing),
                ("retiring", c.retiring),
                ("creating", c.creating),
            ],
            free: c.free,
            target: min_free + self.demand(),
            max_nics: max,
            pods,
            ready: self.ready.load(Ordering::SeqCst),
            policy: self.policy.as_ref().map(|p| p.enforcer.gauges()),
            instance: Some(self.identity.instance.id.to_string()),
            shadowed: crate::cniconf::shadowing(&self.settings).len() as u32,
            cloud: self.client.as_ref().map(|c| c.gauges()),
            shortage: self
                .engine
                .with_state(|s| s.shortage().map(|s| s.cause.reason())),
            ..Gauges::default()
        }
    }
}
