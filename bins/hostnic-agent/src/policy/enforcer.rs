//! The policy task and what ADD, DEL and the HTTP endpoint ask of it.
//!
//! One task owns the dataplane, so at most one sync is in flight. Requests are
//! numbered: an ADD records its pod, takes the next number and waits until a sync
//! that *started* after it (and so saw the pod) has committed. Bursts of changes
//! and requests coalesce into the next sync, which always takes the latest view.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hostnic_core::policy::{ClusterView, CompiledPolicy, PodRef, PolicyPod, compile};
use hostnic_linux::policy::{LocalPod, SyncStats};
use tokio::sync::{Notify, watch};

use super::{PolicyDataplane, PolicyDeps, PolicySource};
use crate::agent::stopped;
use crate::metrics::{Metrics, PolicyGauges};

/// How often the task syncs without being asked (catches pods reconcile removed).
const RESYNC: Duration = Duration::from_secs(30);
/// Every this many unasked resyncs, the dataplane forgets what it programmed and
/// checks the kernel (about every 5 minutes).
const FULL_RESYNC_EVERY: u32 = 10;
/// First retry delay after a failed sync (doubling up to [`RETRY_MAX`]).
const RETRY_MIN: Duration = Duration::from_millis(200);
/// Longest retry delay after failed syncs.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long a pod learned by a direct lookup is kept while the watch has not
/// delivered it (an ADD that failed later leaves one behind).
const LEARNED_TTL: Duration = Duration::from_secs(600);

/// A pod of this node as the agent assigned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalAssigned {
    /// The Kubernetes pod.
    pub pod: PodRef,
    /// The address the agent gave it.
    pub ip: Ipv4Addr,
    /// Its host veth.
    pub veth: String,
}

/// This node's pods with Kubernetes names, read from the engine at each sync.
pub(crate) type LocalPods = Box<dyn Fn() -> Vec<LocalAssigned> + Send + Sync>;

/// What the last syncs did, for `/v1/policy`.
#[derive(Debug, Default)]
struct SyncState {
    synced_rv: u64,
    syncs: u64,
    errors: u64,
    last_at: Option<SystemTime>,
    last_duration: Option<Duration>,
    last_stats: Option<SyncStats>,
    last_error: Option<String>,
    compiled: Arc<CompiledPolicy>,
    gauges: PolicyGauges,
    /// Local pods isolated in some direction by the last committed sync.
    isolated_local: usize,
}

/// NetworkPolicy enforcement state shared by the policy task, the server and HTTP.
pub(crate) struct Enforcer {
    source: Arc<dyn PolicySource>,
    dataplane: tokio::sync::Mutex<Box<dyn PolicyDataplane>>,
    /// Pods learned by a direct lookup at ADD, until the source's view has them.
    learned: Mutex<BTreeMap<PodRef, (PolicyPod, Instant)>>,
    /// Number of the latest sync request.
    requested: AtomicU64,
    wake: Notify,
    /// Number of the latest request a committed sync covered.
    done: watch::Sender<u64>,
    state: Mutex<SyncState>,
    metrics: Arc<Metrics>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The compiler's inputs: the view's pods with this node's pods at the agent's
/// addresses (the API server learns a pod's IP only after ADD), pods learned at
/// ADD that the view lacks, and no other pod claiming a local pod's address (a
/// stale status of a deleted pod).
fn compile_inputs(
    view: &ClusterView,
    learned: &BTreeMap<PodRef, (PolicyPod, Instant)>,
    local: &[LocalAssigned],
) -> (Vec<PolicyPod>, Vec<LocalPod>) {
    let mut pods: BTreeMap<PodRef, PolicyPod> = view
        .pods
        .iter()
        .map(|p| (p.pod.clone(), p.clone()))
        .collect();
    for (k, (p, _)) in learned {
        pods.entry(k.clone()).or_insert_with(|| p.clone());
    }
    let local_ips: BTreeSet<Ipv4Addr> = local.iter().map(|l| l.ip).collect();
    let local_refs: BTreeSet<&PodRef> = local.iter().map(|l| &l.pod).collect();
    for p in pods.values_mut() {
        if !local_refs.contains(&p.pod) && p.ip.is_some_and(|ip| local_ips.contains(&ip)) {
            p.ip = None;
        }
    }
    for l in local {
        if let Some(p) = pods.get_mut(&l.pod) {
            p.ip = Some(l.ip);
        }
    }
    let local_pods = local
        .iter()
        .map(|l| LocalPod {
            pod: l.pod.clone(),
            veth: l.veth.clone(),
        })
        .collect();
    (pods.into_values().collect(), local_pods)
}

impl Enforcer {
    pub(crate) fn new(deps: PolicyDeps, metrics: Arc<Metrics>) -> Self {
        Self {
            source: deps.source,
            dataplane: tokio::sync::Mutex::new(deps.dataplane),
            learned: Mutex::new(BTreeMap::new()),
            requested: AtomicU64::new(0),
            wake: Notify::new(),
            done: watch::channel(0).0,
            state: Mutex::new(SyncState::default()),
            metrics,
        }
    }

    /// The policy task: syncs at start (once the source listed), on every change,
    /// on request, every [`RESYNC`], and retries failures with backoff.
    pub(crate) async fn run(
        self: Arc<Self>,
        local: LocalPods,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut changes = self.source.subscribe();
        let mut pending_since: Option<Instant> = None;
        let mut retry: Option<Duration> = None;
        let mut quiet_resyncs = 0u32;
        loop {
            let ticket = self.requested.load(Ordering::SeqCst);
            changes.borrow_and_update();
            if self.source.is_synced() {
                match self.sync_once(&local, &mut pending_since).await {
                    Ok(()) => {
                        self.done.send_modify(|d| *d = (*d).max(ticket));
                        retry = None;
                    }
                    Err(e) => {
                        let delay = retry.map_or(RETRY_MIN, |d| (d * 2).min(RETRY_MAX));
                        tracing::warn!(error = %e, retry_in = ?delay, "network policy sync failed");
                        retry = Some(delay);
                    }
                }
            }
            let changed = async {
                if changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = changed => {}
                _ = tokio::time::sleep(retry.unwrap_or(RESYNC)) => {
                    quiet_resyncs += 1;
                    if quiet_resyncs >= FULL_RESYNC_EVERY {
                        quiet_resyncs = 0;
                        self.dataplane.lock().await.forget();
                    }
                }
                _ = stopped(&mut shutdown) => return,
            }
        }
    }

    async fn sync_once(
        &self,
        local: &LocalPods,
        pending_since: &mut Option<Instant>,
    ) -> Result<(), String> {
        let mut dataplane = self.dataplane.lock().await;
        let (view, arrived) = self.source.take_view();
        if let Some(a) = arrived {
            *pending_since = Some(pending_since.map_or(a, |p| p.min(a)));
        }
        let local = local();
        let (pods, local_pods) = {
            let mut learned = lock(&self.learned);
            let in_view: BTreeSet<&PodRef> = view.pods.iter().map(|p| &p.pod).collect();
            learned.retain(|k, (_, at)| !in_view.contains(k) && at.elapsed() < LEARNED_TTL);
            compile_inputs(&view, &learned, &local)
        };
        let compiled = compile(&pods, &view.namespaces, &view.policies);
        let started = Instant::now();
        let result = dataplane.sync(&compiled, &local_pods).await;
        let elapsed = started.elapsed();
        drop(dataplane);
        let mut state = lock(&self.state);
        state.syncs += 1;
        state.last_at = Some(SystemTime::now());
        state.last_duration = Some(elapsed);
        self.metrics
            .observe("hostnic_policy_sync_duration_seconds", &[], elapsed);
        match result {
            Ok(programmed) => {
                self.metrics
                    .inc("hostnic_policy_syncs_total", &[("result", "ok")]);
                if let Some(since) = pending_since.take() {
                    self.metrics.observe(
                        "hostnic_policy_enforcement_latency_seconds",
                        &[],
                        since.elapsed(),
                    );
                }
                state.synced_rv = state.synced_rv.max(view.resource_version);
                state.last_stats = Some(programmed.stats);
                state.last_error = None;
                state.gauges = PolicyGauges {
                    policies: view.policies.len(),
                    namespaces: view.namespaces.len(),
                    cluster_pods: pods.len(),
                    local_pods: local
                        .iter()
                        .filter(|l| compiled.pods.contains_key(&l.pod))
                        .count(),
                    rules: programmed.rules,
                    elements: programmed.elements,
                };
                state.isolated_local = local
                    .iter()
                    .filter_map(|l| compiled.pods.get(&l.pod))
                    .filter(|r| r.ingress.isolated || r.egress.isolated)
                    .count();
                state.compiled = Arc::new(compiled);
                Ok(())
            }
            Err(e) => {
                self.metrics
                    .inc("hostnic_policy_syncs_total", &[("result", "error")]);
                self.metrics
                    .inc("hostnic_errors_total", &[("area", "policy")]);
                state.errors += 1;
                state.last_error = Some(e.to_string());
                Err(e.to_string())
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
        if !self.source.is_synced() {
            let mut rx = self.source.subscribe();
            while !self.source.is_synced() {
                match tokio::time::timeout_at(deadline, rx.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => {
                        return Err("the network policy source has not listed policies yet".into());
                    }
                }
            }
        }
        let key = PodRef::new(namespace, name);
        if self.source.cached_pod(namespace, name).is_some()
            || lock(&self.learned).contains_key(&key)
        {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, self.source.pod(namespace, name)).await {
            Err(_) => Err(format!("no answer about pod {key} in time")),
            Ok(Err(e)) => Err(format!("looking up pod {key}: {e}")),
            Ok(Ok(None)) => Err(format!("pod {key} is unknown to the API server")),
            Ok(Ok(Some(pod))) => {
                lock(&self.learned).insert(key, (pod, Instant::now()));
                Ok(())
            }
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
            Err(_) => {
                let last = lock(&self.state).last_error.clone();
                Err(match last {
                    Some(e) => format!("network policy not programmed in time: {e}"),
                    None => "network policy not programmed in time".into(),
                })
            }
        }
    }

    /// Asks for a sync without waiting for it.
    pub(crate) fn request(&self) {
        self.requested.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Forgets a pod learned at ADD (its DEL came).
    pub(crate) fn forget(&self, namespace: &str, name: &str) {
        lock(&self.learned).remove(&PodRef::new(namespace, name));
    }

    /// Gauges for `/metrics`.
    pub(crate) fn gauges(&self) -> PolicyGauges {
        lock(&self.state).gauges.clone()
    }

    /// The `/v1/policy` document.
    pub(crate) fn status(&self) -> crate::introspect::PolicyStatus {
        let s = lock(&self.state);
        let view = self.source.view();
        crate::introspect::PolicyStatus {
            enabled: true,
            source_synced: self.source.is_synced(),
            policies: view.policies.len(),
            namespaces: view.namespaces.len(),
            cluster_pods: view.pods.len(),
            local_pods: s.gauges.local_pods,
            isolated_local_pods: s.isolated_local,
            rules: s.gauges.rules,
            set_elements: s.gauges.elements,
            source_resource_version: view.resource_version,
            synced_resource_version: s.synced_rv,
            syncs: s.syncs,
            sync_errors: s.errors,
            last_sync_at_ms: s.last_at.map(|t| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as u64
            }),
            last_sync_duration_ms: s.last_duration.map(|d| d.as_secs_f64() * 1000.0),
            last_sync: s
                .last_stats
                .as_ref()
                .map(|st| crate::introspect::PolicySyncStats {
                    commands: st.commands,
                    elements_added: st.elements_added,
                    elements_removed: st.elements_removed,
                    chains_written: st.chains_written,
                    chains_deleted: st.chains_deleted,
                    sets_created: st.sets_created,
                    sets_deleted: st.sets_deleted,
                }),
            last_error: s.last_error.clone(),
        }
    }

    /// The last committed compiled policy.
    pub(crate) fn compiled(&self) -> Arc<CompiledPolicy> {
        lock(&self.state).compiled.clone()
    }

    /// True when a policy of the pod's namespace selects it in the current view, or
    /// when its labels are unknown: then its ADD must wait for its chains. A pod no
    /// policy selects is isolated in neither direction, so every flow to and from it
    /// is allowed whether or not the sync that adds its address to peers' sets has
    /// run yet: its ADD only asks for that sync.
    pub(crate) fn selects(&self, namespace: &str, name: &str) -> bool {
        let labels = match self.source.cached_pod(namespace, name) {
            Some(pod) => pod.labels,
            None => match lock(&self.learned).get(&PodRef::new(namespace, name)) {
                Some((pod, _)) => pod.labels.clone(),
                None => return true,
            },
        };
        self.source
            .view()
            .policies
            .iter()
            .any(|p| p.metadata.namespace == namespace && p.spec.pod_selector.matches(&labels))
    }

    /// True when the last committed sync isolated the pod in some direction: it has
    /// chains a DEL should see removed.
    pub(crate) fn enforced(&self, namespace: &str, name: &str) -> bool {
        self.compiled()
            .pods
            .get(&PodRef::new(namespace, name))
            .is_some_and(|r| r.ingress.isolated || r.egress.isolated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, ip: Option<[u8; 4]>) -> PolicyPod {
        PolicyPod {
            pod: PodRef::new(ns, name),
            labels: BTreeMap::new(),
            ip: ip.map(Ipv4Addr::from),
            ports: Vec::new(),
        }
    }

    #[test]
    fn local_pods_take_the_agents_address_and_stale_claims_lose_it() {
        let view = ClusterView {
            pods: vec![
                // Kubelet has not reported an IP yet.
                pod("x", "a", None),
                // A deleted pod whose status still names the address now local.
                pod("x", "old", Some([10, 0, 0, 9])),
                pod("y", "remote", Some([10, 0, 1, 1])),
            ],
            ..ClusterView::default()
        };
        let mut learned = BTreeMap::new();
        learned.insert(
            PodRef::new("x", "new"),
            (pod("x", "new", None), Instant::now()),
        );
        let local = vec![
            LocalAssigned {
                pod: PodRef::new("x", "a"),
                ip: Ipv4Addr::new(10, 0, 0, 9),
                veth: "vnic-a".into(),
            },
            LocalAssigned {
                pod: PodRef::new("x", "new"),
                ip: Ipv4Addr::new(10, 0, 0, 10),
                veth: "vnic-new".into(),
            },
        ];
        let (pods, local_pods) = compile_inputs(&view, &learned, &local);
        let ips: BTreeMap<String, Option<Ipv4Addr>> =
            pods.iter().map(|p| (p.pod.to_string(), p.ip)).collect();
        assert_eq!(ips["x/a"], Some(Ipv4Addr::new(10, 0, 0, 9)));
        assert_eq!(ips["x/new"], Some(Ipv4Addr::new(10, 0, 0, 10)));
        assert_eq!(ips["x/old"], None);
        assert_eq!(ips["y/remote"], Some(Ipv4Addr::new(10, 0, 1, 1)));
        assert_eq!(local_pods.len(), 2);
        assert_eq!(local_pods[1].veth, "vnic-new");
    }
}
