//! A signature-checking simulator of the QingCloud IaaS API (feature `sim`).
//!
//! It serves the actions hostnic uses over HTTP on loopback, verifies signatures
//! and time stamps like the real API, runs attach/detach as asynchronous jobs
//! with configurable latency, injects faults, and tells an [`AttachHook`] when a
//! NIC is attached, detached or vanishes, so a lab can make a real link appear.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use hostnic_qingcloud::sim::{SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig::new("AKID", "SECRET"), None).await?;
//! println!("{}", sim.url()); // http://127.0.0.1:PORT/iaas/
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Admin endpoints (JSON in and out), outside the signed API:
//! - `POST /_sim/state`: the whole state.
//! - `POST /_sim/counters`: requests and answers per action.
//! - `POST /_sim/vanish` `{"nic_id": "52:54:.."}`: the NIC disappears from the cloud.
//! - `POST /_sim/fail-jobs` `{"count": N}`: the next N jobs fail.
//! - `POST /_sim/fault-rate` `{"fault_rate": F}`: change the fault rate.
//!
//! Injected faults (5000/5100) and throttling (2500) are answered *before* the
//! action runs, so a client that retries them never duplicates an effect.

mod server;
mod state;
mod topology;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use server::SimHandle;
pub use state::{
    ActionCounter, ApiError, JobState, NicEvent, NicEventKind, NicStatus, SimInstance, SimJob,
    SimNic, SimRouter, SimState, SimTag, SimVxnet,
};
pub use topology::{InstanceSpec, RouterSpec, Topology, TopologyError, VxnetSpec};

use crate::config::Secret;

/// Told when a NIC becomes attached, detached or vanishes, e.g. to create or
/// remove a real link on a lab node. Called before the job reports `successful`.
#[async_trait]
pub trait AttachHook: Send + Sync {
    /// One NIC changed.
    async fn on_nic_event(&self, event: &NicEvent);
}

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where to listen; port 0 picks a free one. Keep it on loopback.
    pub listen: SocketAddr,
    /// The one accepted access key id.
    pub access_key_id: String,
    /// Its secret.
    pub secret_access_key: Secret,
    /// The zone, routers, vxnets and instances.
    pub topology: Topology,
    /// How long a job stays `pending`.
    pub job_latency: Duration,
    /// How long an attach/detach job then works before the NICs change.
    pub attach_latency: Duration,
    /// Probability of answering 5000/5100 instead of running an action.
    pub fault_rate: f64,
    /// Requests per second above which the API answers 2500 (0 = unlimited).
    pub rate_limit_qps: f64,
    /// Allowed distance of `time_stamp` from the simulator's clock.
    pub time_window: Duration,
    /// The API path (served with and without trailing slash).
    pub uri: String,
}

impl SimConfig {
    /// Defaults: 127.0.0.1 on a free port, default topology, 100 ms job latency,
    /// 500 ms attach latency, no faults, no throttling, 60 s window, `/iaas`.
    pub fn new(access_key_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            access_key_id: access_key_id.into(),
            secret_access_key: Secret::new(secret),
            topology: Topology::default(),
            job_latency: Duration::from_millis(100),
            attach_latency: Duration::from_millis(500),
            fault_rate: 0.0,
            rate_limit_qps: 0.0,
            time_window: Duration::from_secs(60),
            uri: "/iaas".into(),
        }
    }
}

/// Entry point of the simulator.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Binds `config.listen` and serves until [`SimHandle::shutdown`] (or drop).
    pub async fn start(
        config: SimConfig,
        hook: Option<Arc<dyn AttachHook>>,
    ) -> std::io::Result<SimHandle> {
        server::start(config, hook).await
    }
}
