//! The reconcile planner: compares what the node believes (its state, restored from
//! the checkpoint) with what the cloud, the host and the pod source say, fixes the
//! beliefs, and returns the host and pod work that remains.
//!
//! Rules, in the order they are applied:
//! 1. Only NICs named `hostnic_<this instance>` are considered; the primary NIC and
//!    NICs of anybody else are never touched, let alone deleted.
//! 2. A NIC of ours the state does not know is *adopted* (a crash between CreateNics
//!    and the checkpoint, or a lost checkpoint). The pool then attaches it or retires it.
//! 3. The cloud is the truth about attachment: the state follows it. NICs with an
//!    operation in flight are left alone except at startup, when nothing is in flight.
//! 4. A NIC that no longer exists in the cloud is forgotten; a pod on it is released.
//! 5. The witnesses say which pods are alive ([`crate::recovery`]): a pod the host
//!    shows plumbed with the address of one of the node's NICs, or that the pod source
//!    lists with one, keeps that address, adopted if the state does not know it. An
//!    address a live pod holds is never given to another pod.
//! 6. The host is the truth about plumbing: a NIC whose link or table is missing is
//!    prepared again (after a reboot); a pod whose plumbing vanished is plumbed again.
//!    Pod plumbing is removed only when it holds no address, when its address is no
//!    NIC of this node in the cloud, or when its sandbox is proven dead; never merely
//!    because the state does not know it.
//! 7. When the pod source is authoritative, attachments of pods that are gone are released.
//!
//! The cloud is asked only when needed ([`NodeState::needs_cloud`]): the periodic
//! reconcile is usually [`NodeState::reconcile_local`], rules 5 to 7 against the
//! checkpoint's own picture of the cloud, at no API cost. A NIC whose attach or
//! detach job's end was not seen is settled from the job's status when the cloud
//! knows it ([`CloudNics::job_statuses`](crate::ports::CloudNics::job_statuses)), and
//! at start from what the cloud shows, never by waiting out the job timeout.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::pool::{ActionKind, CloudLink, CloudReason, NodeState, Usage};
use crate::recovery::{RecoveredPod, Recovery};
use crate::types::{
    AttachmentId, CloudNic, CloudNicStatus, HostInventory, JobId, JobStatus, NicId, PlumbedPod,
    PodInfo, Timestamp, managed_nic_name,
};

/// The status of jobs, as [`CloudNics::job_statuses`](crate::ports::CloudNics::job_statuses) answers.
pub type JobStatuses = BTreeMap<JobId, JobStatus>;

/// What the world looks like, as gathered by the caller.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The NICs named `hostnic_<instance>`, attached or not (other NICs are ignored).
    pub cloud: &'a [CloudNic],
    /// The host's hostnic plumbing.
    pub host: &'a HostInventory,
    /// What the pod source says.
    pub pods: PodsSeen<'a>,
    /// Where the jobs of NICs whose job's end was unseen are (empty: not asked).
    pub jobs: &'a JobStatuses,
}

/// What the pod source said for a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodsSeen<'a> {
    /// There is no pod source (podman, `--pods none`): nothing says which pods exist.
    NoSource,
    /// The pod source did not answer: which pods exist is unknown.
    Unavailable,
    /// The pods that should exist on the node (the source is authoritative).
    Listed(&'a [PodInfo]),
}

impl<'a> PodsSeen<'a> {
    /// `Listed` for `Some`, `NoSource` for `None` (the engine's older API).
    pub fn from_option(pods: Option<&'a [PodInfo]>) -> Self {
        pods.map_or(PodsSeen::NoSource, PodsSeen::Listed)
    }

    /// The pods, when the source listed them.
    pub fn listed(self) -> Option<&'a [PodInfo]> {
        match self {
            PodsSeen::Listed(pods) => Some(pods),
            _ => None,
        }
    }
}

/// Host or pod work the reconcile leaves to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReconcileAction {
    /// Remove pod plumbing that no attachment accounts for.
    Unplumb {
        /// What the host has.
        plumbed: PlumbedPod,
    },
    /// Plumb an attachment whose plumbing is missing on the host.
    Replumb {
        /// The attachment.
        attachment: AttachmentId,
    },
    /// Release an attachment (like a DEL): its pod is gone, or its NIC is.
    Release {
        /// The attachment.
        attachment: AttachmentId,
        /// Why, for logs and events.
        reason: String,
    },
}

/// What a reconcile changed in the state, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// NICs of ours the state did not know.
    pub adopted: Vec<NicId>,
    /// NICs the state knew that no longer exist.
    pub forgotten: Vec<NicId>,
    /// NICs whose attachment state was corrected from the cloud.
    pub corrected: Vec<NicId>,
    /// NICs the host must prepare again (link or table missing).
    pub unprepared: Vec<NicId>,
    /// Host and pod work to do.
    pub actions: Vec<ReconcileAction>,
    /// Live pods the state did not know, adopted from the host or the pod source.
    #[serde(default)]
    pub recovered: Vec<RecoveredPod>,
    /// Attachments dropped because the host shows their address on another pod.
    #[serde(default)]
    pub superseded: Vec<AttachmentId>,
    /// Pod plumbing left alone although no NIC of the state holds its address: the
    /// address is a NIC of this node's in the cloud that is not usable here (attached
    /// elsewhere, being deleted).
    #[serde(default)]
    pub left_alone: Vec<PlumbedPod>,
    /// On the startup reconcile, when the checkpoint could not be trusted: what was
    /// rebuilt from the witnesses, and why (set by the engine).
    #[serde(default)]
    pub recovery: Option<Recovery>,
    /// Why the cloud was asked (`None`: the reconcile was local, no API call).
    #[serde(default)]
    pub cloud: Option<CloudReason>,
    /// The cloud was needed but did not answer (or was held back by its backoff):
    /// the reconcile went on locally and the cloud is asked again later.
    #[serde(default)]
    pub cloud_error: Option<String>,
}

impl ReconcileReport {
    /// True when nothing was found out of place.
    pub fn is_clean(&self) -> bool {
        self.adopted.is_empty()
            && self.forgotten.is_empty()
            && self.corrected.is_empty()
            && self.unprepared.is_empty()
            && self.actions.is_empty()
            && self.recovered.is_empty()
            && self.superseded.is_empty()
            && self.left_alone.is_empty()
            && self.recovery.is_none()
    }
}

impl NodeState {
    /// Reconciles the state with `observed` at `now`. With `startup`, operations the state
    /// believes in flight are settled too (after a restart nothing is in flight).
    pub fn reconcile(
        &mut self,
        observed: Observed<'_>,
        startup: bool,
        now: Timestamp,
    ) -> ReconcileReport {
        let report = self.reconcile_observed(observed, startup, now, true);
        self.cloud_synced(now);
        if !report.corrected.is_empty() || !report.forgotten.is_empty() {
            // Operations refused because the node's picture was wrong may work now.
            for kind in [ActionKind::Attach, ActionKind::Detach, ActionKind::Delete] {
                self.backoff.remove(&kind);
            }
        }
        report
    }

    /// Reconciles the state with the host and the pods at `now`, taking the state's
    /// own picture of its NICs for the cloud's: rules 5 to 7 at no API cost. For a
    /// periodic reconcile when [`NodeState::needs_cloud`] says nothing disagrees.
    pub fn reconcile_local(
        &mut self,
        host: &HostInventory,
        pods: PodsSeen<'_>,
        now: Timestamp,
    ) -> ReconcileReport {
        let jobs = JobStatuses::new();
        let observed = Observed {
            cloud: &[],
            host,
            pods,
            jobs: &jobs,
        };
        self.reconcile_observed(observed, false, now, false)
    }

    fn reconcile_observed(
        &mut self,
        observed: Observed<'_>,
        startup: bool,
        now: Timestamp,
        described: bool,
    ) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        if startup {
            self.creating = 0;
        }
        if described {
            self.follow_cloud(&observed, startup, now, &mut report);
        }
        self.follow_host_and_pods(&observed, now, described, report)
    }

    /// Rules 1 to 4: adopt, correct and forget NICs as the cloud describes them.
    fn follow_cloud(
        &mut self,
        observed: &Observed<'_>,
        startup: bool,
        now: Timestamp,
        report: &mut ReconcileReport,
    ) {
        let ours = managed_nic_name(&self.instance);

        // Cloud: adopt, correct, forget.
        let mut seen = BTreeSet::new();
        for nic in observed
            .cloud
            .iter()
            .filter(|n| n.name == ours && !n.primary)
        {
            let attached_here = nic.status == CloudNicStatus::InUse
                && nic.instance.as_ref() == Some(&self.instance);
            let attached_elsewhere = nic.status == CloudNicStatus::InUse && !attached_here;
            if attached_elsewhere {
                // Named after us but attached to another instance: not ours to use any more.
                continue;
            }
            seen.insert(nic.id.clone());
            let link = if attached_here {
                CloudLink::Attached
            } else {
                CloudLink::Unattached
            };
            match self.nics.get_mut(&nic.id) {
                None => {
                    self.insert_cloud_nic(nic, link, now);
                    report.adopted.push(nic.id.clone());
                }
                Some(entry) => {
                    let in_flight = matches!(
                        entry.link,
                        CloudLink::Attaching | CloudLink::Detaching | CloudLink::Deleting
                    );
                    if in_flight && !startup {
                        continue;
                    }
                    let job = entry
                        .job
                        .as_ref()
                        .and_then(|j| observed.jobs.get(j))
                        .copied();
                    let moving = match entry.link {
                        CloudLink::Attaching => Some(true),
                        CloudLink::Detaching => Some(false),
                        CloudLink::Uncertain { attaching, .. } => Some(attaching),
                        _ => None,
                    };
                    // Cloud jobs outlive the agent: after a restart, a job the agent had
                    // started may still be running. Only a job the cloud says is running
                    // keeps its NIC uncertain (the pool polls the job); otherwise the
                    // cloud shows where the NIC is, and that settles it at once.
                    // A recorded job whose status could not be read (the DescribeJobs
                    // failed) may be running too, and so may the job of a call that was
                    // sent but whose answer was lost (uncertain, no job id): only the
                    // job's status, its effect or the job timeout settles those.
                    let job_unread = entry.job.is_some() && job.is_none();
                    let unanswered = matches!(
                        entry.link,
                        CloudLink::Uncertain { since, .. }
                            if entry.job.is_none() && now.since(since) < self.config.job_timeout * 2
                    );
                    if startup
                        && let Some(attaching) = moving
                        && attaching != attached_here
                        && (job == Some(JobStatus::Running) || job_unread || unanswered)
                    {
                        let since = match entry.link {
                            CloudLink::Uncertain { since, .. } => since,
                            _ => now,
                        };
                        entry.link = CloudLink::Uncertain { attaching, since };
                        entry.host_ready = false;
                        continue;
                    }
                    if !startup && let CloudLink::Uncertain { attaching, since } = entry.link {
                        // The cloud showing the job's effect settles it at once, and so
                        // does the job's end; the absence of the effect alone only after
                        // the job could no longer be running.
                        let effect_seen = attaching == attached_here;
                        let finished = matches!(job, Some(JobStatus::Done(_) | JobStatus::Unknown));
                        let expired = now.since(since) >= self.config.job_timeout * 2;
                        if !effect_seen && !finished && !expired {
                            continue;
                        }
                    }
                    entry.job = None;
                    let believed_attached = matches!(
                        entry.link,
                        CloudLink::Attached
                            | CloudLink::Detaching
                            | CloudLink::Uncertain {
                                attaching: false,
                                ..
                            }
                    );
                    if entry.link != link {
                        if believed_attached != attached_here || in_flight {
                            report.corrected.push(nic.id.clone());
                        }
                        entry.link = link;
                        if !attached_here {
                            entry.host_ready = false;
                        }
                    }
                }
            }
        }
        let vanished: Vec<NicId> = self
            .nics
            .values()
            .filter(|n| !seen.contains(&n.id))
            .filter(|n| {
                startup
                    || !matches!(
                        n.link,
                        CloudLink::Attaching | CloudLink::Detaching | CloudLink::Deleting
                    )
            })
            .map(|n| n.id.clone())
            .collect();
        for id in vanished {
            if let Some(att) = self.forget_nic(&id) {
                // Keep the attachment long enough for the caller to unplumb it.
                report.actions.push(ReconcileAction::Unplumb {
                    plumbed: self.expected_plumbed(&att),
                });
            }
            report.forgotten.push(id);
        }
    }

    /// Rules 5 to 7 (and the host's side of 6): links, tables, witnesses, plumbing, pods.
    fn follow_host_and_pods(
        &mut self,
        observed: &Observed<'_>,
        now: Timestamp,
        described: bool,
        mut report: ReconcileReport,
    ) -> ReconcileReport {
        let ours = managed_nic_name(&self.instance);

        // Host: links and tables of prepared NICs.
        let links: BTreeSet<&NicId> = observed.host.nic_links.iter().collect();
        let tables: BTreeSet<u32> = observed.host.tables.iter().copied().collect();
        for entry in self.nics.values_mut() {
            if entry.link != CloudLink::Attached {
                continue;
            }
            let link_present = links.contains(&entry.id);
            if !link_present {
                entry.link_missing_since.get_or_insert(now);
            }
            if entry.host_ready && (!link_present || !tables.contains(&entry.table)) {
                entry.host_ready = false;
                report.unprepared.push(entry.id.clone());
            }
        }

        // Witnesses: live pods keep their addresses, whatever the state remembers.
        self.adopt_witnessed(observed.host, observed.pods, now, &mut report);
        // A forgotten NIC's address may be a new NIC's now, on a live pod with the same
        // veth name: the host's plumbing that an attachment holds is never removed.
        let held_on_host: BTreeSet<(&str, std::net::Ipv4Addr)> = observed
            .host
            .pods
            .iter()
            .filter(|p| {
                self.attachments
                    .values()
                    .any(|a| a.ip == p.ip && self.holds(a, p))
            })
            .map(|p| (p.host_veth.as_str(), p.ip))
            .collect();
        report.actions.retain(|a| match a {
            ReconcileAction::Unplumb { plumbed } => {
                !held_on_host.contains(&(plumbed.host_veth.as_str(), plumbed.ip))
            }
            _ => true,
        });

        // Host: pod plumbing against attachments. What no attachment holds now has no
        // address, or an address that is no NIC of this node.
        let by_ip: BTreeMap<_, _> = self.attachments.values().map(|a| (a.ip, a)).collect();
        let plumbed_ips: BTreeSet<_> = observed
            .host
            .pods
            .iter()
            .filter(|p| !p.ip.is_unspecified())
            .map(|p| p.ip)
            .collect();
        // The addresses of the node's NICs in the cloud (the state's own picture when
        // the cloud was not asked: then no plumbing holds another address, or the
        // cloud would have been asked).
        let cloud_ips: BTreeSet<_> = if described {
            observed
                .cloud
                .iter()
                .filter(|n| n.name == ours && !n.primary)
                .map(|n| n.ip)
                .collect()
        } else {
            self.nics.values().map(|n| n.ip).collect()
        };
        for p in &observed.host.pods {
            let held = by_ip.get(&p.ip).is_some_and(|a| self.holds(a, p));
            if held {
                continue;
            }
            if !p.ip.is_unspecified() && cloud_ips.contains(&p.ip) {
                report.left_alone.push(p.clone());
            } else {
                report
                    .actions
                    .push(ReconcileAction::Unplumb { plumbed: p.clone() });
            }
        }

        // Pods: release what is gone, replumb what lost its plumbing.
        let live: Option<BTreeSet<(&str, &str)>> = observed.pods.listed().map(|pods| {
            pods.iter()
                .map(|p| (p.namespace.as_str(), p.name.as_str()))
                .collect()
        });
        for (id, att) in &self.attachments {
            let known_pod = !att.pod.namespace.is_empty() && !att.pod.name.is_empty();
            let settled = now.since(att.assigned_at) >= self.config.pod_gone_grace;
            if let Some(live) = &live
                && known_pod
                && settled
                && !live.contains(&(att.pod.namespace.as_str(), att.pod.name.as_str()))
            {
                report.actions.push(ReconcileAction::Release {
                    attachment: id.clone(),
                    reason: format!(
                        "pod {} no longer exists on this node",
                        att.pod.display_name()
                    ),
                });
                continue;
            }
            if id.is_recovered() {
                // Its sandbox is unknown, so it cannot be plumbed again: released once
                // proven dead.
                let on_host = plumbed_ips.contains(&att.ip);
                if NodeState::recovered_is_dead(att, on_host, observed.pods) {
                    report.actions.push(ReconcileAction::Release {
                        attachment: id.clone(),
                        reason: format!(
                            "recovered pod {} ({}): its sandbox is gone and no pod of \
                             this node holds the address",
                            att.pod.display_name(),
                            att.ip
                        ),
                    });
                }
                continue;
            }
            if att.plumbed.is_some() && !plumbed_ips.contains(&att.ip) {
                report.actions.push(ReconcileAction::Replumb {
                    attachment: id.clone(),
                });
            }
        }
        report
    }

    /// Settles NICs whose last job's end was not seen, from a description of `asked`
    /// (`cloud` holds those that still exist) and the status of their `jobs`: a visible
    /// effect or the job's end settles a NIC at once, no effect only once the job cannot
    /// be running any more. NICs that no longer exist are left to the full reconcile,
    /// which also unplumbs their pods.
    pub fn settle_uncertain(
        &mut self,
        asked: &[NicId],
        cloud: &[CloudNic],
        jobs: &JobStatuses,
        now: Timestamp,
    ) {
        let limit = self.config.job_timeout * 2;
        for id in asked {
            let Some(nic) = cloud.iter().find(|n| &n.id == id) else {
                continue;
            };
            let attached_here = nic.status == CloudNicStatus::InUse
                && nic.instance.as_ref() == Some(&self.instance);
            let Some(entry) = self.nics.get_mut(id) else {
                continue;
            };
            let finished = entry
                .job
                .as_ref()
                .and_then(|j| jobs.get(j))
                .is_some_and(|s| matches!(s, JobStatus::Done(_) | JobStatus::Unknown));
            if let CloudLink::Uncertain { attaching, since } = entry.link
                && (attaching == attached_here || finished || now.since(since) >= limit)
            {
                entry.job = None;
                entry.link = if attached_here {
                    CloudLink::Attached
                } else {
                    CloudLink::Unattached
                };
                entry.host_ready = false;
            }
        }
    }

    /// NICs currently assigned, cooling, free or retiring, for status output.
    pub fn usage_counts(&self, now: Timestamp) -> UsageCounts {
        let mut c = UsageCounts::default();
        for n in self.nics.values() {
            match n.usage {
                Usage::Assigned { .. } => c.assigned += 1,
                Usage::Retiring => c.retiring += 1,
                Usage::Cooling { until } if until > now => c.cooling += 1,
                _ if n.assignable(now) => c.free += 1,
                _ => c.preparing += 1,
            }
        }
        c.creating = self.creating;
        c
    }
}

/// How the node's NICs are used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCounts {
    /// Ready for a pod.
    pub free: u32,
    /// Holding a pod's address.
    pub assigned: u32,
    /// In their IP cooldown.
    pub cooling: u32,
    /// Being created, attached or prepared.
    pub preparing: u32,
    /// Being detached and deleted.
    pub retiring: u32,
    /// Requested from the cloud, not yet returned.
    pub creating: u32,
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::config::PoolConfig;
    use crate::types::{InstanceId, PodKey, VxnetId};

    fn cloud_nic(i: u8, instance: Option<&str>, name: &str) -> CloudNic {
        CloudNic {
            id: NicId::from_mac([0x52, 0x54, 0, 0, 0, i]),
            name: name.into(),
            vxnet: VxnetId::new("vxnet-1"),
            ip: Ipv4Addr::new(172, 16, 1, i),
            instance: instance.map(InstanceId::new),
            status: if instance.is_some() {
                CloudNicStatus::InUse
            } else {
                CloudNicStatus::Available
            },
            primary: false,
        }
    }

    fn node() -> NodeState {
        NodeState::new(PoolConfig::default(), InstanceId::new("i-1"), vec![])
    }

    /// A node that adopted one attached, prepared NIC, and a pod to put on it.
    fn node_with_one_ready_nic() -> (NodeState, Vec<CloudNic>, HostInventory, PodKey) {
        let mut s = node();
        let cloud = vec![cloud_nic(1, Some("i-1"), "hostnic_i-1")];
        let host = HostInventory {
            nic_links: vec![cloud[0].id.clone()],
            tables: vec![1000],
            pods: vec![],
        };
        let observed = Observed {
            cloud: &cloud,
            host: &host,
            pods: PodsSeen::NoSource,
            jobs: &Default::default(),
        };
        s.reconcile(observed, true, Timestamp(0));
        s.nics.get_mut(&cloud[0].id).unwrap().host_ready = true;
        let pod = PodKey {
            namespace: "a".into(),
            name: "b".into(),
            container_id: "c".into(),
            ifname: "eth0".into(),
        };
        (s, cloud, host, pod)
    }

    #[test]
    fn adopts_our_nics_and_never_touches_others() {
        let mut s = node();
        let cloud = vec![
            cloud_nic(1, Some("i-1"), "hostnic_i-1"),
            cloud_nic(2, None, "hostnic_i-1"),
            cloud_nic(3, Some("i-1"), "user-nic"),
            cloud_nic(4, None, "hostnic_i-2"),
        ];
        let host = HostInventory::default();
        let r = s.reconcile(
            Observed {
                cloud: &cloud,
                host: &host,
                pods: PodsSeen::NoSource,
                jobs: &Default::default(),
            },
            true,
            Timestamp(0),
        );
        assert_eq!(r.adopted, vec![cloud[0].id.clone(), cloud[1].id.clone()]);
        assert_eq!(s.nics()[&cloud[0].id].link, CloudLink::Attached);
        assert_eq!(s.nics()[&cloud[1].id].link, CloudLink::Unattached);
        assert_eq!(s.nics().len(), 2);
    }

    #[test]
    fn vanished_nic_releases_its_pod_and_orphans_are_unplumbed() {
        let (mut s, cloud, _, pod) = node_with_one_ready_nic();
        s.assign(&pod, "/run/netns/c", Timestamp(1)).unwrap();

        let orphan = PlumbedPod {
            host_veth: "nicdeadbeef123".into(),
            host_mac: None,
            sandbox_mac: None,
            ip: Ipv4Addr::new(172, 16, 1, 99),
            table: 1001,
        };
        let host = HostInventory {
            nic_links: vec![],
            tables: vec![],
            pods: vec![orphan.clone()],
        };
        let r = s.reconcile(
            Observed {
                cloud: &[],
                host: &host,
                pods: PodsSeen::NoSource,
                jobs: &Default::default(),
            },
            false,
            Timestamp(2),
        );
        assert_eq!(r.forgotten, vec![cloud[0].id.clone()]);
        assert!(s.attachments().is_empty());
        assert!(
            r.actions
                .contains(&ReconcileAction::Unplumb { plumbed: orphan })
        );
        assert_eq!(r.actions.len(), 2, "{:?}", r.actions);
    }

    #[test]
    fn after_reboot_nics_are_prepared_again_and_pods_replumbed() {
        let (mut s, cloud, _, pod) = node_with_one_ready_nic();
        let a = s.assign(&pod, "/run/netns/c", Timestamp(1)).unwrap();
        s.confirm_plumbed(&pod.attachment(), s.expected_plumbed(&a.attachment));

        let rebooted = HostInventory {
            nic_links: vec![cloud[0].id.clone()],
            tables: vec![],
            pods: vec![],
        };
        let r = s.reconcile(
            Observed {
                cloud: &cloud,
                host: &rebooted,
                pods: PodsSeen::NoSource,
                jobs: &Default::default(),
            },
            true,
            Timestamp(2),
        );
        assert_eq!(r.unprepared, vec![cloud[0].id.clone()]);
        assert_eq!(
            r.actions,
            vec![ReconcileAction::Replumb {
                attachment: pod.attachment()
            }]
        );
    }

    #[test]
    fn pods_gone_from_the_source_are_released_once_past_the_grace() {
        let (mut s, cloud, host, pod) = node_with_one_ready_nic();
        s.assign(&pod, "/run/netns/c", Timestamp(1)).unwrap();
        let observed = Observed {
            cloud: &cloud,
            host: &host,
            pods: PodsSeen::Listed(&[]),
            jobs: &Default::default(),
        };
        // A fresh ADD may precede the pod watch: not released yet.
        let r = s.reconcile(observed, false, Timestamp(2));
        assert!(r.actions.is_empty(), "{:?}", r.actions);
        let later = Timestamp(1).plus(s.config().pod_gone_grace);
        let r = s.reconcile(observed, false, later);
        assert!(
            matches!(&r.actions[..], [ReconcileAction::Release { .. }]),
            "{:?}",
            r.actions
        );
    }
}
