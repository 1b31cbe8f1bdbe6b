//! The node agent's datapath at start: its configuration from the agent's
//! settings, and opening it with a diagnosis the start-up record shows.

use hostnic_core::config::agent::Settings;
use hostnic_core::startup::Failed;

use crate::{LinuxHost, LinuxHostConfig};

/// The datapath's configuration for `settings` (SNAT unless the VPC does it).
pub fn host_config(settings: &Settings) -> LinuxHostConfig {
    LinuxHostConfig {
        veth_prefix: settings.pool.veth_prefix.clone(),
        mtu: settings.mtu,
        table_base: settings.pool.table_base,
        snat: !settings.external_snat,
        host_netns: settings.host_netns.clone(),
        ..LinuxHostConfig::default()
    }
}

/// Opens the datapath; a failure says whether a privilege is missing.
pub async fn open(config: LinuxHostConfig) -> Result<LinuxHost, Failed> {
    LinuxHost::new(config).await.map_err(|e| {
        let message = format!("host datapath: {e}");
        let lower = message.to_ascii_lowercase();
        if lower.contains("not permitted") || lower.contains("permission denied") {
            Failed::new(
                message,
                "the agent may not change the node's network",
                "run the agent as root with NET_ADMIN, NET_RAW and SYS_ADMIN (the \
                 DaemonSet's container is privileged; keep it so)",
                true,
            )
        } else {
            Failed::new(
                message,
                "the node's datapath cannot be opened",
                "check that the kernel has netlink and nftables, and that the \
                 `nft` binary exists",
                true,
            )
        }
    })
}
