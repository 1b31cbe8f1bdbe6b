//! The simulator's attach hook: NIC events become veth pairs in the fabric.

use std::collections::BTreeMap;

use async_trait::async_trait;
use hostnic_linux::lab::Fabric;
use hostnic_qingcloud::sim::{AttachHook, NicEvent, NicEventKind};

/// Plugs a NIC into its instance's namespace when the simulator attaches it,
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
