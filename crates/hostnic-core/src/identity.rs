//! The node's identity, resolved from the cloud at start: the instance, the pod
//! vxnets in the configured order of preference, and the node-wide plumbing.

use ipnet::Ipv4Net;

use crate::ports::{CloudError, CloudNetwork};
use crate::types::{Instance, InstanceId, NodePlumbing, Vxnet, VxnetId};

/// What the node is, as the cloud describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The instance, with its primary NIC.
    pub instance: Instance,
    /// The pod vxnets, in order of preference.
    pub vxnets: Vec<Vxnet>,
    /// The node-wide plumbing (SNAT, the default-route guard).
    pub node: NodePlumbing,
}

/// Why the identity could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The cloud failed (retry).
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// A configured pod vxnet does not exist (fix the configuration).
    #[error("pod vxnet {0} does not exist")]
    NoSuchVxnet(VxnetId),
}

impl NodeIdentity {
    /// Asks the cloud about instance `id` and its pod vxnets: `wanted` in that
    /// order, or the primary NIC's when `wanted` is empty. Pod traffic to the
    /// VPC's networks and to `snat_exclusions` is not SNATed; `external_snat`
    /// leaves SNAT to the VPC.
    pub async fn resolve(
        cloud: &dyn CloudNetwork,
        id: &InstanceId,
        wanted: &[VxnetId],
        snat_exclusions: &[Ipv4Net],
        external_snat: bool,
    ) -> Result<Self, IdentityError> {
        let instance = cloud.describe_instance(id).await?;
        let wanted = if wanted.is_empty() {
            vec![instance.primary_vxnet.clone()]
        } else {
            wanted.to_vec()
        };
        let found = cloud.describe_vxnets(&wanted).await?;
        // Keep the configured order of preference.
        let mut vxnets = Vec::new();
        for id in &wanted {
            match found.iter().find(|v| &v.id == id) {
                Some(v) => vxnets.push(v.clone()),
                None => return Err(IdentityError::NoSuchVxnet(id.clone())),
            }
        }
        let vpc_cidrs = cloud.vpc_cidrs(&vxnets[0].id).await?;
        let node = NodePlumbing {
            primary_nic: instance.primary_nic.clone(),
            primary_ip: instance.primary_ip,
            vpc_cidrs,
            snat_exclusions: snat_exclusions.to_vec(),
            external_snat,
        };
        Ok(Self {
            instance,
            vxnets,
            node,
        })
    }
}
