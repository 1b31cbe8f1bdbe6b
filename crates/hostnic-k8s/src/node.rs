//! The own Node: its vxnet annotation, and the capacity hostnic publishes on it.

use std::time::Duration;

use hostnic_core::backoff::ExponentialBackoff;
use hostnic_core::types::VxnetId;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::K8sError;

/// The node annotation that chooses the vxnet(s) of the node's pods, as in the original
/// hostnic. The value is one vxnet id, or several separated by commas
/// (`vxnet-abc,vxnet-def`); blanks around ids are ignored.
pub const VXNET_ANNOTATION: &str = "node.beta.kubernetes.io/vxnet";

/// Annotation published by the agent: NICs attached, ready and free right now.
pub const FREE_NICS_ANNOTATION: &str = "hostnic.io/free-nics";

/// Annotation published by the agent: how many more pods the node can still get a NIC
/// for (free NICs plus NICs it may still attach under its limit of NICs per node).
pub const ASSIGNABLE_PODS_ANNOTATION: &str = "hostnic.io/assignable-pods";

/// Parses the value of [`VXNET_ANNOTATION`].
pub fn parse_vxnets(value: &str) -> Vec<VxnetId> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(VxnetId::new)
        .collect()
}

/// Read access to this node's Node object.
#[derive(Clone)]
pub struct KubeNode {
    api: Api<Node>,
    name: String,
}

impl std::fmt::Debug for KubeNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeNode")
            .field("name", &self.name)
            .finish()
    }
}

impl KubeNode {
    /// The Node called `name`.
    pub fn new(client: Client, name: &str) -> Self {
        Self {
            api: Api::all(client),
            name: name.to_owned(),
        }
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The vxnets named by the node's [`VXNET_ANNOTATION`]; empty when it has none (the
    /// agent then uses its configured vxnets). One request, no retry: see
    /// [`K8sError::is_retryable`].
    pub async fn vxnets(&self) -> Result<Vec<VxnetId>, K8sError> {
        let node = self
            .api
            .get(&self.name)
            .await
            .map_err(|e| K8sError::api(format!("get node {}", self.name), e))?;
        Ok(node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(VXNET_ANNOTATION))
            .map(|v| parse_vxnets(v))
            .unwrap_or_default())
    }

    /// Like [`vxnets`](Self::vxnets), retrying retryable errors with exponential backoff
    /// (0.5 s doubling up to 10 s) until `deadline` has passed.
    pub async fn vxnets_with_retry(&self, deadline: Duration) -> Result<Vec<VxnetId>, K8sError> {
        let until = tokio::time::Instant::now() + deadline;
        let mut delays =
            ExponentialBackoff::new(Duration::from_millis(500), Duration::from_secs(10)).delays();
        loop {
            let delay = delays.next_delay();
            match self.vxnets().await {
                Err(e) if e.is_retryable() && tokio::time::Instant::now() + delay < until => {
                    tracing::warn!(error = %e, retry_in = ?delay, "reading the node's vxnet annotation");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// The vxnets of the annotation for an agent whose configuration names none:
    /// [`vxnets_with_retry`](Self::vxnets_with_retry) within `deadline`, logged;
    /// empty when the annotation is missing or unreadable.
    pub async fn annotated_vxnets(&self, deadline: Duration) -> Vec<VxnetId> {
        match self.vxnets_with_retry(deadline).await {
            Ok(vxnets) => {
                if !vxnets.is_empty() {
                    tracing::info!(?vxnets, "vxnets from the node annotation");
                }
                vxnets
            }
            Err(e) => {
                tracing::warn!(error = %e, "node vxnet annotation unreadable");
                Vec::new()
            }
        }
    }

    /// Merge-patches the capacity annotations onto the node (one request).
    pub async fn patch_capacity(&self, capacity: Capacity) -> Result<(), K8sError> {
        let patch = serde_json::json!({
            "metadata": {"annotations": {
                FREE_NICS_ANNOTATION: capacity.free_nics.to_string(),
                ASSIGNABLE_PODS_ANNOTATION: capacity.assignable_pods.to_string(),
            }}
        });
        self.api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| K8sError::api(format!("patch node {}", self.name), e))
    }
}

/// What the node can still give pods, published as node annotations.
///
/// Annotations rather than an extended resource: pods do not request `hostnic.io/nic`,
/// so an extended resource would not steer the scheduler and would need write access to
/// `nodes/status`. The kubelet's `max-pods` should be set to at most the NIC limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capacity {
    /// NICs attached, ready and free now ([`FREE_NICS_ANNOTATION`]).
    pub free_nics: u32,
    /// Pods the node can still get a NIC for ([`ASSIGNABLE_PODS_ANNOTATION`]).
    pub assignable_pods: u32,
}

/// Publishes [`Capacity`] on the node in the background: [`publish`](Self::publish)
/// never blocks; only the latest value is sent, failures are retried with backoff
/// (1 s doubling up to 60 s). Dropping the publisher stops its task.
#[derive(Debug)]
pub struct CapacityPublisher {
    tx: watch::Sender<Option<Capacity>>,
    task: JoinHandle<()>,
}

impl CapacityPublisher {
    /// Starts the publishing task for `node`. Must be called inside a Tokio runtime.
    pub fn spawn(node: KubeNode) -> Self {
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(publish_loop(node, rx));
        Self { tx, task }
    }

    /// Asks for `capacity` to be published (skipped if it equals the last one published).
    pub fn publish(&self, capacity: Capacity) {
        self.tx.send_if_modified(|cur| {
            let changed = *cur != Some(capacity);
            *cur = Some(capacity);
            changed
        });
    }
}

impl Drop for CapacityPublisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn publish_loop(node: KubeNode, mut rx: watch::Receiver<Option<Capacity>>) {
    let mut published: Option<Capacity> = None;
    let mut delays =
        ExponentialBackoff::new(Duration::from_secs(1), Duration::from_secs(60)).delays();
    loop {
        let wanted = *rx.borrow_and_update();
        if let Some(capacity) = wanted
            && published != Some(capacity)
        {
            match node.patch_capacity(capacity).await {
                Ok(()) => {
                    tracing::debug!(?capacity, "published node capacity");
                    published = Some(capacity);
                    delays.reset();
                }
                Err(e) => {
                    let delay = delays.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "publishing node capacity");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vxnet_annotation_may_list_several_vxnets() {
        assert_eq!(parse_vxnets("vxnet-a"), vec![VxnetId::new("vxnet-a")]);
        assert_eq!(
            parse_vxnets(" vxnet-a, vxnet-b ,,"),
            vec![VxnetId::new("vxnet-a"), VxnetId::new("vxnet-b")]
        );
        assert!(parse_vxnets(" ").is_empty());
    }
}
