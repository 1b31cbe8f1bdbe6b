use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::AttachHook;
use crate::ports::{HostError, HostErrorKind, HostNetwork};
use crate::types::{
    HostInventory, InstanceId, NicId, NicPlumbing, NodePlumbing, NodeReport, PlumbedPod,
    PodPlumbing,
};

/// The operations [`FakeHost`] counts and can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostOp {
    /// `ensure_node`.
    EnsureNode,
    /// `prepare_nic`.
    PrepareNic,
    /// `release_nic`.
    ReleaseNic,
    /// `plumb_pod`.
    PlumbPod,
    /// `unplumb_pod`.
    UnplumbPod,
    /// `verify_pod`.
    VerifyPod,
    /// `inventory`.
    Inventory,
}

#[derive(Debug, Clone)]
struct Pod {
    plumbed: PlumbedPod,
    netns: String,
}

#[derive(Debug, Default)]
struct Inner {
    links: BTreeSet<NicId>,
    prepared: BTreeMap<NicId, NicPlumbing>,
    pods: BTreeMap<String, Pod>,
    gone_netns: BTreeSet<String>,
    faults: BTreeMap<HostOp, VecDeque<HostErrorKind>>,
    calls: BTreeMap<HostOp, u64>,
    default_route_broken: bool,
    node: Option<NodePlumbing>,
}

/// An in-memory node: NIC links (appearing when the fake cloud attaches them),
/// prepared NICs, plumbed pods and sandboxes. Refuses to plumb an address that is
/// already plumbed for another pod, which is how a double assignment would show.
#[derive(Debug, Clone)]
pub struct FakeHost {
    inner: Arc<Mutex<Inner>>,
    instance: InstanceId,
    veth_prefix: String,
}

impl FakeHost {
    /// What plumbing `pod` gets: its veth name, a host MAC derived from the sandbox's
    /// container id (as the Linux host does, so sandboxes of one pod differ), the
    /// NIC's address and table.
    fn planned(&self, pod: &PodPlumbing) -> PlumbedPod {
        let h = pod
            .pod
            .container_id
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
            .to_le_bytes();
        PlumbedPod {
            host_veth: pod.pod.host_veth_name(&self.veth_prefix),
            host_mac: Some([0xee, h[0], h[1], h[2], h[3], h[4]]),
            sandbox_mac: Some([0x0a, 0x58, 0, 0, 0, pod.nic.ip.octets()[3]]),
            ip: pod.nic.ip,
            table: pod.nic.table,
        }
    }

    /// The host of `instance`, naming veths with `veth_prefix`.
    pub fn new(instance: InstanceId, veth_prefix: &str) -> Self {
        FakeHost {
            inner: Arc::default(),
            instance,
            veth_prefix: veth_prefix.to_string(),
        }
    }

    /// The next `op` fails with `kind`.
    pub fn fail_next(&self, op: HostOp, kind: HostErrorKind) {
        self.inner
            .lock()
            .unwrap()
            .faults
            .entry(op)
            .or_default()
            .push_back(kind);
    }

    /// Calls made of `op`.
    pub fn calls(&self, op: HostOp) -> u64 {
        self.inner
            .lock()
            .unwrap()
            .calls
            .get(&op)
            .copied()
            .unwrap_or(0)
    }

    /// A NIC link disappears from the node (the cloud may still say it is attached).
    pub fn remove_link(&self, nic: &NicId) {
        let mut inner = self.inner.lock().unwrap();
        inner.links.remove(nic);
        inner.prepared.remove(nic);
    }

    /// The sandbox network namespace `netns` disappears (its pod died), and with it
    /// the pod's veth pair and the routes through it, as the kernel does.
    pub fn remove_netns(&self, netns: &str) {
        let mut inner = self.inner.lock().unwrap();
        inner.gone_netns.insert(netns.to_string());
        inner.pods.retain(|_, p| p.netns != netns);
    }

    /// A reboot: NIC preparation and pod plumbing are gone, and so are the sandboxes.
    /// NIC links come back (the cloud still has them attached).
    pub fn reboot(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.prepared.clear();
        let netns: Vec<String> = inner.pods.values().map(|p| p.netns.clone()).collect();
        inner.gone_netns.extend(netns);
        inner.pods.clear();
        inner.default_route_broken = true;
    }

    /// Addresses plumbed for pods, with their host veth.
    pub fn plumbed(&self) -> BTreeMap<Ipv4Addr, String> {
        let inner = self.inner.lock().unwrap();
        inner
            .pods
            .values()
            .map(|p| (p.plumbed.ip, p.plumbed.host_veth.clone()))
            .collect()
    }

    /// The plumbing of every pod, as [`HostNetwork::inventory`] reports it.
    pub fn plumbed_pods(&self) -> Vec<PlumbedPod> {
        let inner = self.inner.lock().unwrap();
        inner.pods.values().map(|p| p.plumbed.clone()).collect()
    }

    /// NICs prepared for pod traffic.
    pub fn prepared(&self) -> BTreeSet<NicId> {
        self.inner
            .lock()
            .unwrap()
            .prepared
            .keys()
            .cloned()
            .collect()
    }

    /// NIC links present.
    pub fn links(&self) -> BTreeSet<NicId> {
        self.inner.lock().unwrap().links.clone()
    }

    fn enter(&self, op: HostOp) -> Result<std::sync::MutexGuard<'_, Inner>, HostError> {
        let mut inner = self.inner.lock().unwrap();
        *inner.calls.entry(op).or_default() += 1;
        if let Some(kind) = inner.faults.get_mut(&op).and_then(VecDeque::pop_front) {
            return Err(HostError::new(kind, format!("injected {op:?} failure")));
        }
        Ok(inner)
    }
}

impl AttachHook for FakeHost {
    fn attached(&self, nic: &NicId, instance: &InstanceId) {
        if instance == &self.instance {
            self.inner.lock().unwrap().links.insert(nic.clone());
        }
    }

    fn detached(&self, nic: &NicId, instance: &InstanceId) {
        if instance == &self.instance {
            self.remove_link(nic);
        }
    }
}

#[async_trait]
impl HostNetwork for FakeHost {
    async fn ensure_node(&self, node: &NodePlumbing) -> Result<NodeReport, HostError> {
        let mut inner = self.enter(HostOp::EnsureNode)?;
        inner.node = Some(node.clone());
        let restored = std::mem::take(&mut inner.default_route_broken);
        Ok(NodeReport {
            default_route_restored: restored,
        })
    }

    async fn prepare_nic(&self, nic: &NicPlumbing) -> Result<(), HostError> {
        let mut inner = self.enter(HostOp::PrepareNic)?;
        if !inner.links.contains(&nic.nic) {
            return Err(HostError::new(
                HostErrorKind::Retryable,
                format!("no link with MAC {} on the node yet", nic.nic),
            ));
        }
        // The table now routes through this NIC: a NIC that used it before is no longer
        // prepared (its pods' CHECK fails), as on a real host.
        inner
            .prepared
            .retain(|id, p| !(p.table == nic.table && id != &nic.nic));
        inner.prepared.insert(nic.nic.clone(), nic.clone());
        Ok(())
    }

    async fn release_nic(&self, nic: &NicPlumbing) -> Result<(), HostError> {
        let mut inner = self.enter(HostOp::ReleaseNic)?;
        inner.prepared.remove(&nic.nic);
        Ok(())
    }

    fn plan_pod(&self, pod: &PodPlumbing) -> Option<PlumbedPod> {
        Some(self.planned(pod))
    }

    async fn plumb_pod(&self, pod: &PodPlumbing) -> Result<PlumbedPod, HostError> {
        let mut inner = self.enter(HostOp::PlumbPod)?;
        if inner.gone_netns.contains(&pod.netns) {
            return Err(HostError::new(
                HostErrorKind::NotFound,
                format!("netns {} does not exist", pod.netns),
            ));
        }
        let host_veth = pod.pod.host_veth_name(&self.veth_prefix);
        if let Some((veth, _)) = inner
            .pods
            .iter()
            .find(|(v, p)| p.plumbed.ip == pod.nic.ip && **v != host_veth)
        {
            return Err(HostError::new(
                HostErrorKind::Permanent,
                format!("address {} is already plumbed on {veth}", pod.nic.ip),
            ));
        }
        let plumbed = self.planned(pod);
        inner.pods.insert(
            host_veth,
            Pod {
                plumbed: plumbed.clone(),
                netns: pod.netns.clone(),
            },
        );
        Ok(plumbed)
    }

    async fn unplumb_pod(&self, pod: &PlumbedPod, _netns: Option<&str>) -> Result<(), HostError> {
        let mut inner = self.enter(HostOp::UnplumbPod)?;
        // Found by name and, when given, MAC (as the Linux host does): a newer sandbox
        // of the same pod has the same veth name and another MAC.
        if inner.pods.get(&pod.host_veth).is_some_and(|p| {
            p.plumbed.ip == pod.ip && (pod.host_mac.is_none() || p.plumbed.host_mac == pod.host_mac)
        }) {
            inner.pods.remove(&pod.host_veth);
        }
        Ok(())
    }

    async fn verify_pod(&self, pod: &PodPlumbing, plumbed: &PlumbedPod) -> Result<(), HostError> {
        let inner = self.enter(HostOp::VerifyPod)?;
        let mut missing = Vec::new();
        match inner.pods.get(&plumbed.host_veth) {
            None => missing.push(format!("host veth {} is missing", plumbed.host_veth)),
            Some(p) if p.plumbed.ip != pod.nic.ip => missing.push(format!(
                "{} carries {} instead of {}",
                plumbed.host_veth, p.plumbed.ip, pod.nic.ip
            )),
            Some(_) => {}
        }
        if inner.prepared.get(&pod.nic.nic).map(|n| n.table) != Some(pod.nic.table) {
            missing.push(format!(
                "route table {} of NIC {} is missing",
                pod.nic.table, pod.nic.nic
            ));
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(HostError::new(HostErrorKind::Mismatch, missing.join("; ")))
        }
    }

    async fn inventory(&self) -> Result<HostInventory, HostError> {
        let inner = self.enter(HostOp::Inventory)?;
        Ok(HostInventory {
            nic_links: inner.links.iter().cloned().collect(),
            pods: inner.pods.values().map(|p| p.plumbed.clone()).collect(),
            tables: inner.prepared.values().map(|p| p.table).collect(),
        })
    }
}
