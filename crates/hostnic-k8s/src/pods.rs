//! [`KubePods`]: the pods scheduled on this node, from a node-scoped watch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use hostnic_core::ports::{PodSource, PodSourceError};
use hostnic_core::types::{PodEvent, PodInfo};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long [`KubePods::pods`] waits for a direct LIST when the watch is not healthy.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// The field selector that limits every pod request to this node's pods.
pub fn node_field_selector(node: &str) -> String {
    format!("spec.nodeName={node}")
}

/// What hostnic cares about in a pod, or `None` when the pod needs no NIC from us:
/// host-network pods, and pods that finished (phase `Succeeded` or `Failed`: the kubelet
/// tears their sandbox down, so their NIC can go back to the pool).
///
/// `pending` is true while the pod has no IP yet (no sandbox network): a NIC will be
/// asked for soon, so the pool should warm up for it. `ip` is the pod's IPv4 address
/// (`status.podIP`, else the first IPv4 of `status.podIPs`): the agent never gives an
/// address a pod of its node holds to another pod, whatever its checkpoint says.
pub fn pod_info(pod: &Pod) -> Option<PodInfo> {
    pod_network_spec(pod)?;
    let status = pod.status.as_ref();
    let has_ip = status
        .and_then(|s| s.pod_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty());
    let ip = status.and_then(|s| {
        s.pod_ip
            .iter()
            .map(String::as_str)
            .chain(s.pod_ips.iter().flatten().map(|p| p.ip.as_str()))
            .find_map(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
    });
    Some(PodInfo {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        pending: !has_ip,
        ip,
    })
}

/// The pod's spec when the pod has (or will have) a sandbox network of ours:
/// `None` for host-network pods and pods that finished (phase `Succeeded` or
/// `Failed`).
pub(crate) fn pod_network_spec(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodSpec> {
    let spec = pod.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    if let Some(phase) = pod.status.as_ref().and_then(|s| s.phase.as_deref())
        && (phase == "Succeeded" || phase == "Failed")
    {
        return None;
    }
    Some(spec)
}

type PodName = (String, String);

/// State shared by the watch task and the [`KubePods`] handle.
#[derive(Default)]
struct Shared {
    /// The watch has completed its initial list at least once.
    synced: AtomicBool,
    /// The store is current: the last watch event was a live one (cleared on an error
    /// and while relisting, set again by the next live event).
    healthy: AtomicBool,
    /// Subscribers of [`PodSource::changes`].
    subscribers: Mutex<Vec<mpsc::UnboundedSender<PodEvent>>>,
}

impl Shared {
    fn emit(&self, event: PodEvent) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subs.retain(|tx| tx.send(event.clone()).is_ok());
    }
}

/// The pods of one node, kept by a reflector on a watch with
/// `fieldSelector=spec.nodeName=<node>` (never a cluster-wide pod watch).
///
/// The watch runs in a background task that retries with exponential backoff; nothing
/// here blocks while the API server is unreachable. Dropping the handle stops the task.
pub struct KubePods {
    api: Api<Pod>,
    node: String,
    store: Store<Pod>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for KubePods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubePods")
            .field("node", &self.node)
            .field("synced", &self.is_synced())
            .finish_non_exhaustive()
    }
}

impl KubePods {
    /// Starts watching the pods of `node`. Must be called inside a Tokio runtime.
    pub fn spawn(client: Client, node: &str) -> Self {
        let api: Api<Pod> = Api::all(client);
        let (store, writer) = reflector::store();
        let shared = Arc::new(Shared::default());
        let config = watcher::Config::default().fields(&node_field_selector(node));
        let task = tokio::spawn(watch(api.clone(), config, writer, shared.clone()));
        Self {
            api,
            node: node.to_owned(),
            store,
            shared,
            task,
        }
    }

    /// True once the initial list completed at least once.
    pub fn is_synced(&self) -> bool {
        self.shared.synced.load(Ordering::Acquire)
    }

    /// Waits until the initial list completed (or `timeout` passes); true if synced.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.store.wait_until_ready())
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The namespace and UID of a pod in the store (for event references).
    pub(crate) fn uid_of(&self, namespace: &str, name: &str) -> Option<String> {
        self.store
            .state()
            .iter()
            .find(|p| p.namespace().as_deref() == Some(namespace) && p.name_any() == name)
            .and_then(|p| p.uid())
    }

    fn stored_pods(&self) -> Vec<PodInfo> {
        let mut pods: Vec<PodInfo> = self
            .store
            .state()
            .iter()
            .filter_map(|p| pod_info(p))
            .collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        pods
    }

    /// A direct, node-scoped LIST: used when the watch is not known to be current.
    async fn list(&self) -> Result<Vec<PodInfo>, PodSourceError> {
        let params = ListParams::default().fields(&node_field_selector(&self.node));
        let listed = tokio::time::timeout(LIST_TIMEOUT, self.api.list(&params)).await;
        match listed {
            Ok(Ok(list)) => {
                let mut pods: Vec<PodInfo> = list.items.iter().filter_map(pod_info).collect();
                pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
                Ok(pods)
            }
            Ok(Err(e)) => Err(PodSourceError {
                retryable: true,
                message: format!("listing pods of node {}: {e}", self.node),
            }),
            Err(_) => Err(PodSourceError {
                retryable: true,
                message: format!(
                    "listing pods of node {}: no answer within {LIST_TIMEOUT:?}",
                    self.node
                ),
            }),
        }
    }
}

impl Drop for KubePods {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait]
impl PodSource for KubePods {
    /// The reflector's pods once the watch synced and is healthy; otherwise one direct
    /// LIST (a stale answer could release the NIC of a pod created meanwhile). While the
    /// API server is unreachable the error is `retryable`.
    async fn pods(&self) -> Result<Vec<PodInfo>, PodSourceError> {
        if self.is_synced() && self.shared.healthy.load(Ordering::Acquire) {
            return Ok(self.stored_pods());
        }
        self.list().await
    }

    fn changes(&self) -> BoxStream<'static, PodEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
            .boxed()
    }
}

/// The watch loop: feeds the reflector and turns watcher events into [`PodEvent`]s,
/// emitting only real changes (a relist after a reconnect emits what changed meanwhile,
/// including deletions missed while disconnected).
async fn watch(
    api: Api<Pod>,
    config: watcher::Config,
    writer: reflector::store::Writer<Pod>,
    shared: Arc<Shared>,
) {
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    let mut stream = std::pin::pin!(stream.into_stream());
    let mut known: BTreeMap<PodName, PodInfo> = BTreeMap::new();
    let mut relist: Option<BTreeMap<PodName, PodInfo>> = None;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                if shared.healthy.swap(false, Ordering::AcqRel) {
                    tracing::warn!(error = %e, "pod watch failed; retrying with backoff");
                } else {
                    tracing::debug!(error = %e, "pod watch still failing");
                }
                continue;
            }
        };
        // While a (re)list runs, the store still holds the state from before it: not
        // current. Any other event means the watch is live.
        let relisting = matches!(event, watcher::Event::Init | watcher::Event::InitApply(_));
        shared.healthy.store(!relisting, Ordering::Release);
        match event {
            watcher::Event::Init => relist = Some(BTreeMap::new()),
            watcher::Event::InitApply(pod) => {
                if let Some(info) = pod_info(&pod) {
                    relist
                        .get_or_insert_default()
                        .insert((info.namespace.clone(), info.name.clone()), info);
                }
            }
            watcher::Event::InitDone => {
                let fresh = relist.take().unwrap_or_default();
                for (key, _) in known.iter().filter(|(k, _)| !fresh.contains_key(*k)) {
                    shared.emit(PodEvent::Deleted {
                        namespace: key.0.clone(),
                        name: key.1.clone(),
                    });
                }
                for (key, info) in &fresh {
                    if known.get(key) != Some(info) {
                        shared.emit(PodEvent::Upserted(info.clone()));
                    }
                }
                known = fresh;
                if !shared.synced.swap(true, Ordering::AcqRel) {
                    tracing::info!(pods = known.len(), "pod watch synced");
                }
            }
            watcher::Event::Apply(pod) => {
                let key = (pod.namespace().unwrap_or_default(), pod.name_any());
                match pod_info(&pod) {
                    Some(info) => {
                        if known.get(&key) != Some(&info) {
                            known.insert(key, info.clone());
                            shared.emit(PodEvent::Upserted(info));
                        }
                    }
                    None => {
                        if known.remove(&key).is_some() {
                            shared.emit(PodEvent::Deleted {
                                namespace: key.0,
                                name: key.1,
                            });
                        }
                    }
                }
            }
            watcher::Event::Delete(pod) => {
                let key = (pod.namespace().unwrap_or_default(), pod.name_any());
                if known.remove(&key).is_some() {
                    shared.emit(PodEvent::Deleted {
                        namespace: key.0,
                        name: key.1,
                    });
                }
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
    fn host_network_and_finished_pods_need_no_nic() {
        let host = pod(serde_json::json!({
            "metadata": {"name": "kube-proxy-x", "namespace": "kube-system"},
            "spec": {"nodeName": "n1", "hostNetwork": true, "containers": []},
        }));
        assert_eq!(pod_info(&host), None);
        let done = pod(serde_json::json!({
            "metadata": {"name": "job-1", "namespace": "default"},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Succeeded", "podIP": "10.0.0.5"},
        }));
        assert_eq!(pod_info(&done), None);
    }

    #[test]
    fn a_pod_without_ip_is_pending_and_with_ip_is_not() {
        let mut p = pod(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Pending"},
        }));
        assert_eq!(
            pod_info(&p),
            Some(PodInfo {
                namespace: "default".into(),
                name: "web".into(),
                pending: true,
                ip: None,
            })
        );
        p.status.as_mut().unwrap().pod_ip = Some("10.0.0.7".into());
        p.status.as_mut().unwrap().phase = Some("Running".into());
        let info = pod_info(&p).unwrap();
        assert!(!info.pending);
        assert_eq!(info.ip, Some(std::net::Ipv4Addr::new(10, 0, 0, 7)));
    }

    #[test]
    fn the_ipv4_address_comes_from_pod_ip_or_the_first_ipv4_of_pod_ips() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "dual", "namespace": "default"},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Running", "podIP": "fd00::7",
                       "podIPs": [{"ip": "fd00::7"}, {"ip": "10.0.0.8"}]},
        }));
        assert_eq!(
            pod_info(&p).unwrap().ip,
            Some(std::net::Ipv4Addr::new(10, 0, 0, 8))
        );
    }
}
