//! Allocation decisions: which NIC a pod gets (ADD), what a DEL or GC releases.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::pool::state::{NicEntry, NodeState, PodAttachment, Usage};
use crate::types::{AttachmentId, PlumbedPod, PodKey, Timestamp};

/// Why no NIC could be assigned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum AllocError {
    /// No NIC is ready now but the pool can grow: try again shortly.
    #[error(
        "no free NIC right now ({coming} on the way, {cooling} cooling down); try again shortly"
    )]
    PoolEmpty {
        /// NICs being created, attached or prepared.
        coming: u32,
        /// NICs in their IP cooldown.
        cooling: u32,
    },
    /// Every NIC the node may hold is assigned.
    #[error("node is full: all {max_nics} pod NICs are in use")]
    NodeFull {
        /// The limit.
        max_nics: u32,
    },
}

/// The NIC given to a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The attachment record (already in the state).
    pub attachment: PodAttachment,
    /// True when the pod already had this NIC (a repeated ADD).
    pub existing: bool,
}

impl NodeState {
    /// ADD: gives `pod` a ready NIC, or returns the one it already has (same container id
    /// and ifname). The NIC is marked assigned at once, so a concurrent ADD can never get
    /// it; the caller plumbs the host and then calls [`NodeState::confirm_plumbed`] or, if
    /// plumbing failed, [`NodeState::abort_assign`].
    pub fn assign(
        &mut self,
        pod: &PodKey,
        netns: &str,
        now: Timestamp,
    ) -> Result<Assignment, AllocError> {
        let id = pod.attachment();
        if let Some(existing) = self.attachments.get(&id) {
            return Ok(Assignment {
                attachment: existing.clone(),
                existing: true,
            });
        }
        // The NIC that has been free the longest: spreads reuse of addresses over time.
        let free_since = |n: &NicEntry| match n.usage {
            Usage::Free { since } => since,
            Usage::Cooling { until } => until,
            _ => Timestamp(u64::MAX),
        };
        let candidate = self
            .nics
            .values()
            .filter(|n| n.assignable(now))
            .min_by(|a, b| {
                free_since(a)
                    .cmp(&free_since(b))
                    .then_with(|| a.id.cmp(&b.id))
            })
            .map(|n| n.id.clone());
        let Some(nic_id) = candidate else {
            let assigned = self.attachments.len() as u32;
            if assigned >= self.config.max_nics {
                return Err(AllocError::NodeFull {
                    max_nics: self.config.max_nics,
                });
            }
            let cooling = self
                .nics
                .values()
                .filter(|n| matches!(n.usage, Usage::Cooling { until } if until > now))
                .count() as u32;
            let coming = self
                .nics
                .values()
                .filter(|n| matches!(n.usage, Usage::Free { .. }) && !n.assignable(now))
                .count() as u32
                + self.creating;
            return Err(AllocError::PoolEmpty { coming, cooling });
        };
        let entry = self.nics.get_mut(&nic_id).expect("candidate exists");
        entry.usage = Usage::Assigned { to: id.clone() };
        let attachment = PodAttachment {
            pod: pod.clone(),
            netns: netns.to_string(),
            nic: nic_id,
            ip: entry.ip,
            table: entry.table,
            assigned_at: now,
            plumbed: None,
        };
        self.released_by_del.remove(&attachment.ip);
        self.attachments.insert(id, attachment.clone());
        Ok(Assignment {
            attachment,
            existing: false,
        })
    }

    /// Records that the host plumbed attachment `id`.
    pub fn confirm_plumbed(&mut self, id: &AttachmentId, plumbed: PlumbedPod) -> bool {
        match self.attachments.get_mut(id) {
            Some(att) => {
                att.plumbed = Some(plumbed);
                true
            }
            None => false,
        }
    }

    /// Sets (or clears) what is recorded of `id`'s plumbing; false for an unknown attachment.
    pub fn set_plumbed(&mut self, id: &AttachmentId, plumbed: Option<PlumbedPod>) -> bool {
        match self.attachments.get_mut(id) {
            Some(att) => {
                att.plumbed = plumbed;
                true
            }
            None => false,
        }
    }

    /// Undoes an assignment whose plumbing failed: the pod never used the address, so the
    /// NIC is free again at once (no cooldown).
    pub fn abort_assign(&mut self, id: &AttachmentId, now: Timestamp) -> Option<PodAttachment> {
        let att = self.attachments.remove(id)?;
        if !att.pod.namespace.is_empty() && !att.pod.name.is_empty() {
            self.released_by_del
                .insert(att.ip, (att.pod.namespace.clone(), att.pod.name.clone()));
        }
        if let Some(entry) = self.nics.get_mut(&att.nic) {
            entry.usage = Usage::Free { since: now };
        }
        Some(att)
    }

    /// DEL: releases attachment `id`; its NIC cools down before another pod gets it.
    /// Returns `None` for an unknown attachment (DEL is idempotent).
    pub fn release(&mut self, id: &AttachmentId, now: Timestamp) -> Option<PodAttachment> {
        let att = self.attachments.remove(id)?;
        if !att.pod.namespace.is_empty() && !att.pod.name.is_empty() {
            self.released_by_del
                .insert(att.ip, (att.pod.namespace.clone(), att.pod.name.clone()));
        }
        if let Some(entry) = self.nics.get_mut(&att.nic) {
            entry.usage = Usage::Cooling {
                until: now.plus(self.config.ip_cooldown),
            };
        }
        Some(att)
    }

    /// GC: the attachments not listed in `valid`, which the caller releases like DELs.
    /// Pods rebuilt from the witnesses are never stale here: the runtime cannot list
    /// their container id, and the reconcile releases them once proven dead.
    pub fn stale_attachments(&self, valid: &BTreeSet<AttachmentId>) -> Vec<AttachmentId> {
        self.attachments
            .keys()
            .filter(|id| !valid.contains(id) && !id.is_recovered())
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;
    use crate::config::PoolConfig;
    use crate::pool::state::CloudLink;
    use crate::types::{CloudNic, CloudNicStatus, InstanceId, NicId, VxnetId};

    fn node_with_ready_nics(n: u8) -> NodeState {
        let mut s = NodeState::new(PoolConfig::default(), InstanceId::new("i-1"), vec![]);
        for i in 0..n {
            let nic = CloudNic {
                id: NicId::from_mac([0x52, 0x54, 0, 0, 0, i]),
                name: "hostnic_i-1".into(),
                vxnet: VxnetId::new("vxnet-1"),
                ip: Ipv4Addr::new(172, 16, 1, 10 + i),
                instance: Some(InstanceId::new("i-1")),
                status: CloudNicStatus::InUse,
                primary: false,
            };
            s.insert_cloud_nic(&nic, CloudLink::Attached, Timestamp(0));
            s.nics.get_mut(&nic.id).unwrap().host_ready = true;
        }
        s
    }

    fn pod(c: &str) -> PodKey {
        PodKey {
            namespace: "ns".into(),
            name: c.into(),
            container_id: c.into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn add_is_idempotent_for_the_same_container_and_ifname() {
        let mut s = node_with_ready_nics(2);
        let a = s.assign(&pod("a"), "/run/netns/a", Timestamp(1)).unwrap();
        let again = s.assign(&pod("a"), "/run/netns/a", Timestamp(2)).unwrap();
        assert!(!a.existing);
        assert!(again.existing);
        assert_eq!(a.attachment.nic, again.attachment.nic);
        s.check_invariants().unwrap();
    }

    #[test]
    fn released_nic_is_not_reused_before_the_cooldown() {
        let mut s = node_with_ready_nics(1);
        let a = s.assign(&pod("a"), "n", Timestamp(0)).unwrap();
        s.release(&pod("a").attachment(), Timestamp(1000)).unwrap();
        let err = s.assign(&pod("b"), "n", Timestamp(1000)).unwrap_err();
        assert_eq!(
            err,
            AllocError::PoolEmpty {
                coming: 0,
                cooling: 1
            }
        );
        let later = Timestamp(1000).plus(Duration::from_secs(30));
        let b = s.assign(&pod("b"), "n", later).unwrap();
        assert_eq!(a.attachment.nic, b.attachment.nic);
    }

    #[test]
    fn aborted_assignment_frees_the_nic_at_once() {
        let mut s = node_with_ready_nics(1);
        s.assign(&pod("a"), "n", Timestamp(0)).unwrap();
        s.abort_assign(&pod("a").attachment(), Timestamp(1))
            .unwrap();
        s.assign(&pod("b"), "n", Timestamp(1)).unwrap();
        s.check_invariants().unwrap();
    }

    #[test]
    fn del_of_unknown_pod_is_a_no_op_and_gc_lists_only_stale() {
        let mut s = node_with_ready_nics(3);
        assert!(s.release(&pod("x").attachment(), Timestamp(0)).is_none());
        s.assign(&pod("a"), "n", Timestamp(0)).unwrap();
        s.assign(&pod("b"), "n", Timestamp(0)).unwrap();
        let valid: BTreeSet<_> = [pod("a").attachment()].into();
        assert_eq!(s.stale_attachments(&valid), vec![pod("b").attachment()]);
    }

    #[test]
    fn full_node_is_reported_as_such() {
        let cfg = PoolConfig {
            max_nics: 1,
            min_free: 0,
            max_free: 1,
            ..Default::default()
        };
        let mut s = node_with_ready_nics(1);
        s.config = cfg;
        s.assign(&pod("a"), "n", Timestamp(0)).unwrap();
        assert_eq!(
            s.assign(&pod("b"), "n", Timestamp(0)).unwrap_err(),
            AllocError::NodeFull { max_nics: 1 }
        );
    }
}
