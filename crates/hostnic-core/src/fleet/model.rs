//! The fleet planner's vocabulary: what a node asks for, what the cloud answers,
//! and what is recorded so that another planner can take over.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::types::{CloudNic, InstanceId, JobId, NicId, VxnetId};

/// The name of a node of the cluster (its Kubernetes Node name; in direct mode,
/// any name the agent gives itself).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeName(Arc<str>);

impl NodeName {
    /// Wraps a node name.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into().into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeName {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

/// What one node asks of the cloud, as its agent states it (in controller mode,
/// the `spec` of its `HostnicNode`). The planner decides how to get it.
///
/// `want` counts every pod NIC the node wants attached, including the ones it
/// already has: a node that holds 10 NICs and wants 12 gets 2 more. NICs it no
/// longer wants are named in `release`; the planner never takes a NIC away from
/// a node that did not give it back (except when the node left the cluster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDemand {
    /// The node.
    pub node: NodeName,
    /// Its instance (the VM the NICs are attached to).
    pub instance: InstanceId,
    /// Vxnets of its pod NICs, most preferred first. Empty: the vxnet of the
    /// instance's primary NIC.
    pub vxnets: Vec<VxnetId>,
    /// Pod NICs the node wants attached in total.
    pub want: u32,
    /// The most pod NICs the node may hold (attached and attaching).
    pub max_nics: u32,
    /// NICs the node gives back: detached, then reused by other nodes or deleted.
    pub release: BTreeSet<NicId>,
    /// NICs the planner reported attached that the node's host does not see; the
    /// planner checks them with the cloud and detaches and re-attaches them (a
    /// known cloud fault), or replaces them when they are gone.
    pub missing: BTreeSet<NicId>,
    /// Pods on the node waiting for a NIC now: the node's calls go first.
    pub waiting: u32,
    /// Set when the node's request could not be read (a negative or malformed
    /// count, an empty instance id): the node is refused with this message and
    /// nothing changes in the cloud for it, but it keeps its instance.
    pub invalid: Option<String>,
}

impl NodeDemand {
    /// A demand of `want` NICs for `node` on `instance`, other fields empty;
    /// `max_nics` 62 (a QingCloud instance takes 63 NICs besides the primary one,
    /// hostnic keeps one in reserve as the original hostnic did).
    pub fn new(node: impl Into<NodeName>, instance: InstanceId, want: u32) -> Self {
        Self {
            node: node.into(),
            instance,
            vxnets: Vec::new(),
            want,
            max_nics: 62,
            release: BTreeSet::new(),
            missing: BTreeSet::new(),
            waiting: 0,
            invalid: None,
        }
    }
}

impl From<String> for NodeName {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

/// An instance as `DescribeInstances` (verbose) tells it: its primary vxnet and
/// every NIC attached to it besides the primary one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceNics {
    /// The instance.
    pub id: InstanceId,
    /// The vxnet of its primary NIC.
    pub primary_vxnet: VxnetId,
    /// NICs attached to it other than the primary one (any name, any owner).
    pub nics: Vec<NicId>,
}

/// Which NICs one `DescribeNics` page asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NicQuery {
    /// These NICs (at most 100: one page).
    Ids(Vec<NicId>),
    /// NICs named exactly `name`, optionally only the detached ones, one page of
    /// 100 from `offset`.
    Named {
        /// The NIC name.
        name: String,
        /// Only `available` (detached) NICs.
        available_only: bool,
        /// Offset of the page.
        offset: u32,
    },
}

/// One page of NICs and how many match in all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicPage {
    /// The NICs of the page.
    pub nics: Vec<CloudNic>,
    /// NICs matching the query in all (`total_count`).
    pub total: u32,
}

/// Where an asynchronous job is, as `DescribeJobs` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobProgress {
    /// Pending or working.
    Running,
    /// Successful: its effect happened.
    Succeeded,
    /// Failed: the NICs are as they were (or unknown).
    Failed,
}

/// Which jobs one `DescribeJobs` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobQuery {
    /// These jobs (at most 100: one page).
    Ids(Vec<JobId>),
    /// The account's `AttachNics` and `DetachNics` jobs still running (pending or
    /// working), one page of 100 from `offset`: what a planner starting up adopts,
    /// recorded or not.
    Running {
        /// Offset of the page.
        offset: u32,
    },
}

/// A job as `DescribeJobs` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    /// The job.
    pub id: JobId,
    /// Where it is.
    pub progress: JobProgress,
    /// What it does, if it is a NIC job.
    pub action: Option<JobAction>,
    /// Its NICs (from its directive).
    pub nics: Vec<NicId>,
    /// The instance it attaches to (or detaches from), when the directive says.
    pub instance: Option<InstanceId>,
}

/// One page of jobs and how many match in all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPage {
    /// The jobs of the page.
    pub jobs: Vec<JobInfo>,
    /// Jobs matching the query in all.
    pub total: u32,
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobAction {
    /// `AttachNics` to the node's instance.
    Attach,
    /// `DetachNics` from the node's instance.
    Detach,
}

/// A job in flight, as recorded for the node it concerns, so that a planner
/// taking over can follow it instead of starting the work again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job.
    pub id: JobId,
    /// Attach or detach.
    pub action: JobAction,
    /// Its NICs.
    pub nics: Vec<NicId>,
}

/// Where a NIC of a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NicPhase {
    /// Set aside for the node, about to be attached (recorded before the
    /// `AttachNics`, so that a planner taking over knows an attach may be under
    /// way): not usable yet.
    Reserved,
    /// Attached to the node's instance: the node may use it.
    Attached,
    /// An attach job is running.
    Attaching,
    /// A detach job is running (given back, or being repaired).
    Detaching,
}

/// A NIC of a node: everything its host needs to use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeNic {
    /// The NIC id (its MAC).
    pub id: NicId,
    /// Its one address.
    pub ip: Ipv4Addr,
    /// Its vxnet.
    pub vxnet: VxnetId,
    /// The vxnet's network, when known.
    pub cidr: Option<Ipv4Net>,
    /// The vxnet's gateway, when known.
    pub gateway: Option<Ipv4Addr>,
    /// Where it is.
    pub phase: NicPhase,
}

/// What is recorded for one node (in controller mode, in its `HostnicNode`
/// status) so that a fresh planner can resume: its NICs and jobs in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node.
    pub node: NodeName,
    /// Its instance.
    pub instance: InstanceId,
    /// Its NICs.
    pub nics: Vec<NodeNic>,
    /// Jobs in flight on its NICs.
    pub jobs: Vec<JobRecord>,
}

/// The priority lanes of cloud calls, most urgent first. When the budget does
/// not cover every call of a round, earlier lanes are served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lane {
    /// Nodes with pods waiting for a NIC now.
    Waiting,
    /// A NIC that vanished or broke: replace or re-attach it.
    Repair,
    /// Nodes filling their warm pool (no pod waiting yet).
    Demand,
    /// NICs nodes gave back.
    Release,
    /// Garbage: NICs of nodes that left, leftovers nobody needs.
    Gc,
    /// Inventory of the cloud, for adoption and drift.
    Inventory,
}

impl Lane {
    /// Every lane, most urgent first.
    pub const ALL: [Lane; 6] = [
        Lane::Waiting,
        Lane::Repair,
        Lane::Demand,
        Lane::Release,
        Lane::Gc,
        Lane::Inventory,
    ];

    /// `waiting`, `repair`, … (for metrics and logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Waiting => "waiting",
            Lane::Repair => "repair",
            Lane::Demand => "demand",
            Lane::Release => "release",
            Lane::Gc => "gc",
            Lane::Inventory => "inventory",
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
