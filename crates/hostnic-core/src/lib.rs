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
//! - [`ports`]: the traits `CloudNics`, `CloudNetwork`, `HostNetwork`, `PodSource`, `Clock`
//!   and their error types.
//! - [`api`]: serde types of the CNI plugin ↔ agent protocol.
//! - [`policy`]: Kubernetes NetworkPolicy: the object model, the pure compiler to
//!   per-pod allow sets, and `evaluate`.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod api;
pub mod checkpoint;
pub mod config;
pub mod engine;
pub mod policy;
pub mod pool;
pub mod ports;
pub mod reconcile;
#[cfg(feature = "testing")]
pub mod testing;
pub mod types;
