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
//! - [`cli`]: the command line and its overrides of the configuration file.
//! - [`boot`]: what the binary does before the run: logging, the stop signal, the
//!   one-shot modes, link events, the Kubernetes adapters.
//! - `agent`: the composition: start-up, the tasks, wind-down ([`run`]).
//! - `shared`: the state the tasks share and the readiness, demand and gauge
//!   decisions on it.
//! - `shutdown`: the stop signal, start-up retries, the wind-down order.
//! - `server`: the Unix socket and the verbs (replies and codes from `hostnic_core::api::reply`).
//! - `admission`: the socket's caps on connections and buffered request bytes.
//! - `pool_loop`: the pool task (tick, wake-ups), the periodic reconcile, event tasks.
//! - `pending`: pending-DEL replay (the files are `hostnic-store`'s).
//! - `recovery`: says loudly what the startup rebuilt when the checkpoint could not
//!   be trusted (ERROR log, `hostnic_checkpoint_recovered_total`, events).
//! - [`policy`]: the task driving the core's NetworkPolicy enforcer.
//! - [`cloud`]: the breaker as logs and events, credentials' changes passed on
//!   (the client's options and the credentials file: `hostnic_qingcloud::agent`).
//! - [`cniconf`]: the readiness-gated conflist and the plugin install (re-exported
//!   from the core and `hostnic-store`).
//! - [`http`]: `/metrics`, `/healthz`, `/readyz` (on `metrics_addr`, which the
//!   cluster may scrape) and `/v1/*` (documents in `hostnic_core::api::introspect`,
//!   on loopback only), with bounded connections.
//! - [`supply`]: controller mode's composition: the core's `SuppliedCloud` over
//!   the node's `NicSupply`, the pool woken when the status changes.
//! - [`startup`]: each start-up step retried, its failures recorded in the core's
//!   start-up record (cause, fix, permanent or not) for `/readyz` and the log.
//! - [`metrics`]: the registry of the core's agent families, rendered with the
//!   process's numbers.
//! - [`settings`]: the core's configuration, read from its YAML file.
//! - [`pods`]: pod sources the binary can choose (`none`, `static:FILE`).
//! - [`store`]: re-exports `hostnic-store`, the checkpoint file (snapshot + journal).

mod admission;
mod agent;
pub mod boot;
pub mod cli;
pub mod cloud;
pub mod cniconf;
pub mod http;
pub mod metrics;
mod pending;
pub mod pods;
pub mod policy;
mod pool_loop;
mod recovery;
mod server;
pub mod settings;
mod shared;
mod shutdown;
pub mod startup;
pub mod supply;
pub use hostnic_store as store;

use std::sync::Arc;

use futures::stream::BoxStream;
use hostnic_core::ports::{NodeReporter, PodSource};

pub use agent::{AgentError, run, run_started};
pub use cloud::CloudClient;
pub use cniconf::CONFLIST_NAME;
pub use hostnic_core::api::introspect;
pub use hostnic_core::engine::Engine;
pub use http::Endpoint;
pub use metrics::Metrics;
pub use settings::Settings;
pub use startup::{Failed, Startup};

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
    /// The QingCloud client behind `cloud`, for its breaker and budget (metrics,
    /// logs, the node event) and its credentials file (followed when it changes);
    /// `None` with another cloud.
    pub client: Option<CloudClient>,
    /// Simulated seconds per real second: 1 in production. A harness living in a
    /// simulator's `--time-scale K` (with a clock K times faster) sets K, and every
    /// interval, backoff and timeout of the agent runs K times faster too.
    pub time_scale: f64,
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
