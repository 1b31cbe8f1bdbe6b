//! [`PolicyEnforcer`]: NetworkPolicy enforcement on one node, wired to the
//! policy ports as [`Engine`](crate::engine::Engine) is to the pool's.
//!
//! It owns the [`PolicyDataplane`] (one sync at a time), compiles the
//! [`PolicySource`]'s latest view with this node's own pod → address and veth
//! assignments, remembers pods learned by a direct lookup at ADD until the view
//! has them, and keeps what the last syncs did for `/v1/policy` and metrics.
//!
//! Runtime-agnostic like the engine: no timer, no task. The agent's policy task
//! decides *when* to sync (changes, requests, resyncs, retries with backoff) and
//! bounds every wait with the ADD's deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;

use super::{ClusterView, CompiledPolicy, LocalAssignment, LocalPod, PodRef, PolicyPod, compile};
use crate::api::introspect::{PodPolicy, PolicyStatus};
use crate::pool::NodeState;
use crate::ports::{PolicyDataplane, PolicyDataplaneError, PolicySource};

/// How long a pod learned by a direct lookup is kept while the source's view
/// has not delivered it (an ADD that failed later leaves one behind).
pub const LEARNED_TTL: Duration = Duration::from_secs(600);

/// Numbers of the last committed sync, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyGauges {
    /// NetworkPolicies.
    pub policies: usize,
    /// Namespaces.
    pub namespaces: usize,
    /// Pods policies can refer to.
    pub cluster_pods: usize,
    /// This node's pods under enforcement.
    pub local_pods: usize,
    /// Rules in per pod chains.
    pub rules: usize,
    /// Elements in peer sets.
    pub elements: usize,
}

/// What one [`PolicyEnforcer::sync`] did, for the caller's metrics and retries.
#[derive(Debug, Clone)]
pub struct SyncReport {
    /// How long the dataplane transaction took.
    pub elapsed: Duration,
    /// On success, from the arrival of the oldest change it enforced (if any)
    /// to the commit.
    pub enforcement_latency: Option<Duration>,
    /// The dataplane's answer.
    pub result: Result<(), PolicyDataplaneError>,
}

/// What the last syncs did, for `/v1/policy`.
#[derive(Debug, Default)]
struct SyncState {
    synced_rv: u64,
    syncs: u64,
    errors: u64,
    last_at: Option<SystemTime>,
    last_duration: Option<Duration>,
    last_stats: Option<super::ProgramStats>,
    last_error: Option<String>,
    compiled: Arc<CompiledPolicy>,
    gauges: PolicyGauges,
    /// Local pods isolated in some direction by the last committed sync.
    isolated_local: usize,
    /// Arrival of the oldest change taken from the source but not yet enforced.
    pending_since: Option<Instant>,
}

/// NetworkPolicy enforcement state shared by the policy task, the CNI server
/// and the HTTP endpoint.
pub struct PolicyEnforcer {
    source: Arc<dyn PolicySource>,
    dataplane: futures::lock::Mutex<Box<dyn PolicyDataplane>>,
    /// Pods learned by a direct lookup at ADD, until the source's view has them.
    learned: Mutex<BTreeMap<PodRef, (PolicyPod, Instant)>>,
    state: Mutex<SyncState>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PolicyEnforcer {
    /// Enforcement over `source` with `dataplane`.
    pub fn new(source: Arc<dyn PolicySource>, dataplane: Box<dyn PolicyDataplane>) -> Self {
        Self {
            source,
            dataplane: futures::lock::Mutex::new(dataplane),
            learned: Mutex::new(BTreeMap::new()),
            state: Mutex::new(SyncState::default()),
        }
    }

    /// The policy source (for its [`changes`](PolicySource::changes)).
    pub fn source(&self) -> &dyn PolicySource {
        self.source.as_ref()
    }

    /// This node's pods with Kubernetes names and confirmed plumbing.
    pub fn local_assignments(state: &NodeState) -> Vec<LocalAssignment> {
        state
            .attachments()
            .values()
            .filter(|a| !a.pod.namespace.is_empty() && !a.pod.name.is_empty())
            .filter_map(|a| {
                Some(LocalAssignment {
                    pod: PodRef::new(&a.pod.namespace, &a.pod.name),
                    ip: a.ip,
                    veth: a.plumbed.as_ref()?.host_veth.clone(),
                })
            })
            .collect()
    }

    /// Compiles the source's latest view with the `local` pods and programs it.
    /// One sync at a time: a second caller waits for the first.
    pub async fn sync(&self, local: &[LocalAssignment]) -> SyncReport {
        let mut dataplane = self.dataplane.lock().await;
        let (view, arrived) = self.source.take_view();
        if let Some(a) = arrived {
            let mut state = lock(&self.state);
            state.pending_since = Some(state.pending_since.map_or(a, |p| p.min(a)));
        }
        let (pods, local_pods) = {
            let mut learned = lock(&self.learned);
            let in_view: BTreeSet<&PodRef> = view.pods.iter().map(|p| &p.pod).collect();
            learned.retain(|k, (_, at)| !in_view.contains(k) && at.elapsed() < LEARNED_TTL);
            compile_inputs(&view, &learned, local)
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
        match result {
            Ok(programmed) => {
                let enforcement_latency = state.pending_since.take().map(|s| s.elapsed());
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
                SyncReport {
                    elapsed,
                    enforcement_latency,
                    result: Ok(()),
                }
            }
            Err(e) => {
                state.errors += 1;
                state.last_error = Some(e.to_string());
                SyncReport {
                    elapsed,
                    enforcement_latency: None,
                    result: Err(e),
                }
            }
        }
    }

    /// Makes the next sync check what the kernel really has (see
    /// [`PolicyDataplane::forget`]).
    pub async fn forget_programmed(&self) {
        self.dataplane.lock().await.forget();
    }

    /// Waits until the source has listed everything once; false if its change
    /// stream ended first. The caller bounds the wait.
    pub async fn wait_synced(&self) -> bool {
        let mut changes = self.source.changes();
        while !self.source.is_synced() {
            if changes.next().await.is_none() {
                return self.source.is_synced();
            }
        }
        true
    }

    /// Makes sure the pod's labels are known before its ADD plumbs anything: the
    /// pod is in the source's cache, or learned before, or read directly now.
    /// Call it once the source is synced; the caller bounds the wait.
    pub async fn learn(&self, namespace: &str, name: &str) -> Result<(), String> {
        let key = PodRef::new(namespace, name);
        if self.source.cached_pod(namespace, name).is_some()
            || lock(&self.learned).contains_key(&key)
        {
            return Ok(());
        }
        match self.source.pod(namespace, name).await {
            Err(e) => Err(format!("looking up pod {key}: {e}")),
            Ok(None) => Err(format!("pod {key} is unknown to the API server")),
            Ok(Some(pod)) => {
                lock(&self.learned).insert(key, (pod, Instant::now()));
                Ok(())
            }
        }
    }

    /// Forgets a pod learned at ADD (its DEL came).
    pub fn forget(&self, namespace: &str, name: &str) {
        lock(&self.learned).remove(&PodRef::new(namespace, name));
    }

    /// The last sync's error, if it failed.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.state).last_error.clone()
    }

    /// Numbers of the last committed sync.
    pub fn gauges(&self) -> PolicyGauges {
        lock(&self.state).gauges.clone()
    }

    /// The `/v1/policy` document.
    pub fn status(&self) -> PolicyStatus {
        let s = lock(&self.state);
        let view = self.source.view();
        PolicyStatus {
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
            last_sync: s.last_stats,
            last_error: s.last_error.clone(),
        }
    }

    /// The last committed compiled policy.
    pub fn compiled(&self) -> Arc<CompiledPolicy> {
        lock(&self.state).compiled.clone()
    }

    /// The `/v1/policy/pods/{namespace}/{name}` document, if the last sync knew the pod.
    pub fn pod_policy(&self, pod: &PodRef) -> Option<PodPolicy> {
        crate::api::introspect::pod_policy(&self.compiled(), pod)
    }

    /// True when a policy of the pod's namespace selects it in the current view, or
    /// when its labels are unknown: then its ADD must wait for its chains. A pod no
    /// policy selects is isolated in neither direction, so every flow to and from it
    /// is allowed whether or not the sync that adds its address to peers' sets has
    /// run yet: its ADD only asks for that sync.
    pub fn selects(&self, namespace: &str, name: &str) -> bool {
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
    pub fn enforced(&self, namespace: &str, name: &str) -> bool {
        self.compiled()
            .pods
            .get(&PodRef::new(namespace, name))
            .is_some_and(|r| r.ingress.isolated || r.egress.isolated)
    }
}

/// The compiler's inputs: the view's pods with this node's pods at the agent's
/// addresses (the API server learns a pod's IP only after ADD), pods learned at
/// ADD that the view lacks, and no other pod claiming a local pod's address (a
/// stale status of a deleted pod).
fn compile_inputs(
    view: &ClusterView,
    learned: &BTreeMap<PodRef, (PolicyPod, Instant)>,
    local: &[LocalAssignment],
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
            LocalAssignment {
                pod: PodRef::new("x", "a"),
                ip: Ipv4Addr::new(10, 0, 0, 9),
                veth: "vnic-a".into(),
            },
            LocalAssignment {
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
