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

use crate::fleet::call::{Breaker, FleetRound, PlannedCall, RoundBudget};
use crate::fleet::model::{Lane, NodeDemand, NodeName};
use crate::fleet::state::{Fleet, NicState, NodeTrack, Refusal, VxnetInfo};
use crate::pool::Backoff;
use crate::types::{InstanceId, Timestamp};

/// A call the fleet wants, before the budget decides.
#[derive(Debug)]
pub(super) struct Candidate {
    pub(super) call: PlannedCall,
    /// Job polls may use the reserve.
    pub(super) poll: bool,
    /// Order inside a lane: 0 polls, 1 describes, 2 per-node work, 3 shared work.
    pub(super) rank: u8,
    /// Then: who waited longest (last served, unmet since).
    pub(super) key: (u64, u64, u64),
    pub(super) tiebreak: String,
    /// Nodes the call serves.
    pub(super) nodes: Vec<NodeName>,
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

    pub(super) fn node_lane(t: &NodeTrack) -> Lane {
        if t.demand.waiting > 0 {
            Lane::Waiting
        } else if t.repair {
            Lane::Repair
        } else {
            Lane::Demand
        }
    }

    pub(super) fn action_ready(&self, action: &str, now: Timestamp) -> bool {
        self.backoffs.get(action).is_none_or(|b| b.ready(now))
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
