//! Kubernetes Events on the Nodes the controller cannot serve: a refused request,
//! the request budget or the account's quota holding the node's calls back, every
//! vxnet of the node out of addresses, its instance out of NIC slots. One event
//! when a problem appears (kube's recorder folds repeats into a series), sent by
//! a background task so a slow API server never holds up a round.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hostnic_core::fleet::{NodeName, NodeView};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// The reporting controller of the events.
pub const REPORTER: &str = "hostnic-controller";

#[derive(Debug)]
struct Pending {
    node: String,
    uid: Option<String>,
    reason: String,
    note: String,
}

/// Records events on Nodes when a problem of theirs appears.
pub(crate) struct NodeEvents {
    tx: mpsc::Sender<Pending>,
    active: BTreeMap<NodeName, BTreeSet<String>>,
    metrics: Arc<Metrics>,
    task: JoinHandle<()>,
}

impl Drop for NodeEvents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The problems of a node now: (reason, message).
fn problems(view: &NodeView) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(r) = &view.refusal {
        out.push((
            r.reason().to_string(),
            format!("hostnic refuses the node's request: {r}"),
        ));
    }
    if view.quota_exhausted {
        out.push((
            "CloudRequestBudgetSpent".into(),
            "the node's NIC calls wait for the cloud request budget (or the account's request quota)".into(),
        ));
    }
    if view.vxnet_full {
        out.push((
            "VxnetFull".into(),
            "every vxnet the node may use is out of addresses or NICs".into(),
        ));
    }
    if view.instance_full {
        out.push((
            "InstanceNicLimit".into(),
            format!(
                "the instance takes no more NICs{}",
                view.last_error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        ));
    }
    out
}

impl NodeEvents {
    pub(crate) fn spawn(client: Client, instance: &str, metrics: Arc<Metrics>) -> Self {
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: REPORTER.into(),
                instance: Some(instance.into()),
            },
        );
        let (tx, mut rx) = mpsc::channel::<Pending>(256);
        let task = tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                let reference = ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(p.node.clone()),
                    uid: p.uid.clone(),
                    ..Default::default()
                };
                let event = Event {
                    type_: EventType::Warning,
                    reason: p.reason.clone(),
                    note: Some(p.note.chars().take(1000).collect()),
                    action: "AllocateNics".into(),
                    secondary: None,
                };
                if let Err(e) = recorder.publish(&event, &reference).await {
                    tracing::warn!(node = %p.node, error = %e, "recording event");
                }
            }
        });
        Self {
            tx,
            active: BTreeMap::new(),
            metrics,
            task,
        }
    }

    /// Records an event for every problem that appeared since the last call.
    pub(crate) fn update(&mut self, views: &[NodeView], uid: impl Fn(&str) -> Option<String>) {
        let mut seen = BTreeSet::new();
        for view in views {
            seen.insert(view.node.clone());
            let now = problems(view);
            let active = self.active.entry(view.node.clone()).or_default();
            for (reason, note) in &now {
                if active.contains(reason) {
                    continue;
                }
                self.metrics.event(reason);
                let pending = Pending {
                    node: view.node.to_string(),
                    uid: uid(view.node.as_str()),
                    reason: reason.clone(),
                    note: note.clone(),
                };
                if self.tx.try_send(pending).is_err() {
                    tracing::debug!(node = %view.node, "event queue full; event dropped");
                }
            }
            *active = now.into_iter().map(|(r, _)| r).collect();
        }
        self.active.retain(|n, _| seen.contains(n));
    }
}
