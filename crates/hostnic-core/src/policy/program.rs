//! What a [`PolicyDataplane`](crate::ports::PolicyDataplane) is given and what
//! it reports: this node's pods with their host veths, and the size of what is
//! programmed.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::PodRef;

/// A pod running on this node, with its host veth.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalPod {
    /// The pod.
    pub pod: PodRef,
    /// Its host-side veth name.
    pub veth: String,
}

/// A pod of this node as the agent assigned it: the address it gave the pod
/// (the API server learns it only after ADD) and the veth it plumbed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAssignment {
    /// The Kubernetes pod.
    pub pod: PodRef,
    /// The address the agent gave it.
    pub ip: Ipv4Addr,
    /// Its host veth.
    pub veth: String,
}

/// What one dataplane transaction changed, for logs, metrics and `/v1/policy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramStats {
    /// Commands in the transaction (0: nothing to do).
    pub commands: usize,
    /// Set elements added.
    pub elements_added: usize,
    /// Set elements removed.
    pub elements_removed: usize,
    /// Pod chains created or rewritten.
    pub chains_written: usize,
    /// Pod chains deleted.
    pub chains_deleted: usize,
    /// Named sets created.
    pub sets_created: usize,
    /// Named sets deleted.
    pub sets_deleted: usize,
}

impl ProgramStats {
    /// True when the transaction only touched set elements (no chain, set or
    /// map entry was created, rewritten or deleted).
    pub fn only_elements(&self) -> bool {
        self.chains_written == 0
            && self.chains_deleted == 0
            && self.sets_created == 0
            && self.sets_deleted == 0
    }
}

/// What a successful [`PolicyDataplane::sync`](crate::ports::PolicyDataplane::sync)
/// did and what is now programmed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Programmed {
    /// What this sync changed.
    pub stats: ProgramStats,
    /// Rules in the per pod chains now.
    pub rules: usize,
    /// Elements of the peer sets now.
    pub elements: usize,
}
