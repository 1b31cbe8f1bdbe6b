//! The node's identity, resolved from the cloud at start: the instance, the pod
//! vxnets in the configured order of preference, and the node-wide plumbing.

use hostnic_core::ports::CloudNetwork;
use hostnic_core::types::{Instance, InstanceId, NodePlumbing, Vxnet};

use crate::settings::Settings;

/// The node's identity.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub instance: Instance,
    pub vxnets: Vec<Vxnet>,
    pub node: NodePlumbing,
}

impl Identity {
    /// Asks the cloud about instance `id` and its vxnets (the configured ones,
    /// else the primary NIC's). A configured vxnet that does not exist is an error.
    pub async fn resolve(
        cloud: &dyn CloudNetwork,
        settings: &Settings,
        id: &InstanceId,
    ) -> Result<Self, String> {
        let instance = cloud
            .describe_instance(id)
            .await
            .map_err(|e| e.to_string())?;
        let wanted = if settings.vxnets.is_empty() {
            vec![instance.primary_vxnet.clone()]
        } else {
            settings.vxnets.clone()
        };
        let found = cloud
            .describe_vxnets(&wanted)
            .await
            .map_err(|e| e.to_string())?;
        // Keep the configured order of preference.
        let mut vxnets = Vec::new();
        for id in &wanted {
            match found.iter().find(|v| &v.id == id) {
                Some(v) => vxnets.push(v.clone()),
                None => return Err(format!("pod vxnet {id} does not exist")),
            }
        }
        let vpc_cidrs = cloud
            .vpc_cidrs(&vxnets[0].id)
            .await
            .map_err(|e| e.to_string())?;
        let node = NodePlumbing {
            primary_nic: instance.primary_nic.clone(),
            primary_ip: instance.primary_ip,
            vpc_cidrs,
            snat_exclusions: settings.snat_exclusions.clone(),
            external_snat: settings.external_snat,
        };
        Ok(Identity {
            instance,
            vxnets,
            node,
        })
    }
}
