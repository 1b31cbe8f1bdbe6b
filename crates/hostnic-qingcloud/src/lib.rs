//! # hostnic-qingcloud
//!
//! The QingCloud IaaS adapter of hostnic: a signature-v1 API client that
//! implements the core's [`CloudNics`](hostnic_core::ports::CloudNics) and
//! [`CloudNetwork`](hostnic_core::ports::CloudNetwork) ports, and (behind the
//! `sim` feature) a signature-checking simulator of the API for tests and the lab.
//!
//! ## Layout
//! - [`agent`]: what the node agent needs besides the ports: options from its
//!   settings, the credentials file followed, the cloud on its time scale.
//! - [`config`]: the `qcsecret` `config.yaml` (credentials, endpoint) and [`Secret`].
//! - [`signer`]: signature version 1 (HmacSHA256) and request parameters.
//! - [`errors`]: `ret_code` → [`CloudErrorKind`](hostnic_core::ports::CloudErrorKind).
//! - [`transport`]: the HTTP transport (reqwest + rustls/ring) behind a trait.
//! - [`limits`]: request limits over a sliding window (the account quota, the
//!   client's budget) and the retry backoff settings.
//! - [`service`]: the request path as a tower stack: retry, the request-quota
//!   circuit breaker, the request budget, timeout, concurrency limit, signing.
//! - [`stats`]: per-action call counters and latency, and an observer hook.
//! - [`client`]: [`QingCloudClient`]: the stack, its options, breaker and budget state.
//! - [`actions`]: the typed actions (NICs, jobs, vxnets, instances, routers, tags).
//! - [`vips`]: the VIP actions (AllocateVips, DescribeVips, ReleaseVips).
//! - `fleet`: the fleet planner's port ([`FleetCloud`](hostnic_core::fleet::FleetCloud)):
//!   one request per call, one page per listing, no waiting on jobs.
//! - `jobs`: the shared poller that batches concurrent job waits into one DescribeJobs.
//! - `ports`: the port implementations.
//! - [`sim`] (feature `sim`): the simulator.

pub mod actions;
pub mod agent;
pub mod client;
pub mod config;
pub mod errors;
mod fleet;
mod jobs;
pub mod limits;
mod ports;
pub mod service;
pub mod signer;
#[cfg(feature = "sim")]
pub mod sim;
pub mod stats;
pub mod transport;
pub mod vips;

pub use client::{ClientOptions, DEFAULT_BUDGET, QingCloudClient};
pub use config::{Config, Endpoint, Secret};
pub use limits::WindowLimit;
pub use service::{BreakerState, BreakerStatus, BudgetState};
