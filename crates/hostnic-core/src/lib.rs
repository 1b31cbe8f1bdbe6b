//! # hostnic-core
//!
//! The pure domain of hostnic, a Kubernetes CNI for the QingCloud IaaS that gives
//! every pod its own cloud NIC. Everything hostnic *decides* lives here: which NIC
//! a pod gets, when to create, attach, detach and delete NICs, how to recover
//! after a crash. Everything hostnic *does* goes through the [`ports`], which the
//! adapter crates implement. This crate has no async runtime and performs no I/O,
//! so other projects can embed it and tests can drive it exhaustively.
//!
//! ## Layout
//! - [`types`]: identifiers and domain values (`NicId`, `PodKey`, `CloudNic`, …).
//! - [`ports`]: the traits `CloudNics`, `CloudNetwork`, `HostNetwork`, `PodSource`,
//!   `Clock`, `CheckpointStore` and their error types, each saying whether to retry.
//! - [`backoff`]: [`ExponentialBackoff`](backoff::ExponentialBackoff), the one retry-delay rule.
//! - [`config`]: `PoolConfig`, the pool's settings with the original hostnic's defaults.
//! - [`pool`]: `NodeState` — the NIC table and attachments; the allocator (ADD/DEL/GC),
//!   the batched warm-pool planner and backoff.
//! - [`checkpoint`]: the versioned durable snapshot of the state.
//! - [`reconcile`]: the three-way reconcile planner (state vs cloud vs host vs pods).
//! - [`supply`]: [`SuppliedCloud`](supply::SuppliedCloud), the node's cloud in controller mode
//!   (answered from its `NicSupply` and its host; no cloud call).
//! - [`recovery`]: what the node rebuilds from its witnesses (host, pod source, cloud)
//!   when its checkpoint is missing, damaged or older than the host.
//! - [`identity`]: the node's instance, pod vxnets and plumbing, from the cloud.
//! - [`engine`]: the state machine wired to the ports, runtime-agnostic.
//! - [`metrics`]: a counter and histogram registry in the Prometheus text format
//!   (the binaries serve it), the agent's families and the `process_*` metrics.
//! - [`fleet`]: the fleet planner: batched cloud calls for many nodes under one
//!   request budget (the controller's, and a direct-mode agent's for its node).
//! - [`shared`]: shared-NIC mode: node-affine VIP blocks of a vxnet (the block
//!   planner) and the node's address allocator inside its blocks.
//! - [`startup`]: the start-up record (step, last failure, cause and fix) and the
//!   diagnosis of the errors a start meets.
//! - [`api`]: serde types and framing of the CNI plugin ↔ agent protocol.
//! - [`policy`]: Kubernetes NetworkPolicy: the object model, the pure compiler to
//!   per-pod allow sets, and `evaluate`.
//! - `testing` (feature `testing`): in-memory fakes of every port.
//!
//! ## Example
//! `examples/burst.rs` embeds the engine with the fakes and serves a burst of pods:
//! `cargo run -p hostnic-core --features testing --example burst`.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod api;
pub mod backoff;
pub mod checkpoint;
pub mod config;
pub mod engine;
pub mod fleet;
pub mod identity;
pub mod metrics;
pub mod policy;
pub mod pool;
pub mod ports;
pub mod reconcile;
pub mod recovery;
pub mod shared;
pub mod startup;
pub mod supply;
#[cfg(feature = "testing")]
pub mod testing;
pub mod types;
