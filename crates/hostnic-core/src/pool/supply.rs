//! Controller mode: the node's NICs come from a supplier (the controller, which
//! makes every cloud call of the cluster) instead of the node's own cloud calls.
//!
//! The pool keeps every local decision it makes in direct mode — how many free
//! NICs to keep, which NICs to give back after their minimum lifetime and
//! cooldown, which pod gets which NIC — and only the way to the cloud changes:
//! - [`NodeState::supply_request`] turns the pool's need into a
//!   [`NodeDemand`]: `want` (NICs in total), `release`, `missing`, `waiting`.
//!   It is stable: a node at rest asks for exactly what it holds, so a request
//!   that did not change is not written again.
//! - [`NodeState::supplied`] learns what the supplier attached: new `Attached`
//!   NICs become preparable (then assignable), NICs it no longer lists are
//!   forgotten once no pod holds them.
//! - [`NodeState::plan`] in this mode makes no cloud action: it prepares NICs
//!   and releases retiring ones on the host ([`PoolAction::Release`]); the
//!   request then names them in `release`.
//!
//! ADD and DEL never wait on the supplier: they work on the NICs the node has.

use std::collections::{BTreeMap, BTreeSet};

use crate::fleet::{NicPhase, NodeDemand, NodeName, NodeNic};
use crate::pool::plan::PoolAction;
use crate::pool::state::{CloudLink, NicEntry, NodeState, PodAttachment, Usage};
use crate::ports::Supplied;
use crate::types::{NicId, NicPlumbing, Timestamp, Vxnet};

impl NodeState {
    /// Switches the pool to controller mode (`true`): it makes no cloud action
    /// any more and asks its supplier instead.
    pub fn set_supplied_mode(&mut self, on: bool) {
        self.supplied_mode = on;
    }

    /// True in controller mode.
    pub fn is_supplied_mode(&self) -> bool {
        self.supplied_mode
    }

    /// What to ask the supplier for, for `node` with `waiting` ADDs waiting for
    /// a NIC now.
    ///
    /// `want` is every NIC the node keeps (assigned, cooling, free, not given
    /// back) plus the ones asked for and not yet supplied, plus what the warm
    /// pool lacks: when free and coming NICs fall below `min_free` + demand it
    /// asks for at least a whole `batch_size` (never past `max_free` + demand),
    /// like direct mode's `CreateNics`. Coming NICs beyond `max_free` + demand are
    /// no longer asked for. At rest `want` equals what the node holds.
    pub fn supply_request(&mut self, node: &NodeName, waiting: u32) -> NodeDemand {
        let cfg = &self.config;
        let kept: Vec<&NicEntry> = self
            .nics
            .values()
            .filter(|n| n.usage != Usage::Retiring)
            .collect();
        let held = kept.len() as u32;
        let free = kept
            .iter()
            .filter(|n| matches!(n.usage, Usage::Free { .. }))
            .count() as u32;
        let mut coming = self.asked.saturating_sub(held);
        let keep = cfg.max_free.saturating_add(self.demand);
        coming = coming.min(keep.saturating_sub(free));
        let supply = free + coming;
        let mut need = cfg
            .min_free
            .saturating_add(self.demand)
            .saturating_sub(supply);
        if need > 0 {
            need = need.max(cfg.batch_size.min(keep.saturating_sub(supply)));
        }
        let want = (held + coming + need).min(cfg.max_nics);
        self.asked = want;
        let release: BTreeSet<NicId> = self
            .nics
            .values()
            .filter(|n| n.usage == Usage::Retiring && n.link != CloudLink::Attached)
            .map(|n| n.id.clone())
            .collect();
        let missing: BTreeSet<NicId> = self
            .nics
            .values()
            .filter(|n| n.reattach && n.usage != Usage::Retiring)
            .map(|n| n.id.clone())
            .collect();
        NodeDemand {
            node: node.clone(),
            instance: self.instance.clone(),
            vxnets: self.vxnets.iter().map(|v| v.id.clone()).collect(),
            want,
            max_nics: cfg.max_nics,
            release,
            missing,
            waiting,
            invalid: None,
        }
    }

    /// Learns what the supplier says the node has at `now`:
    /// - an `Attached` NIC the node did not know joins the pool (free, to be
    ///   prepared); one it knew on its way (attaching, or re-attached after a
    ///   repair) is attached again and prepared again;
    /// - a NIC it lists as attaching or detaching that the node holds is not
    ///   usable until it is attached again (a repair under way);
    /// - a NIC it no longer lists is forgotten when the node gave it back or no
    ///   pod holds it; one a pod holds stays the pod's (its address is the pod's)
    ///   but is no longer counted as attached.
    ///
    /// Before the supplier has answered at all nothing is forgotten. Returns the
    /// vxnets it learned (from the NICs' networks and gateways) that the node did
    /// not know, already added to [`NodeState::vxnets`].
    pub fn supplied(&mut self, supplied: &Supplied, now: Timestamp) -> Vec<Vxnet> {
        let listed: BTreeMap<&NicId, &NodeNic> = supplied.nics.iter().map(|n| (&n.id, n)).collect();
        let learned = self.learn_vxnets(&supplied.nics);
        for nic in listed.values() {
            self.supplied_nic(nic, now);
        }
        if supplied.answered {
            let gone: Vec<NicId> = self
                .nics
                .keys()
                .filter(|id| !listed.contains_key(id))
                .cloned()
                .collect();
            for id in gone {
                self.unlisted(&id);
            }
        }
        learned
    }

    /// Controller mode: the host released `nics` (retiring): the node gives them
    /// back in its next request and waits for the supplier to take them.
    pub fn released_on_host(&mut self, nics: &[NicId]) {
        for id in nics {
            if let Some(e) = self.nics.get_mut(id)
                && e.usage == Usage::Retiring
            {
                e.link = CloudLink::Detaching;
                e.host_ready = false;
            }
        }
    }

    /// Controller mode: the host could not release `nics`: the next plan tries
    /// again.
    pub fn release_failed(&mut self, nics: &[NicId]) {
        for id in nics {
            if let Some(e) = self.nics.get_mut(id)
                && e.usage == Usage::Retiring
                && e.link == CloudLink::Detaching
            {
                e.link = CloudLink::Attached;
            }
        }
    }

    /// Controller mode's plan: cooldowns end, surplus retires, attached NICs are
    /// prepared, retiring attached NICs are released on the host. No cloud action.
    pub(crate) fn plan_supplied(&mut self, now: Timestamp) -> Vec<PoolAction> {
        self.retire_surplus(now);
        let mut actions = self.prepare_actions();
        let release: Vec<NicPlumbing> = self
            .nics
            .values()
            .filter(|n| n.usage == Usage::Retiring && n.link == CloudLink::Attached)
            .map(|n| self.nic_plumbing(n))
            .collect();
        if !release.is_empty() {
            for nic in &release {
                if let Some(e) = self.nics.get_mut(&nic.nic) {
                    // In flight: a second plan does not release it again.
                    e.link = CloudLink::Detaching;
                    e.host_ready = false;
                }
            }
            actions.push(PoolAction::Release { nics: release });
        }
        actions
    }

    fn learn_vxnets(&mut self, nics: &[NodeNic]) -> Vec<Vxnet> {
        let mut learned = Vec::new();
        for nic in nics {
            if self.vxnet(&nic.vxnet).is_some() {
                continue;
            }
            if let (Some(cidr), Some(gateway)) = (nic.cidr, nic.gateway) {
                let vxnet = Vxnet {
                    id: nic.vxnet.clone(),
                    cidr,
                    gateway,
                    router: None,
                };
                self.vxnets.push(vxnet.clone());
                learned.push(vxnet);
            }
        }
        learned
    }

    fn supplied_nic(&mut self, nic: &NodeNic, now: Timestamp) {
        let Some(entry) = self.nics.get(&nic.id) else {
            if nic.phase == NicPhase::Attached {
                let table = self.free_table();
                self.nics.insert(
                    nic.id.clone(),
                    NicEntry {
                        id: nic.id.clone(),
                        ip: nic.ip,
                        vxnet: nic.vxnet.clone(),
                        table,
                        link: CloudLink::Attached,
                        host_ready: false,
                        usage: Usage::Free { since: now },
                        created_at: now,
                        link_missing_since: None,
                        reattach: false,
                        job: None,
                    },
                );
            }
            return;
        };
        let retiring = entry.usage == Usage::Retiring;
        let link = entry.link;
        let Some(e) = self.nics.get_mut(&nic.id) else {
            return;
        };
        match nic.phase {
            // Given back but not taken yet, or on the host already: nothing new.
            NicPhase::Attached if retiring || link == CloudLink::Attached => {}
            NicPhase::Attached => {
                e.link = CloudLink::Attached;
                e.host_ready = false;
                e.reattach = false;
                e.link_missing_since = None;
            }
            NicPhase::Reserved | NicPhase::Attaching | NicPhase::Detaching if !retiring => {
                e.link = if nic.phase == NicPhase::Detaching {
                    CloudLink::Detaching
                } else {
                    CloudLink::Attaching
                };
                e.host_ready = false;
            }
            _ => {}
        }
    }

    fn unlisted(&mut self, id: &NicId) -> Option<PodAttachment> {
        let entry = self.nics.get(id)?;
        match entry.usage {
            Usage::Assigned { .. } => {
                if let Some(e) = self.nics.get_mut(id) {
                    e.link = CloudLink::Unattached;
                    e.host_ready = false;
                }
                None
            }
            _ => self.forget_nic(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;
    use crate::config::PoolConfig;
    use crate::types::{InstanceId, PodKey, VxnetId};

    fn vxnet() -> Vxnet {
        Vxnet {
            id: VxnetId::new("vxnet-1"),
            cidr: "172.16.1.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(172, 16, 1, 1),
            router: None,
        }
    }

    fn pod() -> PodKey {
        PodKey {
            namespace: "default".into(),
            name: "p1".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
        }
    }

    fn node() -> NodeName {
        NodeName::new("node-1")
    }

    fn state(cfg: PoolConfig) -> NodeState {
        let mut s = NodeState::new(cfg, InstanceId::new("i-1"), vec![vxnet()]);
        s.set_supplied_mode(true);
        s
    }

    fn nic(i: u8, phase: NicPhase) -> NodeNic {
        NodeNic {
            id: NicId::from_mac([0x52, 0x54, 0, 0, 1, i]),
            ip: Ipv4Addr::new(172, 16, 1, 10 + i),
            vxnet: VxnetId::new("vxnet-1"),
            cidr: Some("172.16.1.0/24".parse().unwrap()),
            gateway: Some(Ipv4Addr::new(172, 16, 1, 1)),
            phase,
        }
    }

    fn attached(n: u8) -> Supplied {
        Supplied {
            answered: true,
            nics: (0..n).map(|i| nic(i, NicPhase::Attached)).collect(),
            refusal: None,
            ready: true,
        }
    }

    /// Supplies `supplied`, then prepares every NIC the plan asks for.
    fn supply_and_prepare(s: &mut NodeState, supplied: &Supplied, now: Timestamp) {
        s.supplied(supplied, now);
        for a in s.plan(now) {
            match a {
                PoolAction::Prepare { nic } => s.prepare_done(&nic.nic, Ok(()), now),
                PoolAction::Release { nics } => {
                    s.released_on_host(&nics.iter().map(|n| n.nic.clone()).collect::<Vec<_>>())
                }
                other => panic!("a cloud action in controller mode: {other:?}"),
            }
        }
    }

    #[test]
    fn an_empty_node_asks_for_its_warm_pool_and_makes_no_cloud_action() {
        let mut s = state(PoolConfig::default());
        assert!(s.plan(Timestamp(0)).is_empty(), "no Create, no Attach");
        let d = s.supply_request(&node(), 0);
        assert_eq!(d.want, 5, "min_free");
        assert_eq!(d.instance.as_str(), "i-1");
        assert_eq!(d.vxnets, vec![VxnetId::new("vxnet-1")]);
        assert_eq!(d.max_nics, 62);
        assert!(d.release.is_empty() && d.missing.is_empty());
        // Asked again before anything arrived: the same request.
        assert_eq!(s.supply_request(&node(), 0), d);
    }

    #[test]
    fn the_request_is_stable_while_nics_arrive_and_at_rest() {
        let mut s = state(PoolConfig::default());
        let first = s.supply_request(&node(), 0);
        for n in 1..=5u8 {
            supply_and_prepare(&mut s, &attached(n), Timestamp(u64::from(n)));
            assert_eq!(s.supply_request(&node(), 0), first, "after {n} arrived");
        }
        assert_eq!(s.assignable(Timestamp(10)), 5);
    }

    #[test]
    fn supplied_nics_are_prepared_then_assignable_and_adds_need_no_supplier() {
        let mut s = state(PoolConfig::default());
        s.supplied(&attached(2), Timestamp(0));
        assert_eq!(s.assignable(Timestamp(0)), 0, "not prepared yet");
        let prepares = s
            .plan(Timestamp(0))
            .into_iter()
            .filter(|a| matches!(a, PoolAction::Prepare { .. }))
            .count();
        assert_eq!(prepares, 2);
        for n in s.nics().keys().cloned().collect::<Vec<_>>() {
            s.prepare_done(&n, Ok(()), Timestamp(0));
        }
        let a = s
            .assign(&pod(), "/ns/1", Timestamp(1))
            .expect("served from the pool");
        assert!(s.nics().get(&a.attachment.nic).is_some());
        s.check_invariants().unwrap();
    }

    #[test]
    fn demand_and_waiting_adds_raise_want_by_whole_batches() {
        let mut s = state(PoolConfig {
            min_free: 2,
            max_free: 4,
            batch_size: 3,
            ..Default::default()
        });
        assert_eq!(s.supply_request(&node(), 0).want, 3, "a whole batch");
        s.set_demand(6);
        let d = s.supply_request(&node(), 6);
        assert_eq!(d.want, 8, "min_free + demand");
        assert_eq!(d.waiting, 6);
        s.set_demand(0);
        assert_eq!(
            s.supply_request(&node(), 0).want,
            4,
            "coming NICs beyond max_free are no longer asked for"
        );
    }

    #[test]
    fn surplus_is_released_on_the_host_then_given_back_then_forgotten() {
        let mut s = state(PoolConfig {
            min_free: 1,
            max_free: 2,
            batch_size: 1,
            min_lifetime: Duration::ZERO,
            ..Default::default()
        });
        supply_and_prepare(&mut s, &attached(5), Timestamp(0));
        let retiring: Vec<NicId> = s
            .nics()
            .values()
            .filter(|n| n.usage == Usage::Retiring)
            .map(|n| n.id.clone())
            .collect();
        assert_eq!(retiring.len(), 3, "two kept free");
        let d = s.supply_request(&node(), 0);
        assert_eq!(d.release, retiring.iter().cloned().collect());
        assert_eq!(d.want, 2);
        // The controller detaches them: listed as detaching, then gone.
        let mut detaching = attached(5);
        for n in &mut detaching.nics {
            if retiring.contains(&n.id) {
                n.phase = NicPhase::Detaching;
            }
        }
        supply_and_prepare(&mut s, &detaching, Timestamp(1));
        assert_eq!(s.nics().len(), 5);
        let kept = Supplied {
            nics: detaching
                .nics
                .into_iter()
                .filter(|n| !retiring.contains(&n.id))
                .collect(),
            ..attached(0)
        };
        supply_and_prepare(&mut s, &kept, Timestamp(2));
        assert_eq!(s.nics().len(), 2);
        assert!(s.supply_request(&node(), 0).release.is_empty());
        s.check_invariants().unwrap();
    }

    #[test]
    fn nothing_is_forgotten_before_the_supplier_answered() {
        let mut s = state(PoolConfig::default());
        supply_and_prepare(&mut s, &attached(3), Timestamp(0));
        s.supplied(&Supplied::default(), Timestamp(1));
        assert_eq!(s.nics().len(), 3);
        s.supplied(&attached(0), Timestamp(2));
        assert_eq!(s.nics().len(), 0, "an answer without them: gone");
    }

    #[test]
    fn a_nic_a_pod_holds_stays_the_pods_when_unlisted_and_is_not_reassigned() {
        let mut s = state(PoolConfig::default());
        supply_and_prepare(&mut s, &attached(1), Timestamp(0));
        let a = s.assign(&pod(), "/ns/1", Timestamp(1)).unwrap();
        s.supplied(&attached(0), Timestamp(2));
        assert_eq!(s.nics()[&a.attachment.nic].link, CloudLink::Unattached);
        assert!(s.attachment(&pod().attachment()).is_some());
        s.check_invariants().unwrap();
    }

    #[test]
    fn a_nic_whose_link_never_showed_is_reported_missing_and_prepared_after_repair() {
        let mut s = state(PoolConfig {
            missing_link_grace: Duration::ZERO,
            ..Default::default()
        });
        s.supplied(&attached(1), Timestamp(0));
        let id = nic(0, NicPhase::Attached).id;
        s.prepare_done(
            &id,
            Err(crate::ports::HostError::new(
                crate::ports::HostErrorKind::NotFound,
                "no link",
            )),
            Timestamp(0),
        );
        assert!(s.nics()[&id].reattach);
        let d = s.supply_request(&node(), 0);
        assert_eq!(d.missing, [id.clone()].into_iter().collect());
        // The controller detaches and attaches it again.
        let mut repair = attached(1);
        repair.nics[0].phase = NicPhase::Detaching;
        s.supplied(&repair, Timestamp(1));
        repair.nics[0].phase = NicPhase::Attached;
        s.supplied(&repair, Timestamp(2));
        assert!(!s.nics()[&id].reattach);
        assert!(
            s.plan(Timestamp(2))
                .iter()
                .any(|a| matches!(a, PoolAction::Prepare { nic } if nic.nic == id))
        );
        assert!(s.supply_request(&node(), 0).missing.is_empty());
    }

    #[test]
    fn vxnets_are_learned_from_the_supplied_nics() {
        let mut s = NodeState::new(PoolConfig::default(), InstanceId::new("i-1"), vec![]);
        s.set_supplied_mode(true);
        let learned = s.supplied(&attached(1), Timestamp(0));
        assert_eq!(learned.len(), 1);
        assert_eq!(s.vxnets(), &[vxnet()][..]);
    }
}
