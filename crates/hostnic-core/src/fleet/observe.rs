//! Learning what the cloud says: instances (their NICs), vxnets, NIC pages (one
//! NIC at a time: the cluster's, someone else's, gone), and the end of listings.

use crate::fleet::model::{InstanceNics, NicPage, NicQuery};
use crate::fleet::state::{Fleet, NicEntry, NicState, VxnetInfo, VxnetTrack};
use crate::ports::CloudError;
use crate::types::{CloudNic, InstanceId, NicId, Timestamp, Vxnet, VxnetId};

impl Fleet {
    pub(super) fn instances_done(
        &mut self,
        now: Timestamp,
        asked: &[InstanceId],
        result: Result<Vec<InstanceNics>, CloudError>,
    ) {
        self.action_result("DescribeInstances", now, result.as_ref().err());
        let Ok(list) = result else {
            return;
        };
        let mut attached_here: std::collections::BTreeMap<InstanceId, Vec<NicId>> =
            std::collections::BTreeMap::new();
        for (nic, e) in &self.nics {
            if let NicState::Attached { instance } = &e.state {
                attached_here
                    .entry(instance.clone())
                    .or_default()
                    .push(nic.clone());
            }
        }
        for id in asked {
            let found = list.iter().find(|i| &i.id == id);
            let Some(found) = found else {
                let t = self.instances.entry(id.clone()).or_default();
                t.described_at = Some(now);
                t.stale = false;
                t.exists = false;
                t.primary_vxnet = None;
                t.foreign.clear();
                t.unknown.clear();
                continue;
            };
            let attached: std::collections::BTreeSet<NicId> = found.nics.iter().cloned().collect();
            // NICs the planner has on this instance that the cloud no longer shows there.
            let gone: Vec<NicId> = attached_here
                .remove(id)
                .unwrap_or_default()
                .into_iter()
                .filter(|nic| !attached.contains(nic))
                .collect();
            for nic in gone {
                self.uncertain(&nic, Some(id.clone()), now);
            }
            let mut unknown = Vec::new();
            for nic in &attached {
                match self.nics.get_mut(nic) {
                    Some(e) => match &e.state {
                        NicState::Attached { instance }
                        | NicState::Attaching { instance, .. }
                        | NicState::Detaching { instance, .. }
                            if instance == id => {}
                        _ => {
                            e.state = NicState::Attached {
                                instance: id.clone(),
                            };
                            e.since = now;
                            e.verify_at = None;
                        }
                    },
                    None => unknown.push(nic.clone()),
                }
            }
            let t = self.instances.entry(id.clone()).or_default();
            t.described_at = Some(now);
            t.stale = false;
            t.exists = true;
            t.primary_vxnet = Some(found.primary_vxnet.clone());
            t.foreign.retain(|n| attached.contains(n));
            t.unknown.retain(|n| attached.contains(n));
            for nic in unknown {
                if !t.foreign.contains(&nic) {
                    t.unknown.insert(nic);
                }
            }
        }
    }

    pub(super) fn vxnets_done(
        &mut self,
        now: Timestamp,
        asked: &[VxnetId],
        result: Result<Vec<Vxnet>, CloudError>,
    ) {
        self.action_result("DescribeVxnets", now, result.as_ref().err());
        let Ok(list) = result else {
            return;
        };
        for id in asked {
            let t = self
                .vxnets
                .entry(id.clone())
                .or_insert_with(VxnetTrack::unknown);
            t.info = match list.iter().find(|v| &v.id == id) {
                Some(v) => VxnetInfo::Known(v.clone()),
                None => VxnetInfo::NotFound,
            };
        }
    }

    /// Takes in what the cloud says of one NIC.
    fn observe_nic(&mut self, now: Timestamp, nic: &CloudNic) {
        self.adopting.remove(&nic.id);
        for t in self.instances.values_mut() {
            t.unknown.remove(&nic.id);
        }
        if nic.primary || !self.is_ours(&nic.name, nic.instance.as_ref()) {
            // Someone else's NIC: it counts against its instance's limit.
            if let Some(t) = nic
                .instance
                .as_ref()
                .and_then(|i| self.instances.get_mut(i))
            {
                t.foreign.insert(nic.id.clone());
            }
            self.nics.remove(&nic.id);
            return;
        }
        for t in self.instances.values_mut() {
            t.foreign.remove(&nic.id);
        }
        let linger = self.config.stock_linger;
        let settle = self.config.job_poll_max;
        let pin = self.config.job_timeout;
        let owner = nic
            .instance
            .as_ref()
            .or(match self.nics.get(&nic.id).map(|e| &e.state) {
                Some(NicState::Uncertain { instance }) => instance.as_ref(),
                _ => None,
            })
            .and_then(|i| self.claims.get(i))
            .filter(|n| self.nodes.get(*n).is_some_and(|t| t.refusal.is_none()))
            .cloned();
        match self.nics.get_mut(&nic.id) {
            None => {
                let state = match &nic.instance {
                    Some(i) => NicState::Attached {
                        instance: i.clone(),
                    },
                    None => NicState::Stock {
                        reserved_for: None,
                        usable_at: now,
                        delete_after: now.plus(linger),
                    },
                };
                self.nics.insert(
                    nic.id.clone(),
                    NicEntry::new(nic.name.clone(), nic.vxnet.clone(), nic.ip, state, now),
                );
            }
            Some(e) => {
                let was_uncertain = matches!(e.state, NicState::Uncertain { .. });
                e.verify_at = None;
                e.vxnet = nic.vxnet.clone();
                e.ip = nic.ip;
                match (&e.state, &nic.instance) {
                    // A job runs on it: its end decides.
                    (NicState::Attaching { .. } | NicState::Detaching { .. }, _) => {}
                    (NicState::Attached { instance }, Some(i)) if instance == i => {}
                    (NicState::Stock { .. }, None) => {}
                    (_, Some(i)) => {
                        e.state = NicState::Attached {
                            instance: i.clone(),
                        };
                        e.since = now;
                    }
                    (state, None) => {
                        // It may still be moving (a job nobody recorded): let it settle
                        // first, and keep it for the node it may be attaching to.
                        let hint = match state {
                            NicState::Uncertain { instance } => instance.clone(),
                            _ => None,
                        };
                        let usable_at = if was_uncertain { now.plus(settle) } else { now };
                        e.pinned = hint.as_ref().map(|i| (i.clone(), now.plus(pin)));
                        e.state = NicState::Stock {
                            reserved_for: None,
                            usable_at,
                            delete_after: now.plus(linger),
                        };
                        e.since = now;
                        if hint.is_some()
                            && let Some(n) = owner
                            && let Some(e) = self.nics.get_mut(&nic.id)
                            && let NicState::Stock { reserved_for, .. } = &mut e.state
                        {
                            *reserved_for = Some(n);
                        }
                    }
                }
            }
        }
        // A job the planner follows moves it: its end decides where it is.
        let job = self
            .jobs
            .iter()
            .find(|(_, j)| j.nics.contains(&nic.id))
            .map(|(id, j)| (id.clone(), j.action, j.instance.clone()));
        if let Some((id, action, instance)) = job
            && let Some(e) = self.nics.get_mut(&nic.id)
        {
            let followed = matches!(&e.state,
                NicState::Attaching { job, .. } | NicState::Detaching { job, .. } if *job == id);
            if !followed && let Some(next) = Self::moving(action, &id, instance.as_ref(), &e.state)
            {
                e.state = next;
                e.since = now;
            }
        }
    }

    /// The NIC does not exist (any more).
    fn forget_nic(&mut self, id: &NicId) {
        self.adopting.remove(id);
        for t in self.instances.values_mut() {
            t.unknown.remove(id);
            t.foreign.remove(id);
        }
        if let Some(e) = self.nics.remove(id)
            && let Some(i) = e.state.instance()
            && let Some(n) = self.claimant(i).cloned()
            && let Some(t) = self.nodes.get_mut(&n)
        {
            tracing::info!(nic = %id, node = %n, "a NIC of the node vanished from the cloud: it is replaced");
            t.repair = true;
        }
    }

    pub(super) fn nics_done(
        &mut self,
        now: Timestamp,
        query: &NicQuery,
        result: Result<NicPage, CloudError>,
    ) {
        self.action_result("DescribeNics", now, result.as_ref().err());
        let Ok(page) = result else {
            return;
        };
        for nic in &page.nics {
            self.observe_nic(now, nic);
        }
        match query {
            NicQuery::Ids(ids) => {
                let repair = self.config.repair_interval;
                for id in ids {
                    if !page.nics.iter().any(|n| &n.id == id) {
                        self.forget_nic(id);
                        continue;
                    }
                    // A NIC its node's host does not see, still attached: detach it
                    // and attach it again (a known fault of the cloud).
                    let Some(e) = self.nics.get(id) else { continue };
                    let NicState::Attached { instance } = &e.state else {
                        continue;
                    };
                    let reported = self.nodes.values().any(|t| {
                        &t.demand.instance == instance
                            && t.refusal.is_none()
                            && t.demand.missing.contains(id)
                    });
                    let due = e.missing_checked.is_none_or(|c| c.plus(repair) <= now);
                    if reported
                        && due
                        && let Some(e) = self.nics.get_mut(id)
                    {
                        tracing::info!(nic = %id, "NIC attached but missing on its node: detached and attached again");
                        e.missing_checked = Some(now);
                        e.reattach = true;
                    }
                }
            }
            NicQuery::Named {
                available_only,
                offset,
                ..
            } => {
                let scan = if *available_only {
                    &mut self.scans.stock
                } else {
                    &mut self.scans.full
                };
                let Some(s) = scan.as_mut() else { return };
                s.seen.extend(page.nics.iter().map(|n| n.id.clone()));
                s.offset = offset + page.nics.len() as u32;
                if !page.nics.is_empty() && s.offset < page.total {
                    return;
                }
                let done = scan.take().expect("checked above");
                // What the planner has that the listing did not show (and that did
                // not change since it started) is checked one by one.
                let missed: Vec<NicId> = self
                    .nics
                    .iter()
                    .filter(|(id, e)| {
                        !done.seen.contains(*id)
                            && e.since < done.started
                            && e.verify_at.is_none()
                            && if *available_only {
                                matches!(e.state, NicState::Stock { .. })
                            } else {
                                matches!(
                                    e.state,
                                    NicState::Stock { .. } | NicState::Attached { .. }
                                )
                            }
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in missed {
                    if let Some(e) = self.nics.get_mut(&id) {
                        e.verify_at = Some(now);
                    }
                }
                if *available_only {
                    self.scans.next_stock = now.plus(self.config.stock_scan_interval);
                } else {
                    self.scans.next_full = now.plus(self.config.full_inventory_interval);
                }
            }
        }
    }
}
