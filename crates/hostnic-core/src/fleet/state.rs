//! [`Fleet`]: what the planner knows of the cloud and the nodes between rounds,
//! how a fresh planner resumes from the records of a previous one, and the views
//! it gives of each node.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fleet::call::AfterDetach;
use crate::fleet::config::FleetConfig;
use crate::fleet::model::{
    JobAction, JobRecord, Lane, NicPhase, NodeDemand, NodeName, NodeNic, NodeRecord,
};
use crate::pool::Backoff;
use crate::types::{InstanceId, JobId, NicId, RouterId, Timestamp, Vxnet, VxnetId};

/// Why a node's request is refused. Nothing changes in the cloud for a refused
/// node: it keeps the NICs it has, gets no new ones and gives none back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The request could not be read or is out of range (negative, too large).
    InvalidRequest(String),
    /// The cloud does not know the instance.
    UnknownInstance(InstanceId),
    /// Another node claims the same instance.
    InstanceConflict {
        /// The instance.
        instance: InstanceId,
        /// The other node.
        other: NodeName,
    },
    /// The cloud does not know a vxnet of the node's preference.
    UnknownVxnet(VxnetId),
    /// A vxnet of the node's preference belongs to another VPC than the node's
    /// primary NIC (or to none).
    ForeignVxnet {
        /// The vxnet.
        vxnet: VxnetId,
        /// Its VPC router.
        router: Option<RouterId>,
        /// The router of the node's primary vxnet.
        expected: Option<RouterId>,
    },
    /// The node gives back (or reports missing) a NIC that is another node's.
    ForeignNic {
        /// The NIC.
        nic: NicId,
        /// The node it belongs to (none: an instance of no node of the cluster).
        owner: Option<NodeName>,
    },
}

impl Refusal {
    /// The reason as a Kubernetes condition reason (CamelCase).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::InvalidRequest(_) => "InvalidRequest",
            Refusal::UnknownInstance(_) => "UnknownInstance",
            Refusal::InstanceConflict { .. } => "InstanceConflict",
            Refusal::UnknownVxnet(_) => "UnknownVxnet",
            Refusal::ForeignVxnet { .. } => "ForeignVxnet",
            Refusal::ForeignNic { .. } => "ForeignNic",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let router = |r: &Option<RouterId>| {
            r.as_ref()
                .map_or_else(|| "no VPC".to_string(), |r| format!("VPC {r}"))
        };
        match self {
            Refusal::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            Refusal::UnknownInstance(i) => write!(f, "instance {i} does not exist in the cloud"),
            Refusal::InstanceConflict { instance, other } => {
                write!(f, "instance {instance} is claimed by node {other} as well")
            }
            Refusal::UnknownVxnet(v) => write!(f, "vxnet {v} does not exist in the cloud"),
            Refusal::ForeignVxnet {
                vxnet,
                router: r,
                expected,
            } => write!(
                f,
                "vxnet {vxnet} is in {}, the node's primary NIC in {}",
                router(r),
                router(expected)
            ),
            Refusal::ForeignNic { nic, owner } => match owner {
                Some(o) => write!(f, "NIC {nic} belongs to node {o}"),
                None => write!(f, "NIC {nic} is attached to an instance of another node"),
            },
        }
    }
}

/// Everything the planner reports about one node (in controller mode, its
/// `HostnicNode` status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// The node.
    pub node: NodeName,
    /// Its instance.
    pub instance: InstanceId,
    /// Its NICs: attached (usable), attaching, detaching.
    pub nics: Vec<NodeNic>,
    /// Jobs in flight on its NICs.
    pub jobs: Vec<JobRecord>,
    /// NICs attached and not given back.
    pub attached: u32,
    /// The instance and vxnets were checked with the cloud.
    pub verified: bool,
    /// Every NIC the node wants is attached.
    pub ready: bool,
    /// Why the request is refused.
    pub refusal: Option<Refusal>,
    /// The node still wants NICs and its calls were held back by the request
    /// budget or the breaker on the account's quota.
    pub quota_exhausted: bool,
    /// The node still wants NICs and every vxnet it may use is out of addresses.
    pub vxnet_full: bool,
    /// The node still wants NICs and its instance takes no more.
    pub instance_full: bool,
    /// The last failure of a call for this node.
    pub last_error: Option<String>,
}

impl NodeView {
    /// What must be recorded of the node for a planner taking over (see
    /// [`Fleet::resume`]): its NICs and jobs.
    pub fn record(&self) -> NodeRecord {
        NodeRecord {
            node: self.node.clone(),
            instance: self.instance.clone(),
            nics: self.nics.clone(),
            jobs: self.jobs.clone(),
        }
    }
}

/// Where a NIC of the cluster is, as far as the planner knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NicState {
    /// Detached, this cluster's: for a node (reserved) or for whoever needs it.
    Stock {
        reserved_for: Option<NodeName>,
        /// Not attached before this (cooldown).
        usable_at: Timestamp,
        /// Deleted from this time on if nobody reserved it.
        delete_after: Timestamp,
    },
    /// An attach job runs.
    Attaching { instance: InstanceId, job: JobId },
    /// Attached.
    Attached { instance: InstanceId },
    /// A detach job runs.
    Detaching {
        instance: InstanceId,
        job: JobId,
        then: AfterDetach,
    },
    /// Unknown after a call whose effect is not known: checked with the cloud
    /// before anything else is done with it. `instance`: where it may be.
    Uncertain { instance: Option<InstanceId> },
}

impl NicState {
    /// The instance the NIC is (or may be, or is about to be) on.
    pub(crate) fn instance(&self) -> Option<&InstanceId> {
        match self {
            NicState::Stock { .. } => None,
            NicState::Attaching { instance, .. }
            | NicState::Attached { instance }
            | NicState::Detaching { instance, .. } => Some(instance),
            NicState::Uncertain { instance } => instance.as_ref(),
        }
    }
}

/// One NIC of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NicEntry {
    pub(crate) name: String,
    pub(crate) vxnet: VxnetId,
    pub(crate) ip: Ipv4Addr,
    pub(crate) state: NicState,
    /// When the state last changed.
    pub(crate) since: Timestamp,
    /// First seen on an instance no node claims.
    pub(crate) orphan_since: Option<Timestamp>,
    /// Must be checked with a `DescribeNics` (from this time on).
    pub(crate) verify_at: Option<Timestamp>,
    /// Detach it and attach it again to its node (its host does not see it).
    pub(crate) reattach: bool,
    /// Last time a node's report of it missing was acted on.
    pub(crate) missing_checked: Option<Timestamp>,
    /// The instance it was last detached from.
    pub(crate) last_instance: Option<InstanceId>,
    /// It came back from uncertain near an instance: an attach job nobody recorded
    /// may still run on it, so until then it counts against that instance's
    /// limit (and stays reserved for its node).
    pub(crate) pinned: Option<(InstanceId, Timestamp)>,
    /// Times it became uncertain since a job on it last succeeded: each check
    /// waits longer, so a NIC some unrecorded job keeps busy is not hammered.
    pub(crate) strikes: u32,
}

impl NicEntry {
    /// The instance it is pinned to at `now`, if any.
    pub(crate) fn pinned_to(&self, now: Timestamp) -> Option<&InstanceId> {
        self.pinned
            .as_ref()
            .filter(|(_, until)| *until > now)
            .map(|(i, _)| i)
    }

    /// A NIC first seen now in `state`.
    pub(crate) fn new(
        name: String,
        vxnet: VxnetId,
        ip: Ipv4Addr,
        state: NicState,
        now: Timestamp,
    ) -> Self {
        Self {
            name,
            vxnet,
            ip,
            state,
            since: now,
            orphan_since: None,
            verify_at: None,
            reattach: false,
            missing_checked: None,
            last_instance: None,
            pinned: None,
            strikes: 0,
        }
    }

    /// The instance the NIC was on before its current state, if it was detached
    /// from one (so a node's stale release list is not mistaken for a foreign NIC).
    pub(crate) fn last_holder(&self) -> Option<&InstanceId> {
        self.last_instance.as_ref()
    }
}

/// A job in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobTrack {
    pub(crate) action: JobAction,
    pub(crate) instance: Option<InstanceId>,
    pub(crate) nics: Vec<NicId>,
    /// When the API last said it runs (or it started): a job the API keeps
    /// reporting as running is followed as long as it runs.
    pub(crate) confirmed: Timestamp,
    /// Polls that failed since then. A job is given up only when polls kept
    /// failing for the job timeout, never because the planner itself was slow.
    pub(crate) failed_polls: u32,
    pub(crate) next_poll: Timestamp,
    pub(crate) delay: Duration,
    pub(crate) lane: Lane,
}

/// One node of the latest demand set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeTrack {
    pub(crate) demand: NodeDemand,
    pub(crate) refusal: Option<Refusal>,
    pub(crate) unmet_since: Option<Timestamp>,
    pub(crate) last_served: Timestamp,
    pub(crate) backoff: Backoff,
    /// It lost a NIC: its refill goes in the repair lane.
    pub(crate) repair: bool,
    pub(crate) throttled: bool,
    pub(crate) instance_full: bool,
    pub(crate) vxnet_full: bool,
    pub(crate) last_error: Option<String>,
}

/// What `DescribeInstances` said of an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct InstanceTrack {
    pub(crate) described_at: Option<Timestamp>,
    pub(crate) exists: bool,
    pub(crate) primary_vxnet: Option<VxnetId>,
    /// Attached NICs that are not the cluster's (they count against the instance's limit).
    pub(crate) foreign: BTreeSet<NicId>,
    /// Attached NICs not yet described: the cluster's or not.
    pub(crate) unknown: BTreeSet<NicId>,
    /// Describe it again at the next round.
    pub(crate) stale: bool,
}

/// What the planner knows of a vxnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VxnetInfo {
    Unknown,
    NotFound,
    Known(Vxnet),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VxnetTrack {
    pub(crate) info: VxnetInfo,
    /// Out of addresses (or NICs) until then.
    pub(crate) exhausted_until: Option<Timestamp>,
    /// After a `CreateNics` failed for lack of room: how many to try next.
    pub(crate) ceiling: Option<u32>,
    /// After a `CreateNics` failed for lack of room: the most it can still take.
    pub(crate) room_max: Option<u32>,
    pub(crate) create_backoff: Backoff,
}

impl VxnetTrack {
    pub(crate) fn unknown() -> Self {
        Self {
            info: VxnetInfo::Unknown,
            exhausted_until: None,
            ceiling: None,
            room_max: None,
            create_backoff: Backoff::default(),
        }
    }
}

/// NICs by instance and reservations by node (see [`Fleet::index`]).
#[derive(Debug, Default)]
pub(crate) struct NicIndex<'a> {
    pub(crate) on: BTreeMap<&'a InstanceId, Vec<(&'a NicId, &'a NicEntry)>>,
    pub(crate) reserved: BTreeMap<&'a NodeName, Vec<(&'a NicId, &'a NicEntry)>>,
    /// Jobs by the instance they attach to, or detach NICs of.
    pub(crate) jobs: BTreeMap<&'a InstanceId, BTreeSet<&'a JobId>>,
}

/// A paged listing in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scan {
    pub(crate) offset: u32,
    pub(crate) started: Timestamp,
    pub(crate) seen: BTreeSet<NicId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scans {
    /// The detached NICs of the cluster (leftovers, stock).
    pub(crate) stock: Option<Scan>,
    pub(crate) next_stock: Timestamp,
    /// Every NIC of the cluster.
    pub(crate) full: Option<Scan>,
    pub(crate) next_full: Timestamp,
}

/// The fleet planner: from every node's demand and what it knows of the cloud,
/// it plans rounds of batched cloud calls under one budget ([`Fleet::plan`]),
/// and learns from their outcomes ([`Fleet::complete`]). Pure: no I/O, no clock
/// of its own; every decision is a function of its inputs and the times it is given.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub(crate) config: FleetConfig,
    pub(crate) nics: BTreeMap<NicId, NicEntry>,
    pub(crate) jobs: BTreeMap<JobId, JobTrack>,
    pub(crate) nodes: BTreeMap<NodeName, NodeTrack>,
    /// The node claiming each instance (the first by name), rebuilt with the demand set.
    pub(crate) claims: BTreeMap<InstanceId, NodeName>,
    pub(crate) instances: BTreeMap<InstanceId, InstanceTrack>,
    pub(crate) vxnets: BTreeMap<VxnetId, VxnetTrack>,
    pub(crate) scans: Scans,
    /// Backoff of calls that belong to no node (describes, GC), by action.
    pub(crate) backoffs: BTreeMap<&'static str, Backoff>,
    /// The account's running NIC jobs were listed (and adopted): until then the
    /// planner changes nothing, since a job nobody recorded may be running.
    pub(crate) jobs_listed: bool,
    /// Offset of the next page of that listing.
    pub(crate) jobs_offset: u32,
    /// NICs of adopted jobs the planner did not know: described next.
    pub(crate) adopting: BTreeSet<NicId>,
    pub(crate) seed: u64,
}

impl Fleet {
    /// A planner that knows nothing yet: its first rounds describe the nodes'
    /// instances and vxnets and list the cluster's NICs before anything is changed.
    pub fn new(config: FleetConfig, now: Timestamp) -> Self {
        Self {
            config,
            nics: BTreeMap::new(),
            jobs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            claims: BTreeMap::new(),
            instances: BTreeMap::new(),
            vxnets: BTreeMap::new(),
            scans: Scans {
                stock: None,
                next_stock: now,
                full: None,
                next_full: now,
            },
            backoffs: BTreeMap::new(),
            jobs_listed: false,
            jobs_offset: 0,
            adopting: BTreeSet::new(),
            seed: 0x5eed_f1ee7,
        }
    }

    /// A planner taking over from another (a new leader): it starts from what the
    /// other recorded for each node — NICs and jobs in flight — follows those jobs
    /// instead of starting the work again, and checks every instance with the
    /// cloud before it changes anything for it.
    pub fn resume(config: FleetConfig, now: Timestamp, records: &[NodeRecord]) -> Self {
        let mut fleet = Self::new(config, now);
        for record in records {
            let instance = &record.instance;
            for nic in &record.nics {
                let state = match nic.phase {
                    NicPhase::Attached => NicState::Attached {
                        instance: instance.clone(),
                    },
                    // A job in flight without a record, or an attach that may have
                    // been made: unknown until checked, and the node's meanwhile.
                    NicPhase::Reserved | NicPhase::Attaching | NicPhase::Detaching => {
                        NicState::Uncertain {
                            instance: Some(instance.clone()),
                        }
                    }
                };
                let verify = matches!(state, NicState::Uncertain { .. });
                let mut entry = NicEntry::new(
                    fleet.config.nic_name(),
                    nic.vxnet.clone(),
                    nic.ip,
                    state,
                    now,
                );
                entry.verify_at = verify.then_some(now);
                fleet.nics.entry(nic.id.clone()).or_insert(entry);
            }
            for job in &record.jobs {
                let lane = Lane::Demand;
                for id in &job.nics {
                    if let Some(entry) = fleet.nics.get_mut(id) {
                        entry.verify_at = None;
                        entry.state = match job.action {
                            JobAction::Attach => NicState::Attaching {
                                instance: instance.clone(),
                                job: job.id.clone(),
                            },
                            JobAction::Detach => NicState::Detaching {
                                instance: instance.clone(),
                                job: job.id.clone(),
                                then: AfterDetach::Keep,
                            },
                        };
                    }
                }
                fleet.jobs.insert(
                    job.id.clone(),
                    JobTrack {
                        action: job.action,
                        instance: Some(instance.clone()),
                        nics: job.nics.clone(),
                        confirmed: now,
                        failed_polls: 0,
                        next_poll: now,
                        delay: fleet.config.job_poll_initial,
                        lane,
                    },
                );
            }
        }
        fleet
    }

    /// The settings.
    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// Jobs in flight.
    pub fn jobs_in_flight(&self) -> usize {
        self.jobs.len()
    }

    /// NICs of the cluster the planner knows of, by where they are:
    /// `(stock, attaching, attached, detaching, uncertain)`.
    pub fn nic_counts(&self) -> (u32, u32, u32, u32, u32) {
        let mut c = (0, 0, 0, 0, 0);
        for e in self.nics.values() {
            match e.state {
                NicState::Stock { .. } => c.0 += 1,
                NicState::Attaching { .. } => c.1 += 1,
                NicState::Attached { .. } => c.2 += 1,
                NicState::Detaching { .. } => c.3 += 1,
                NicState::Uncertain { .. } => c.4 += 1,
            }
        }
        c
    }

    /// Every NIC id the planner knows of (tests: compare with the cloud).
    pub fn known_nics(&self) -> BTreeSet<NicId> {
        self.nics.keys().cloned().collect()
    }

    /// The node's effective vxnets: its preference, else its primary vxnet.
    pub(crate) fn vxnets_of(&self, demand: &NodeDemand) -> Vec<VxnetId> {
        if !demand.vxnets.is_empty() {
            return demand.vxnets.clone();
        }
        self.instances
            .get(&demand.instance)
            .and_then(|i| i.primary_vxnet.clone())
            .into_iter()
            .collect()
    }

    /// The node that claims `instance` (the first by name if several do).
    pub(crate) fn claimant(&self, instance: &InstanceId) -> Option<&NodeName> {
        self.claims.get(instance)
    }

    /// The NICs of each instance (any state that puts them there) and the stock
    /// reserved for each node, in one pass.
    pub(crate) fn index(&self) -> NicIndex<'_> {
        let mut index = NicIndex::default();
        for (id, e) in &self.nics {
            match &e.state {
                NicState::Stock {
                    reserved_for: Some(n),
                    ..
                } => index.reserved.entry(n).or_default().push((id, e)),
                s => {
                    if let Some(i) = s.instance() {
                        index.on.entry(i).or_default().push((id, e));
                    }
                }
            }
            if let NicState::Attaching { instance, job }
            | NicState::Detaching { instance, job, .. } = &e.state
            {
                index.jobs.entry(instance).or_default().insert(job);
            }
        }
        for (id, j) in &self.jobs {
            if let Some(i) = &j.instance {
                index.jobs.entry(i).or_default().insert(id);
            }
        }
        index
    }

    /// True for a NIC name this cluster's planner may manage: its own, and the
    /// per-instance name of a node agent in direct mode (`hostnic_<instance>`,
    /// adopted while attached to that instance: the migration path).
    pub(crate) fn is_ours(&self, name: &str, instance: Option<&InstanceId>) -> bool {
        name == self.config.nic_name()
            || instance.is_some_and(|i| name == crate::types::managed_nic_name(i))
    }

    /// What the planner reports about `node`.
    pub fn view(&self, node: &NodeName) -> Option<NodeView> {
        self.view_indexed(node, &self.index())
    }

    fn view_indexed(&self, node: &NodeName, index: &NicIndex<'_>) -> Option<NodeView> {
        let track = self.nodes.get(node)?;
        let demand = &track.demand;
        let mut nics: Vec<NodeNic> = Vec::new();
        let mut attached = 0;
        let mine = index
            .on
            .get(&demand.instance)
            .into_iter()
            .chain(index.reserved.get(node))
            .flatten();
        for (id, e) in mine.copied() {
            let phase = match &e.state {
                NicState::Attached { instance } if instance == &demand.instance => {
                    if !demand.release.contains(id) {
                        attached += 1;
                    }
                    NicPhase::Attached
                }
                NicState::Attaching { instance, .. } if instance == &demand.instance => {
                    NicPhase::Attaching
                }
                NicState::Detaching { instance, .. } if instance == &demand.instance => {
                    NicPhase::Detaching
                }
                // Set aside for the node, or unknown after a call that may have
                // attached it there: recorded, so a planner taking over holds it too.
                NicState::Stock {
                    reserved_for: Some(n),
                    ..
                } if n == node => NicPhase::Reserved,
                NicState::Uncertain {
                    instance: Some(instance),
                } if instance == &demand.instance => NicPhase::Reserved,
                _ => continue,
            };
            let info = match self.vxnets.get(&e.vxnet).map(|v| &v.info) {
                Some(VxnetInfo::Known(v)) => Some(v),
                _ => None,
            };
            nics.push(NodeNic {
                id: id.clone(),
                ip: e.ip,
                vxnet: e.vxnet.clone(),
                cidr: info.map(|v| v.cidr),
                gateway: info.map(|v| v.gateway),
                phase,
            });
        }
        let jobs = index
            .jobs
            .get(&demand.instance)
            .into_iter()
            .flatten()
            .filter_map(|id| {
                self.jobs.get(*id).map(|j| JobRecord {
                    id: (*id).clone(),
                    action: j.action,
                    nics: j.nics.clone(),
                })
            })
            .collect();
        let verified = self.verified(track);
        let unmet = attached < demand.want;
        Some(NodeView {
            node: node.clone(),
            instance: demand.instance.clone(),
            nics,
            jobs,
            attached,
            verified,
            ready: verified && track.refusal.is_none() && !unmet,
            refusal: track.refusal.clone(),
            quota_exhausted: unmet && track.throttled,
            vxnet_full: unmet && track.vxnet_full,
            instance_full: unmet && track.instance_full,
            last_error: track.last_error.clone(),
        })
    }

    /// Views of every node of the latest demand set.
    pub fn views(&self) -> Vec<NodeView> {
        let index = self.index();
        self.nodes
            .keys()
            .filter_map(|n| self.view_indexed(n, &index))
            .collect()
    }

    /// The record a planner taking over resumes from (see [`Fleet::resume`]).
    pub fn record(&self, node: &NodeName) -> Option<NodeRecord> {
        self.view(node).map(|v| v.record())
    }

    /// True when the node's instance and vxnets were checked with the cloud.
    pub(crate) fn verified(&self, track: &NodeTrack) -> bool {
        let Some(i) = self.instances.get(&track.demand.instance) else {
            return false;
        };
        if i.described_at.is_none() || !i.exists {
            return false;
        }
        let mut vxnets = self.vxnets_of(&track.demand);
        vxnets.extend(i.primary_vxnet.clone());
        vxnets.iter().all(|v| {
            self.vxnets
                .get(v)
                .is_some_and(|t| !matches!(t.info, VxnetInfo::Unknown))
        })
    }
}
