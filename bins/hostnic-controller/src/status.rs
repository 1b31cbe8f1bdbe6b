//! Writing the controller's answer into each `HostnicNode`'s status: only when it
//! changed, several at once, as a merge patch of the whole status on the status
//! subresource (the agent's spec writes never conflict with it).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use hostnic_core::fleet::{NodeName, NodeView};
use hostnic_k8s::crd::{HostnicNode, HostnicNodeStatus};
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::cluster::Demanded;
use crate::metrics::Metrics;

/// The time of a status, RFC 3339 to the second.
pub(crate) fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Writes statuses, remembering what it wrote.
pub(crate) struct StatusWriter {
    api: Api<HostnicNode>,
    written: BTreeMap<NodeName, HostnicNodeStatus>,
    parallel: usize,
    metrics: Arc<Metrics>,
}

impl StatusWriter {
    pub(crate) fn new(api: Api<HostnicNode>, parallel: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            api,
            written: BTreeMap::new(),
            parallel,
            metrics,
        }
    }

    /// Writes the status of every node of `views` whose answer changed; returns
    /// the nodes whose write failed.
    pub(crate) async fn write(
        &mut self,
        views: &[NodeView],
        demanded: &BTreeMap<NodeName, Demanded>,
    ) -> BTreeSet<NodeName> {
        let now = now_rfc3339();
        let mut todo = Vec::new();
        for view in views {
            let Some(d) = demanded.get(&view.node) else {
                continue;
            };
            let previous = self.written.get(&view.node).or(d.status.as_ref());
            let status =
                HostnicNodeStatus::from_view(view, d.max_nics, d.generation, previous, &now);
            if previous.is_some_and(|p| p.same_as(&status)) {
                continue;
            }
            todo.push((view.node.clone(), status));
        }
        let api = &self.api;
        let results: Vec<(NodeName, HostnicNodeStatus, Result<(), kube::Error>)> =
            futures::stream::iter(todo)
                .map(|(node, status)| async move {
                    let patch = serde_json::json!({ "status": status });
                    let r = api
                        .patch_status(
                            node.as_str(),
                            &PatchParams::default(),
                            &Patch::Merge(&patch),
                        )
                        .await
                        .map(|_| ());
                    (node, status, r)
                })
                .buffer_unordered(self.parallel)
                .collect()
                .await;
        let mut failed = BTreeSet::new();
        for (node, status, r) in results {
            match r {
                Ok(()) => {
                    self.metrics.status_write("ok");
                    self.written.insert(node, status);
                }
                Err(e) => {
                    let result = match &e {
                        kube::Error::Api(s) if s.code == 404 => "not-found",
                        _ => "error",
                    };
                    self.metrics.status_write(result);
                    tracing::warn!(node = %node, error = %e, "writing status");
                    failed.insert(node);
                }
            }
        }
        // Forget nodes that left.
        self.written.retain(|n, _| demanded.contains_key(n));
        failed
    }
}
