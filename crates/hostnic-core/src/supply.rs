//! [`SuppliedCloud`]: the node's view of the cloud in controller mode, where
//! the controller makes every cloud call and the node holds no credentials.
//!
//! The engine and the node's identity keep their ports: what they read from
//! the cloud is answered from what the node knows without calling it —
//! - the node's NICs ([`CloudNics::describe_nics`], the reconcile's question):
//!   the ones its supplier (the `HostnicNode` status) lists, attached to the
//!   node's instance while they are `Attached`, `Attaching` or `Detaching`;
//! - the instance (its primary NIC and address, found on the host), the primary
//!   NIC's network, the vxnets learned from supplied NICs, the VPC's networks
//!   (from the settings);
//! - every mutating call is refused: the pool makes none in this mode
//!   ([`CloudNics::supplier`] switches it), and nothing else may.
//!
//! The request it publishes names the vxnets the node was configured with
//! (empty: the controller uses the primary NIC's vxnet).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use ipnet::Ipv4Net;

use crate::fleet::{NicPhase, NodeDemand};
use crate::ports::{
    CloudError, CloudErrorKind, CloudNetwork, CloudNics, NicFilter, NicSupply, Supplied,
    SupplyError,
};
use crate::types::{
    CloudNic, CloudNicStatus, Instance, InstanceId, JobId, JobOutcome, NicId, Vxnet, VxnetId,
};

/// The node's cloud in controller mode: reads answered from its supply and the
/// host, no call to the cloud ever. See the module documentation.
pub struct SuppliedCloud {
    supply: Arc<dyn NicSupply>,
    instance: Instance,
    primary_network: Vxnet,
    vxnets: Vec<VxnetId>,
    vpc_cidrs: Vec<Ipv4Net>,
    learned: Mutex<Vec<Vxnet>>,
}

impl std::fmt::Debug for SuppliedCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuppliedCloud")
            .field("instance", &self.instance)
            .field("vxnets", &self.vxnets)
            .finish_non_exhaustive()
    }
}

impl SuppliedCloud {
    /// The cloud of a node on `instance` (its primary NIC and address as its
    /// host shows them, `primary_network` the primary NIC's network and
    /// gateway), asking `supply` for NICs in `vxnets` (empty: the primary's),
    /// with pod traffic to `vpc_cidrs` not SNATed.
    pub fn new(
        supply: Arc<dyn NicSupply>,
        instance: Instance,
        primary_network: Ipv4Net,
        primary_gateway: std::net::Ipv4Addr,
        vxnets: Vec<VxnetId>,
        vpc_cidrs: Vec<Ipv4Net>,
    ) -> Self {
        let primary_network = Vxnet {
            id: instance.primary_vxnet.clone(),
            cidr: primary_network.trunc(),
            gateway: primary_gateway,
            router: None,
        };
        Self {
            supply,
            instance,
            primary_network,
            vxnets,
            vpc_cidrs,
            learned: Mutex::new(Vec::new()),
        }
    }

    fn refused(action: &str) -> CloudError {
        CloudError::new(
            CloudErrorKind::Permanent,
            action,
            "controller mode: the hostnic controller makes the cloud calls, the node none",
        )
    }

    fn learn(&self, supplied: &Supplied) {
        let mut learned = self.learned.lock().unwrap_or_else(|p| p.into_inner());
        for nic in &supplied.nics {
            if let (Some(cidr), Some(gateway)) = (nic.cidr, nic.gateway)
                && !learned.iter().any(|v| v.id == nic.vxnet)
            {
                learned.push(Vxnet {
                    id: nic.vxnet.clone(),
                    cidr,
                    gateway,
                    router: None,
                });
            }
        }
    }
}

/// A supply error as the cloud error the engine's reconcile handles (retried).
fn as_cloud(action: &str, e: SupplyError) -> CloudError {
    let kind = match e.kind {
        crate::ports::SupplyErrorKind::Retryable => CloudErrorKind::Retryable,
        crate::ports::SupplyErrorKind::Permanent => CloudErrorKind::Permanent,
    };
    CloudError::new(kind, action, format!("the node's supply: {}", e.message))
}

#[async_trait]
impl CloudNics for SuppliedCloud {
    async fn describe_nics(&self, filter: &NicFilter) -> Result<Vec<CloudNic>, CloudError> {
        let supplied = self
            .supply
            .supplied()
            .await
            .map_err(|e| as_cloud("DescribeNics", e))?;
        self.learn(&supplied);
        let name = filter
            .name
            .clone()
            .unwrap_or_else(|| crate::types::managed_nic_name(&self.instance.id));
        Ok(supplied
            .nics
            .iter()
            .filter(|n| filter.nics.is_empty() || filter.nics.contains(&n.id))
            .filter(|n| filter.vxnets.is_empty() || filter.vxnets.contains(&n.vxnet))
            .map(|n| {
                let on_instance = n.phase != NicPhase::Reserved;
                CloudNic {
                    id: n.id.clone(),
                    name: name.clone(),
                    vxnet: n.vxnet.clone(),
                    ip: n.ip,
                    instance: on_instance.then(|| self.instance.id.clone()),
                    status: if on_instance {
                        CloudNicStatus::InUse
                    } else {
                        CloudNicStatus::Available
                    },
                    primary: false,
                }
            })
            .collect())
    }

    async fn create_nics(
        &self,
        _vxnet: &VxnetId,
        _count: u32,
        _name: &str,
    ) -> Result<Vec<CloudNic>, CloudError> {
        Err(Self::refused("CreateNics"))
    }

    async fn attach_nics(
        &self,
        _instance: &InstanceId,
        _nics: &[NicId],
    ) -> Result<JobId, CloudError> {
        Err(Self::refused("AttachNics"))
    }

    async fn detach_nics(&self, _nics: &[NicId]) -> Result<JobId, CloudError> {
        Err(Self::refused("DetachNics"))
    }

    async fn delete_nics(&self, _nics: &[NicId]) -> Result<(), CloudError> {
        Err(Self::refused("DeleteNics"))
    }

    async fn wait_job(&self, _job: &JobId, _timeout: Duration) -> Result<JobOutcome, CloudError> {
        Err(Self::refused("DescribeJobs"))
    }

    fn supplier(&self) -> Option<Arc<dyn NicSupply>> {
        Some(Arc::new(Configured {
            supply: self.supply.clone(),
            vxnets: self.vxnets.clone(),
        }))
    }
}

#[async_trait]
impl CloudNetwork for SuppliedCloud {
    async fn describe_instance(&self, instance: &InstanceId) -> Result<Instance, CloudError> {
        if *instance != self.instance.id {
            return Err(CloudError::new(
                CloudErrorKind::NotFound,
                "DescribeInstances",
                format!(
                    "controller mode knows only the node's instance {}",
                    self.instance.id
                ),
            ));
        }
        Ok(self.instance.clone())
    }

    async fn describe_vxnets(&self, vxnets: &[VxnetId]) -> Result<Vec<Vxnet>, CloudError> {
        let learned = self.learned.lock().unwrap_or_else(|p| p.into_inner());
        Ok(vxnets
            .iter()
            .filter_map(|id| {
                if *id == self.primary_network.id {
                    Some(self.primary_network.clone())
                } else {
                    learned.iter().find(|v| &v.id == id).cloned()
                }
            })
            .collect())
    }

    async fn vpc_cidrs(&self, _vxnet: &VxnetId) -> Result<Vec<Ipv4Net>, CloudError> {
        Ok(self.vpc_cidrs.clone())
    }
}

/// The supply with the node's configured vxnets put into every request.
struct Configured {
    supply: Arc<dyn NicSupply>,
    vxnets: Vec<VxnetId>,
}

#[async_trait]
impl NicSupply for Configured {
    async fn request(&self, request: &NodeDemand) -> Result<(), SupplyError> {
        let mut request = request.clone();
        request.vxnets = self.vxnets.clone();
        self.supply.request(&request).await
    }

    async fn supplied(&self) -> Result<Supplied, SupplyError> {
        self.supply.supplied().await
    }

    fn changes(&self) -> BoxStream<'static, Supplied> {
        self.supply.changes()
    }
}
