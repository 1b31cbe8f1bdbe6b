//! The controller's view of the cluster: reflectors of every `HostnicNode` and
//! every `Node`, kept by watches (with bookmarks, retried with backoff), and a
//! notification on every change so the control loop plans again.
//!
//! A `HostnicNode` is served while its `Node` exists; once the Node is gone its
//! NICs are orphans, freed after the grace period. The Node's absence is the
//! signal because the `HostnicNode` may outlive it (its agent is gone too).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use hostnic_core::fleet::{NodeDemand, NodeName};
use hostnic_k8s::crd::{HostnicNode, HostnicNodeStatus};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, ResourceExt as _};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// One node's request as read from its `HostnicNode`.
#[derive(Debug, Clone)]
pub(crate) struct Demanded {
    pub(crate) demand: NodeDemand,
    pub(crate) generation: Option<i64>,
    pub(crate) max_nics: i64,
    pub(crate) status: Option<HostnicNodeStatus>,
}

/// The reflectors and their change signal.
pub(crate) struct Cluster {
    pub(crate) hostnic_nodes: Store<HostnicNode>,
    pub(crate) nodes: Store<Node>,
    pub(crate) changed: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn watch<K>(api: Api<K>, changed: Arc<Notify>) -> (Store<K>, JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(e) => tracing::warn!(error = %e, "watch"),
            }
        }
    });
    (store, task)
}

impl Cluster {
    /// Starts the watches.
    pub(crate) fn spawn(client: Client) -> Self {
        let changed = Arc::new(Notify::new());
        let (hostnic_nodes, a) = watch(Api::<HostnicNode>::all(client.clone()), changed.clone());
        let (nodes, b) = watch(Api::<Node>::all(client), changed.clone());
        Self {
            hostnic_nodes,
            nodes,
            changed,
            tasks: vec![a, b],
        }
    }

    /// Waits until both reflectors hold a first complete list.
    pub(crate) async fn ready(&self) {
        let _ = self.hostnic_nodes.wait_until_ready().await;
        let _ = self.nodes.wait_until_ready().await;
    }

    /// The request of every `HostnicNode` whose `Node` exists.
    pub(crate) fn demands(&self) -> BTreeMap<NodeName, Demanded> {
        let nodes: std::collections::BTreeSet<String> =
            self.nodes.state().iter().map(|n| n.name_any()).collect();
        self.hostnic_nodes
            .state()
            .iter()
            .filter(|h| nodes.contains(&h.name_any()))
            .map(|h| {
                let demand = h.demand();
                (
                    demand.node.clone(),
                    Demanded {
                        demand,
                        generation: h.metadata.generation,
                        max_nics: h.spec.max_nics,
                        status: h.status.clone(),
                    },
                )
            })
            .collect()
    }

    /// The UID of the Node called `name`, if it exists.
    pub(crate) fn node_uid(&self, name: &str) -> Option<String> {
        self.nodes
            .state()
            .iter()
            .find(|n| n.name_any() == name)
            .and_then(|n| n.metadata.uid.clone())
    }
}
