//! A round of planned cloud calls, the budget it is planned under, and the
//! outcomes the executor reports back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fleet::model::{InstanceNics, JobPage, JobQuery, Lane, NicPage, NicQuery, NodeName};
use crate::ports::CloudError;
use crate::types::{CloudNic, InstanceId, JobId, NicId, Vxnet, VxnetId};

/// What happens to NICs once a `DetachNics` job succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AfterDetach {
    /// Kept detached for other nodes (after the cooldown), deleted if nobody
    /// needs them within the linger time: NICs a node gave back.
    Keep,
    /// Deleted unless a node needs one right now: NICs of a node that left.
    Delete,
    /// Attached again to the same node: a NIC its host does not see.
    Reattach,
}

/// One cloud call, in the API's terms. Every call is one request, except
/// `CreateNics` (the call, then `AttachTags` of the new NICs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FleetCall {
    /// `DescribeInstances` (verbose) of up to a page of instances.
    DescribeInstances {
        /// The instances.
        instances: Vec<InstanceId>,
    },
    /// `DescribeVxnets` of up to a page of vxnets.
    DescribeVxnets {
        /// The vxnets.
        vxnets: Vec<VxnetId>,
    },
    /// One page of `DescribeNics`.
    DescribeNics {
        /// What to list.
        query: NicQuery,
    },
    /// `CreateNics` of `count` NICs named `name` in `vxnet`, for several nodes.
    CreateNics {
        /// The vxnet.
        vxnet: VxnetId,
        /// How many (1 to 252).
        count: u32,
        /// Their name, `hostnic_<cluster>`.
        name: String,
        /// Which nodes the NICs are for, in the order they get them.
        for_nodes: Vec<(NodeName, u32)>,
    },
    /// `AttachNics` of NICs to one node's instance.
    AttachNics {
        /// The node.
        node: NodeName,
        /// Its instance.
        instance: InstanceId,
        /// The NICs.
        nics: Vec<NicId>,
    },
    /// `DetachNics` of NICs, from whatever instances hold them.
    DetachNics {
        /// The NICs.
        nics: Vec<NicId>,
        /// What becomes of them.
        then: AfterDetach,
    },
    /// `DeleteNics` of detached NICs.
    DeleteNics {
        /// The NICs.
        nics: Vec<NicId>,
    },
    /// `DescribeJobs`: every job in flight (up to a page), or one page of the
    /// account's running NIC jobs.
    DescribeJobs {
        /// Which jobs.
        query: JobQuery,
    },
}

impl FleetCall {
    /// The API action.
    pub fn action(&self) -> &'static str {
        match self {
            FleetCall::DescribeInstances { .. } => "DescribeInstances",
            FleetCall::DescribeVxnets { .. } => "DescribeVxnets",
            FleetCall::DescribeNics { .. } => "DescribeNics",
            FleetCall::CreateNics { .. } => "CreateNics",
            FleetCall::AttachNics { .. } => "AttachNics",
            FleetCall::DetachNics { .. } => "DetachNics",
            FleetCall::DeleteNics { .. } => "DeleteNics",
            FleetCall::DescribeJobs { .. } => "DescribeJobs",
        }
    }

    /// True for calls that change the cloud.
    pub fn mutates(&self) -> bool {
        matches!(
            self,
            FleetCall::CreateNics { .. }
                | FleetCall::AttachNics { .. }
                | FleetCall::DetachNics { .. }
                | FleetCall::DeleteNics { .. }
        )
    }
}

/// A call and its lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedCall {
    /// The call.
    pub call: FleetCall,
    /// Why it is made.
    pub lane: Lane,
    /// Requests it costs (1; `CreateNics` more, see [`FleetConfig::create_cost`](crate::fleet::FleetConfig::create_cost)).
    pub requests: u32,
}

/// The breaker on the account's request quota, as the client reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Breaker {
    /// Calls go through.
    Closed,
    /// The quota is exhausted. `probe_due`: the client will let the next call
    /// through as its probe; the planner then plans exactly one call.
    Open {
        /// The probe interval has passed.
        probe_due: bool,
    },
}

/// What a round may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundBudget {
    /// Requests the budget window allows now.
    pub available: u32,
    /// The breaker.
    pub breaker: Breaker,
}

impl RoundBudget {
    /// `available` requests, breaker closed.
    pub fn open(available: u32) -> Self {
        Self {
            available,
            breaker: Breaker::Closed,
        }
    }
}

/// The calls of one round. They touch disjoint NICs and nodes, so the executor
/// may run them in any order or all at once; it reports each outcome back with
/// [`Fleet::complete`](crate::fleet::Fleet::complete) before the next round is planned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetRound {
    /// The calls, most urgent first.
    pub calls: Vec<PlannedCall>,
    /// Calls wanted but left for later rounds (budget or breaker), by lane: the queue depth.
    pub deferred: BTreeMap<Lane, u32>,
}

impl FleetRound {
    /// Requests the round costs.
    pub fn requests(&self) -> u32 {
        self.calls.iter().map(|c| c.requests).sum()
    }

    /// True when nothing is planned.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

/// What a call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `DescribeInstances`: the instances that exist (absent ones do not).
    Instances(Result<Vec<InstanceNics>, CloudError>),
    /// `DescribeVxnets`: the vxnets that exist (absent ones do not).
    Vxnets(Result<Vec<Vxnet>, CloudError>),
    /// `DescribeNics`: one page.
    Nics(Result<NicPage, CloudError>),
    /// `CreateNics`: the new NICs.
    Created(Result<Vec<CloudNic>, CloudError>),
    /// `AttachNics` / `DetachNics`: the job.
    Job(Result<JobId, CloudError>),
    /// `DeleteNics`.
    Deleted(Result<(), CloudError>),
    /// `DescribeJobs`: the jobs the API knows (absent ones it does not).
    Jobs(Result<JobPage, CloudError>),
}

impl Outcome {
    /// The error, if the call failed.
    pub fn error(&self) -> Option<&CloudError> {
        match self {
            Outcome::Instances(r) => r.as_ref().err(),
            Outcome::Vxnets(r) => r.as_ref().err(),
            Outcome::Nics(r) => r.as_ref().err(),
            Outcome::Created(r) => r.as_ref().err(),
            Outcome::Job(r) => r.as_ref().err(),
            Outcome::Deleted(r) => r.as_ref().err(),
            Outcome::Jobs(r) => r.as_ref().err(),
        }
    }

    /// A failure of `call`, as the executor reports it when it could not even
    /// make the call.
    pub fn failed(call: &FleetCall, error: CloudError) -> Self {
        match call {
            FleetCall::DescribeInstances { .. } => Outcome::Instances(Err(error)),
            FleetCall::DescribeVxnets { .. } => Outcome::Vxnets(Err(error)),
            FleetCall::DescribeNics { .. } => Outcome::Nics(Err(error)),
            FleetCall::CreateNics { .. } => Outcome::Created(Err(error)),
            FleetCall::AttachNics { .. } | FleetCall::DetachNics { .. } => Outcome::Job(Err(error)),
            FleetCall::DeleteNics { .. } => Outcome::Deleted(Err(error)),
            FleetCall::DescribeJobs { .. } => Outcome::Jobs(Err(error)),
        }
    }
}
