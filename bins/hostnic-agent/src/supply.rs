//! Controller mode, composition only: the node's cloud is the core's
//! [`SuppliedCloud`] over its `NicSupply` (in a cluster, `hostnic_k8s::KubeNicSupply`
//! on its `HostnicNode`), so the agent holds no cloud client and no credentials.
//! The decisions are the core's (`NodeState::supply_request`, `NodeState::supplied`,
//! the engine's supplied pool round); this file only wires them and wakes the
//! pool when the status changes, so supplied NICs are prepared at once instead
//! of at the next pool tick.

use std::net::Ipv4Addr;
use std::sync::Arc;

use futures::StreamExt as _;
use hostnic_core::ports::NicSupply;
use hostnic_core::supply::SuppliedCloud;
use hostnic_core::types::{Instance, InstanceId, NicId, VxnetId};
use ipnet::Ipv4Net;

use crate::settings::Settings;
use crate::shared::Shared;
use crate::shutdown::stopped;

/// The node's primary interface as its host shows it (controller mode has no
/// `DescribeInstances`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary {
    /// Its MAC (the NIC id).
    pub nic: NicId,
    /// Its address (the SNAT source).
    pub ip: Ipv4Addr,
    /// Its network.
    pub network: Ipv4Net,
    /// The default gateway.
    pub gateway: Ipv4Addr,
}

/// The id the primary NIC's vxnet goes by on the node in controller mode (the
/// host does not know the real one; nothing is asked for it by this name).
pub const PRIMARY_VXNET: &str = "primary";

/// The node's cloud in controller mode: NICs asked of `supply` in the
/// configured vxnets (`settings.vxnets`; empty: the controller takes the
/// primary NIC's), pod traffic to `settings.vpc_cidrs` not SNATed. Start the
/// agent with `settings.vxnets` emptied (the node's identity then needs only
/// the primary network): [`controller_settings`].
pub fn controller_cloud(
    supply: Arc<dyn NicSupply>,
    instance: &InstanceId,
    primary: &Primary,
    settings: &Settings,
) -> SuppliedCloud {
    SuppliedCloud::new(
        supply,
        Instance {
            id: instance.clone(),
            primary_nic: primary.nic.clone(),
            primary_ip: primary.ip,
            primary_vxnet: VxnetId::new(PRIMARY_VXNET),
        },
        primary.network,
        primary.gateway,
        settings.vxnets.clone(),
        settings.vpc_cidrs.clone(),
    )
}

/// The settings the agent runs with in controller mode: the configured vxnets
/// go into the requests ([`controller_cloud`]), not into the identity.
pub fn controller_settings(mut settings: Settings) -> Settings {
    settings.vxnets.clear();
    settings
}

/// Wakes the pool whenever the supplier's answer changes.
pub(crate) async fn wake_on_supply(shared: Arc<Shared>, supplier: Arc<dyn NicSupply>) {
    let mut stop = shared.shutdown.clone();
    let mut changes = supplier.changes();
    loop {
        tokio::select! {
            next = changes.next() => match next {
                Some(_) => shared.pool_wake.notify_one(),
                None => return,
            },
            _ = stopped(&mut stop) => return,
        }
    }
}
