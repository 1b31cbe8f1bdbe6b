//! NetworkPolicy enforcement in the agent.
//!
//! The agent needs two things, as small traits so tests run it in-process with
//! fakes: a [`PolicySource`] (the cluster's policies, namespaces and pods, as the
//! core's [`ClusterView`]; the Kubernetes watches in production) and a
//! [`PolicyDataplane`] (programs a [`CompiledPolicy`] for this node's pods; the
//! nftables renderer in production). Neither is a core port: the core's engine
//! does not use them, only the agent does.
//!
//! The [`enforcer`](crate::policy::enforcer) keeps one sync in flight at a time:
//! every change of the view, every ADD and DEL asks for a sync, bursts coalesce,
//! and each sync compiles the latest view with the agent's own pod → IP and host
//! veth assignments for this node's pods.
//!
//! ## Layout
//! - `mod.rs`: the two traits and their error and result types.
//! - `enforcer.rs`: the policy task, policy-aware ADD/DEL, the status.
//! - `adapters.rs`: the traits for `hostnic_k8s::KubePolicySource` and
//!   `hostnic_linux::policy::PolicyRenderer`.

mod adapters;
pub(crate) mod enforcer;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use hostnic_core::policy::{ClusterView, CompiledPolicy, PolicyPod};
use hostnic_linux::policy::{LocalPod, SyncStats};
use tokio::sync::watch;

/// Where the cluster's policies, namespaces and pods come from.
#[async_trait]
pub trait PolicySource: Send + Sync {
    /// True once the source has listed everything at least once: before that, an
    /// empty view would wrongly mean "no policy".
    fn is_synced(&self) -> bool;
    /// The current view.
    fn view(&self) -> Arc<ClusterView>;
    /// The current view and the arrival time of the oldest change no earlier
    /// `take_view` returned (for the event-to-enforcement latency).
    fn take_view(&self) -> (Arc<ClusterView>, Option<Instant>);
    /// A receiver whose value changes whenever the view does.
    fn subscribe(&self) -> watch::Receiver<u64>;
    /// One pod as the source's cache has it.
    fn cached_pod(&self, namespace: &str, name: &str) -> Option<PolicyPod>;
    /// One pod read from the origin (for a pod the cache does not have yet);
    /// `Ok(None)` when it does not exist.
    async fn pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PolicyPod>, PolicySourceError>;
}

/// A [`PolicySource`] lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PolicySourceError {
    /// What failed.
    pub message: String,
}

/// Programs policy on this node.
#[async_trait]
pub trait PolicyDataplane: Send {
    /// Makes the node enforce `compiled` for the `local` pods (all at once, or
    /// nothing on error).
    async fn sync(
        &mut self,
        compiled: &CompiledPolicy,
        local: &[LocalPod],
    ) -> Result<Programmed, PolicyDataplaneError>;
}

/// What a successful [`PolicyDataplane::sync`] did and what is now programmed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Programmed {
    /// What this sync changed.
    pub stats: SyncStats,
    /// Rules in the per pod chains now.
    pub rules: usize,
    /// Elements of the peer sets now.
    pub elements: usize,
}

/// A [`PolicyDataplane::sync`] failed; nothing is known to be programmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyDataplaneError(pub String);

/// What the agent enforces policy with; `None` in [`Deps`](crate::Deps) turns
/// enforcement off.
pub struct PolicyDeps {
    /// The cluster's policies, namespaces and pods.
    pub source: Arc<dyn PolicySource>,
    /// The node's datapath for policy.
    pub dataplane: Box<dyn PolicyDataplane>,
}
