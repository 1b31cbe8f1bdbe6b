//! Attach hooks of the QingCloud simulator: what happens on a "host" when the
//! simulator attaches, detaches or loses a NIC.

use std::collections::BTreeMap;
use std::process::Command;

use async_trait::async_trait;
use hostnic_linux::lab::Fabric;
use hostnic_qingcloud::sim::{AttachHook, NicEvent, NicEventKind};

use crate::netns::ip;

/// A NIC's link appears in the `node` namespace (a veth whose peer is in `vpc`)
/// when the simulator attaches it, and disappears when it is detached or vanishes.
#[derive(Debug)]
pub struct VethLinks {
    /// The node namespace.
    pub node: String,
    /// The namespace of the links' peers.
    pub vpc: String,
}

#[async_trait]
impl AttachHook for VethLinks {
    async fn on_nic_event(&self, event: &NicEvent) {
        let mac = event.nic.to_string();
        let tail: String = mac.replace(':', "")[4..].to_string();
        match event.kind {
            NicEventKind::Attached => {
                let (name, peer) = (format!("e{tail}"), format!("v{tail}"));
                let _ = Command::new("ip")
                    .args([
                        "-n", &self.node, "link", "add", &name, "address", &mac, "type", "veth",
                        "peer", "name", &peer, "netns", &self.vpc,
                    ])
                    .status();
                let _ = Command::new("ip")
                    .args(["-n", &self.vpc, "link", "set", &peer, "up"])
                    .status();
            }
            NicEventKind::Detached | NicEventKind::Vanished => {
                // The agent may have renamed the link: find it by MAC.
                let links = ip(&["-n", &self.node, "-j", "link", "show"]);
                let links: serde_json::Value = serde_json::from_str(&links).unwrap_or_default();
                for l in links.as_array().into_iter().flatten() {
                    if l["address"] == mac.as_str()
                        && let Some(name) = l["ifname"].as_str()
                    {
                        let _ = Command::new("ip")
                            .args(["-n", &self.node, "link", "del", name])
                            .status();
                    }
                }
            }
        }
    }
}

/// Plugs a NIC into its instance's host in the lab fabric when the simulator
/// attaches it (before the job reports success, as a hot-plugged NIC appears),
/// unplugs it when it is detached or vanishes.
#[derive(Debug)]
pub struct FabricHook {
    /// The lab fabric.
    pub fabric: Fabric,
    /// Instance id → host name (`node1`, `client`).
    pub hosts: BTreeMap<String, String>,
}

#[async_trait]
impl AttachHook for FabricHook {
    async fn on_nic_event(&self, event: &NicEvent) {
        let mac = event.nic.as_str();
        let result = match event.kind {
            NicEventKind::Attached => match self.hosts.get(&event.instance) {
                Some(host) => self.fabric.plug_nic(host, mac, event.ip).await,
                None => {
                    tracing::warn!(instance = %event.instance, nic = mac, "attached to an instance the lab has no host for");
                    Ok(())
                }
            },
            NicEventKind::Detached | NicEventKind::Vanished => self.fabric.unplug_nic(mac).await,
        };
        match result {
            Ok(()) => {
                tracing::info!(kind = ?event.kind, nic = mac, ip = %event.ip, instance = %event.instance, "NIC")
            }
            Err(e) => {
                tracing::error!(kind = ?event.kind, nic = mac, error = %e, "the fabric could not follow a NIC event")
            }
        }
    }
}

/// The core's `FakeHost` follows the simulator's attachments (in-process agents
/// against the simulator: its NICs "appear" on the fake host).
#[cfg(feature = "fakes")]
#[derive(Debug, Clone)]
pub struct FakeHostLinks(pub hostnic_core::testing::FakeHost);

#[cfg(feature = "fakes")]
#[async_trait]
impl AttachHook for FakeHostLinks {
    async fn on_nic_event(&self, event: &NicEvent) {
        use hostnic_core::testing::AttachHook as _;
        let instance = hostnic_core::types::InstanceId::new(event.instance.clone());
        match event.kind {
            NicEventKind::Attached => self.0.attached(&event.nic, &instance),
            NicEventKind::Detached | NicEventKind::Vanished => {
                self.0.detached(&event.nic, &instance)
            }
        }
    }
}

/// The fake hosts of a fleet behind one attach hook: each NIC event goes to the
/// host of its instance (thousands of in-process agents against one simulator).
#[cfg(feature = "fakes")]
#[derive(Debug, Clone, Default)]
pub struct FakeHosts(
    pub std::sync::Arc<std::sync::RwLock<BTreeMap<String, hostnic_core::testing::FakeHost>>>,
);

#[cfg(feature = "fakes")]
impl FakeHosts {
    /// The host of `instance`, created (with veths named `veth_prefix…`) on first use.
    pub fn host(&self, instance: &str, veth_prefix: &str) -> hostnic_core::testing::FakeHost {
        let mut hosts = self.0.write().unwrap_or_else(|e| e.into_inner());
        hosts
            .entry(instance.to_string())
            .or_insert_with(|| {
                hostnic_core::testing::FakeHost::new(
                    hostnic_core::types::InstanceId::new(instance),
                    veth_prefix,
                )
            })
            .clone()
    }
}

#[cfg(feature = "fakes")]
#[async_trait]
impl AttachHook for FakeHosts {
    async fn on_nic_event(&self, event: &NicEvent) {
        let host = self
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&event.instance)
            .cloned();
        if let Some(host) = host {
            FakeHostLinks(host).on_nic_event(event).await;
        }
    }
}
