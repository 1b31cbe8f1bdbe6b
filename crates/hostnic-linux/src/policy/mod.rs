//! NetworkPolicy enforcement in the `hostnic` nftables table (family `inet`, the
//! table [`crate::node`] creates; its SNAT chains and sets are left alone).
//!
//! The core's [`hostnic_core::policy::compile()`] decides; this module renders the
//! result: per pod chains hooked on the pod's host veth through verdict maps,
//! peers as named sets, `ct state established,related accept` first, and every
//! change as one atomic `nft -j` transaction holding only the difference.
//!
//! ## Layout
//! - [`ruleset`]: the desired objects ([`PolicyRuleset`]) and their JSON.
//! - [`diff`]: the transaction from one ruleset to the next (its [`ProgramStats`]).
//! - [`renderer`]: [`PolicyRenderer`], which runs `nft`; the core's
//!   [`PolicyDataplane`](hostnic_core::ports::PolicyDataplane).

pub mod diff;
pub mod renderer;
pub mod ruleset;

pub use hostnic_core::policy::{LocalPod, ProgramStats};
pub use renderer::PolicyRenderer;
pub use ruleset::PolicyRuleset;
