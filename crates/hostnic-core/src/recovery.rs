//! Recovery: what the node rebuilds from its witnesses when its checkpoint cannot
//! be trusted, and how CNI requests find the pods it rebuilt.
//!
//! The checkpoint is the node's memory, not the truth. It may be missing (the state
//! directory was deleted), torn, corrupt, written on another instance, or older
//! than the host (rolled back, or the agent died before an ADD's record landed).
//! Three witnesses still say which pods are alive and which addresses they hold:
//! - the **host**: each pod veth with its `/32` route names the pod's address, and
//!   its `from <address>` rule the table of the pod's NIC;
//! - the **pod source**: the pods of this node with their addresses (`status.podIP`);
//! - the **cloud**: the NICs attached to the instance, each with its one address.
//!
//! Every reconcile applies these rules, not only a start after damage: a checkpoint
//! older than the host cannot be told from a healthy one, so the rules must hold for
//! both.
//! 1. **The host shows a pod alive**: a veth routing the address of one of the node's
//!    NICs. If no attachment holds the address, the pod is *adopted* under
//!    [`AttachmentId::recovered`] with the host's plumbing, and its NIC takes the table
//!    the pod's rule names. An attachment holding the address for another veth (a
//!    checkpoint older than the host) is dropped: the host says who uses it.
//! 2. **The pod source lists a pod with an address** of one of the node's NICs that no
//!    attachment holds: the address is *held* the same way, without plumbing. An address
//!    a pod of this node has according to any witness is never given to another pod.
//! 3. **Plumbing is removed only for sandboxes proven dead.** A recovered pod whose
//!    plumbing is gone (its network namespace took its veth with it) is released once
//!    the pod source does not list it with that address; without a pod source at once,
//!    never while the pod source does not answer. Live plumbing is never removed because
//!    the state does not know it. Plumbing with no address (an ADD cut short) and
//!    plumbing whose address is no NIC of this node in the cloud is removed as before.
//! 4. **A CNI request for a container id the node does not know** finds a recovered pod
//!    by the host veth the pod's name gives (and its MAC, when the host derives the MAC
//!    from the container id, as the Linux host does): DEL releases it, ADD and CHECK
//!    claim it under their own key. GC never releases a recovered pod (its container id
//!    cannot be in the runtime's list).
//!
//! What the startup reconcile found is summed up as a [`Recovery`] with its
//! [`RecoveryReason`], for the agent's ERROR log, metric and Kubernetes event.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

pub use crate::checkpoint::{CheckpointDamage, RecoveryReason};
use crate::pool::{CloudLink, NodeState, PodAttachment, Usage};
use crate::reconcile::{PodsSeen, ReconcileReport};
use crate::types::{AttachmentId, HostInventory, NicId, PlumbedPod, PodInfo, PodKey, Timestamp};

/// Which witness showed a recovered pod alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Witness {
    /// The host: the pod's veth routes its address.
    Host,
    /// The pod source: it lists the pod with its address.
    PodSource,
}

/// A pod the state did not know that a witness shows alive, adopted by a reconcile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveredPod {
    /// Its key until a CNI request claims it ([`AttachmentId::recovered`]).
    pub attachment: AttachmentId,
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// The NIC holding it.
    pub nic: NicId,
    /// `namespace/name`, when the pod source names the pod.
    pub pod: Option<String>,
    /// The pod's host veth, when the host showed it plumbed.
    pub veth: Option<String>,
    /// Who showed it alive.
    pub witness: Witness,
}

/// What the node rebuilt at start-up because its checkpoint could not be trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    /// Why the checkpoint was not trusted.
    pub reason: RecoveryReason,
    /// What the store found wrong and where it kept the damaged files, if it found damage.
    pub damage: Option<String>,
    /// Pods adopted from the witnesses.
    pub pods: Vec<RecoveredPod>,
    /// NICs of this node the checkpoint did not know, adopted from the cloud.
    pub adopted_nics: usize,
    /// Attachments of the checkpoint whose address the host shows on another pod.
    pub superseded: Vec<AttachmentId>,
}

impl Recovery {
    /// What the startup reconcile found, judged against how the checkpoint loaded:
    /// damage is always reported; no checkpoint is reported when the witnesses show
    /// anything of this node (a fresh node shows nothing); a checkpoint that loaded
    /// cleanly when the host or the pod source shows pods it does not know.
    pub fn judge(loaded: &LoadState, report: &ReconcileReport) -> Option<Recovery> {
        let (reason, damage) = match loaded {
            LoadState::Damaged(d) => (d.reason, Some(d.detail.clone())),
            LoadState::Empty if !report.adopted.is_empty() || !report.recovered.is_empty() => {
                (RecoveryReason::Missing, None)
            }
            LoadState::Clean if !report.recovered.is_empty() || !report.superseded.is_empty() => {
                (RecoveryReason::Stale, None)
            }
            _ => return None,
        };
        Some(Recovery {
            reason,
            damage,
            pods: report.recovered.clone(),
            adopted_nics: report.adopted.len(),
            superseded: report.superseded.clone(),
        })
    }
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "checkpoint {}", self.reason.describe())?;
        if let Some(damage) = &self.damage {
            write!(f, " ({damage})")?;
        }
        let from_host = self
            .pods
            .iter()
            .filter(|p| p.witness == Witness::Host)
            .count();
        write!(
            f,
            "; rebuilt from the host, the pod source and the cloud: {} live pods adopted \
             ({from_host} plumbed on the host, {} listed by the pod source), {} NICs adopted, \
             {} stale attachments dropped; live pods keep their plumbing and addresses, \
             and no address a pod holds is given to another",
            self.pods.len(),
            self.pods.len() - from_host,
            self.adopted_nics,
            self.superseded.len(),
        )?;
        if !self.pods.is_empty() {
            let pods: Vec<String> = self
                .pods
                .iter()
                .map(|p| match &p.pod {
                    Some(name) => format!("{name}={}", p.ip),
                    None => format!("{}={}", p.veth.as_deref().unwrap_or("?"), p.ip),
                })
                .collect();
            write!(f, " [{}]", pods.join(", "))?;
        }
        Ok(())
    }
}

/// How the engine's checkpoint loaded, for [`Recovery::judge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadState {
    /// A checkpoint was read and restored without complaint.
    Clean,
    /// There was no checkpoint.
    Empty,
    /// The store found damage, or the checkpoint could not be restored.
    Damaged(CheckpointDamage),
}

impl NodeState {
    /// Rules 1 and 2 of the module documentation, run by a reconcile once the state
    /// follows the cloud (so the node's NICs are all in the table).
    pub(crate) fn adopt_witnessed(
        &mut self,
        host: &HostInventory,
        pods: PodsSeen<'_>,
        now: Timestamp,
        report: &mut ReconcileReport,
    ) {
        // The node's NICs by address (a NIC being deleted holds nothing any more).
        let nic_by_ip: BTreeMap<Ipv4Addr, NicId> = self
            .nics
            .values()
            .filter(|n| n.link != CloudLink::Deleting)
            .map(|n| (n.ip, n.id.clone()))
            .collect();
        let listed = pods.listed();
        for plumbed in &host.pods {
            if plumbed.ip.is_unspecified() {
                continue;
            }
            let Some(nic) = nic_by_ip.get(&plumbed.ip) else {
                continue;
            };
            let holder = self
                .attachments
                .iter()
                .find(|(_, a)| a.ip == plumbed.ip)
                .map(|(id, a)| (id.clone(), self.holds(a, plumbed)));
            match holder {
                Some((id, true)) => {
                    // Held as the host shows it. A hold made from the pod source learns
                    // the plumbing (its MAC tells sandboxes apart).
                    if id.is_recovered()
                        && let Some(att) = self.attachments.get_mut(&id)
                        && att.plumbed.is_none()
                    {
                        att.plumbed = Some(plumbed.clone());
                    }
                    continue;
                }
                Some((id, _)) => {
                    // The checkpoint is older than the host: the address went to another pod.
                    self.attachments.remove(&id);
                    report.superseded.push(id);
                }
                None => {}
            }
            let named = listed.and_then(|pods| self.pod_of_veth(pods, &plumbed.host_veth));
            let recovered =
                self.adopt_recovered(nic, plumbed.ip, named, Some(plumbed.clone()), now);
            report.recovered.push(recovered);
        }
        if let Some(pods) = listed {
            // A DEL's address stays remembered only while the pod source still
            // lists that pod with it.
            self.released_by_del.retain(|ip, (namespace, name)| {
                pods.iter()
                    .any(|p| p.ip == Some(*ip) && &p.namespace == namespace && &p.name == name)
            });
        }
        for pod in listed.unwrap_or_default() {
            let Some(ip) = pod.ip.filter(|_| !pod.pending) else {
                continue;
            };
            let Some(nic) = nic_by_ip.get(&ip) else {
                continue;
            };
            if self.attachments.values().any(|a| a.ip == ip) {
                continue;
            }
            if self
                .released_by_del
                .get(&ip)
                .is_some_and(|(namespace, name)| namespace == &pod.namespace && name == &pod.name)
            {
                // The runtime deleted this sandbox here; the listing has not caught up.
                continue;
            }
            let recovered = self.adopt_recovered(nic, ip, Some(pod), None, now);
            report.recovered.push(recovered);
        }
    }

    /// True when `plumbed`, as the host shows it, is `att`'s: the same veth and, when
    /// both are known, the same host MAC (a newer sandbox of the same pod has the
    /// same veth name and another MAC).
    pub(crate) fn holds(&self, att: &PodAttachment, plumbed: &PlumbedPod) -> bool {
        let expected = self.expected_plumbed(att);
        expected.host_veth == plumbed.host_veth
            && match (expected.host_mac, plumbed.host_mac) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// The pod of the pod source whose host veth is `veth`.
    fn pod_of_veth<'p>(&self, pods: &'p [PodInfo], veth: &str) -> Option<&'p PodInfo> {
        pods.iter().find(|p| {
            !p.namespace.is_empty()
                && !p.name.is_empty()
                && named_key(&p.namespace, &p.name).host_veth_name(&self.config.veth_prefix) == veth
        })
    }

    /// Gives `nic` (whose address is `ip`) to a recovered pod.
    fn adopt_recovered(
        &mut self,
        nic: &NicId,
        ip: Ipv4Addr,
        pod: Option<&PodInfo>,
        plumbed: Option<PlumbedPod>,
        now: Timestamp,
    ) -> RecoveredPod {
        let id = AttachmentId::recovered(ip);
        if let Some(table) = plumbed.as_ref().map(|p| p.table) {
            self.move_table(nic, table);
        }
        // Whatever the NIC was used for, a live pod has its address.
        if let Some(Usage::Assigned { to }) = self.nics.get(nic).map(|e| e.usage.clone()) {
            self.attachments.remove(&to);
        }
        let table = match self.nics.get_mut(nic) {
            Some(entry) => {
                entry.usage = Usage::Assigned { to: id.clone() };
                entry.table
            }
            None => 0,
        };
        let key = PodKey {
            namespace: pod.map(|p| p.namespace.clone()).unwrap_or_default(),
            name: pod.map(|p| p.name.clone()).unwrap_or_default(),
            container_id: id.container_id.clone(),
            ifname: id.ifname.clone(),
        };
        let recovered = RecoveredPod {
            attachment: id.clone(),
            ip,
            nic: nic.clone(),
            pod: pod.map(|p| format!("{}/{}", p.namespace, p.name)),
            veth: plumbed.as_ref().map(|p| p.host_veth.clone()),
            witness: if plumbed.is_some() {
                Witness::Host
            } else {
                Witness::PodSource
            },
        };
        self.attachments.insert(
            id,
            PodAttachment {
                pod: key,
                netns: String::new(),
                nic: nic.clone(),
                ip,
                table,
                assigned_at: now,
                plumbed,
            },
        );
        recovered
    }

    /// Gives `nic` the route table `table` that the host's plumbing of its pod uses: a
    /// NIC adopted from the cloud got the lowest free table, which may be another
    /// one's on the host. A NIC holding `table` without a pod swaps with it; one
    /// holding a pod keeps it (the host cannot have both), and so does `nic`.
    fn move_table(&mut self, nic: &NicId, table: u32) {
        let Some(current) = self.nics.get(nic).map(|e| e.table) else {
            return;
        };
        if table == 0 || table == current {
            return;
        }
        let other = self
            .nics
            .values()
            .find(|n| n.table == table && &n.id != nic)
            .map(|n| (n.id.clone(), matches!(n.usage, Usage::Assigned { .. })));
        match other {
            Some((_, true)) => return,
            Some((other, false)) => {
                if let Some(e) = self.nics.get_mut(&other) {
                    e.table = current;
                    e.host_ready = false;
                }
            }
            None => {}
        }
        if let Some(e) = self.nics.get_mut(nic) {
            e.table = table;
            e.host_ready = false;
        }
    }

    /// Rule 3: whether recovered attachment `att`'s sandbox is proven dead, given
    /// whether the host still routes its address.
    pub(crate) fn recovered_is_dead(
        att: &PodAttachment,
        on_host: bool,
        pods: PodsSeen<'_>,
    ) -> bool {
        if on_host {
            return false;
        }
        match pods {
            PodsSeen::NoSource => true,
            PodsSeen::Unavailable => false,
            PodsSeen::Listed(pods) => !pods.iter().any(|p| {
                p.ip == Some(att.ip)
                    && (att.pod.name.is_empty()
                        || (p.namespace == att.pod.namespace && p.name == att.pod.name))
            }),
        }
    }

    /// True when some attachment is a recovered pod (cheap: one ordered lookup).
    pub fn has_recovered(&self) -> bool {
        self.attachments
            .first_from(&AttachmentId::recovered_start())
            .is_some_and(AttachmentId::is_recovered)
    }

    /// Rule 4: the recovered attachments that are `pod`'s. A recovered pod the host
    /// showed plumbed is `pod`'s when its veth is the one `pod`'s name gives (or, for a
    /// second live sandbox of the pod, its container id: [`PodKey::sandbox_veth_name`])
    /// and, when both are known, its host MAC is `planned_mac` (the MAC the host would
    /// give `pod`'s sandbox); one held for the pod source, when it has `pod`'s name.
    pub fn recovered_for(&self, pod: &PodKey, planned_mac: Option<[u8; 6]>) -> Vec<AttachmentId> {
        if !self.has_recovered() {
            return Vec::new();
        }
        let veth = pod.host_veth_name(&self.config.veth_prefix);
        let second = pod.sandbox_veth_name(&self.config.veth_prefix);
        self.attachments
            .iter()
            .filter(|(id, _)| id.is_recovered())
            .filter(|(_, a)| match &a.plumbed {
                Some(p) => {
                    (p.host_veth == veth || p.host_veth == second)
                        && match (p.host_mac, planned_mac) {
                            (Some(have), Some(want)) => have == want,
                            _ => true,
                        }
                }
                None => {
                    !a.pod.name.is_empty()
                        && a.pod.namespace == pod.namespace
                        && a.pod.name == pod.name
                }
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Rule 4: puts recovered attachment `recovered` under `pod`'s key, with the
    /// request's `netns`. `replumb` forgets the recorded plumbing so that the caller
    /// plumbs the sandbox again (an ADD: the host's plumbing may be half made).
    /// Returns false when `recovered` is unknown or `pod` holds another attachment.
    pub fn claim_recovered(
        &mut self,
        recovered: &AttachmentId,
        pod: &PodKey,
        netns: &str,
        replumb: bool,
    ) -> bool {
        let id = pod.attachment();
        if self.attachments.contains_key(&id) {
            return false;
        }
        let Some(mut att) = self.attachments.remove(recovered) else {
            return false;
        };
        att.pod = pod.clone();
        att.netns = netns.to_string();
        if replumb {
            att.plumbed = None;
        }
        if let Some(entry) = self.nics.get_mut(&att.nic) {
            entry.usage = Usage::Assigned { to: id.clone() };
        }
        self.attachments.insert(id, att);
        true
    }
}

/// A key with only the pod's name, for the veth name it gives.
fn named_key(namespace: &str, name: &str) -> PodKey {
    PodKey {
        namespace: namespace.to_string(),
        name: name.to_string(),
        container_id: String::new(),
        ifname: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PoolConfig;
    use crate::reconcile::{Observed, ReconcileAction};
    use crate::types::{CloudNic, CloudNicStatus, InstanceId, VxnetId};

    fn cloud() -> Vec<CloudNic> {
        (1..=3)
            .map(|i| CloudNic {
                id: NicId::from_mac([0x52, 0x54, 0, 0, 0, i]),
                name: "hostnic_i-1".into(),
                vxnet: VxnetId::new("vxnet-1"),
                ip: Ipv4Addr::new(172, 16, 1, 10 + i),
                instance: Some(InstanceId::new("i-1")),
                status: CloudNicStatus::InUse,
                primary: false,
            })
            .collect()
    }

    fn web() -> PodKey {
        PodKey {
            namespace: "default".into(),
            name: "web".into(),
            container_id: "c-web".into(),
            ifname: "eth0".into(),
        }
    }

    /// The host as a node left it: `web` plumbed on the second NIC, with table 1007.
    fn host_with_web() -> HostInventory {
        let cloud = cloud();
        HostInventory {
            nic_links: cloud.iter().map(|n| n.id.clone()).collect(),
            tables: vec![1007],
            pods: vec![PlumbedPod {
                host_veth: web().host_veth_name("nic"),
                host_mac: Some([2, 0, 0, 0, 0, 1]),
                sandbox_mac: None,
                ip: cloud[1].ip,
                table: 1007,
            }],
        }
    }

    #[test]
    fn a_lost_checkpoint_adopts_the_live_pod_with_its_table_and_unplumbs_nothing() {
        let mut s = NodeState::new(PoolConfig::default(), InstanceId::new("i-1"), vec![]);
        let (cloud, host) = (cloud(), host_with_web());
        let r = s.reconcile(
            Observed {
                cloud: &cloud,
                host: &host,
                pods: PodsSeen::NoSource,
                jobs: &Default::default(),
            },
            true,
            Timestamp(5),
        );
        assert!(r.actions.is_empty(), "{:?}", r.actions);
        assert_eq!(r.recovered.len(), 1);
        let id = AttachmentId::recovered(cloud[1].ip);
        let att = s.attachment(&id).expect("adopted");
        assert_eq!(att.nic, cloud[1].id);
        assert_eq!(att.plumbed.as_ref(), Some(&host.pods[0]));
        assert_eq!(s.nics()[&cloud[1].id].table, 1007, "the host's table");
        s.check_invariants().unwrap();
        // The address is not handed out: only the two other NICs can be assigned.
        for n in s.nics.values_mut() {
            n.host_ready = true;
        }
        let mut got = Vec::new();
        for i in 0..3 {
            let mut p = web();
            p.name = format!("other-{i}");
            p.container_id = format!("c{i}");
            if let Ok(a) = s.assign(&p, "/n", Timestamp(6)) {
                got.push(a.attachment.ip);
            }
        }
        assert_eq!(got.len(), 2);
        assert!(!got.contains(&cloud[1].ip));
    }

    #[test]
    fn a_stale_attachment_of_the_address_gives_way_to_the_pod_the_host_shows() {
        let mut s = NodeState::new(PoolConfig::default(), InstanceId::new("i-1"), vec![]);
        let (cloud, host) = (cloud(), host_with_web());
        let observed = Observed {
            cloud: &cloud,
            host: &HostInventory::default(),
            pods: PodsSeen::NoSource,
            jobs: &Default::default(),
        };
        s.reconcile(observed, true, Timestamp(0));
        // The checkpoint says an old pod holds web's address.
        let old = PodKey {
            name: "old".into(),
            container_id: "c-old".into(),
            ..web()
        };
        s.nics.get_mut(&cloud[1].id).unwrap().host_ready = true;
        for n in [0, 2] {
            s.nics.get_mut(&cloud[n].id).unwrap().usage = Usage::Retiring;
        }
        assert_eq!(
            s.assign(&old, "/old", Timestamp(1)).unwrap().attachment.ip,
            cloud[1].ip
        );
        let r = s.reconcile(
            Observed {
                cloud: &cloud,
                host: &host,
                pods: PodsSeen::NoSource,
                jobs: &Default::default(),
            },
            false,
            Timestamp(2),
        );
        assert_eq!(r.superseded, vec![old.attachment()]);
        assert!(
            s.attachment(&AttachmentId::recovered(cloud[1].ip))
                .is_some()
        );
        assert!(
            !r.actions
                .iter()
                .any(|a| matches!(a, ReconcileAction::Unplumb { .. })),
            "{:?}",
            r.actions
        );
        s.check_invariants().unwrap();
    }

    #[test]
    fn the_pod_source_holds_an_address_until_it_lists_the_pod_elsewhere() {
        let mut s = NodeState::new(PoolConfig::default(), InstanceId::new("i-1"), vec![]);
        let cloud = cloud();
        let mut listed = vec![PodInfo {
            namespace: "default".into(),
            name: "web".into(),
            pending: false,
            ip: Some(cloud[0].ip),
        }];
        let host = HostInventory::default();
        let r = s.reconcile(
            Observed {
                cloud: &cloud,
                host: &host,
                pods: PodsSeen::Listed(&listed),
                jobs: &Default::default(),
            },
            true,
            Timestamp(0),
        );
        assert_eq!(r.recovered.len(), 1);
        assert_eq!(r.recovered[0].witness, Witness::PodSource);
        // The pod source does not answer: kept.
        let r = s.reconcile(
            Observed {
                cloud: &cloud,
                host: &host,
                pods: PodsSeen::Unavailable,
                jobs: &Default::default(),
            },
            false,
            Timestamp(1),
        );
        assert!(r.actions.is_empty(), "{:?}", r.actions);
        // The pod moved to another address: proven dead, released (nothing to unplumb).
        listed[0].ip = Some(Ipv4Addr::new(172, 16, 9, 9));
        let r = s.reconcile(
            Observed {
                cloud: &cloud,
                host: &host,
                pods: PodsSeen::Listed(&listed),
                jobs: &Default::default(),
            },
            false,
            Timestamp(2),
        );
        assert!(
            matches!(&r.actions[..], [ReconcileAction::Release { attachment, .. }] if attachment.is_recovered()),
            "{:?}",
            r.actions
        );
    }

    /// Found by the CRI suite: kubelet's DEL comes before the API server forgets
    /// the pod's address; a reconcile in between must not hold it again.
    #[test]
    fn an_address_released_by_del_is_not_held_for_the_pods_stale_listing() {
        let mut s = NodeState::new(PoolConfig::default(), InstanceId::new("i-1"), vec![]);
        let cloud = cloud();
        let host = HostInventory::default();
        let observe = |s: &mut NodeState, listed: &[PodInfo], at: u64| {
            s.reconcile(
                Observed {
                    cloud: &cloud,
                    host: &host,
                    pods: PodsSeen::Listed(listed),
                    jobs: &Default::default(),
                },
                false,
                Timestamp(at),
            )
        };
        observe(&mut s, &[], 0);
        for nic in &cloud {
            s.prepare_done(&nic.id, Ok(()), Timestamp(0));
        }
        let pod = PodKey {
            namespace: "default".into(),
            name: "web".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
        };
        let ip = s
            .assign(&pod, "/run/netns/x", Timestamp(1))
            .unwrap()
            .attachment
            .ip;
        s.release(&pod.attachment(), Timestamp(2));
        let mut listed = vec![PodInfo {
            namespace: "default".into(),
            name: "web".into(),
            pending: false,
            ip: Some(ip),
        }];
        let r = observe(&mut s, &listed, 3);
        assert!(r.recovered.is_empty(), "{:?}", r.recovered);
        assert!(s.attachments().values().all(|a| a.ip != ip));
        // Once the listing moves on, the memory goes; a later listing of the address
        // (a pod the node does not know of) is held again.
        listed.clear();
        observe(&mut s, &listed, 4);
        listed.push(PodInfo {
            namespace: "default".into(),
            name: "other".into(),
            pending: false,
            ip: Some(ip),
        });
        let r = observe(&mut s, &listed, 5);
        assert_eq!(r.recovered.len(), 1, "{:?}", r.recovered);
    }

    #[test]
    fn a_cni_request_finds_the_recovered_pod_by_veth_and_mac_and_claims_it() {
        let mut s = NodeState::new(PoolConfig::default(), InstanceId::new("i-1"), vec![]);
        let (cloud, host) = (cloud(), host_with_web());
        s.reconcile(
            Observed {
                cloud: &cloud,
                host: &host,
                pods: PodsSeen::NoSource,
                jobs: &Default::default(),
            },
            true,
            Timestamp(0),
        );
        assert!(s.has_recovered());
        let mac = host.pods[0].host_mac;
        assert_eq!(
            s.recovered_for(&web(), Some([9; 6])),
            vec![],
            "another sandbox"
        );
        let found = s.recovered_for(&web(), mac);
        assert_eq!(found, vec![AttachmentId::recovered(cloud[1].ip)]);
        assert!(s.claim_recovered(&found[0], &web(), "/run/netns/web", false));
        let att = s
            .attachment(&web().attachment())
            .expect("under the runtime's key");
        assert_eq!(
            (att.ip, att.netns.as_str()),
            (cloud[1].ip, "/run/netns/web")
        );
        assert!(!s.has_recovered());
        s.check_invariants().unwrap();
    }

    #[test]
    fn a_second_live_sandbox_of_the_pod_is_found_by_its_container_id_veth() {
        let mut s = NodeState::new(PoolConfig::default(), InstanceId::new("i-1"), vec![]);
        let cloud = cloud();
        let mut host = host_with_web();
        // Sandbox c-web-2 of the same pod came up while c-web lived: its veth is
        // named from its container id.
        let second = PodKey {
            container_id: "c-web-2".into(),
            ..web()
        };
        host.pods.push(PlumbedPod {
            host_veth: second.sandbox_veth_name("nic"),
            host_mac: Some([2, 0, 0, 0, 0, 2]),
            sandbox_mac: None,
            ip: cloud[2].ip,
            table: 1008,
        });
        host.tables.push(1008);
        s.reconcile(
            Observed {
                cloud: &cloud,
                host: &host,
                pods: PodsSeen::NoSource,
                jobs: &Default::default(),
            },
            true,
            Timestamp(0),
        );
        assert_eq!(
            s.recovered_for(&second, Some([2, 0, 0, 0, 0, 2])),
            vec![AttachmentId::recovered(cloud[2].ip)],
            "the second sandbox's DEL releases its own pod"
        );
        assert_eq!(
            s.recovered_for(&web(), Some([2, 0, 0, 0, 0, 1])),
            vec![AttachmentId::recovered(cloud[1].ip)],
            "and the first sandbox's its own"
        );
    }
}
