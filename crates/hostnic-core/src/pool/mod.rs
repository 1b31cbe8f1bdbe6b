//! The node's NIC pool: which NICs exist, where each is in its lifecycle, which
//! pod holds which NIC, and what to ask the cloud and the host next.
//!
//! A NIC has two independent dimensions:
//! - its [`CloudLink`]: is it attached to this instance (and is the host ready)?
//! - its [`Usage`]: free, cooling down after a pod left, assigned to a pod, or retiring.
//!
//! Keeping them apart is what lets an assigned NIC that vanished after a reboot be
//! attached again *without* the pod losing its address.
//!
//! ## Layout
//! - `state`: [`NodeState`], the NIC table and the attachments.
//! - `alloc`: ADD/DEL/CHECK/GC decisions on the state.
//! - `plan`: the warm-pool planner ([`PoolAction`]s) and the completion of actions.
//! - `backoff`: the retry state of each kind of pool operation.
//! - `cloud`: when the node must ask the cloud, and what the cloud refused
//!   ([`Shortage`], full vxnets, the hold after an account refusal).
//! - `readiness`: [`Readiness`], the one rule for "can the node serve an ADD".
//! - `supply`: controller mode, where the controller calls the cloud: what the
//!   node asks for ([`NodeState::supply_request`]) and what it was supplied
//!   ([`NodeState::supplied`]).

mod alloc;
mod backoff;
mod cloud;
mod plan;
mod readiness;
mod state;
mod supply;

#[cfg(feature = "testing")]
pub(crate) use crate::backoff::splitmix64 as splitmix;
pub use alloc::{AllocError, Assignment};
pub use backoff::Backoff;
pub use cloud::{CloudReason, Shortage, ShortageCause};
pub use plan::{ActionKind, MAX_CREATE, PoolAction};
pub use readiness::Readiness;
pub use state::{CloudLink, Entries, NicEntry, NodeState, PodAttachment, Usage};
