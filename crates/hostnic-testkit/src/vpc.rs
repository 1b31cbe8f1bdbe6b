//! The lab's VPC, built once for `hostnic-lab` and the root end-to-end tests:
//! namespaces as the router, hosts and an internet host (`hostnic_linux::lab`),
//! the QingCloud simulator whose attach hook plugs each NIC into its host, and
//! every instance's primary NIC on its host.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use hostnic_linux::lab::{Fabric, FabricSpec, HostSpec, VxnetGateway};
use hostnic_qingcloud::sim::{SimConfig, SimHandle, SimState, Simulator};
use ipnet::Ipv4Net;

use crate::hooks::FabricHook;

/// A running VPC: the fabric and the simulator that drives it.
#[derive(Debug)]
pub struct Vpc {
    /// The namespaces.
    pub fabric: Fabric,
    /// The cloud API.
    pub sim: SimHandle,
    /// Instance id → host name, as given to [`Vpc::build`].
    pub hosts: BTreeMap<String, String>,
}

impl Vpc {
    /// Creates the fabric (namespaces named `prefix…`, one gateway per vxnet of
    /// `config.topology`, the internet at `internet`), starts the simulator with
    /// the fabric as its attach hook, and adds a host for each of `hosts`
    /// (instance id → host name) with the instance's primary NIC. On error the
    /// caller removes what exists (`hostnic_linux::lab::fabric::destroy(prefix)`).
    pub async fn build(
        prefix: &str,
        internet: Ipv4Net,
        config: SimConfig,
        hosts: BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let fabric = Fabric::create(&FabricSpec {
            prefix: prefix.to_string(),
            vxnets: config
                .topology
                .vxnets
                .iter()
                .map(|v| VxnetGateway { cidr: v.cidr })
                .collect(),
            internet,
        })
        .await
        .map_err(|e| format!("build the VPC fabric: {e}"))?;
        let hook = Arc::new(FabricHook {
            fabric: fabric.clone(),
            hosts: hosts.clone(),
        });
        let sim = Simulator::start(config, Some(hook))
            .await
            .map_err(|e| format!("start the simulator: {e}"))?;
        let state = sim.state();
        for (instance, host) in &hosts {
            let (mac, ip, cidr) = primary_nic(&state, instance)?;
            fabric
                .add_host(&HostSpec {
                    name: host.clone(),
                    mac,
                    ip,
                    vxnet: VxnetGateway { cidr },
                })
                .await
                .map_err(|e| format!("create host {host}: {e}"))?;
        }
        Ok(Self { fabric, sim, hosts })
    }

    /// The primary address of `instance`.
    pub fn primary_ip(&self, instance: &str) -> Result<Ipv4Addr, String> {
        primary_nic(&self.sim.state(), instance).map(|(_, ip, _)| ip)
    }
}

/// MAC, address and vxnet network of an instance's primary NIC.
pub fn primary_nic(
    state: &SimState,
    instance: &str,
) -> Result<(String, Ipv4Addr, Ipv4Net), String> {
    let inst = state
        .instances
        .get(instance)
        .ok_or_else(|| format!("the simulator has no instance {instance}"))?;
    let nic = state
        .nics
        .values()
        .find(|n| n.nic_id.eq_ignore_ascii_case(&inst.primary_nic))
        .ok_or_else(|| format!("the simulator has no primary NIC for {instance}"))?;
    let vxnet = state
        .vxnets
        .get(&nic.vxnet_id)
        .ok_or_else(|| format!("unknown vxnet {}", nic.vxnet_id))?;
    Ok((nic.nic_id.clone(), nic.private_ip, vxnet.ip_network))
}
