//! # hostnic-qingcloud
//!
//! The QingCloud IaaS adapter of hostnic: a signature-v1 API client that
//! implements the core's [`CloudNics`](hostnic_core::ports::CloudNics) and
//! [`CloudNetwork`](hostnic_core::ports::CloudNetwork) ports, and (behind the
//! `sim` feature) a signature-checking simulator of the API for tests and the lab.
//!
//! ## Layout
//! - [`config`]: the `qcsecret` `config.yaml` (credentials, endpoint) and [`Secret`].
//! - [`signer`]: signature version 1 (HmacSHA256) and request parameters.
//! - [`errors`]: `ret_code` → [`CloudErrorKind`](hostnic_core::ports::CloudErrorKind).
//! - [`transport`]: the HTTP transport (reqwest + rustls/ring) behind a trait.
//! - [`limits`]: token-bucket rate limit and jittered exponential backoff.
//! - [`stats`]: per-action call counters and latency, and an observer hook.
//! - [`client`]: [`QingCloudClient`]: timeout, retry, rate and concurrency limits, tracing.
//! - [`actions`]: the typed actions (NICs, jobs, vxnets, instances, routers, tags).
//! - `ports`: the port implementations.
//! - [`sim`] (feature `sim`): the simulator.

pub mod actions;
pub mod client;
pub mod config;
pub mod errors;
pub mod limits;
mod ports;
pub mod signer;
#[cfg(feature = "sim")]
pub mod sim;
pub mod stats;
pub mod transport;

pub use client::{ClientOptions, QingCloudClient};
pub use config::{Config, Endpoint, Secret};
