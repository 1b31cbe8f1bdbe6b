//! [`LinuxHost`]: the `HostNetwork` port over rtnetlink and nftables.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use async_trait::async_trait;
use hostnic_core::ports::{HostError, HostErrorKind, HostNetwork};
use hostnic_core::types::{
    HostInventory, NicId, NicPlumbing, NodePlumbing, NodeReport, PlumbedPod, PodPlumbing,
};

use crate::config::LinuxHostConfig;
use crate::error::LinuxError;
use crate::names::is_host_veth_name;
use crate::netns::{NetNs, NetlinkConn};
use crate::nl;
use crate::reap::Reaper;

/// The node's datapath, living in one network namespace (the current one by
/// default). Cheap to share behind an `Arc`; every method may run concurrently.
#[derive(Debug)]
pub struct LinuxHost {
    pub(crate) config: LinuxHostConfig,
    pub(crate) host_ns: NetNs,
    pub(crate) conn: NetlinkConn,
    /// The primary NIC's default gateway, remembered while the route is healthy.
    pub(crate) primary_gateway: std::sync::Mutex<Option<Ipv4Addr>>,
    /// Deletes the veths DEL left behind (see `reap`).
    pub(crate) reaper: Reaper,
}

impl LinuxHost {
    /// Validates `config`, opens the host namespace and a netlink connection in
    /// it. Must be called inside a tokio runtime.
    pub async fn new(config: LinuxHostConfig) -> Result<Self, LinuxError> {
        config.validate()?;
        let host_ns = match &config.host_netns {
            Some(path) => NetNs::open(path)?,
            None => NetNs::current()?,
        };
        let conn = host_ns.connect().await?;
        let reaper = Reaper::start(conn.handle.clone(), config.dead_veth_group, config.reap);
        Ok(Self {
            config,
            host_ns,
            conn,
            primary_gateway: std::sync::Mutex::new(None),
            reaper,
        })
    }

    /// Deletes at once the veths of deleted pods that are still waiting for the
    /// batched deletion: afterwards the host shows no trace of them.
    pub async fn settle(&self) -> Result<(), LinuxError> {
        self.reaper.reap_now().await
    }

    /// The configuration in use.
    pub fn config(&self) -> &LinuxHostConfig {
        &self.config
    }

    /// The namespace the host side lives in.
    pub fn host_netns(&self) -> &NetNs {
        &self.host_ns
    }

    pub(crate) fn handle(&self) -> &rtnetlink::Handle {
        &self.conn.handle
    }

    /// Writes `value` to `/proc/sys/<key>` inside the host namespace (net sysctls
    /// are per namespace, resolved for the thread that opens the file).
    pub(crate) async fn sysctl(&self, key: &str, value: &str) -> Result<(), LinuxError> {
        let path = format!("/proc/sys/{key}");
        let value = value.to_string();
        let written = self
            .host_ns
            .run(move || std::fs::write(&path, value))
            .await?;
        written.map_err(|source| LinuxError::Sysctl {
            key: key.to_string(),
            source,
        })
    }

    /// Reads `/proc/sys/<key>` inside the host namespace.
    pub(crate) async fn read_sysctl(&self, key: &str) -> Result<String, LinuxError> {
        let path = format!("/proc/sys/{key}");
        let read = self
            .host_ns
            .run(move || std::fs::read_to_string(&path))
            .await?;
        read.map_err(|source| LinuxError::Sysctl {
            key: key.to_string(),
            source,
        })
    }

    /// What hostnic plumbing exists in the host namespace.
    pub async fn inventory_now(&self) -> Result<HostInventory, LinuxError> {
        let c = &self.conn;
        let (links, routes, rules) =
            tokio::try_join!(nl::links(c), nl::routes_v4(c), nl::rules_v4(c))?;
        let prefix = &self.config.veth_prefix;
        let mut inventory = HostInventory::default();
        let dead = self.reaper.group();
        for link in links.iter().filter(|l| nl::link_group(l) != dead) {
            let name = nl::link_name(link).unwrap_or_default();
            let mac = nl::link_mac(link);
            if is_host_veth_name(prefix, name) && nl::link_is_veth(link) {
                // A pod: its address is the /32 main route through the veth, its
                // table the one the `from <ip>` rule points at.
                let ip = routes
                    .iter()
                    .filter(|r| nl::route_table(r) == u32::from(MAIN_TABLE))
                    .filter(|r| nl::route_oif(r) == Some(link.header.index))
                    .find_map(|r| match nl::route_dst(r) {
                        Some((dst, 32)) => Some(dst),
                        _ => None,
                    });
                let table = ip.and_then(|ip| {
                    rules.iter().filter_map(nl::RuleSpec::of).find_map(|s| {
                        (s.priority == self.config.from_pod_priority && s.src == Some(ip))
                            .then_some(s.table)
                    })
                });
                inventory.pods.push(PlumbedPod {
                    host_veth: name.to_string(),
                    host_mac: mac,
                    sandbox_mac: None,
                    // A veth without its route (crash mid-ADD) is still listed, with
                    // 0.0.0.0 and table 0, so GC can remove it.
                    ip: ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                    table: table.unwrap_or(0),
                });
            } else if let Some(mac) = mac
                && !nl::link_is_loopback(link)
                && mac != [0; 6]
            {
                inventory.nic_links.push(NicId::from_mac(mac));
            }
        }
        let tables: BTreeSet<u32> = routes
            .iter()
            .map(nl::route_table)
            .chain(
                rules
                    .iter()
                    .filter_map(nl::RuleSpec::of)
                    .filter(|s| s.priority == self.config.from_pod_priority)
                    .map(|s| s.table),
            )
            .filter(|t| self.config.owns_table(*t))
            .collect();
        inventory.tables = tables.into_iter().collect();
        Ok(inventory)
    }

    /// Rules at hostnic's priorities whose pod address has no veth any more
    /// (left behind by a crash between deleting a veth and its rules).
    pub async fn orphan_rule_addresses(&self) -> Result<Vec<Ipv4Addr>, LinuxError> {
        let inventory = self.inventory_now().await?;
        let live: BTreeSet<Ipv4Addr> = inventory.pods.iter().map(|p| p.ip).collect();
        let rules = nl::rules_v4(&self.conn).await?;
        let orphans: BTreeSet<Ipv4Addr> = rules
            .iter()
            .filter_map(nl::RuleSpec::of)
            .filter_map(|s| {
                if s.priority == self.config.from_pod_priority {
                    s.src
                } else if s.priority == self.config.to_pod_priority {
                    s.dst
                } else {
                    None
                }
            })
            .filter(|ip| !live.contains(ip))
            .collect();
        Ok(orphans.into_iter().collect())
    }
}

/// The main routing table.
pub(crate) const MAIN_TABLE: u8 = 254;

/// Joins every error of a teardown into one port error.
pub(crate) fn collect_errors(errors: Vec<LinuxError>) -> Result<(), HostError> {
    if errors.is_empty() {
        return Ok(());
    }
    let kind = if errors.iter().all(|e| e.kind() == HostErrorKind::Retryable) {
        HostErrorKind::Retryable
    } else {
        errors
            .iter()
            .map(LinuxError::kind)
            .find(|k| *k != HostErrorKind::Retryable)
            .unwrap_or(HostErrorKind::Permanent)
    };
    let message = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    Err(HostError::new(kind, message))
}

#[async_trait]
impl HostNetwork for LinuxHost {
    async fn ensure_node(&self, node: &NodePlumbing) -> Result<NodeReport, HostError> {
        Ok(self.ensure_node_now(node).await?)
    }

    async fn prepare_nic(&self, nic: &NicPlumbing) -> Result<(), HostError> {
        Ok(self.prepare_nic_now(nic).await?)
    }

    async fn release_nic(&self, nic: &NicPlumbing) -> Result<(), HostError> {
        collect_errors(self.release_nic_now(nic).await)
    }

    async fn plumb_pod(&self, pod: &PodPlumbing) -> Result<PlumbedPod, HostError> {
        Ok(self.plumb_pod_now(pod).await?)
    }

    fn plan_pod(&self, pod: &PodPlumbing) -> Option<PlumbedPod> {
        Some(LinuxHost::plan_pod(self, pod))
    }

    async fn unplumb_pod(&self, pod: &PlumbedPod, netns: Option<&str>) -> Result<(), HostError> {
        collect_errors(self.unplumb_pod_now(pod, netns).await)
    }

    async fn verify_pod(&self, pod: &PodPlumbing, plumbed: &PlumbedPod) -> Result<(), HostError> {
        let missing = self.verify_pod_now(pod, plumbed).await?;
        if missing.is_empty() {
            Ok(())
        } else {
            Err(HostError::new(
                HostErrorKind::Mismatch,
                format!("pod {}: {}", pod.pod.display_name(), missing.join("; ")),
            ))
        }
    }

    async fn inventory(&self) -> Result<HostInventory, HostError> {
        Ok(self.inventory_now().await?)
    }

    async fn settle(&self) -> Result<(), HostError> {
        Ok(LinuxHost::settle(self).await?)
    }
}

/// The node's primary interface as its host shows it: the link of the main
/// table's default route, its first IPv4 address, its network and the gateway.
/// How an agent that holds no cloud credentials (controller mode) learns what
/// `DescribeInstances` would have told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryInterface {
    /// The link's MAC, which is the QingCloud NIC id.
    pub nic: hostnic_core::types::NicId,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its network.
    pub network: ipnet::Ipv4Net,
    /// The default route's gateway.
    pub gateway: Ipv4Addr,
}

impl LinuxHost {
    /// The node's primary interface (see [`PrimaryInterface`]).
    pub async fn primary_interface(&self) -> Result<PrimaryInterface, LinuxError> {
        use rtnetlink::packet_route::address::AddressAttribute;
        let routes = nl::routes_v4(&self.conn).await?;
        let default = routes
            .iter()
            .filter(|r| nl::route_table(r) == 254 && nl::route_dst(r).is_none())
            .filter(|r| nl::route_oif(r).is_some() && nl::route_gateway(r).is_some())
            .min_by_key(|r| nl::route_metric(r))
            .ok_or_else(|| LinuxError::LinkNotFound("with the default route".into()))?;
        let (index, gateway) = (
            nl::route_oif(default).unwrap_or_default(),
            nl::route_gateway(default).unwrap_or(Ipv4Addr::UNSPECIFIED),
        );
        let link = nl::link_by_index(self.handle(), index)
            .await?
            .ok_or_else(|| LinuxError::LinkNotFound(format!("index {index}")))?;
        let mac = nl::link_mac(&link)
            .ok_or_else(|| LinuxError::LinkNotFound(format!("index {index} has no MAC")))?;
        let addresses = nl::addresses_v4(&self.conn, index).await?;
        let (ip, prefix) = addresses
            .iter()
            .find_map(|a| {
                a.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Address(std::net::IpAddr::V4(v)) => {
                        Some((*v, a.header.prefix_len))
                    }
                    _ => None,
                })
            })
            .ok_or_else(|| {
                LinuxError::LinkNotFound(format!("index {index} has no IPv4 address"))
            })?;
        Ok(PrimaryInterface {
            nic: hostnic_core::types::NicId::from_mac(mac),
            ip,
            network: ipnet::Ipv4Net::new(ip, prefix)
                .map(|n| n.trunc())
                .unwrap_or_default(),
            gateway,
        })
    }
}
