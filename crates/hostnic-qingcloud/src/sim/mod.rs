//! A signature-checking simulator of the QingCloud IaaS API (feature `sim`).
//!
//! It serves the actions hostnic uses over HTTP on loopback, verifies signatures
//! and time stamps like the real API, enforces the account's API request quota
//! per access key, caps list answers at 100 items, runs attach/detach and VIP
//! allocate/release as asynchronous jobs with configurable latency (all of it
//! `time_scale` times faster if asked), injects faults, and tells an
//! [`AttachHook`] when a NIC is attached, detached or vanishes, so a lab can make
//! a real link appear. `docs/simulator.md` lists its fidelity and its limits.
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
//! Admin endpoints (JSON in and out, GET or POST), outside the signed API:
//! - `/_sim/state`: the whole state.
//! - `/_sim/counters`: requests and answers per action; with `{"by": "access_key"}`
//!   (or `?by=access_key`) per access key.
//! - `/_sim/quota`: the request quota and its state per access key, and the log of
//!   request-quota 2500s; `{"quota": "2000/3600"}` or `{"quota": "off"}` changes it,
//!   `{"reset": true}` frees it.
//! - `/_sim/vanish` `{"nic_id": "52:54:.."}`: the NIC disappears from the cloud.
//! - `/_sim/fail-jobs` `{"count": N}`: the next N jobs fail.
//! - `/_sim/fault-rate` `{"fault_rate": F}`: change the fault rate.
//!
//! The request quota is checked first (every request counts, signed or not); injected
//! faults (5000/5100) and the per-second throttle (2500) are answered after
//! authentication but *before* the action runs, so a client that retries them
//! never duplicates an effect.
//!
//! ## Layout
//! - `server`: HTTP, authentication, quota, throttle, faults, job timing, admin.
//! - `quota`: the per-key sliding-window request quota and its log.
//! - `state`: the zone's state, the dispatch and the jobs.
//! - `nics`, `vips`, `describe`: the NIC, VIP and other actions.
//! - `index`: lookups that keep it fast with thousands of instances.
//! - `params`: parameters and 100-item paging.
//! - `topology`: what exists at start (file, default or generated).

mod describe;
mod index;
mod nics;
mod params;
mod quota;
mod server;
mod state;
mod topology;
mod vips;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use params::{MAX_PAGE, Params};
pub use quota::{KeyQuota, QuotaRejection, QuotaReport};
pub use server::SimHandle;
pub use state::{
    ActionCounter, ApiError, JobState, KeyCounter, NicEvent, NicEventKind, NicStatus, SimInstance,
    SimJob, SimNic, SimRouter, SimState, SimTag, SimVip, SimVxnet,
};
pub use topology::{
    InstanceSpec, MAX_GENERATED_VXNETS, RouterSpec, Topology, TopologyError, VxnetSpec,
};

use crate::config::Secret;
pub use crate::limits::WindowLimit;

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
    /// How long a job stays `pending` (simulated time).
    pub job_latency: Duration,
    /// How long a job then works before its effect (simulated time).
    pub attach_latency: Duration,
    /// Probability of answering 5000/5100 instead of running an action.
    pub fault_rate: f64,
    /// Requests per second above which the API answers 2500 (0 = unlimited); a
    /// short-term throttle besides the quota.
    pub rate_limit_qps: f64,
    /// The API request quota per access key, in simulated time (`None`: off).
    pub quota: Option<WindowLimit>,
    /// Simulated seconds per real second: job latencies and the quota window run
    /// this many times faster (1 = real time).
    pub time_scale: f64,
    /// Allowed distance of `time_stamp` from the simulator's clock.
    pub time_window: Duration,
    /// The API path (served with and without trailing slash).
    pub uri: String,
}

impl SimConfig {
    /// Defaults: 127.0.0.1 on a free port, default topology, 100 ms job latency,
    /// 500 ms attach latency, no faults, no per-second throttle, the account's
    /// default request quota (2,000 per 3,600 s), real time, 60 s time-stamp
    /// window, `/iaas`.
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
            quota: Some(WindowLimit::ACCOUNT_DEFAULT),
            time_scale: 1.0,
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
