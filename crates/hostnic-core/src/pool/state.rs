//! The NIC table and the pod attachments of one node.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::config::PoolConfig;
use crate::pool::backoff::Backoff;
use crate::pool::cloud::{CloudHold, Exhausted, Shortage};
use crate::pool::plan::ActionKind;
use crate::types::{
    AttachmentId, CloudNic, InstanceId, JobId, NicId, NicPlumbing, PlumbedPod, PodKey, PodPlumbing,
    Timestamp, Vxnet, VxnetId,
};

/// Where a NIC is in its cloud lifecycle, as far as this node knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloudLink {
    /// Exists in the cloud, not attached to any instance.
    Unattached,
    /// An attach job is running.
    Attaching,
    /// Attached to this instance; `host_ready` says whether the host prepared it.
    Attached,
    /// A detach job is running.
    Detaching,
    /// A delete call is running.
    Deleting,
    /// An attach (`attaching: true`) or detach job was started but its end was not seen
    /// (timeout, lost answer, crash): the reconcile settles it from what the cloud says.
    Uncertain {
        /// The job was an attach (else a detach).
        attaching: bool,
        /// Since when.
        since: Timestamp,
    },
}

/// What a NIC is used for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Usage {
    /// In the warm pool since `since`.
    Free {
        /// When it became free.
        since: Timestamp,
    },
    /// Released by a pod; reusable from `until` on (IP cooldown).
    Cooling {
        /// End of the cooldown.
        until: Timestamp,
    },
    /// Holds a pod's address.
    Assigned {
        /// The attachment that holds it.
        to: AttachmentId,
    },
    /// Surplus: being detached and deleted.
    Retiring,
}

/// One NIC of this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicEntry {
    /// The NIC id (its MAC).
    pub id: NicId,
    /// The NIC's only address.
    pub ip: Ipv4Addr,
    /// The NIC's vxnet.
    pub vxnet: VxnetId,
    /// The policy-routing table of this NIC on the host.
    pub table: u32,
    /// Cloud lifecycle.
    pub link: CloudLink,
    /// The host has prepared the NIC (link up, addresses stripped, table programmed).
    pub host_ready: bool,
    /// What the NIC is used for.
    pub usage: Usage,
    /// When this node created or adopted the NIC (minimum lifetime counts from here).
    pub created_at: Timestamp,
    /// Since when the cloud says attached but the host has no link for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_missing_since: Option<Timestamp>,
    /// The NIC must be detached and attached again (its link never appeared).
    #[serde(default)]
    pub reattach: bool,
    /// The attach or detach job moving the NIC, once the cloud named it: kept
    /// while the job's end is unseen, so a restarted agent asks the job's status
    /// instead of waiting out the job timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobId>,
}

impl NicEntry {
    /// True when the NIC can be given to a pod at `now`.
    pub fn assignable(&self, now: Timestamp) -> bool {
        self.link == CloudLink::Attached
            && self.host_ready
            && !self.reattach
            && match self.usage {
                Usage::Free { .. } => true,
                Usage::Cooling { until } => now >= until,
                _ => false,
            }
    }
}

/// A pod's hold on a NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodAttachment {
    /// The pod, as the runtime named it.
    pub pod: PodKey,
    /// `CNI_NETNS` of the ADD.
    pub netns: String,
    /// The NIC holding the pod's address.
    pub nic: NicId,
    /// The pod's address (the NIC's).
    pub ip: Ipv4Addr,
    /// The NIC's table.
    pub table: u32,
    /// When the NIC was assigned.
    pub assigned_at: Timestamp,
    /// What the host created; `None` while plumbing has not been confirmed.
    pub plumbed: Option<PlumbedPod>,
}

/// The NICs or the attachments of a node, sorted by key: a read-only map for
/// callers. The values are shared with the checkpoints taken of the state: a
/// checkpoint clones one `Arc` per entry instead of the entry (a full node's 62
/// NICs and pods hold ~500 strings), and the core changing an entry copies it only
/// while a checkpoint still holds it (`Arc::make_mut`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entries<K, V>(BTreeMap<K, Arc<V>>);

impl<K, V> Default for Entries<K, V> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

impl<K: Ord, V> std::ops::Index<&K> for Entries<K, V> {
    type Output = V;
    fn index(&self, key: &K) -> &V {
        &self.0[key]
    }
}

impl<K: Ord, V> Entries<K, V> {
    /// The entry of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.0.get(key).map(|v| &**v)
    }

    /// True when `key` has an entry.
    pub fn contains_key(&self, key: &K) -> bool {
        self.0.contains_key(key)
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, &**v))
    }

    /// Keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.0.keys()
    }

    /// Values in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.values().map(|v| &**v)
    }

    /// The first key at or after `from`.
    pub(crate) fn first_from(&self, from: &K) -> Option<&K> {
        self.0.range(from..).next().map(|(k, _)| k)
    }

    /// The shared values, for a checkpoint.
    pub(crate) fn shared_values(&self) -> impl Iterator<Item = &Arc<V>> {
        self.0.values()
    }
}

impl<'a, K: Ord, V> IntoIterator for &'a Entries<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::Map<
        std::collections::btree_map::Iter<'a, K, Arc<V>>,
        fn((&'a K, &'a Arc<V>)) -> (&'a K, &'a V),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, &**v))
    }
}

impl<K: Ord, V: Clone> Entries<K, V> {
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.0.get_mut(key).map(Arc::make_mut)
    }

    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.insert_shared(key, Arc::new(value))
    }

    pub(crate) fn insert_shared(&mut self, key: K, value: Arc<V>) -> Option<V> {
        self.0.insert(key, value).map(Arc::unwrap_or_clone)
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        self.0.remove(key).map(Arc::unwrap_or_clone)
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.0.values_mut().map(Arc::make_mut)
    }
}

/// Everything the core knows about this node: the NICs and who holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub(crate) config: PoolConfig,
    pub(crate) instance: InstanceId,
    /// Pod vxnets in order of preference.
    pub(crate) vxnets: Vec<Vxnet>,
    pub(crate) nics: Entries<NicId, NicEntry>,
    pub(crate) attachments: Entries<AttachmentId, PodAttachment>,
    /// NICs requested by CreateNics calls still running.
    pub(crate) creating: u32,
    /// Extra NICs wanted soon: pods pending on this node + ADDs waiting for a NIC.
    pub(crate) demand: u32,
    pub(crate) backoff: BTreeMap<ActionKind, Backoff>,
    /// Vxnets whose addresses ran out, and since when (retried with backoff).
    pub(crate) exhausted: BTreeMap<VxnetId, Exhausted>,
    /// Every cloud call held after the API refused the account.
    pub(crate) hold: Option<CloudHold>,
    /// Why the pool could not grow the last time it tried.
    pub(crate) shortage: Option<Shortage>,
    /// When the node's NICs were last described (in memory: a start describes them).
    pub(crate) cloud_synced_at: Option<Timestamp>,
    /// Resyncs so far (draws each resync's jitter).
    pub(crate) resyncs: u64,
    /// A NIC operation got no answer, or was refused as if the NICs were elsewhere,
    /// since the last description.
    pub(crate) doubt: bool,
    /// Addresses this node released by a DEL, with the pod (`namespace`, `name`)
    /// that had them, while the pod source may still list that pod with the
    /// address (its status lags behind the runtime): such a listing is stale, not
    /// a live pod to hold the address for (recovery's rule 2). In memory only.
    pub(crate) released_by_del: BTreeMap<std::net::Ipv4Addr, (String, String)>,
    /// Controller mode: another component (the controller) calls the cloud and
    /// supplies the node's NICs; the pool only asks and prepares. In memory: the
    /// agent sets it at every start.
    pub(crate) supplied_mode: bool,
    /// Controller mode: the NICs the last request asked for in total.
    pub(crate) asked: u32,
    pub(crate) seed: u64,
}

impl NodeState {
    /// An empty node.
    pub fn new(config: PoolConfig, instance: InstanceId, vxnets: Vec<Vxnet>) -> Self {
        let seed = instance
            .as_str()
            .bytes()
            .fold(0u64, |h, b| crate::backoff::splitmix64(h ^ u64::from(b)));
        Self {
            config,
            instance,
            vxnets,
            nics: Entries::default(),
            attachments: Entries::default(),
            creating: 0,
            demand: 0,
            backoff: BTreeMap::new(),
            exhausted: BTreeMap::new(),
            hold: None,
            shortage: None,
            cloud_synced_at: None,
            resyncs: 0,
            doubt: false,
            released_by_del: BTreeMap::new(),
            supplied_mode: false,
            asked: 0,
            seed,
        }
    }

    /// The settings.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// This node's instance.
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// The pod vxnets.
    pub fn vxnets(&self) -> &[Vxnet] {
        &self.vxnets
    }

    /// Replaces the pod vxnets (e.g. the node annotation changed). Existing NICs stay.
    pub fn set_vxnets(&mut self, vxnets: Vec<Vxnet>) {
        self.vxnets = vxnets;
    }

    /// All NICs, by id.
    pub fn nics(&self) -> &Entries<NicId, NicEntry> {
        &self.nics
    }

    /// All attachments, by id.
    pub fn attachments(&self) -> &Entries<AttachmentId, PodAttachment> {
        &self.attachments
    }

    /// NICs wanted soon: the pods pending on the node (`pending`: scheduled, no
    /// address yet) or the ADDs waiting for a NIC (`waiting`) when there are more
    /// of those (the pod source lags), each counted only while it holds no NIC
    /// here (a pod whose ADD succeeded stays pending in the source until its
    /// status catches up). Not their sum: a pending pod's ADD is the same demand.
    pub fn demand(
        &self,
        waiting: &std::collections::BTreeSet<AttachmentId>,
        pending: &std::collections::BTreeSet<(String, String)>,
    ) -> u32 {
        let waiting = waiting
            .iter()
            .filter(|id| self.attachment(id).is_none())
            .count();
        let held: std::collections::BTreeSet<(&str, &str)> = self
            .attachments
            .values()
            .map(|a| (a.pod.namespace.as_str(), a.pod.name.as_str()))
            .collect();
        let pending = pending
            .iter()
            .filter(|(ns, name)| !held.contains(&(ns.as_str(), name.as_str())))
            .count();
        waiting.max(pending) as u32
    }

    /// The attachment `id`, if any.
    pub fn attachment(&self, id: &AttachmentId) -> Option<&PodAttachment> {
        self.attachments.get(id)
    }

    /// Sets how many NICs beyond `min_free` are wanted soon (pending pods, waiting ADDs).
    pub fn set_demand(&mut self, demand: u32) {
        self.demand = demand;
    }

    /// NICs that could be assigned at `now`.
    pub fn assignable(&self, now: Timestamp) -> usize {
        self.nics.values().filter(|n| n.assignable(now)).count()
    }

    /// NICs that are or will be free without new CreateNics calls: free ones, whether
    /// ready or still on their way (unattached, attaching, attached but not prepared),
    /// and those being created. NICs in their IP cooldown are not counted: they cannot
    /// serve the next pod, and counting them stalled ADDs behind a cooldown under churn.
    pub(crate) fn supply(&self) -> u32 {
        let free = self
            .nics
            .values()
            .filter(|n| matches!(n.usage, Usage::Free { .. }))
            .count() as u32;
        free + self.creating
    }

    /// Pod NICs this node holds or is creating (counted against `max_nics`).
    pub(crate) fn total(&self) -> u32 {
        self.nics.len() as u32 + self.creating
    }

    /// The vxnet `id`, if known.
    pub(crate) fn vxnet(&self, id: &VxnetId) -> Option<&Vxnet> {
        self.vxnets.iter().find(|v| &v.id == id)
    }

    /// The host plumbing of NIC `entry`. The vxnet may be unknown for an adopted NIC of a
    /// vxnet no longer configured; then a /32 "network" with the `.1` gateway is assumed,
    /// which is how QingCloud numbers gateways.
    pub fn nic_plumbing(&self, entry: &NicEntry) -> NicPlumbing {
        let (cidr, gateway) = match self.vxnet(&entry.vxnet) {
            Some(v) => (v.cidr, v.gateway),
            None => {
                let net = Ipv4Net::new(entry.ip, 24)
                    .map(|n| n.trunc())
                    .unwrap_or_default();
                let gw = net.hosts().next().unwrap_or(entry.ip);
                (net, gw)
            }
        };
        NicPlumbing {
            nic: entry.id.clone(),
            ip: entry.ip,
            cidr,
            gateway,
            table: entry.table,
        }
    }

    /// The host plumbing of an attachment.
    pub fn pod_plumbing(&self, att: &PodAttachment) -> Option<PodPlumbing> {
        let entry = self.nics.get(&att.nic)?;
        Some(PodPlumbing {
            pod: att.pod.clone(),
            netns: att.netns.clone(),
            nic: self.nic_plumbing(entry),
        })
    }

    /// What the host has (or would have) for an attachment: the recorded plumbing, or the
    /// names derived from the pod when plumbing was never confirmed (crash mid-ADD).
    pub fn expected_plumbed(&self, att: &PodAttachment) -> PlumbedPod {
        att.plumbed.clone().unwrap_or_else(|| PlumbedPod {
            host_veth: att.pod.host_veth_name(&self.config.veth_prefix),
            host_mac: None,
            sandbox_mac: None,
            ip: att.ip,
            table: att.table,
        })
    }

    /// The lowest table number no NIC uses.
    pub(crate) fn free_table(&self) -> u32 {
        let used: std::collections::BTreeSet<u32> = self.nics.values().map(|n| n.table).collect();
        (self.config.table_base..)
            .find(|t| !used.contains(t))
            .unwrap_or(self.config.table_base)
    }

    /// Records a NIC the cloud reported, in `link` state, unless it is known already.
    pub(crate) fn insert_cloud_nic(&mut self, nic: &CloudNic, link: CloudLink, now: Timestamp) {
        if self.nics.contains_key(&nic.id) {
            return;
        }
        let table = self.free_table();
        self.nics.insert(
            nic.id.clone(),
            NicEntry {
                id: nic.id.clone(),
                ip: nic.ip,
                vxnet: nic.vxnet.clone(),
                table,
                link,
                host_ready: false,
                usage: Usage::Free { since: now },
                created_at: now,
                link_missing_since: None,
                reattach: false,
                job: None,
            },
        );
    }

    /// Checks the internal invariants; returns a description of the first violation.
    /// Used by tests after every step; cheap enough to call in debug builds.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut holders: BTreeMap<&NicId, &AttachmentId> = BTreeMap::new();
        for (id, att) in &self.attachments {
            if let Some(other) = holders.insert(&att.nic, id) {
                return Err(format!("NIC {} held by {other} and {id}", att.nic));
            }
            match self.nics.get(&att.nic) {
                None => return Err(format!("attachment {id} holds unknown NIC {}", att.nic)),
                Some(e) if e.usage != (Usage::Assigned { to: id.clone() }) => {
                    return Err(format!(
                        "attachment {id} holds NIC {} whose usage is {:?}",
                        att.nic, e.usage
                    ));
                }
                Some(e) if e.ip != att.ip => {
                    return Err(format!(
                        "attachment {id} has ip {} but NIC {} has {}",
                        att.ip, e.id, e.ip
                    ));
                }
                Some(_) => {}
            }
        }
        for e in self.nics.values() {
            if let Usage::Assigned { to } = &e.usage
                && self.attachments.get(to).map(|a| &a.nic) != Some(&e.id)
            {
                {
                    return Err(format!(
                        "NIC {} assigned to {to} which does not hold it",
                        e.id
                    ));
                }
            }
        }
        let mut tables = std::collections::BTreeSet::new();
        for e in self.nics.values() {
            if !tables.insert(e.table) {
                return Err(format!("table {} used twice", e.table));
            }
        }
        Ok(())
    }
}
