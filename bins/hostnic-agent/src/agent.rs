//! Startup and the state shared by the agent's tasks.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hostnic_core::engine::{Engine, PoolRound};
use hostnic_core::ports::{Clock, CloudNetwork, CloudNics, HostNetwork, PodSource};
use hostnic_core::reconcile::ReconcileReport;
use hostnic_core::types::{Instance, InstanceId, NodePlumbing, PodInfo, Vxnet};
use tokio::sync::{Notify, watch};

use crate::metrics::{Gauges, Metrics};
use crate::policy::enforcer::{Enforcer, LocalAssigned};
use crate::settings::Settings;
use crate::store::FileStore;
use crate::{Deps, cniconf, http, pending, pool_loop, server};

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The state directory or the checkpoint could not be used.
    #[error("state directory {path}: {message}")]
    State {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The configuration does not fit the cloud (a vxnet that does not exist…).
    #[error("{0}")]
    Config(String),
    /// A socket could not be bound.
    #[error("cannot listen on {what}: {source}")]
    Listen {
        /// Socket path or address.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The node's identity, as resolved from the cloud at start.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub instance: Instance,
    pub vxnets: Vec<Vxnet>,
    pub node: NodePlumbing,
}

/// What the agent's tasks share.
pub(crate) struct Shared<C, H, K> {
    pub engine: Engine<C, H, K, FileStore>,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub identity: Identity,
    pub pods: Option<Arc<dyn PodSource>>,
    /// Where capacity and NIC shortages are reported, if anywhere.
    pub reporter: Option<Arc<dyn crate::NodeReporter>>,
    /// NetworkPolicy enforcement, when on.
    pub policy: Option<Arc<Enforcer>>,
    /// Wakes the pool loop (ADD found the pool empty, DEL, pod pending, NIC link).
    pub pool_wake: Notify,
    /// Woken after every pool round (ADDs waiting for a NIC).
    pub round_done: Notify,
    /// Runs a reconcile now (one of the node's NIC links vanished).
    pub reconcile_wake: Notify,
    /// ADDs currently waiting for a NIC.
    pub waiting_adds: AtomicU32,
    /// Pods the pod source reports pending (scheduled, no sandbox yet).
    pub pending_pods: AtomicU32,
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

impl<C, H, K> Shared<C, H, K>
where
    C: CloudNics + CloudNetwork + 'static,
    H: HostNetwork + 'static,
    K: Clock + 'static,
{
    /// Demand for the pool: waiting ADDs and pending pods.
    pub fn update_demand(&self) {
        let demand =
            self.waiting_adds.load(Ordering::SeqCst) + self.pending_pods.load(Ordering::SeqCst);
        self.engine.set_demand(demand);
    }

    /// Pods from the pod source, when it is authoritative and answers.
    pub async fn authoritative_pods(&self) -> Option<Vec<PodInfo>> {
        let source = self.pods.as_ref()?;
        match source.pods().await {
            Ok(pods) => {
                let pending = pods.iter().filter(|p| p.pending).count() as u32;
                self.pending_pods.store(pending, Ordering::SeqCst);
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

    /// Recomputes readiness: a NIC is ready, or one can be created (the cloud answers
    /// and the node is not full). Writes the conflist the first time it is ready.
    pub fn refresh_readiness(&self) {
        let now = self.engine.clock().now();
        let (free, held, max) = self.engine.with_state(|s| {
            let c = s.usage_counts(now);
            (
                c.free,
                c.assigned + c.cooling + c.preparing + c.creating,
                s.config().max_nics,
            )
        });
        let ready = free > 0 || (self.cloud_ok.load(Ordering::SeqCst) && held < max);
        let was = self.ready.swap(ready, Ordering::SeqCst);
        if ready && !was {
            match cniconf::install(&self.settings) {
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
        let now = self.engine.clock().now();
        let (c, max, min_free, pods) = self.engine.with_state(|s| {
            (
                s.usage_counts(now),
                s.config().max_nics,
                s.config().min_free,
                s.attachments().len() as u32,
            )
        });
        let demand =
            self.waiting_adds.load(Ordering::SeqCst) + self.pending_pods.load(Ordering::SeqCst);
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
            target: min_free + demand,
            max_nics: max,
            pods,
            ready: self.ready.load(Ordering::SeqCst),
            policy: self.policy.as_ref().map(|p| p.gauges()),
        }
    }
}

/// This node's pods with Kubernetes names and confirmed plumbing, for policy.
fn local_assigned<C, H, K>(shared: &Shared<C, H, K>) -> Vec<LocalAssigned>
where
    C: CloudNics + CloudNetwork + 'static,
    H: HostNetwork + 'static,
    K: Clock + 'static,
{
    shared.engine.with_state(|s| {
        s.attachments()
            .values()
            .filter(|a| !a.pod.namespace.is_empty() && !a.pod.name.is_empty())
            .filter_map(|a| {
                Some(LocalAssigned {
                    pod: hostnic_core::policy::PodRef::new(&a.pod.namespace, &a.pod.name),
                    ip: a.ip,
                    veth: a.plumbed.as_ref()?.host_veth.clone(),
                })
            })
            .collect()
    })
}

/// Stops a task when dropped (every way out of [`run`]).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits until `rx` says shutdown; returns at once if it already did.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Retries `f` with doubling delays (capped) until it succeeds or shutdown.
async fn retry<T, E: std::fmt::Display, F, Fut>(
    what: &str,
    shutdown: &mut watch::Receiver<bool>,
    mut f: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match f().await {
            Ok(v) => return Some(v),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "{what} failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(shutdown) => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn resolve_identity<C: CloudNetwork>(
    cloud: &C,
    settings: &Settings,
    id: &InstanceId,
) -> Result<Identity, String> {
    let instance = cloud
        .describe_instance(id)
        .await
        .map_err(|e| e.to_string())?;
    let wanted = if settings.vxnets.is_empty() {
        vec![instance.primary_vxnet.clone()]
    } else {
        settings.vxnets.clone()
    };
    let found = cloud
        .describe_vxnets(&wanted)
        .await
        .map_err(|e| e.to_string())?;
    // Keep the configured order of preference.
    let mut vxnets = Vec::new();
    for id in &wanted {
        match found.iter().find(|v| &v.id == id) {
            Some(v) => vxnets.push(v.clone()),
            None => return Err(format!("pod vxnet {id} does not exist")),
        }
    }
    let vpc_cidrs = cloud
        .vpc_cidrs(&vxnets[0].id)
        .await
        .map_err(|e| e.to_string())?;
    let node = NodePlumbing {
        primary_nic: instance.primary_nic.clone(),
        primary_ip: instance.primary_ip,
        vpc_cidrs,
        snat_exclusions: settings.snat_exclusions.clone(),
        external_snat: settings.external_snat,
    };
    Ok(Identity {
        instance,
        vxnets,
        node,
    })
}

pub(crate) async fn run<C, H, K>(
    deps: Deps<C, H, K>,
    settings: Settings,
    instance_id: InstanceId,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError>
where
    C: CloudNics + CloudNetwork + 'static,
    H: HostNetwork + 'static,
    K: Clock + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
    }
    let mut stop = stop_rx.clone();
    // The HTTP endpoint first: liveness and metrics while the cloud may still be away.
    let slot: http::Slot<C, H, K> = Arc::new(std::sync::OnceLock::new());
    let http = AbortOnDrop(
        http::spawn(settings.metrics_addr, deps.metrics.clone(), slot.clone())
            .await
            .map_err(|(what, source)| AgentError::Listen { what, source })?,
    );
    let state_err = |message: String| AgentError::State {
        path: settings.state_dir.clone(),
        message,
    };
    let store = FileStore::new(&settings.state_dir).map_err(|e| state_err(e.to_string()))?;

    tracing::info!(instance = %instance_id, "resolving the node's identity");
    let Some(identity) = retry("resolving the instance", &mut stop, || {
        resolve_identity(&deps.cloud, &settings, &instance_id)
    })
    .await
    else {
        return Ok(());
    };
    tracing::info!(
        primary_nic = %identity.instance.primary_nic,
        primary_ip = %identity.instance.primary_ip,
        vxnets = ?identity.vxnets.iter().map(|v| v.id.to_string()).collect::<Vec<_>>(),
        "node identity"
    );
    let Some(report) = retry("node setup", &mut stop, || {
        deps.host.ensure_node(&identity.node)
    })
    .await
    else {
        return Ok(());
    };
    if report.default_route_restored {
        tracing::warn!("the node's default route was missing and has been restored");
        deps.metrics
            .inc("hostnic_default_route_restored_total", &[]);
    }

    let engine = Engine::open(
        deps.cloud,
        deps.host,
        deps.clock,
        store,
        settings.pool.clone(),
        instance_id.clone(),
        identity.vxnets.clone(),
    )
    .map_err(|e| state_err(format!("cannot use the checkpoint: {e}")))?;

    let policy = deps
        .policy
        .map(|p| Arc::new(Enforcer::new(p, deps.metrics.clone())));
    let shared = Arc::new(Shared {
        engine,
        settings,
        metrics: deps.metrics,
        identity,
        pods: deps.pods,
        reporter: deps.reporter,
        policy,
        pool_wake: Notify::new(),
        round_done: Notify::new(),
        reconcile_wake: Notify::new(),
        waiting_adds: AtomicU32::new(0),
        pending_pods: AtomicU32::new(0),
        cloud_ok: AtomicBool::new(true),
        ready: AtomicBool::new(false),
        plumbing: tokio::sync::RwLock::new(()),
        last_round: Mutex::new(None),
        last_reconcile: Mutex::new(None),
        started: Instant::now(),
        shutdown: stop_rx.clone(),
    });

    // Startup reconcile: settles what a crash left in flight before anything is served.
    let s = shared.clone();
    let reconciled = retry("startup reconcile", &mut stop, || {
        let s = s.clone();
        async move { pool_loop::reconcile_once(&s, true).await }
    })
    .await;
    if reconciled.is_none() {
        return Ok(());
    }
    crate::recovery::report(&shared);
    // Pending DELs before the socket serves ADDs (an ADD of a reused id must not race them).
    pending::replay(&shared).await;

    let _ = slot.set(shared.clone());
    let pool = tokio::spawn(pool_loop::pool_task(shared.clone()));
    let periodic = tokio::spawn(pool_loop::periodic_task(shared.clone()));
    let events = deps
        .nic_events
        .map(|events| tokio::spawn(pool_loop::event_task(shared.clone(), events)));
    let policy = shared.policy.clone().map(|enforcer| {
        let s = shared.clone();
        let local = Box::new(move || local_assigned(&s));
        tokio::spawn(enforcer.run(local, stop_rx.clone()))
    });
    let changes = shared
        .pods
        .clone()
        .map(|source| tokio::spawn(pool_loop::pod_event_task(shared.clone(), source)));

    let served = server::serve(shared.clone()).await;

    // Shutdown: the server has drained; stop the loops (the pool stays as it is).
    let _ = stop_tx.send(true);
    // Let a running pool round finish (its jobs then end recorded), within reason.
    let mut pool = pool;
    if tokio::time::timeout(Duration::from_secs(10), &mut pool)
        .await
        .is_err()
    {
        pool.abort();
    }
    for task in [Some(periodic), events, changes, policy]
        .into_iter()
        .flatten()
    {
        task.abort();
    }
    drop(http);
    // The veths of deleted pods still waiting for their batched deletion go now (a
    // crash leaves them to the next start's first reaping).
    match tokio::time::timeout(Duration::from_secs(10), shared.engine.host().settle()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "deleting the veths of deleted pods"),
        Err(_) => tracing::warn!("deleting the veths of deleted pods took over 10 s; left"),
    }
    tracing::info!("agent stopped; NICs, checkpoint and CNI configuration left in place");
    served
}
