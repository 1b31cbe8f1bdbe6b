//! The work that belongs to no node's request: job polls, describes (new nodes'
//! instances and vxnets, NICs to check), detaches (given back, orphaned,
//! repaired), deletes of stock nobody needs, and the paged listings.

use std::collections::{BTreeMap, BTreeSet};

use crate::fleet::call::{AfterDetach, FleetCall, PlannedCall};
use crate::fleet::model::{JobQuery, Lane, NicQuery, NodeName};
use crate::fleet::plan::Candidate;
use crate::fleet::state::{Fleet, NicState, VxnetInfo};
use crate::types::{InstanceId, NicId, Timestamp, VxnetId};

/// NICs to detach in one lane, what becomes of them, and the nodes concerned.
type DetachGroup = (AfterDetach, Vec<NicId>, BTreeSet<NodeName>);

impl Fleet {
    pub(super) fn plan_job_polls(&self, now: Timestamp, cands: &mut Vec<Candidate>) {
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

    pub(super) fn plan_describes(&self, now: Timestamp, cands: &mut Vec<Candidate>) {
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

    pub(super) fn plan_detaches(&self, now: Timestamp, cands: &mut Vec<Candidate>) {
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

    pub(super) fn plan_deletes(&self, now: Timestamp, cands: &mut Vec<Candidate>) {
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

    pub(super) fn plan_scans(&mut self, now: Timestamp, cands: &mut Vec<Candidate>) {
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
}
