//! Serving the nodes: what each still lacks, stock shared one NIC per node per
//! pass, the rest created with one `CreateNics` per vxnet (its room shared the
//! same way), and one `AttachNics` per node for what is ready.

use std::collections::{BTreeMap, BTreeSet};

use crate::fleet::call::{AfterDetach, FleetCall, PlannedCall};
use crate::fleet::model::{JobAction, Lane, NodeName};
use crate::fleet::plan::Candidate;
use crate::fleet::state::{Fleet, NicState, VxnetInfo};
use crate::types::{InstanceId, NicId, Timestamp, VxnetId};

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

    pub(super) fn plan_serving(&mut self, now: Timestamp, cands: &mut Vec<Candidate>) {
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
            // NICs on the instance not described yet may be the cluster's (a job
            // nobody recorded): until described they count as the node's too.
            let (foreign, unknown) = self
                .instances
                .get(&d.instance)
                .map_or((0, 0), |i| (i.foreign.len() as u32, i.unknown.len() as u32));
            on += unknown;
            let cap = d.max_nics.min(limit.saturating_sub(1 + foreign + unknown));
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
}
