//! The warm-pool planner and the completion of its actions.
//!
//! [`NodeState::plan`] looks at the pool and returns what to ask the cloud and the
//! host next, already marking the NICs involved as in flight (so a second plan made
//! while the first runs does not repeat it). The executor reports each outcome
//! back through `*_done`. Every cloud call is batched: one CreateNics with a count,
//! one AttachNics/DetachNics/DeleteNics per batch, never one call per NIC.

use serde::{Deserialize, Serialize};

use crate::pool::state::{CloudLink, NodeState, Usage};
use crate::ports::{CloudError, CloudErrorKind, HostError, HostErrorKind};
use crate::types::{CloudNic, JobId, NicId, NicPlumbing, Timestamp, VxnetId};

/// The most NICs one CreateNics may ask for (the API's `count` limit).
pub const MAX_CREATE: u32 = 252;

/// The kinds of cloud operations; each has its own backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// CreateNics.
    Create,
    /// AttachNics + wait for the job.
    Attach,
    /// Host preparation of an attached NIC.
    Prepare,
    /// Host release + DetachNics + wait for the job.
    Detach,
    /// DeleteNics.
    Delete,
    /// DescribeNics / DescribeJobs of a reconcile or of NICs whose job's end was unseen.
    Describe,
}

/// One step the executor must carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolAction {
    /// Create `count` NICs in `vxnet` with one CreateNics call.
    Create {
        /// Where.
        vxnet: VxnetId,
        /// How many (the round's whole need, at least `batch_size`).
        count: u32,
    },
    /// Attach these NICs to this instance with one AttachNics call.
    Attach {
        /// The batch.
        nics: Vec<NicId>,
    },
    /// Prepare an attached NIC on the host.
    Prepare {
        /// The NIC.
        nic: NicPlumbing,
    },
    /// Release these NICs on the host, then detach them with one DetachNics call.
    Detach {
        /// The batch, with what the host must undo.
        nics: Vec<NicPlumbing>,
    },
    /// Delete these detached NICs with one DeleteNics call.
    Delete {
        /// The batch.
        nics: Vec<NicId>,
    },
    /// Controller mode: release these NICs on the host only; the node then gives
    /// them back in its request and the controller detaches them.
    Release {
        /// The NICs, with what the host must undo.
        nics: Vec<NicPlumbing>,
    },
}

impl PoolAction {
    /// The kind of the action.
    pub fn kind(&self) -> ActionKind {
        match self {
            PoolAction::Create { .. } => ActionKind::Create,
            PoolAction::Attach { .. } => ActionKind::Attach,
            PoolAction::Prepare { .. } => ActionKind::Prepare,
            PoolAction::Detach { .. } => ActionKind::Detach,
            PoolAction::Delete { .. } => ActionKind::Delete,
            PoolAction::Release { .. } => ActionKind::Detach,
        }
    }
}

impl NodeState {
    /// Decides the next pool actions at `now` and marks their NICs as in flight.
    ///
    /// Batches follow demand: what the pool lacks is created in one CreateNics
    /// (at least `batch_size`, the API takes up to [`MAX_CREATE`]), and every NIC
    /// to attach, detach or delete goes in one call of its kind.
    pub fn plan(&mut self, now: Timestamp) -> Vec<PoolAction> {
        if self.supplied_mode {
            return self.plan_supplied(now);
        }
        let mut actions = Vec::new();
        self.retire_surplus(now);

        // 2. Create what the pool lacks in one call, in the first vxnet that is not
        //    resting after refusing NICs.
        if self.cloud_ready(ActionKind::Create, now) {
            let want = self.config.min_free.saturating_add(self.demand);
            let room = self.config.max_nics.saturating_sub(self.total());
            let supply = self.supply();
            let mut need = want.saturating_sub(supply);
            if need > 0 {
                // Refill by at least a whole batch (never past max_free): under steady churn
                // this makes one CreateNics per `batch_size` pods, not one per pod.
                let ceiling = self
                    .config
                    .max_free
                    .saturating_add(self.demand)
                    .saturating_sub(supply);
                need = need.max(self.config.batch_size.min(ceiling));
            }
            let count = need.min(room).min(MAX_CREATE);
            let vxnet = self
                .vxnets
                .iter()
                .find(|v| !self.vxnet_resting(&v.id, now))
                .map(|v| v.id.clone());
            if let (Some(vxnet), true) = (vxnet, count > 0) {
                let count = count.min(self.vxnet_cap(&vxnet));
                self.creating += count;
                actions.push(PoolAction::Create { vxnet, count });
            }
        }

        // 3. Attach every unattached NIC that is not retiring (new, adopted, or one that
        //    lost its attachment and must come back for the pod that holds it).
        if self.cloud_ready(ActionKind::Attach, now) {
            // Never more than `max_nics` attached or on their way; NICs holding a pod first.
            let on_instance = self
                .nics
                .values()
                .filter(|n| {
                    matches!(
                        n.link,
                        CloudLink::Attached
                            | CloudLink::Attaching
                            | CloudLink::Detaching
                            | CloudLink::Uncertain { .. }
                    )
                })
                .count() as u32;
            let room = self.config.max_nics.saturating_sub(on_instance) as usize;
            let mut ids: Vec<(bool, NicId)> = self
                .nics
                .values()
                .filter(|n| n.link == CloudLink::Unattached && n.usage != Usage::Retiring)
                .map(|n| (!matches!(n.usage, Usage::Assigned { .. }), n.id.clone()))
                .collect();
            ids.sort();
            let ids: Vec<NicId> = ids.into_iter().take(room).map(|(_, id)| id).collect();
            if !ids.is_empty() {
                for id in &ids {
                    if let Some(e) = self.nics.get_mut(id) {
                        e.link = CloudLink::Attaching;
                        e.job = None;
                    }
                }
                actions.push(PoolAction::Attach { nics: ids });
            }
        }

        // 4. Prepare attached NICs on the host.
        actions.extend(self.prepare_actions());

        // 5. Detach retiring NICs and NICs whose link never showed up on the host.
        if self.cloud_ready(ActionKind::Detach, now) {
            let ids: Vec<NicId> = self
                .nics
                .values()
                .filter(|n| {
                    n.link == CloudLink::Attached && (n.usage == Usage::Retiring || n.reattach)
                })
                .map(|n| n.id.clone())
                .collect();
            if !ids.is_empty() {
                let mut nics = Vec::with_capacity(ids.len());
                for id in &ids {
                    if let Some(e) = self.nics.get(id) {
                        nics.push(self.nic_plumbing(e));
                    }
                    if let Some(e) = self.nics.get_mut(id) {
                        e.link = CloudLink::Detaching;
                        e.host_ready = false;
                        e.job = None;
                    }
                }
                actions.push(PoolAction::Detach { nics });
            }
        }

        // 6. Delete retiring NICs once detached.
        if self.cloud_ready(ActionKind::Delete, now) {
            let ids: Vec<NicId> = self
                .nics
                .values()
                .filter(|n| n.link == CloudLink::Unattached && n.usage == Usage::Retiring)
                .map(|n| n.id.clone())
                .collect();
            if !ids.is_empty() {
                for id in &ids {
                    if let Some(e) = self.nics.get_mut(id) {
                        e.link = CloudLink::Deleting;
                    }
                }
                actions.push(PoolAction::Delete { nics: ids });
            }
        }
        actions
    }

    /// Ends the cooldowns that are over, then retires NICs beyond `max_nics`
    /// (adopted leftovers of a lost CreateNics answer, a lowered limit) at once,
    /// then surplus free NICs that lived long enough; unattached ones first
    /// (cheapest to get rid of), then the longest free.
    pub(crate) fn retire_surplus(&mut self, now: Timestamp) {
        for n in self.nics.values_mut() {
            if let Usage::Cooling { until } = n.usage
                && until <= now
            {
                n.usage = Usage::Free { since: until };
            }
        }
        let over_cap = (self.nics.len() as u32).saturating_sub(self.config.max_nics);
        self.retire(over_cap, now, false);
        let keep = self.config.max_free.saturating_add(self.demand);
        // Cooling NICs are neither supply nor surplus: they become free when it ends.
        let free = self
            .nics
            .values()
            .filter(|n| matches!(n.usage, Usage::Free { .. }))
            .count() as u32;
        self.retire(free.saturating_sub(keep), now, true);
    }

    /// Attached NICs the host has not prepared yet.
    pub(crate) fn prepare_actions(&self) -> Vec<PoolAction> {
        self.nics
            .values()
            .filter(|n| {
                n.link == CloudLink::Attached
                    && !n.host_ready
                    && !n.reattach
                    && n.usage != Usage::Retiring
            })
            .map(|n| PoolAction::Prepare {
                nic: self.nic_plumbing(n),
            })
            .collect()
    }

    /// Marks up to `count` free NICs as retiring: unattached ones first, then the ones
    /// free the longest; with `respect_lifetime`, only NICs older than `min_lifetime`.
    fn retire(&mut self, count: u32, now: Timestamp, respect_lifetime: bool) {
        if count == 0 {
            return;
        }
        let mut candidates: Vec<_> = self
            .nics
            .values()
            .filter(|n| matches!(n.usage, Usage::Free { .. }))
            .filter(|n| !respect_lifetime || now.since(n.created_at) >= self.config.min_lifetime)
            .filter(|n| matches!(n.link, CloudLink::Unattached | CloudLink::Attached))
            .map(|n| {
                let since = match n.usage {
                    Usage::Free { since } => since,
                    _ => Timestamp(0),
                };
                (n.link != CloudLink::Unattached, since, n.id.clone())
            })
            .collect();
        candidates.sort();
        for (_, _, id) in candidates.into_iter().take(count as usize) {
            if let Some(e) = self.nics.get_mut(&id) {
                e.usage = Usage::Retiring;
            }
        }
    }

    /// Outcome of a `Create { vxnet, count }`.
    pub fn create_done(
        &mut self,
        vxnet: &VxnetId,
        requested: u32,
        result: Result<Vec<CloudNic>, CloudError>,
        now: Timestamp,
    ) {
        self.creating = self.creating.saturating_sub(requested);
        match result {
            Ok(nics) => {
                self.cloud_succeeded(ActionKind::Create);
                self.exhausted.remove(vxnet);
                for nic in &nics {
                    self.insert_cloud_nic(nic, CloudLink::Unattached, now);
                }
            }
            Err(e) => {
                if e.kind == CloudErrorKind::QuotaExceeded {
                    // The vxnet has no address (or NIC) left: it rests with its own
                    // backoff, and the next vxnet, if any, is tried at once.
                    self.vxnet_exhausted(vxnet, requested, now);
                    if self.vxnets.iter().any(|v| !self.vxnet_resting(&v.id, now)) {
                        return;
                    }
                    // Every vxnet rests: their own backoffs pace the next try.
                    self.note_vxnets_full(&e, now);
                    return;
                }
                self.cloud_failed(ActionKind::Create, &e, now);
            }
        }
    }

    /// The cloud accepted an attach or detach of `nics` as `job`: recorded, so a
    /// restarted agent can ask where the job is.
    pub fn job_started(&mut self, nics: &[NicId], job: &JobId) {
        for id in nics {
            if let Some(e) = self.nics.get_mut(id)
                && matches!(e.link, CloudLink::Attaching | CloudLink::Detaching)
            {
                e.job = Some(job.clone());
            }
        }
    }

    /// Outcome of an `Attach { nics }` (the job included).
    pub fn attach_done(&mut self, nics: &[NicId], result: Result<(), CloudError>, now: Timestamp) {
        match &result {
            Ok(()) => self.cloud_succeeded(ActionKind::Attach),
            Err(e) => self.cloud_failed(ActionKind::Attach, e, now),
        }
        for id in nics {
            let Some(e) = self.nics.get_mut(id) else {
                continue;
            };
            if e.link != CloudLink::Attaching {
                continue;
            }
            e.job = None;
            match &result {
                Ok(()) => {
                    e.link = CloudLink::Attached;
                    e.host_ready = false;
                    e.link_missing_since = None;
                }
                Err(_) => e.link = CloudLink::Unattached,
            }
        }
    }

    /// The end of an attach or detach job was not seen (the wait timed out or failed,
    /// `error`): the NICs may or may not have moved. The pool asks the job's status
    /// (or the cloud) and settles them.
    pub fn job_lost(
        &mut self,
        nics: &[NicId],
        attaching: bool,
        error: &CloudError,
        now: Timestamp,
    ) {
        let kind = if attaching {
            ActionKind::Attach
        } else {
            ActionKind::Detach
        };
        self.cloud_failed(kind, error, now);
        for id in nics {
            if let Some(e) = self.nics.get_mut(id)
                && matches!(e.link, CloudLink::Attaching | CloudLink::Detaching)
            {
                e.link = CloudLink::Uncertain {
                    attaching,
                    since: now,
                };
                e.host_ready = false;
            }
        }
    }

    /// Outcome of a `Prepare { nic }`.
    pub fn prepare_done(&mut self, nic: &NicId, result: Result<(), HostError>, now: Timestamp) {
        let grace = self.config.missing_link_grace;
        let Some(e) = self.nics.get_mut(nic) else {
            return;
        };
        if e.link != CloudLink::Attached {
            return;
        }
        match result {
            Ok(()) => {
                e.host_ready = true;
                e.link_missing_since = None;
            }
            Err(err) => {
                // The link may simply not have appeared yet; if it stays missing, the
                // attachment is broken (a known cloud problem): detach and attach again.
                let since = *e.link_missing_since.get_or_insert(now);
                if matches!(err.kind, HostErrorKind::Retryable | HostErrorKind::NotFound)
                    && now.since(since) >= grace
                {
                    e.reattach = true;
                }
            }
        }
    }

    /// Outcome of a `Detach { nics }` (host release and job included).
    pub fn detach_done(&mut self, nics: &[NicId], result: Result<(), CloudError>, now: Timestamp) {
        match &result {
            Ok(()) => {
                self.cloud_succeeded(ActionKind::Detach);
                // A slot on the instance is free: a NIC quota may have lifted.
                self.backoff.remove(&ActionKind::Attach);
                if self
                    .shortage
                    .as_ref()
                    .is_some_and(|s| s.cause == crate::pool::ShortageCause::NicQuota)
                {
                    self.shortage = None;
                }
            }
            Err(e) => self.cloud_failed(ActionKind::Detach, e, now),
        }
        for id in nics {
            let Some(e) = self.nics.get_mut(id) else {
                continue;
            };
            if e.link != CloudLink::Detaching {
                continue;
            }
            e.job = None;
            match &result {
                Ok(()) => {
                    e.link = CloudLink::Unattached;
                    e.reattach = false;
                    e.link_missing_since = None;
                }
                // Even NotFound is left to the reconcile, which asks the cloud what exists and
                // unplumbs a pod whose NIC is really gone before forgetting the NIC.
                Err(_) => e.link = CloudLink::Attached,
            }
        }
    }

    /// Outcome of a `Delete { nics }`.
    pub fn delete_done(&mut self, nics: &[NicId], result: Result<(), CloudError>, now: Timestamp) {
        let gone = result.is_ok();
        // NotFound for a NIC the node holds says the cloud does not see it where the
        // node thinks it is, not that it is gone: it may be attached after all (an
        // attach that failed after its effect). It stays counted against `max_nics`,
        // uncertain, until the cloud is asked where it is.
        let doubt = matches!(&result, Err(e) if e.kind == CloudErrorKind::NotFound);
        match &result {
            Err(e) if !doubt => self.cloud_failed(ActionKind::Delete, e, now),
            _ => self.cloud_succeeded(ActionKind::Delete),
        }
        let mut freed = Vec::new();
        for id in nics {
            let Some(e) = self.nics.get_mut(id) else {
                continue;
            };
            if e.link != CloudLink::Deleting {
                continue;
            }
            if gone {
                if let Some(entry) = self.nics.remove(id) {
                    freed.push(entry.vxnet);
                }
            } else if doubt {
                e.link = CloudLink::Uncertain {
                    attaching: false,
                    since: now,
                };
                e.host_ready = false;
            } else {
                e.link = CloudLink::Unattached;
            }
        }
        // The node's own deletions free addresses: a full vxnet is worth a try now.
        for vxnet in freed {
            self.vxnet_freed(&vxnet);
        }
    }

    /// Drops a NIC that no longer exists in the cloud, and any attachment on it.
    pub(crate) fn forget_nic(&mut self, id: &NicId) -> Option<crate::pool::PodAttachment> {
        let entry = self.nics.remove(id)?;
        match entry.usage {
            Usage::Assigned { to } => self.attachments.remove(&to),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;
    use crate::config::PoolConfig;
    use crate::types::{CloudNicStatus, InstanceId, Vxnet};

    fn vxnet() -> Vxnet {
        Vxnet {
            id: VxnetId::new("vxnet-1"),
            cidr: "172.16.1.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(172, 16, 1, 1),
            router: None,
        }
    }

    fn state(cfg: PoolConfig) -> NodeState {
        NodeState::new(cfg, InstanceId::new("i-1"), vec![vxnet()])
    }

    fn cloud_nics(from: u8, n: u8) -> Vec<CloudNic> {
        (from..from + n)
            .map(|i| CloudNic {
                id: NicId::from_mac([0x52, 0x54, 0, 0, 0, i]),
                name: "hostnic_i-1".into(),
                vxnet: VxnetId::new("vxnet-1"),
                ip: Ipv4Addr::new(172, 16, 1, i),
                instance: None,
                status: CloudNicStatus::Available,
                primary: false,
            })
            .collect()
    }

    #[test]
    fn empty_pool_creates_min_free_in_one_call_and_never_twice() {
        let mut s = state(PoolConfig {
            min_free: 7,
            ..Default::default()
        });
        let actions = s.plan(Timestamp(0));
        let counts: Vec<u32> = actions
            .iter()
            .map(|a| match a {
                PoolAction::Create { count, .. } => *count,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(counts, vec![7], "one CreateNics for the whole need");
        assert!(
            s.plan(Timestamp(1)).is_empty(),
            "creations in flight must not be repeated"
        );
    }

    #[test]
    fn created_nics_are_attached_in_one_call_per_batch_then_prepared() {
        let mut s = state(PoolConfig::default());
        s.plan(Timestamp(0));
        s.create_done(
            &VxnetId::new("vxnet-1"),
            5,
            Ok(cloud_nics(10, 5)),
            Timestamp(1),
        );
        let actions = s.plan(Timestamp(2));
        assert_eq!(actions.len(), 1);
        let PoolAction::Attach { nics } = &actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!(nics.len(), 5);
        s.attach_done(nics, Ok(()), Timestamp(3));
        let prepares = s.plan(Timestamp(4));
        assert_eq!(prepares.len(), 5);
        for a in prepares {
            let PoolAction::Prepare { nic } = a else {
                panic!()
            };
            assert!(nic.table >= 1000);
            assert_eq!(nic.gateway, Ipv4Addr::new(172, 16, 1, 1));
            s.prepare_done(&nic.nic, Ok(()), Timestamp(5));
        }
        assert_eq!(s.assignable(Timestamp(5)), 5);
        assert!(s.plan(Timestamp(6)).is_empty());
        s.check_invariants().unwrap();
    }

    #[test]
    fn surplus_is_retired_only_after_min_lifetime() {
        let cfg = PoolConfig {
            min_free: 0,
            max_free: 1,
            ..Default::default()
        };
        let mut s = state(cfg);
        s.create_done(
            &VxnetId::new("vxnet-1"),
            0,
            Ok(cloud_nics(10, 3)),
            Timestamp(0),
        );
        // Unattached surplus, too young: it is attached, not deleted.
        let a = s.plan(Timestamp(1));
        assert!(matches!(a[0], PoolAction::Attach { .. }));
        let PoolAction::Attach { nics } = &a[0] else {
            unreachable!()
        };
        s.attach_done(nics, Ok(()), Timestamp(2));
        for id in nics {
            s.prepare_done(id, Ok(()), Timestamp(2));
        }
        assert!(
            s.plan(Timestamp(3))
                .iter()
                .all(|a| !matches!(a, PoolAction::Detach { .. }))
        );
        let later = Timestamp(0).plus(Duration::from_secs(61));
        let a = s.plan(later);
        let PoolAction::Detach { nics } = &a[0] else {
            panic!("{a:?}")
        };
        assert_eq!(nics.len(), 2, "keeps max_free = 1");
        let ids: Vec<_> = nics.iter().map(|n| n.nic.clone()).collect();
        s.detach_done(&ids, Ok(()), later);
        let a = s.plan(later);
        let PoolAction::Delete { nics } = &a[0] else {
            panic!("{a:?}")
        };
        s.delete_done(&nics.clone(), Ok(()), later);
        assert_eq!(s.nics().len(), 1);
    }

    #[test]
    fn a_burst_of_demand_is_one_create_one_attach_and_one_detach_or_delete() {
        let mut s = state(PoolConfig::default());
        s.set_demand(40);
        let a = s.plan(Timestamp(0));
        assert_eq!(
            a,
            vec![PoolAction::Create {
                vxnet: VxnetId::new("vxnet-1"),
                count: 45
            }],
            "min_free + demand in one call"
        );
        s.create_done(
            &VxnetId::new("vxnet-1"),
            45,
            Ok(cloud_nics(10, 45)),
            Timestamp(1),
        );
        let a = s.plan(Timestamp(2));
        let [PoolAction::Attach { nics }] = &a[..] else {
            panic!("{a:?}")
        };
        assert_eq!(nics.len(), 45, "every NIC of the round in one AttachNics");
        let nics = nics.clone();
        s.attach_done(&nics, Ok(()), Timestamp(3));
        for id in &nics {
            s.prepare_done(id, Ok(()), Timestamp(3));
        }
        // The demand went away: the surplus leaves in one DetachNics, then one DeleteNics.
        s.set_demand(0);
        let later = Timestamp(0).plus(Duration::from_secs(120));
        let a = s.plan(later);
        let [PoolAction::Detach { nics }] = &a[..] else {
            panic!("{a:?}")
        };
        assert_eq!(nics.len(), 35, "keeps max_free = 10");
        let ids: Vec<_> = nics.iter().map(|n| n.nic.clone()).collect();
        s.detach_done(&ids, Ok(()), later);
        let a = s.plan(later);
        let [PoolAction::Delete { nics }] = &a[..] else {
            panic!("{a:?}")
        };
        assert_eq!(nics.len(), 35);
    }

    fn full(vxnet: &str) -> CloudError {
        CloudError::new(
            CloudErrorKind::QuotaExceeded,
            "CreateNics",
            format!("vxnet [{vxnet}] does not have enough available IP addresses"),
        )
        .with_code(2500)
    }

    #[test]
    fn a_full_vxnet_is_retried_within_a_minute_while_pods_wait_not_after_ten() {
        // Issue 20, item 6: the pool used to leave a full vxnet alone for a fixed
        // 600 s (10 × backoff_max), so freed addresses were found minutes late.
        let mut s = state(PoolConfig::default());
        s.set_demand(3);
        let mut now = Timestamp(0);
        let mut tries = Vec::new();
        for _ in 0..12 {
            let a = s.plan(now);
            if let [PoolAction::Create { vxnet, count }] = &a[..] {
                tries.push(now);
                s.create_done(vxnet, *count, Err(full("vxnet-1")), now);
            }
            now = now.plus(Duration::from_secs(5));
        }
        let gaps: Vec<u64> = tries.windows(2).map(|w| (w[1].0 - w[0].0) / 1000).collect();
        assert!(tries.len() >= 5, "tries at {tries:?}");
        assert!(gaps.iter().all(|g| *g <= 75), "gaps {gaps:?} s");
        assert_eq!(
            s.shortage().map(|s| s.cause),
            Some(crate::pool::ShortageCause::VxnetFull)
        );
        assert!(s.growth_blocked().is_some());
        assert_eq!(
            s.assignable_pods(),
            0,
            "a full vxnet advertises what the node holds"
        );
    }

    #[test]
    fn without_demand_a_full_vxnet_rests_long_and_the_node_s_own_delete_wakes_it() {
        let mut s = state(PoolConfig {
            min_free: 1,
            max_free: 1,
            min_lifetime: Duration::ZERO,
            ..Default::default()
        });
        // Two NICs of the vxnet, one of them surplus.
        s.create_done(
            &VxnetId::new("vxnet-1"),
            0,
            Ok(cloud_nics(10, 2)),
            Timestamp(0),
        );
        for _ in 0..12 {
            s.vxnet_exhausted(&VxnetId::new("vxnet-1"), 5, Timestamp(0));
        }
        // Ten times backoff_max with nobody waiting (±20 %).
        let vx = VxnetId::new("vxnet-1");
        assert!(s.vxnet_resting(&vx, Timestamp(0).plus(Duration::from_secs(450))));
        assert!(!s.vxnet_resting(&vx, Timestamp(0).plus(Duration::from_secs(721))));
        let a = s.plan(Timestamp(1));
        let Some(PoolAction::Delete { nics }) =
            a.iter().find(|a| matches!(a, PoolAction::Delete { .. }))
        else {
            panic!("{a:?}")
        };
        let nics = nics.clone();
        s.delete_done(&nics, Ok(()), Timestamp(2));
        assert!(
            !s.vxnet_resting(&VxnetId::new("vxnet-1"), Timestamp(2)),
            "the node freed an address there itself"
        );
    }

    #[test]
    fn a_second_vxnet_is_used_at_once_when_the_first_is_full() {
        let second = Vxnet {
            id: VxnetId::new("vxnet-2"),
            cidr: "172.16.2.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(172, 16, 2, 1),
            router: None,
        };
        let mut s = NodeState::new(
            PoolConfig::default(),
            InstanceId::new("i-1"),
            vec![vxnet(), second],
        );
        let a = s.plan(Timestamp(0));
        s.create_done(
            &VxnetId::new("vxnet-1"),
            5,
            Err(full("vxnet-1")),
            Timestamp(0),
        );
        assert!(matches!(a[0], PoolAction::Create { .. }));
        let a = s.plan(Timestamp(1));
        assert_eq!(
            a,
            vec![PoolAction::Create {
                vxnet: VxnetId::new("vxnet-2"),
                count: 5
            }]
        );
        assert!(
            s.shortage().is_none(),
            "not a shortage while a vxnet has room"
        );
    }

    #[test]
    fn a_wrong_secret_is_not_retried_in_a_loop() {
        // Issue 20, item 6: a 1200 was retried every backoff_max (60 s) forever.
        let mut s = state(PoolConfig::default());
        let auth = CloudError::new(
            CloudErrorKind::Permanent,
            "CreateNics",
            "AuthFailure, wrong signature",
        )
        .with_code(1200);
        let mut now = Timestamp(0);
        let mut creates = 0;
        // Two hours, a pool round every 5 s.
        for _ in 0..(2 * 3600 / 5) {
            for a in s.plan(now) {
                if let PoolAction::Create { vxnet, count } = a {
                    creates += 1;
                    s.create_done(&vxnet, count, Err(auth.clone()), now);
                }
            }
            now = now.plus(Duration::from_secs(5));
        }
        assert!(
            creates <= 5,
            "{creates} CreateNics with a wrong secret in 2 h"
        );
        s.credentials_changed();
        assert!(matches!(s.plan(now)[..], [PoolAction::Create { .. }]));
    }

    #[test]
    fn a_nic_whose_link_never_appears_is_detached_and_reattached() {
        let mut s = state(PoolConfig {
            min_free: 1,
            max_free: 1,
            ..Default::default()
        });
        s.create_done(
            &VxnetId::new("vxnet-1"),
            0,
            Ok(cloud_nics(10, 1)),
            Timestamp(0),
        );
        let id = cloud_nics(10, 1)[0].id.clone();
        s.plan(Timestamp(0));
        s.attach_done(std::slice::from_ref(&id), Ok(()), Timestamp(0));
        let missing = HostError::new(HostErrorKind::Retryable, "no link");
        s.prepare_done(&id, Err(missing.clone()), Timestamp(0));
        s.prepare_done(
            &id,
            Err(missing),
            Timestamp(0).plus(Duration::from_secs(61)),
        );
        let a = s.plan(Timestamp(0).plus(Duration::from_secs(62)));
        assert!(matches!(&a[..], [PoolAction::Detach { .. }]), "{a:?}");
        s.detach_done(std::slice::from_ref(&id), Ok(()), Timestamp(70_000));
        let a = s.plan(Timestamp(70_001));
        assert!(matches!(&a[..], [PoolAction::Attach { .. }]), "{a:?}");
    }
}
