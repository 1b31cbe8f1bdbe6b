//! # hostnic-agent
//!
//! The node agent of hostnic: the single owner of the node's NICs. It keeps the
//! warm pool (the core's [`Engine`]), serves the `hostnic` CNI plugin on a Unix
//! socket (protocol in `docs/agent-api.md`), writes the checkpoint after every
//! change, completes DELs the plugin recorded while it was down, reconciles
//! checkpoint, cloud, host and pods at start and periodically, writes the CNI
//! conflist only once it can serve an ADD, and shows what it does on `/metrics`
//! and `/v1/*`.
//!
//! [`run`] is the whole agent, generic over the ports, so tests start it
//! in-process with the core's fakes and the binary with the real adapters.
//!
//! ## Layout
//! - [`settings`]: the YAML configuration and its validation.
//! - [`store`]: the checkpoint file (atomic writes).
//! - [`pods`]: pod sources the binary can choose (`none`, `static:FILE`).
//! - `agent`: identity, startup, the shared state of the tasks.
//! - `server`: the Unix socket and the verbs.
//! - `pool_loop`: the pool task (tick, wake-ups) and the periodic reconcile.
//! - `pending`: pending-DEL replay.
//! - `cniconf`: the readiness-gated conflist and the plugin install.
//! - [`metrics`]: Prometheus text exposition.
//! - `http`: `/metrics`, `/healthz`, `/readyz`, `/v1/status|nics|pods|policy`.
//! - [`introspect`]: the JSON documents of `/v1/*` (shared with `hostnicctl`).
//! - [`policy`]: NetworkPolicy enforcement (its two traits and the policy task).

mod agent;
pub mod cniconf;
mod http;
pub mod metrics;
mod pending;
pub mod pods;
pub mod policy;
mod pool_loop;
mod server;
pub mod settings;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use futures::stream::BoxStream;
use hostnic_core::ports::{Clock, CloudNetwork, CloudNics, HostNetwork, PodSource};
use hostnic_core::types::InstanceId;

pub use agent::AgentError;
pub use cniconf::CONFLIST_NAME;
pub use hostnic_core::api::introspect;
pub use hostnic_core::engine::Engine;
pub use metrics::Metrics;
pub use settings::Settings;

/// Everything the agent talks to.
pub struct Deps<C, H, K> {
    /// The cloud (NICs and topology).
    pub cloud: C,
    /// The node's datapath.
    pub host: H,
    /// The clock of every decision.
    pub clock: K,
    /// Which pods should exist on the node; `None` when nothing tells the agent.
    pub pods: Option<Arc<dyn PodSource>>,
    /// What the kernel reports about NIC links (appeared, removed, an address added).
    pub nic_events: Option<BoxStream<'static, HostEvent>>,
    /// Where metrics go (the binary also registers it as the cloud client's observer).
    pub metrics: Arc<Metrics>,
    /// Where the node's capacity and NIC shortages are reported (the Kubernetes adapter).
    pub reporter: Option<Arc<dyn NodeReporter>>,
    /// NetworkPolicy enforcement; `None` turns it off.
    pub policy: Option<policy::PolicyDeps>,
}

/// Reports the node's state to the cluster. Calls must not block: implementations queue.
pub trait NodeReporter: Send + Sync {
    /// After every pool round: NICs free now, and pods the node can still get a NIC for.
    fn capacity(&self, free_nics: u32, assignable_pods: u32);
    /// An ADD failed for lack of a NIC; `quota` when the node or the cloud refuses more
    /// (full node, NIC or address quota), else the pool had none ready in time.
    fn nic_shortage(&self, pod: &hostnic_core::types::PodKey, quota: bool, message: &str);
}

/// Runs the agent until `shutdown` completes: resolves the node's identity,
/// opens the engine from the checkpoint, reconciles, replays pending DELs,
/// then serves the plugin while the pool and reconcile loops run. On shutdown
/// it stops accepting, lets in-flight requests finish, and leaves the pool,
/// the checkpoint and the CNI config in place.
pub async fn run<C, H, K>(
    deps: Deps<C, H, K>,
    settings: Settings,
    instance: InstanceId,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError>
where
    C: CloudNics + CloudNetwork + 'static,
    H: HostNetwork + 'static,
    K: Clock + 'static,
{
    agent::run(deps, settings, instance, shutdown).await
}

/// A kernel event about a NIC link, as the agent reacts to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEvent {
    /// A link appeared or changed: the pool prepares attached NICs whose link was missing.
    NicAppeared,
    /// The link with this MAC disappeared: if it is one of the node's NICs, a reconcile
    /// runs at once, so a vanished NIC is not handed to a pod.
    NicRemoved(hostnic_core::types::NicId),
    /// An IPv4 address was put on the link with this MAC (DHCP, NetworkManager): a pod
    /// NIC's address belongs to its pod, so the NIC is prepared again, which strips it.
    NicAddressAdded(hostnic_core::types::NicId),
}
