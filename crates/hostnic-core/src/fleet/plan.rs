//! Planning one round: every call the fleet needs now, in priority lanes, then as
//! many as the budget allows, most urgent first.
//!
//! The order of work inside [`Fleet::plan`]:
//! 1. take in the demand set (new nodes, nodes that left, changed requests);
//! 2. give up jobs that ran too long, forget what expired;
//! 3. refuse what cannot be served (bad requests, unknown instances and vxnets,
//!    vxnets of another VPC, NICs of other nodes);
//! 4. note NICs on instances no node claims any more (the node left);
//! 5. collect candidate calls: job polls, describes, detaches, attaches and
//!    creates, deletes, inventory pages;
//! 6. select under the budget by lane, then by how long each node has waited.

use std::collections::{BTreeMap, BTreeSet};

use crate::fleet::call::{AfterDetach, Breaker, FleetCall, FleetRound, PlannedCall, RoundBudget};
use crate::fleet::model::{JobAction, JobQuery, Lane, NicQuery, NodeDemand, NodeName};
use crate::fleet::state::{Fleet, NicState, NodeTrack, Refusal, VxnetInfo};
use crate::pool::Backoff;
use crate::types::{InstanceId, NicId, Timestamp, VxnetId};

/// A call the fleet wants, before the budget decides.
#[derive(Debug)]
struct Candidate {
    call: PlannedCall,
    /// Job polls may use the reserve.
    poll: bool,
    /// Order inside a lane: 0 polls, 1 describes, 2 per-node work, 3 shared work.
    rank: u8,
    /// Then: who waited longest (last served, unmet since).
    key: (u64, u64, u64),
    tiebreak: String,
    /// Nodes the call serves.
    nodes: Vec<NodeName>,
}

/// NICs to detach in one lane, what becomes of them, and the nodes concerned.
type DetachGroup = (AfterDetach, Vec<NicId>, BTreeSet<NodeName>);

/// What one node still needs this round.
#[derive(Debug)]
struct Need {
    node: NodeName,
    instance: InstanceId,
    lane: Lane,
    /// NICs it holds, when it was served last, since when it waits: fewest first.
    key: (u64, u64, u64),
    vxnets: Vec<VxnetId>,
    /// NICs still to find (stock or new).
    need: u32,
    /// Stock reserved for it.
    reserved: Vec<NicId>,
    /// NICs it may still get attached now.
    room: u32,
    /// NICs it lacks.
    deficit: u32,
}

impl Fleet {
    /// Plans the next round at `now` for the nodes of `demands` (every node of the
    /// cluster: a node missing from it has left), within `budget`.
    pub fn plan(
        &mut self,
        now: Timestamp,
        demands: &[NodeDemand],
        budget: RoundBudget,
    ) -> FleetRound {
        self.sync_nodes(now, demands);
        self.expire(now);
        self.validate();
        self.mark_orphans(now);
        let mut cands = Vec::new();
        self.plan_job_polls(now, &mut cands);
        self.plan_describes(now, &mut cands);
        // Nothing changes before the jobs running in the account are known.
        if self.jobs_listed {
            self.plan_detaches(now, &mut cands);
            self.plan_serving(now, &mut cands);
            self.plan_deletes(now, &mut cands);
        }
        self.plan_scans(now, &mut cands);
        self.select(cands, budget)
    }

    /// The earliest time after `now` at which planning again may do something
    /// without any outcome or demand changing (a job poll, a backoff, a cooldown
    /// or a grace period ending, a periodic check). `None`: nothing is scheduled.
    pub fn next_wakeup(&self, now: Timestamp) -> Option<Timestamp> {
        let grace = self.config.node_gone_grace;
        let mut times: Vec<Timestamp> = Vec::new();
        times.extend(self.jobs.values().map(|j| j.next_poll));
        for t in self.nodes.values() {
            if t.unmet_since.is_some() {
                times.push(t.backoff.not_before);
            }
        }
        let unmet = self.nodes.values().any(|t| t.unmet_since.is_some());
        for e in self.nics.values() {
            if let NicState::Stock {
                reserved_for,
                usable_at,
                delete_after,
            } = &e.state
            {
                times.push(if reserved_for.is_some() || unmet {
                    *usable_at
                } else {
                    *delete_after
                });
            }
            if let Some(since) = e.orphan_since {
                times.push(since.plus(grace));
            }
            times.extend(e.verify_at);
        }
        times.push(self.scans.next_stock);
        times.push(self.scans.next_full);
        for i in self.instances.values() {
            if let Some(t) = i.described_at {
                times.push(t.plus(self.config.verify_interval));
            }
        }
        if unmet {
            for v in self.vxnets.values() {
                times.extend(v.exhausted_until);
                times.push(v.create_backoff.not_before);
            }
        }
        times.extend(self.backoffs.values().map(|b| b.not_before));
        // What is due now was planned in this round (or deferred for the budget,
        // which the caller waits for): only what comes due later wakes it.
        times.into_iter().filter(|t| *t > now).min()
    }

    fn sync_nodes(&mut self, now: Timestamp, demands: &[NodeDemand]) {
        let mut seen = BTreeSet::new();
        for d in demands {
            if !seen.insert(d.node.clone()) {
                continue;
            }
            match self.nodes.get_mut(&d.node) {
                Some(t) => {
                    if t.demand.instance != d.instance {
                        t.backoff = Backoff::default();
                        t.repair = false;
                        t.unmet_since = None;
                    }
                    t.demand = d.clone();
                }
                None => {
                    self.nodes.insert(
                        d.node.clone(),
                        NodeTrack {
                            demand: d.clone(),
                            refusal: None,
                            unmet_since: None,
                            last_served: Timestamp(0),
                            backoff: Backoff::default(),
                            repair: false,
                            throttled: false,
                            instance_full: false,
                            vxnet_full: false,
                            last_error: None,
                        },
                    );
                }
            }
            if !d.instance.as_str().is_empty() {
                self.instances.entry(d.instance.clone()).or_default();
            }
        }
        self.nodes.retain(|n, _| seen.contains(n));
        self.claims.clear();
        for (n, t) in &self.nodes {
            self.claims
                .entry(t.demand.instance.clone())
                .or_insert_with(|| n.clone());
        }
        let _ = now;
    }

    fn expire(&mut self, now: Timestamp) {
        let timeout = self.config.job_timeout;
        let lost: Vec<_> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.failed_polls >= 3 && j.confirmed.plus(timeout) <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in lost {
            tracing::warn!(job = %id, "no answer about the job for the job timeout: its NICs are checked");
            self.lose_job(&id, now);
        }
        for v in self.vxnets.values_mut() {
            if v.exhausted_until.is_some_and(|t| t <= now) {
                v.exhausted_until = None;
                v.ceiling = None;
                v.room_max = None;
            }
        }
        let verify = self.config.verify_interval;
        let claimed: BTreeSet<InstanceId> = self
            .nodes
            .values()
            .map(|t| t.demand.instance.clone())
            .collect();
        self.instances.retain(|i, _| claimed.contains(i));
        for i in self.instances.values_mut() {
            if i.described_at.is_some_and(|t| t.plus(verify) <= now) {
                i.stale = true;
            }
        }
    }

    fn validate(&mut self) {
        let mut by_instance: BTreeMap<InstanceId, Vec<NodeName>> = BTreeMap::new();
        for (n, t) in &self.nodes {
            by_instance
                .entry(t.demand.instance.clone())
                .or_default()
                .push(n.clone());
        }
        let names: Vec<NodeName> = self.nodes.keys().cloned().collect();
        for name in names {
            let refusal = self.refusal_of(&name, &by_instance);
            if let Some(t) = self.nodes.get_mut(&name) {
                if refusal != t.refusal
                    && let Some(r) = &refusal
                {
                    tracing::info!(node = %name, reason = r.reason(), "request refused: {r}");
                }
                t.refusal = refusal;
            }
        }
    }

    fn refusal_of(
        &self,
        name: &NodeName,
        by_instance: &BTreeMap<InstanceId, Vec<NodeName>>,
    ) -> Option<Refusal> {
        let d = &self.nodes.get(name)?.demand;
        if let Some(m) = &d.invalid {
            return Some(Refusal::InvalidRequest(m.clone()));
        }
        if d.instance.as_str().is_empty() {
            return Some(Refusal::InvalidRequest("no instance id".into()));
        }
        if d.max_nics == 0 || d.max_nics > self.config.max_pod_nics {
            return Some(Refusal::InvalidRequest(format!(
                "max_nics {} is not between 1 and {}",
                d.max_nics, self.config.max_pod_nics
            )));
        }
        if d.want > d.max_nics {
            return Some(Refusal::InvalidRequest(format!(
                "wants {} NICs, more than its max_nics {}",
                d.want, d.max_nics
            )));
        }
        if let Some(other) = by_instance
            .get(&d.instance)
            .and_then(|ns| ns.iter().find(|n| *n != name))
        {
            return Some(Refusal::InstanceConflict {
                instance: d.instance.clone(),
                other: other.clone(),
            });
        }
        // NICs given back or reported missing must be the node's own. A NIC it
        // once had and that moved on (a stale list) is ignored, not refused.
        for nic in d.release.iter().chain(&d.missing) {
            let holder = match self.nics.get(nic) {
                Some(e) => match e.state.instance() {
                    Some(i) if i != &d.instance && e.last_holder() != Some(&d.instance) => {
                        Some(i.clone())
                    }
                    _ => None,
                },
                None => self
                    .instances
                    .iter()
                    .find(|(i, t)| {
                        *i != &d.instance && (t.foreign.contains(nic) || t.unknown.contains(nic))
                    })
                    .map(|(i, _)| i.clone()),
            };
            if let Some(i) = holder {
                return Some(Refusal::ForeignNic {
                    nic: nic.clone(),
                    owner: self.claimant(&i).cloned(),
                });
            }
        }
        let inst = self.instances.get(&d.instance)?;
        inst.described_at?;
        if !inst.exists {
            return Some(Refusal::UnknownInstance(d.instance.clone()));
        }
        let primary = inst.primary_vxnet.as_ref()?;
        let expected = match self.vxnets.get(primary).map(|v| &v.info) {
            Some(VxnetInfo::Known(v)) => v.router.clone(),
            _ => return None,
        };
        for vx in self.vxnets_of(d) {
            match self.vxnets.get(&vx).map(|v| &v.info) {
                Some(VxnetInfo::NotFound) => return Some(Refusal::UnknownVxnet(vx)),
                Some(VxnetInfo::Known(v)) if v.router.is_none() || v.router != expected => {
                    return Some(Refusal::ForeignVxnet {
                        vxnet: vx,
                        router: v.router.clone(),
                        expected,
                    });
                }
                _ => {}
            }
        }
        None
    }

    fn mark_orphans(&mut self, now: Timestamp) {
        let claimed: BTreeSet<InstanceId> = self
            .nodes
            .values()
            .map(|t| t.demand.instance.clone())
            .collect();
        for e in self.nics.values_mut() {
            match e.state.instance() {
                Some(i) if !claimed.contains(i) => {
                    e.orphan_since.get_or_insert(now);
                }
                _ => e.orphan_since = None,
            }
        }
    }

    fn node_lane(t: &NodeTrack) -> Lane {
        if t.demand.waiting > 0 {
            Lane::Waiting
        } else if t.repair {
            Lane::Repair
        } else {
            Lane::Demand
        }
    }

    fn action_ready(&self, action: &str, now: Timestamp) -> bool {
        self.backoffs.get(action).is_none_or(|b| b.ready(now))
    }

    fn plan_job_polls(&self, now: Timestamp, cands: &mut Vec<Candidate>) {
        if !self.action_ready("DescribeJobs", now) {
            return;
        }
        if !self.jobs_listed {
            cands.push(Candidate {
                call: PlannedCall {
                    call: FleetCall::DescribeJobs {
                        query: JobQuery::Running {
                            offset: self.jobs_offset,
                        },
                    },
                    lane: Lane::Repair,
                    requests: 1,
                },
                poll: true,
                rank: 0,
                key: (0, 0, 0),
                tiebreak: String::new(),
                nodes: Vec::new(),
            });
        }
        let ids: Vec<_> = self.jobs.keys().cloned().collect();
        for chunk in ids.chunks(self.config.page_max as usize) {
            let due = chunk.iter().any(|id| self.jobs[id].next_poll <= now);
            if !due {
                continue;
            }
            let lane = chunk
                .iter()
                .map(|id| self.jobs[id].lane)
                .min()
                .unwrap_or(Lane::Demand);
            cands.push(Candidate {
                call: PlannedCall {
                    call: FleetCall::DescribeJobs {
                        query: JobQuery::Ids(chunk.to_vec()),
                    },
                    lane,
                    requests: 1,
                },
                poll: true,
                rank: 0,
                key: (0, 0, 0),
                tiebreak: chunk[0].to_string(),
                nodes: Vec::new(),
            });
        }
    }

    /// The lane of the node claiming `instance`.
    fn lane_of_instance(&self, instance: &InstanceId) -> Lane {
        self.claims
            .get(instance)
            .and_then(|n| self.nodes.get(n))
            .map_or(Lane::Inventory, Self::node_lane)
    }

    fn plan_describes(&self, now: Timestamp, cands: &mut Vec<Candidate>) {
        let page = self.config.page_max as usize;
        // Instances: new ones in their nodes' lane, periodic checks in the inventory lane.
        if self.action_ready("DescribeInstances", now) {
            let mut want: Vec<(Lane, InstanceId)> = self
                .instances
                .iter()
                .filter(|(_, t)| t.described_at.is_none() || t.stale)
                .map(|(i, t)| {
                    let lane = if t.described_at.is_none() {
                        self.lane_of_instance(i)
                    } else {
                        Lane::Inventory
                    };
                    (lane, i.clone())
                })
                .collect();
            want.sort();
            for chunk in want.chunks(page) {
                cands.push(Candidate {
                    call: PlannedCall {
                        call: FleetCall::DescribeInstances {
                            instances: chunk.iter().map(|(_, i)| i.clone()).collect(),
                        },
                        lane: chunk[0].0,
                        requests: 1,
                    },
                    poll: false,
                    rank: 1,
                    key: (0, 0, 0),
                    tiebreak: chunk[0].1.to_string(),
                    nodes: Vec::new(),
                });
            }
        }
        // Vxnets the nodes refer to that were never described.
        if self.action_ready("DescribeVxnets", now) {
            let mut want: BTreeMap<VxnetId, Lane> = BTreeMap::new();
            for t in self.nodes.values() {
                let Some(inst) = self.instances.get(&t.demand.instance) else {
                    continue;
                };
                if !inst.exists {
                    continue;
                }
                let lane = Self::node_lane(t);
                let mut vxnets = self.vxnets_of(&t.demand);
                vxnets.extend(inst.primary_vxnet.clone());
                for v in vxnets {
                    let unknown = self
                        .vxnets
                        .get(&v)
                        .is_none_or(|t| t.info == VxnetInfo::Unknown);
                    if unknown {
                        let l = want.entry(v).or_insert(lane);
                        *l = (*l).min(lane);
                    }
                }
            }
            let mut want: Vec<(Lane, VxnetId)> = want.into_iter().map(|(v, l)| (l, v)).collect();
            want.sort();
            for chunk in want.chunks(page) {
                cands.push(Candidate {
                    call: PlannedCall {
                        call: FleetCall::DescribeVxnets {
                            vxnets: chunk.iter().map(|(_, v)| v.clone()).collect(),
                        },
                        lane: chunk[0].0,
                        requests: 1,
                    },
                    poll: false,
                    rank: 1,
                    key: (0, 0, 0),
                    tiebreak: chunk[0].1.to_string(),
                    nodes: Vec::new(),
                });
            }
        }
        // NICs to check: uncertain ones, unknown ones on the nodes' instances, and
        // ones a node reports missing.
        if self.action_ready("DescribeNics", now) {
            let mut ids: BTreeSet<NicId> = self
                .nics
                .iter()
                .filter(|(_, e)| e.verify_at.is_some_and(|t| t <= now))
                .map(|(id, _)| id.clone())
                .collect();
            for t in self.instances.values() {
                ids.extend(t.unknown.iter().cloned());
            }
            ids.extend(self.adopting.iter().cloned());
            let repair = self.config.repair_interval;
            for t in self.nodes.values().filter(|t| t.refusal.is_none()) {
                for id in &t.demand.missing {
                    if let Some(e) = self.nics.get(id)
                        && matches!(&e.state, NicState::Attached { instance } if instance == &t.demand.instance)
                        && !e.reattach
                        && e.missing_checked.is_none_or(|c| c.plus(repair) <= now)
                    {
                        ids.insert(id.clone());
                    }
                }
            }
            let ids: Vec<NicId> = ids.into_iter().collect();
            for chunk in ids.chunks(page) {
                cands.push(Candidate {
                    call: PlannedCall {
                        call: FleetCall::DescribeNics {
                            query: NicQuery::Ids(chunk.to_vec()),
                        },
                        lane: Lane::Repair,
                        requests: 1,
                    },
                    poll: false,
                    rank: 1,
                    key: (0, 0, 0),
                    tiebreak: chunk[0].to_string(),
                    nodes: Vec::new(),
                });
            }
        }
    }

    fn plan_detaches(&self, now: Timestamp, cands: &mut Vec<Candidate>) {
        if !self.action_ready("DetachNics", now) {
            return;
        }
        let grace = self.config.node_gone_grace;
        let mut groups: BTreeMap<(Lane, u8), DetachGroup> = BTreeMap::new();
        for (name, t) in &self.nodes {
            if t.refusal.is_some() {
                continue;
            }
            for id in &t.demand.release {
                if let Some(e) = self.nics.get(id)
                    && matches!(&e.state, NicState::Attached { instance } if instance == &t.demand.instance)
                {
                    let g = groups
                        .entry((Lane::Release, 0))
                        .or_insert_with(|| (AfterDetach::Keep, Vec::new(), BTreeSet::new()));
                    g.1.push(id.clone());
                    g.2.insert(name.clone());
                }
            }
        }
        for (id, e) in &self.nics {
            let NicState::Attached { instance } = &e.state else {
                continue;
            };
            if e.orphan_since.is_some_and(|s| s.plus(grace) <= now) {
                let g = groups
                    .entry((Lane::Gc, 0))
                    .or_insert_with(|| (AfterDetach::Delete, Vec::new(), BTreeSet::new()));
                g.1.push(id.clone());
            } else if e.reattach
                && let Some(n) = self.claimant(instance)
                && self.nodes[n].refusal.is_none()
            {
                let g = groups
                    .entry((Lane::Repair, 0))
                    .or_insert_with(|| (AfterDetach::Reattach, Vec::new(), BTreeSet::new()));
                g.1.push(id.clone());
                g.2.insert(n.clone());
            }
        }
        for ((lane, _), (then, ids, nodes)) in groups {
            for chunk in ids.chunks(self.config.batch_max as usize) {
                cands.push(Candidate {
                    call: PlannedCall {
                        call: FleetCall::DetachNics {
                            nics: chunk.to_vec(),
                            then,
                        },
                        lane,
                        requests: 1,
                    },
                    poll: false,
                    rank: 2,
                    key: (0, 0, 0),
                    tiebreak: chunk[0].to_string(),
                    nodes: nodes.iter().cloned().collect(),
                });
            }
        }
    }

    /// NICs the planner knows in each vxnet: its own and the primaries of the
    /// nodes' instances.
    fn known_per_vxnet(&self) -> BTreeMap<VxnetId, u32> {
        let mut known: BTreeMap<VxnetId, u32> = BTreeMap::new();
        for e in self.nics.values() {
            *known.entry(e.vxnet.clone()).or_default() += 1;
        }
        for i in self.instances.values() {
            if let Some(v) = &i.primary_vxnet {
                *known.entry(v.clone()).or_default() += 1;
            }
        }
        known
    }

    /// NICs the planner may still create in `vxnet` now (`known`: what
    /// [`Fleet::known_per_vxnet`] says).
    fn create_room(&self, vxnet: &VxnetId, known: &BTreeMap<VxnetId, u32>, now: Timestamp) -> u32 {
        let Some(t) = self.vxnets.get(vxnet) else {
            return 0;
        };
        if !matches!(t.info, VxnetInfo::Known(_))
            || t.exhausted_until.is_some_and(|u| u > now)
            || !t.create_backoff.ready(now)
        {
            return 0;
        }
        let bound = t.ceiling.unwrap_or(u32::MAX);
        self.config
            .vxnet_nic_limit
            .saturating_sub(known.get(vxnet).copied().unwrap_or(0))
            .min(self.config.create_max)
            .min(bound)
    }

    fn plan_serving(&mut self, now: Timestamp, cands: &mut Vec<Candidate>) {
        let linger = self.config.stock_linger;
        // Reservations of nodes that left or are refused go back to the stock.
        let keep: BTreeSet<NodeName> = self
            .nodes
            .iter()
            .filter(|(_, t)| t.refusal.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        for e in self.nics.values_mut() {
            if let NicState::Stock { reserved_for, .. } = &mut e.state
                && reserved_for.as_ref().is_some_and(|n| !keep.contains(n))
            {
                *reserved_for = None;
            }
        }

        // The nodes that may be served now, most urgent first.
        let order: Vec<(Lane, NodeName)> = self
            .nodes
            .iter()
            .filter(|(_, t)| t.refusal.is_none() && t.backoff.ready(now) && self.verified(t))
            .map(|(n, t)| (Self::node_lane(t), n.clone()))
            .collect();

        let limit = self.config.instance_nic_limit;
        let mut needs: Vec<Need> = Vec::with_capacity(order.len());
        // One pass over the NICs: what is on each instance (leaving it or not),
        // what is reserved for each node, what is pinned to each instance.
        type OnInstance = Vec<(NicId, bool, bool)>;
        let mut on_map: BTreeMap<InstanceId, OnInstance> = BTreeMap::new();
        let mut reserved_map: BTreeMap<NodeName, Vec<NicId>> = BTreeMap::new();
        let mut pinned_map: BTreeMap<InstanceId, u32> = BTreeMap::new();
        for (id, e) in &self.nics {
            match &e.state {
                NicState::Stock {
                    reserved_for: Some(n),
                    ..
                } => reserved_map.entry(n.clone()).or_default().push(id.clone()),
                // Pinned there, reserved for nobody (its node left and came back).
                NicState::Stock { .. } => {
                    if let Some(i) = e.pinned_to(now) {
                        *pinned_map.entry(i.clone()).or_default() += 1;
                    }
                }
                s => {
                    if let Some(i) = s.instance() {
                        // A NIC being detached to be attached again stays the node's.
                        let leaving = matches!(s, NicState::Detaching { then, .. } if *then != AfterDetach::Reattach);
                        let attached = matches!(s, NicState::Attached { .. });
                        on_map
                            .entry(i.clone())
                            .or_default()
                            .push((id.clone(), leaving, attached));
                    }
                }
            }
        }
        for (lane, name) in order {
            let d = self.nodes[&name].demand.clone();
            let d = &d;
            let mut reserved: Vec<NicId> = reserved_map.remove(&name).unwrap_or_default();
            let here = on_map
                .get(&d.instance)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let mut on = here.len() as u32 + pinned_map.get(&d.instance).copied().unwrap_or(0);
            let releasing = here
                .iter()
                .filter(|(id, leaving, attached)| *leaving || (*attached && d.release.contains(id)))
                .count() as u32;
            // NICs of adopted attach jobs to this instance not described yet.
            on += self
                .jobs
                .values()
                .filter(|j| {
                    j.action == JobAction::Attach && j.instance.as_ref() == Some(&d.instance)
                })
                .flat_map(|j| &j.nics)
                .filter(|n| !self.nics.contains_key(*n))
                .count() as u32;
            let foreign = self
                .instances
                .get(&d.instance)
                .map_or(0, |i| (i.foreign.len() + i.unknown.len()) as u32);
            let cap = d.max_nics.min(limit.saturating_sub(1 + foreign));
            let room = cap.saturating_sub(on);
            let deficit = d.want.saturating_sub(on - releasing);
            // Reservations beyond what the node needs go back, except NICs pinned
            // to it (an unrecorded job may still attach them to its instance).
            let pinned: BTreeSet<NicId> = reserved
                .iter()
                .filter(|id| {
                    self.nics
                        .get(*id)
                        .is_some_and(|e| e.pinned_to(now).is_some())
                })
                .cloned()
                .collect();
            reserved.sort_by_key(|id| !pinned.contains(id));
            while reserved.len() as u32 > deficit.min(room) {
                let Some(id) = reserved.last().cloned() else {
                    break;
                };
                if pinned.contains(&id) {
                    break;
                }
                reserved.pop();
                if let Some(e) = self.nics.get_mut(&id)
                    && let NicState::Stock { reserved_for, .. } = &mut e.state
                {
                    *reserved_for = None;
                }
            }
            let held = reserved.len() as u32;
            let need = deficit.saturating_sub(held).min(room.saturating_sub(held));
            let vxnets = self.vxnets_of(d);
            let key = {
                let t = &self.nodes[&name];
                (
                    u64::from(on - releasing + held),
                    t.last_served.0,
                    t.unmet_since.unwrap_or(now).0,
                )
            };
            if let Some(t) = self.nodes.get_mut(&name) {
                if deficit > 0 {
                    t.unmet_since.get_or_insert(now);
                } else {
                    t.unmet_since = None;
                    t.repair = false;
                }
                t.instance_full = deficit > room;
                t.vxnet_full = false;
            }
            needs.push(Need {
                node: name,
                instance: d.instance.clone(),
                lane,
                key,
                vxnets,
                need,
                reserved,
                room,
                deficit,
            });
        }
        needs.sort_by(|a, b| (a.lane, a.key, &a.node).cmp(&(b.lane, b.key, &b.node)));

        // Stock nobody reserved, one NIC per node per pass, most urgent first:
        // NICs usable now, then (for nodes without pods waiting) NICs still
        // cooling down, which are attached once their cooldown ends.
        let mut ready: BTreeMap<VxnetId, Vec<NicId>> = BTreeMap::new();
        let mut cooling: BTreeMap<VxnetId, Vec<NicId>> = BTreeMap::new();
        for (id, e) in &self.nics {
            if let NicState::Stock {
                reserved_for: None,
                usable_at,
                ..
            } = &e.state
                && e.verify_at.is_none()
                && e.pinned_to(now).is_none()
            {
                let pool = if *usable_at <= now {
                    &mut ready
                } else {
                    &mut cooling
                };
                pool.entry(e.vxnet.clone()).or_default().push(id.clone());
            }
        }
        let mut incoming: BTreeMap<VxnetId, u32> = BTreeMap::new();
        for (id, e) in &self.nics {
            let coming = match &e.state {
                NicState::Detaching { then, .. } => *then == AfterDetach::Keep,
                NicState::Attached { instance } => self
                    .claims
                    .get(instance)
                    .and_then(|n| self.nodes.get(n))
                    .is_some_and(|t| t.refusal.is_none() && t.demand.release.contains(id)),
                _ => false,
            };
            if coming {
                *incoming.entry(e.vxnet.clone()).or_default() += 1;
            }
        }
        loop {
            let mut progress = false;
            for n in needs.iter_mut().filter(|n| n.need > 0) {
                let mut pools = vec![&mut ready];
                if n.lane != Lane::Waiting {
                    pools.push(&mut cooling);
                }
                let found = pools.into_iter().find_map(|pool| {
                    n.vxnets
                        .iter()
                        .find_map(|v| pool.get_mut(v).and_then(Vec::pop))
                });
                if found.is_none() && n.lane != Lane::Waiting {
                    // NICs other nodes are giving back will be stock soon: a node
                    // without pods waiting takes those rather than new ones.
                    let from = n
                        .vxnets
                        .iter()
                        .find(|v| incoming.get(*v).is_some_and(|c| *c > 0));
                    if let Some(left) = from.and_then(|v| incoming.get_mut(v)) {
                        *left -= 1;
                        n.need -= 1;
                        progress = true;
                        continue;
                    }
                }
                if let Some(id) = found {
                    if let Some(e) = self.nics.get_mut(&id)
                        && let NicState::Stock {
                            reserved_for,
                            delete_after,
                            ..
                        } = &mut e.state
                    {
                        *reserved_for = Some(n.node.clone());
                        *delete_after = now.plus(linger);
                    }
                    n.reserved.push(id);
                    n.need -= 1;
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }

        // What is still missing is created: one CreateNics per vxnet for every
        // node that prefers it, the vxnet's room shared one NIC at a time.
        let known = self.known_per_vxnet();
        let mut room_left: BTreeMap<VxnetId, u32> = BTreeMap::new();
        for n in &needs {
            for v in &n.vxnets {
                if !room_left.contains_key(v) {
                    room_left.insert(v.clone(), self.create_room(v, &known, now));
                }
            }
        }
        // Per vxnet: (index of the need, NICs for it), in the order nodes got them.
        let mut creates: BTreeMap<VxnetId, Vec<(usize, u32)>> = BTreeMap::new();
        let mut slot: BTreeMap<(VxnetId, usize), usize> = BTreeMap::new();
        loop {
            let mut progress = false;
            for (i, n) in needs.iter_mut().enumerate().filter(|(_, n)| n.need > 0) {
                for v in &n.vxnets {
                    let left = room_left.get_mut(v).expect("filled above");
                    if *left > 0 {
                        *left -= 1;
                        n.need -= 1;
                        let list = creates.entry(v.clone()).or_default();
                        match slot.get(&(v.clone(), i)) {
                            Some(k) => list[*k].1 += 1,
                            None => {
                                slot.insert((v.clone(), i), list.len());
                                list.push((i, 1));
                            }
                        }
                        progress = true;
                        break;
                    }
                }
            }
            if !progress {
                break;
            }
        }
        for n in &needs {
            if n.need > 0 {
                let full = !n.vxnets.is_empty()
                    && n.vxnets.iter().all(|v| {
                        self.vxnets
                            .get(v)
                            .is_some_and(|t| t.exhausted_until.is_some_and(|u| u > now))
                    });
                if let Some(t) = self.nodes.get_mut(&n.node) {
                    t.vxnet_full = full;
                }
            }
        }

        // One AttachNics per node: its reserved NICs that are usable now, no more
        // than it lacks.
        for n in &needs {
            let ready: Vec<NicId> = n
                .reserved
                .iter()
                .filter(|id| {
                    matches!(self.nics.get(*id), Some(e) if matches!(e.state, NicState::Stock { usable_at, .. } if usable_at <= now))
                })
                .take(n.room.min(n.deficit).min(self.config.batch_max) as usize)
                .cloned()
                .collect();
            if ready.is_empty() {
                continue;
            }
            let mut ready = ready;
            ready.sort();
            cands.push(Candidate {
                call: PlannedCall {
                    call: FleetCall::AttachNics {
                        node: n.node.clone(),
                        instance: n.instance.clone(),
                        nics: ready,
                    },
                    lane: n.lane,
                    requests: 1,
                },
                poll: false,
                rank: 2,
                key: n.key,
                tiebreak: n.node.to_string(),
                nodes: vec![n.node.clone()],
            });
        }
        let name = self.config.nic_name();
        for (vxnet, list) in creates {
            let count: u32 = list.iter().map(|(_, c)| c).sum();
            let lane = list
                .iter()
                .map(|(i, _)| needs[*i].lane)
                .min()
                .unwrap_or(Lane::Demand);
            let key = list
                .iter()
                .map(|(i, _)| needs[*i].key)
                .min()
                .unwrap_or((0, 0, 0));
            cands.push(Candidate {
                call: PlannedCall {
                    call: FleetCall::CreateNics {
                        vxnet: vxnet.clone(),
                        count,
                        name: name.clone(),
                        for_nodes: list
                            .iter()
                            .map(|(i, c)| (needs[*i].node.clone(), *c))
                            .collect(),
                    },
                    lane,
                    requests: self.config.create_cost,
                },
                poll: false,
                rank: 3,
                key,
                tiebreak: vxnet.to_string(),
                nodes: list.iter().map(|(i, _)| needs[*i].node.clone()).collect(),
            });
        }
    }

    fn plan_deletes(&self, now: Timestamp, cands: &mut Vec<Candidate>) {
        if !self.action_ready("DeleteNics", now) {
            return;
        }
        let ids: Vec<NicId> = self
            .nics
            .iter()
            .filter(|(_, e)| {
                e.verify_at.is_none()
                    && e.pinned_to(now).is_none()
                    && matches!(e.state, NicState::Stock { reserved_for: None, delete_after, .. } if delete_after <= now)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for chunk in ids.chunks(self.config.batch_max as usize) {
            cands.push(Candidate {
                call: PlannedCall {
                    call: FleetCall::DeleteNics {
                        nics: chunk.to_vec(),
                    },
                    lane: Lane::Gc,
                    requests: 1,
                },
                poll: false,
                rank: 3,
                key: (0, 0, 0),
                tiebreak: chunk[0].to_string(),
                nodes: Vec::new(),
            });
        }
    }

    fn plan_scans(&mut self, now: Timestamp, cands: &mut Vec<Candidate>) {
        if !self.action_ready("DescribeNics", now) {
            return;
        }
        let name = self.config.nic_name();
        for available_only in [true, false] {
            let (scan, next, lane) = if available_only {
                (&mut self.scans.stock, self.scans.next_stock, Lane::Gc)
            } else {
                (&mut self.scans.full, self.scans.next_full, Lane::Inventory)
            };
            if scan.is_none() && next <= now {
                *scan = Some(crate::fleet::state::Scan {
                    offset: 0,
                    started: now,
                    seen: BTreeSet::new(),
                });
            }
            if let Some(s) = scan {
                cands.push(Candidate {
                    call: PlannedCall {
                        call: FleetCall::DescribeNics {
                            query: NicQuery::Named {
                                name: name.clone(),
                                available_only,
                                offset: s.offset,
                            },
                        },
                        lane,
                        requests: 1,
                    },
                    poll: false,
                    rank: 1,
                    key: (0, 0, 0),
                    tiebreak: String::new(),
                    nodes: Vec::new(),
                });
            }
        }
    }

    fn select(&mut self, mut cands: Vec<Candidate>, budget: RoundBudget) -> FleetRound {
        cands.sort_by(|a, b| {
            (a.call.lane, a.rank, a.key, &a.tiebreak).cmp(&(
                b.call.lane,
                b.rank,
                b.key,
                &b.tiebreak,
            ))
        });
        let mut round = FleetRound::default();
        let mut left = budget.available;
        let reserve = self.config.reserve;
        let mut served: BTreeSet<NodeName> = BTreeSet::new();
        let mut held_back: BTreeSet<NodeName> = BTreeSet::new();
        for c in cands {
            let cost = c.call.requests;
            let fits = match budget.breaker {
                Breaker::Open { probe_due: false } => false,
                // The client lets one call through as its probe: the most urgent one.
                Breaker::Open { probe_due: true } => round.calls.is_empty() && cost <= left,
                Breaker::Closed => cost + if c.poll { 0 } else { reserve } <= left,
            };
            if fits {
                left -= cost;
                served.extend(c.nodes);
                round.calls.push(c.call);
            } else {
                *round.deferred.entry(c.call.lane).or_default() += 1;
                held_back.extend(c.nodes);
            }
        }
        for (n, t) in self.nodes.iter_mut() {
            t.throttled = held_back.contains(n) && !served.contains(n);
        }
        round
    }
}
