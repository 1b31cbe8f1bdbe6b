//! [`KubePolicySource`]: what NetworkPolicy enforcement needs from the API server,
//! kept from three cluster-wide watches (NetworkPolicies, Namespaces, Pods) and
//! reduced to the core's [`ClusterView`].
//!
//! Pods are watched cluster-wide because a policy may name any pod of any
//! namespace as a peer; each is reduced to labels, IP and container ports
//! ([`policy_pod`]). Host-network and finished pods are left out (they are
//! nobody's peer by pod IP); a pod without an IP yet is kept (it can be selected).
//!
//! The view's `resource_version` is the version up to which *every* watch has
//! delivered every change: each watch's progress comes from its list, events and
//! bookmarks, and the view takes the slowest. With one global version counter
//! (etcd, the fake API server) this means the view includes every write up to it,
//! whatever order the three streams arrive in. (A real API server sends bookmarks
//! about once a minute, so a quiet kind holds the version back that long.)

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use hostnic_core::backoff::{Delays, ExponentialBackoff};
use hostnic_core::policy::{
    ClusterView, ContainerPort, NetworkPolicy, PodRef, PolicyNamespace, PolicyPod, Protocol,
};
use hostnic_core::ports::{PolicySource, PolicySourceError};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy as KubeNetworkPolicy;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::K8sError;

/// How long [`KubePolicySource::pod`] waits for the API server.
const GET_TIMEOUT: Duration = Duration::from_secs(5);
/// First retry delay of a failed list or watch.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Server-side duration of one watch request (kube's default).
const WATCH_TIMEOUT_SECS: u32 = 290;

/// The compiler's view of a pod, or `None` when no policy can concern it:
/// host-network pods and pods that finished (phase `Succeeded`/`Failed`).
pub fn policy_pod(pod: &Pod) -> Option<PolicyPod> {
    let spec = crate::pods::pod_network_spec(pod)?;
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
    let ports = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let protocol = match p.protocol.as_deref() {
                None | Some("TCP") => Protocol::Tcp,
                Some("UDP") => Protocol::Udp,
                Some("SCTP") => Protocol::Sctp,
                Some(_) => return None,
            };
            Some(ContainerPort {
                name: p.name.clone(),
                container_port: u16::try_from(p.container_port).ok()?,
                protocol,
            })
        })
        .collect();
    Some(PolicyPod {
        pod: PodRef::new(pod.namespace().unwrap_or_default(), pod.name_any()),
        labels: pod.labels().clone(),
        ip,
        ports,
    })
}

/// The compiler's view of a namespace.
pub fn policy_namespace(ns: &Namespace) -> PolicyNamespace {
    PolicyNamespace {
        name: ns.name_any(),
        labels: ns.labels().clone(),
    }
}

/// A NetworkPolicy in the core's model (its JSON deserializes as is), or `None`
/// if it does not.
pub fn core_policy(np: &KubeNetworkPolicy) -> Option<NetworkPolicy> {
    let value = serde_json::to_value(np).ok()?;
    match serde_json::from_value(value) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(policy = %np.name_any(), error = %e, "NetworkPolicy not understood; ignored");
            None
        }
    }
}

type Key = (String, String);

/// The three collections, as the watches last reported them.
#[derive(Debug, Default)]
struct Inner {
    policies: BTreeMap<Key, NetworkPolicy>,
    namespaces: BTreeMap<String, PolicyNamespace>,
    pods: BTreeMap<Key, PolicyPod>,
    /// Per watch (policies, namespaces, pods): the version up to which it has
    /// delivered every change (from the list, events and bookmarks).
    progress: [u64; 3],
    /// The highest version seen on any watch.
    highest: u64,
    /// The view of the current collections, built on demand.
    view: Option<Arc<ClusterView>>,
    /// Arrival of the oldest change not yet handed out by [`KubePolicySource::take_view`].
    oldest_untaken: Option<Instant>,
}

/// State shared by the watch tasks and the handle.
#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    /// Initial list done, per watch: policies, namespaces, pods.
    synced: [AtomicBool; 3],
    /// Bumped on every change.
    changes: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the collections, then records the change (at `arrived`), the
    /// watch's progress to `rv`, and wakes subscribers.
    fn change(&self, index: usize, rv: u64, arrived: Instant, f: impl FnOnce(&mut Inner)) {
        {
            let mut inner = self.lock();
            f(&mut inner);
            inner.progress[index] = inner.progress[index].max(rv);
            inner.highest = inner.highest.max(rv);
            inner.view = None;
            inner.oldest_untaken.get_or_insert(arrived);
        }
        self.changes.send_modify(|n| *n += 1);
    }

    /// A bookmark: the watch is current up to `rv`, nothing changed. The view's
    /// version moves only when this raises the slowest watch.
    fn progress(&self, index: usize, rv: u64) {
        let moved = {
            let mut inner = self.lock();
            let before = inner.progress.iter().copied().min().unwrap_or(0);
            inner.progress[index] = inner.progress[index].max(rv);
            inner.highest = inner.highest.max(rv);
            let after = inner.progress.iter().copied().min().unwrap_or(0);
            if after != before {
                inner.view = None;
            }
            after != before
        };
        if moved {
            self.changes.send_modify(|n| *n += 1);
        }
    }
}

/// NetworkPolicies, Namespaces and Pods of the whole cluster, from watches that
/// retry with backoff in background tasks; nothing here blocks while the API
/// server is unreachable. Dropping the handle stops the watches.
pub struct KubePolicySource {
    pods_api: Api<Pod>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for KubePolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubePolicySource")
            .field("synced", &self.is_synced())
            .finish_non_exhaustive()
    }
}

impl KubePolicySource {
    /// Starts the three watches. Must be called inside a Tokio runtime.
    pub fn spawn(client: Client) -> Self {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            synced: Default::default(),
            changes: watch::channel(0).0,
        });
        let tasks = vec![
            tokio::spawn(watch_kind(
                Api::<KubeNetworkPolicy>::all(client.clone()),
                shared.clone(),
                0,
                |np| core_policy(np).map(|p| Entry::Policy(ns_key(np), p)),
                |np| EntryKey::Policy(ns_key(np)),
            )),
            tokio::spawn(watch_kind(
                Api::<Namespace>::all(client.clone()),
                shared.clone(),
                1,
                |ns| Some(Entry::Namespace(policy_namespace(ns))),
                |ns| EntryKey::Namespace(ns.name_any()),
            )),
            tokio::spawn(watch_kind(
                Api::<Pod>::all(client.clone()),
                shared.clone(),
                2,
                |p| policy_pod(p).map(|pp| Entry::Pod(ns_key(p), pp)),
                |p| EntryKey::Pod(ns_key(p)),
            )),
        ];
        Self {
            pods_api: Api::all(client),
            shared,
            tasks,
        }
    }

    /// True once all three watches completed their initial list.
    pub fn is_synced(&self) -> bool {
        self.shared.synced.iter().all(|s| s.load(Ordering::Acquire))
    }

    /// Waits until [`is_synced`](Self::is_synced) (or `timeout` passes); true if synced.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut rx = self.subscribe();
        tokio::time::timeout(timeout, async {
            while !self.is_synced() {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok()
            && self.is_synced()
    }

    /// A receiver whose value changes on every change of the view.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// The current view (cheap when nothing changed since the last call).
    pub fn view(&self) -> Arc<ClusterView> {
        let mut inner = self.shared.lock();
        if let Some(v) = &inner.view {
            return v.clone();
        }
        let view = Arc::new(ClusterView {
            policies: inner.policies.values().cloned().collect(),
            namespaces: inner.namespaces.values().cloned().collect(),
            pods: inner.pods.values().cloned().collect(),
            resource_version: inner.progress.iter().copied().min().unwrap_or(0),
        });
        inner.view = Some(view.clone());
        view
    }

    /// The current view and when the oldest change in it that no earlier
    /// `take_view` returned arrived from the API server (`None`: no such change).
    /// For the one consumer that measures event-to-enforcement latency.
    pub fn take_view(&self) -> (Arc<ClusterView>, Option<Instant>) {
        let view = self.view();
        let arrived = self.shared.lock().oldest_untaken.take();
        (view, arrived)
    }

    /// The highest `resourceVersion` seen on any of the three watches (the view's
    /// own version is that of the slowest watch, see [`ClusterView::resource_version`]).
    pub fn highest_resource_version(&self) -> u64 {
        self.shared.lock().highest
    }

    /// One pod from the watch's cache.
    pub fn cached_pod(&self, namespace: &str, name: &str) -> Option<PolicyPod> {
        self.shared
            .lock()
            .pods
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// One pod read directly from the API server (`GET`), for a pod the watch has
    /// not delivered yet. `Ok(None)`: it does not exist, or no policy can concern it
    /// (host network, finished).
    pub async fn pod(&self, namespace: &str, name: &str) -> Result<Option<PolicyPod>, K8sError> {
        let api: Api<Pod> = Api::namespaced(self.pods_api.clone().into_client(), namespace);
        let action = format!("get pod {namespace}/{name}");
        match tokio::time::timeout(GET_TIMEOUT, api.get_opt(name)).await {
            Ok(Ok(pod)) => Ok(pod.as_ref().and_then(policy_pod)),
            Ok(Err(e)) => Err(K8sError::api(action, e)),
            Err(_) => Err(K8sError::Timeout {
                action,
                after: GET_TIMEOUT,
            }),
        }
    }
}

/// The core's policy source: the inherent methods, with the watch receiver as a
/// stream of changes.
#[async_trait]
impl PolicySource for KubePolicySource {
    fn is_synced(&self) -> bool {
        KubePolicySource::is_synced(self)
    }

    fn view(&self) -> Arc<ClusterView> {
        KubePolicySource::view(self)
    }

    fn take_view(&self) -> (Arc<ClusterView>, Option<Instant>) {
        KubePolicySource::take_view(self)
    }

    fn changes(&self) -> BoxStream<'static, ()> {
        let mut rx = self.subscribe();
        rx.borrow_and_update();
        futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            rx.borrow_and_update();
            Some(((), rx))
        })
        .boxed()
    }

    fn cached_pod(&self, namespace: &str, name: &str) -> Option<PolicyPod> {
        KubePolicySource::cached_pod(self, namespace, name)
    }

    async fn pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PolicyPod>, PolicySourceError> {
        KubePolicySource::pod(self, namespace, name)
            .await
            .map_err(|e| PolicySourceError {
                message: e.to_string(),
            })
    }
}

impl Drop for KubePolicySource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// An object of one of the three kinds, reduced.
enum Entry {
    Policy(Key, NetworkPolicy),
    Namespace(PolicyNamespace),
    Pod(Key, PolicyPod),
}

impl Entry {
    fn insert(self, inner: &mut Inner) {
        match self {
            Entry::Policy(k, p) => {
                inner.policies.insert(k, p);
            }
            Entry::Namespace(n) => {
                inner.namespaces.insert(n.name.clone(), n);
            }
            Entry::Pod(k, p) => {
                inner.pods.insert(k, p);
            }
        }
    }
}

/// Which object of the three kinds.
enum EntryKey {
    Policy(Key),
    Namespace(String),
    Pod(Key),
}

impl EntryKey {
    fn remove(self, inner: &mut Inner) {
        match self {
            EntryKey::Policy(k) => {
                inner.policies.remove(&k);
            }
            EntryKey::Namespace(n) => {
                inner.namespaces.remove(&n);
            }
            EntryKey::Pod(k) => {
                inner.pods.remove(&k);
            }
        }
    }
}

fn ns_key<K: Resource>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

fn rv_of<K: Resource>(obj: &K) -> u64 {
    obj.resource_version()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

/// Exponential backoff of one watch, logging the first failure of a streak.
struct Backoff {
    kind: String,
    delays: Delays,
}

impl Backoff {
    fn new(kind: String) -> Self {
        Self {
            kind,
            delays: ExponentialBackoff::new(BACKOFF_MIN, BACKOFF_MAX).delays(),
        }
    }

    /// Records a failure; returns how long to wait before retrying.
    fn failed(&mut self, e: &dyn std::fmt::Display) -> Duration {
        if !self.delays.failing() {
            tracing::warn!(kind = %self.kind, error = %e, "policy watch failed; retrying with backoff");
        }
        self.delays.next_delay()
    }

    fn succeeded(&mut self) {
        self.delays.reset();
    }
}

/// One watch loop: LIST, then WATCH from the list's version with bookmarks,
/// re-watching from the last version when a watch ends and listing again when the
/// version expired (410) or the server failed; errors back off exponentially. A
/// (re)list replaces the kind's collection at once (objects deleted meanwhile
/// vanish); events apply one by one; events and bookmarks advance the watch's
/// progress. `reduce` gives the entry to keep (`None`: forget the object), `key`
/// the entry to remove.
async fn watch_kind<K>(
    api: Api<K>,
    shared: Arc<Shared>,
    index: usize,
    reduce: fn(&K) -> Option<Entry>,
    key: fn(&K) -> EntryKey,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    let kind = K::plural(&Default::default()).into_owned();
    let mut backoff = Backoff::new(kind.clone());
    'list: loop {
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(e) => {
                let delay = backoff.failed(&e);
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        let mut version = list.metadata.resource_version.clone().unwrap_or_default();
        let list_rv = version.parse().unwrap_or(0);
        let fresh: Vec<Entry> = list.items.iter().filter_map(reduce).collect();
        shared.change(index, list_rv, Instant::now(), |inner| {
            match index {
                0 => inner.policies.clear(),
                1 => inner.namespaces.clear(),
                _ => inner.pods.clear(),
            }
            for e in fresh {
                e.insert(inner);
            }
        });
        if !shared.synced[index].swap(true, Ordering::AcqRel) {
            tracing::info!(%kind, "policy watch synced");
            // Waiters for `is_synced` learn of it now, not with the next event.
            shared.changes.send_modify(|n| *n += 1);
        }
        loop {
            let params = WatchParams::default().timeout(WATCH_TIMEOUT_SECS);
            let stream = match api.watch(&params, &version).await {
                Ok(stream) => stream,
                Err(kube::Error::Api(s)) if s.code == 410 => continue 'list,
                Err(e) => {
                    let delay = backoff.failed(&e);
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let now = Instant::now();
                match event {
                    Ok(WatchEvent::Added(obj) | WatchEvent::Modified(obj)) => {
                        let rv = rv_of(&obj);
                        match reduce(&obj) {
                            Some(e) => shared.change(index, rv, now, |inner| e.insert(inner)),
                            None => shared.change(index, rv, now, |inner| key(&obj).remove(inner)),
                        }
                        version = obj.resource_version().unwrap_or(version);
                    }
                    Ok(WatchEvent::Deleted(obj)) => {
                        shared.change(index, rv_of(&obj), now, |inner| key(&obj).remove(inner));
                        version = obj.resource_version().unwrap_or(version);
                    }
                    Ok(WatchEvent::Bookmark(b)) => {
                        shared.progress(index, b.metadata.resource_version.parse().unwrap_or(0));
                        version = b.metadata.resource_version;
                    }
                    Ok(WatchEvent::Error(status)) if status.code == 410 => continue 'list,
                    Ok(WatchEvent::Error(status)) => {
                        let delay = backoff.failed(&status.message);
                        tokio::time::sleep(delay).await;
                        continue 'list;
                    }
                    Err(e) => {
                        let delay = backoff.failed(&e);
                        tokio::time::sleep(delay).await;
                        break;
                    }
                }
                backoff.succeeded();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_pod_reduces_to_labels_ipv4_and_container_ports_of_all_containers() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "web", "namespace": "x", "labels": {"app": "web"}},
            "spec": {"containers": [
                {"name": "a", "ports": [{"name": "http", "containerPort": 80}]},
                {"name": "b", "ports": [{"containerPort": 53, "protocol": "UDP"},
                                        {"containerPort": 9, "protocol": "QUIC"}]},
            ]},
            "status": {"phase": "Running", "podIP": "fd00::5"},
        }));
        let reduced = policy_pod(&p).unwrap();
        assert_eq!(reduced.pod, PodRef::new("x", "web"));
        assert_eq!(reduced.labels["app"], "web");
        assert_eq!(reduced.ip, None, "an IPv6 address is not enforced");
        let ports: Vec<(u16, Protocol)> = reduced
            .ports
            .iter()
            .map(|p| (p.container_port, p.protocol))
            .collect();
        assert_eq!(ports, [(80, Protocol::Tcp), (53, Protocol::Udp)]);
        assert_eq!(reduced.ports[0].name.as_deref(), Some("http"));
    }

    #[test]
    fn host_network_and_finished_pods_are_nobodys_peer() {
        let host = pod(serde_json::json!({
            "metadata": {"name": "proxy", "namespace": "kube-system"},
            "spec": {"hostNetwork": true, "containers": []},
            "status": {"podIP": "192.168.0.2"},
        }));
        assert_eq!(policy_pod(&host), None);
        let done = pod(serde_json::json!({
            "metadata": {"name": "job", "namespace": "x"},
            "spec": {"containers": []},
            "status": {"phase": "Failed", "podIP": "10.0.0.9"},
        }));
        assert_eq!(policy_pod(&done), None);
    }
}
