//! Shared-NIC mode, the pure part: address blocks of a vxnet reserved for one
//! node (as VIPs, by the controller) and the node's allocator inside them.
//!
//! In shared mode a node has one NIC per vxnet and no cloud NIC per pod. Pod
//! addresses come from **node-affine blocks**: aligned ranges of the vxnet, each
//! reserved with one `AllocateVips` (`vip_range`) named after the node, which the
//! node then claims address by address with proxy ARP and announces with a
//! gratuitous ARP (`hostnic_linux::arp`). A block belongs to one node for its
//! whole life, so an address never moves between nodes while peers may still hold
//! the old owner's MAC — the fault of address pools shared across nodes.
//!
//! Two pure machines, no I/O and no clock of their own (callers pass
//! [`Timestamp`](crate::types::Timestamp)s):
//! - [`BlockPlanner`] (the controller's): per (node, vxnet) it decides which
//!   blocks to reserve and release and returns typed [`BlockIntent`]s; problems
//!   are typed [`PlanProblem`]s. The first block is sized to the node's expected
//!   pods, later blocks by doubling, none smaller than [`MIN_BLOCK`]; a node
//!   nearing capacity gets another block; an empty block is retired, then released
//!   after a grace period once its node confirms it is drained; the blocks of a
//!   node that left are released.
//! - [`NodeAllocator`] (the agent's): addresses inside the node's blocks, with a
//!   per-address cooldown before reuse, a serde checkpoint, and recovery from the
//!   live pods when the checkpoint is missing or stale.
//!
//! The property tests (`tests/shared_properties.rs`) run both against a VIP cloud
//! with failing and lost reservations, agent crashes and node reboots.
//!
//! ## Layout
//! - `range`: [`AddrRange`], [`Block`], the usable range of a vxnet, aligned windows.
//! - `config`: [`SharedConfig`] and its validation.
//! - `plan`: [`BlockPlanner`], [`BlockIntent`], [`NodeReport`], [`PlanProblem`].
//! - `alloc`: [`NodeAllocator`], its checkpoint and recovery.

mod alloc;
mod config;
mod plan;
mod range;

pub use alloc::{AllocError, BlockUse, NodeAllocator, Recovery};
pub use config::{SharedConfig, SharedConfigError};
pub use plan::{
    AssignedBlock, BlockIntent, BlockListing, BlockPlanner, ListedVip, NodeReport, PlanProblem,
    ReserveError, SharedPlan,
};
pub use range::{AddrRange, Block, MIN_BLOCK, usable_range};
