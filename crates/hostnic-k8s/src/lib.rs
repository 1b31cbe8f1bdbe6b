//! Kubernetes adapter of hostnic, built on kube-rs.
//!
//! In a cluster the API server is the truth about which pods should exist on a node.
//! This crate gives the agent:
//! - [`KubePods`], the core's [`PodSource`](hostnic_core::ports::PodSource): a reflector
//!   on a watch of the pods with `fieldSelector=spec.nodeName=<node>` (never a
//!   cluster-wide pod watch), host-network pods skipped, pods without an IP reported as
//!   `pending` so the pool warms up for them;
//! - [`KubeNode`]: the node's vxnets from the annotation
//!   [`node.beta.kubernetes.io/vxnet`](node::VXNET_ANNOTATION) (one id or several,
//!   comma-separated), and [`CapacityPublisher`], which publishes what the node can
//!   still give as node annotations;
//! - [`PodEvents`]: Warning events on a pod whose ADD found no NIC or hit a quota;
//! - [`KubeAdapter`] as the core's [`PodSource`] and
//!   [`NodeReporter`] (capacity annotations, shortage events);
//! - [`KubePolicySource`]: NetworkPolicies, Namespaces and Pods of the whole cluster
//!   (cluster-wide watches, started separately by [`KubePolicySource::spawn`]), as the
//!   policy compiler's [`ClusterView`](hostnic_core::policy::ClusterView): the core's
//!   [`PolicySource`](hostnic_core::ports::PolicySource).
//!
//! Every background task retries API errors with backoff and nothing blocks the
//! caller, so the agent keeps serving CNI requests while the API server is unreachable.
//! [`connect`] builds all of it from a kubeconfig path or the in-cluster service account.
//!
//! For the controller it gives [`HostnicNode`](crd::HostnicNode), the custom resource
//! of each node's NICs (its CRD is `deploy/crd.yaml`), and [`lease`], leader
//! election on a `coordination.k8s.io` Lease.
//!
//! # Layout
//! - `crd.rs` — [`HostnicNode`](crd::HostnicNode): spec ↔ the fleet planner's demand, view → status.
//! - `error.rs` — [`K8sError`], with [`is_retryable`](K8sError::is_retryable).
//! - `pods.rs` — [`KubePods`] and [`pod_info`], the pod → [`PodInfo`](hostnic_core::types::PodInfo) rule.
//! - `node.rs` — [`KubeNode`], [`Capacity`], [`CapacityPublisher`] and the annotation names.
//! - `lease.rs` — [`lease::LeaderElector`]: leader election on a Lease.
//! - `events.rs` — [`PodEvents`], [`NicShortage`].
//! - `policy.rs` — [`KubePolicySource`] and the reductions to the core's policy types.
//! - `static_pods.rs` — [`StaticPods`], pods listed in a file (a node without an API server).
//! - `supply.rs` — [`KubeNicSupply`]: the agent's controller mode, the core's
//!   `NicSupply` over its node's `HostnicNode` (spec written, coalesced; status watched).
//! - `fake_apiserver/` (feature `fake-apiserver`) — a small in-process API server on
//!   loopback for tests and the lab; `bin/hostnic-fake-apiserver.rs` runs it as a
//!   process.
//!
//! The client does no hidden retries (`default_retry` off) so that failures reach the
//! background tasks at once; they retry with their own backoff.

pub mod crd;
pub mod error;
pub mod events;
#[cfg(feature = "fake-apiserver")]
pub mod fake_apiserver;
pub mod lease;
pub mod node;
pub mod pods;
pub mod policy;
pub mod static_pods;
pub mod supply;

use std::path::Path;
use std::time::Duration;

use futures::stream::BoxStream;
use hostnic_core::ports::{NodeReporter, PodSource, PodSourceError};
use hostnic_core::types::{PodEvent, PodInfo, PodKey};

pub use error::K8sError;
pub use events::{NicShortage, PodEvents};
pub use kube::Client;
pub use node::{Capacity, CapacityPublisher, KubeNode};
pub use pods::{KubePods, pod_info};
pub use policy::KubePolicySource;
pub use static_pods::StaticPods;
pub use supply::{KubeNicSupply, SupplyOptions};

/// Everything the agent needs from Kubernetes for one node. See [`connect`].
#[derive(Debug)]
pub struct KubeAdapter {
    /// The node's pods: pass it to the engine as its pod source.
    pub pods: KubePods,
    /// The own Node: read its vxnets with [`KubeNode::vxnets_with_retry`].
    pub node: KubeNode,
    /// Publishes [`Capacity`] on the node.
    pub capacity: CapacityPublisher,
    /// Records events on pods that could not get a NIC.
    pub events: PodEvents,
}

impl KubeAdapter {
    /// Records that `namespace/name` could not get a NIC, with the pod's UID when the
    /// pod watch knows it (so `kubectl describe pod` shows the event).
    pub fn record_nic_shortage(
        &self,
        namespace: &str,
        name: &str,
        shortage: NicShortage,
        message: impl Into<String>,
    ) {
        let uid = self.pods.uid_of(namespace, name);
        self.events
            .nic_shortage(namespace, name, uid, shortage, message);
    }
}

/// The node's pod watch as the core's pod source (what [`KubeAdapter::pods`] reports).
#[async_trait::async_trait]
impl PodSource for KubeAdapter {
    async fn pods(&self) -> Result<Vec<PodInfo>, PodSourceError> {
        self.pods.pods().await
    }

    fn changes(&self) -> BoxStream<'static, PodEvent> {
        self.pods.changes()
    }
}

/// The core's node reporter: capacity as node annotations, NIC shortages as
/// Warning events on the pod.
impl NodeReporter for KubeAdapter {
    fn capacity(&self, free_nics: u32, assignable_pods: u32) {
        self.capacity.publish(Capacity {
            free_nics,
            assignable_pods,
        });
    }

    fn nic_shortage(&self, pod: &PodKey, quota: bool, message: &str) {
        // Pods the runtime did not name (podman, ctr) have nowhere to put an event.
        if pod.namespace.is_empty() || pod.name.is_empty() {
            return;
        }
        let shortage = if quota {
            NicShortage::QuotaExceeded
        } else {
            NicShortage::NoFreeNic
        };
        self.record_nic_shortage(&pod.namespace, &pod.name, shortage, message);
    }

    fn nic_shortage_because(
        &self,
        pod: &PodKey,
        cause: Option<hostnic_core::pool::ShortageCause>,
        message: &str,
    ) {
        use hostnic_core::pool::ShortageCause;
        if pod.namespace.is_empty() || pod.name.is_empty() {
            return;
        }
        let shortage = match cause {
            None => NicShortage::NoFreeNic,
            Some(ShortageCause::VxnetFull) => NicShortage::VxnetFull,
            Some(ShortageCause::NicQuota) => NicShortage::QuotaExceeded,
            Some(ShortageCause::RequestQuota) => NicShortage::RequestQuota,
            Some(ShortageCause::Refused | ShortageCause::Unavailable) => {
                NicShortage::CloudUnavailable
            }
        };
        self.record_nic_shortage(&pod.namespace, &pod.name, shortage, message);
    }

    fn request_quota(&self, exhausted: bool, message: &str) {
        self.events
            .request_quota(self.node.name(), exhausted, message.to_owned());
    }

    fn checkpoint_recovered(&self, recovery: &hostnic_core::recovery::Recovery) {
        for pod in &recovery.pods {
            let Some((namespace, name)) = pod.pod.as_deref().and_then(|p| p.split_once('/')) else {
                continue;
            };
            self.record_checkpoint_recovered(
                namespace,
                name,
                format!(
                    "the hostnic agent's checkpoint was {}; this pod keeps its address {} \
                     (NIC {}), recovered from the node",
                    recovery.reason.describe(),
                    pod.ip,
                    pod.nic
                ),
            );
        }
    }
}

impl KubeAdapter {
    /// Records on `namespace/name` (with its UID when the pod watch knows it) that the
    /// agent recovered the pod's address from the node after losing its checkpoint.
    pub fn record_checkpoint_recovered(
        &self,
        namespace: &str,
        name: &str,
        message: impl Into<String>,
    ) {
        let uid = self.pods.uid_of(namespace, name);
        self.events
            .checkpoint_recovered(namespace, name, uid, message);
    }
}

/// Longest silence on a connection before it is considered dead.
const READ_TIMEOUT: Duration = Duration::from_secs(330);

/// Builds a client: from the kubeconfig at `kubeconfig` (its current context) when
/// given, otherwise inferred (`$KUBECONFIG`, `~/.kube/config`, then the in-cluster
/// service account). Does not contact the API server.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, K8sError> {
    let mut config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| K8sError::Config(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| K8sError::Config(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| K8sError::Config(e.to_string()))?,
    };
    // Our tasks retry with their own backoff and must see failures at once (to answer
    // `pods()` with a retryable error instead of stale data): no hidden retries.
    config.default_retry = false;
    // A watch ends after at most 290 s (kube's `timeoutSeconds`); a connection silent
    // for longer is dead (half-open TCP to a vanished API server).
    config.read_timeout = Some(READ_TIMEOUT);
    install_crypto_provider();
    Client::try_from(config).map_err(|e| K8sError::Config(e.to_string()))
}

/// kube's rustls needs a process-wide crypto provider; install ring's unless the
/// binary installed one already.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Connects the adapter for node `node`: builds the client (see [`client`]) and starts
/// the pod watch, the capacity publisher and the event sender. Returns without waiting
/// for the API server; must be called inside a Tokio runtime.
pub async fn connect(kubeconfig: Option<&Path>, node: &str) -> Result<KubeAdapter, K8sError> {
    let client = client(kubeconfig).await?;
    Ok(adapter(client, node))
}

/// The adapter for `node` over an existing client (tests pass a mock or a client of the
/// fake API server).
pub fn adapter(client: Client, node: &str) -> KubeAdapter {
    let kube_node = KubeNode::new(client.clone(), node);
    KubeAdapter {
        pods: KubePods::spawn(client.clone(), node),
        capacity: CapacityPublisher::spawn(kube_node.clone()),
        node: kube_node,
        events: PodEvents::spawn(client, node),
    }
}
