//! Node-wide datapath: forwarding, the nftables table `hostnic` (VPC marking and
//! SNAT), and the guard that keeps the main default route on the primary NIC.
//!
//! ## SNAT design: (a) fwmark
//! Pod packets whose destination is in the VPC (set `vpc`, not a local address)
//! get the bit [`crate::LinuxHostConfig::vpc_mark`] in prerouting, and the pod's
//! source rule is `from <podIP> fwmark M/M lookup <NIC table>`: VPC-bound traffic
//! leaves through the pod's NIC with the pod's address, everything else falls
//! through to the main table, leaves through the primary NIC and is SNATed to the
//! node's primary address in postrouting (unless the destination is in the VPC or
//! the exclusions, set `no-snat`). This keeps two rules per pod however many VPC
//! CIDRs there are; updating the VPC CIDRs is one atomic nftables transaction.
//! With `snat` off in the config the rule has no fwmark and no chain marks packets.
//! With `external_snat` (the VPC NATs) packets are still marked, never SNATed.

use std::net::Ipv4Addr;

use hostnic_core::types::{NodePlumbing, NodeReport};
use ipnet::Ipv4Net;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::address::AddressAttribute;
use serde_json::{Value, json};

use crate::error::LinuxError;
use crate::host::{LinuxHost, MAIN_TABLE};
use crate::nl::{self, ok_if_missing};

/// The nftables table holding every hostnic object.
pub const NFT_TABLE: &str = "hostnic";
/// The chain that marks VPC-bound pod packets (prerouting, priority mangle).
pub const NFT_MARK_CHAIN: &str = "mark-vpc";
/// The chain that SNATs pod packets leaving the VPC (postrouting, priority srcnat).
pub const NFT_SNAT_CHAIN: &str = "snat";

impl LinuxHost {
    /// Node-wide setup, idempotent: `ip_forward`, the `hostnic` nftables table in
    /// one transaction, and the default-route guard.
    pub async fn ensure_node_now(&self, node: &NodePlumbing) -> Result<NodeReport, LinuxError> {
        self.sysctl("net/ipv4/ip_forward", "1").await?;
        let ruleset = nft_ruleset(
            &self.config.veth_prefix,
            self.config.snat,
            self.config.snat && !node.external_snat,
            self.config.vpc_mark,
            node,
        );
        self.apply_nft(ruleset).await?;
        let default_route_restored = self.guard_default_route(node).await?;
        Ok(NodeReport {
            default_route_restored,
        })
    }

    async fn apply_nft(&self, ruleset: Value) -> Result<(), LinuxError> {
        // The nftables crate's schema checks the ruleset's shape before nft sees it.
        let parsed: nftables::schema::Nftables<'static> = serde_json::from_value(ruleset)
            .map_err(|e| LinuxError::Nftables(format!("ruleset does not fit the schema: {e}")))?;
        let ruleset = serde_json::to_value(&parsed)
            .map_err(|e| LinuxError::Nftables(format!("ruleset does not serialize: {e}")))?;
        let program = self.config.nft_binary.clone();
        // `nft` must run in the host namespace: spawn it from a thread inside it.
        self.host_ns
            .run(move || crate::nft::apply_json(&program, &ruleset))
            .await?
    }

    /// Restores the main default route onto the primary NIC when another link
    /// took it over (a reboot of a multi-NIC VM lets DHCP on a pod NIC win).
    /// Returns true when something was changed.
    async fn guard_default_route(&self, node: &NodePlumbing) -> Result<bool, LinuxError> {
        let h = self.handle();
        let primary = nl::link_by_mac(&self.conn, node.primary_nic.mac())
            .await?
            .ok_or_else(|| LinuxError::LinkNotFound(format!("primary NIC {}", node.primary_nic)))?;
        let primary_index = primary.header.index;
        let routes = nl::routes_v4(&self.conn).await?;
        let defaults: Vec<_> = routes
            .into_iter()
            .filter(|r| nl::route_table(r) == u32::from(MAIN_TABLE) && nl::route_dst(r).is_none())
            .collect();
        let best_primary = defaults
            .iter()
            .filter(|r| nl::route_oif(r) == Some(primary_index))
            .min_by_key(|r| nl::route_metric(r));
        let limit = best_primary.map(nl::route_metric).unwrap_or(u32::MAX);
        let offending: Vec<_> = defaults
            .iter()
            .filter(|r| nl::route_oif(r) != Some(primary_index) && nl::route_metric(r) <= limit)
            .cloned()
            .collect();
        if let Some(gw) = best_primary.and_then(nl::route_gateway) {
            *self
                .primary_gateway
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(gw);
        }
        if best_primary.is_some() && offending.is_empty() {
            return Ok(false);
        }
        for route in offending {
            tracing::warn!(oif = ?nl::route_oif(&route), "removing a default route that is not on the primary NIC");
            ok_if_missing(h.route().del(route).execute().await)
                .map_err(LinuxError::netlink("delete foreign default route"))?;
        }
        if best_primary.is_none() {
            let remembered = *self
                .primary_gateway
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let gateway = match remembered {
                Some(gw) => gw,
                None => {
                    self.primary_subnet_gateway(primary_index, node.primary_ip)
                        .await?
                }
            };
            tracing::warn!(%gateway, "restoring the default route on the primary NIC");
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gateway)
                .output_interface(primary_index)
                .build();
            h.route()
                .add(route)
                .replace()
                .execute()
                .await
                .map_err(LinuxError::netlink(format!(
                    "restore default via {gateway}"
                )))?;
        }
        Ok(true)
    }

    /// The QingCloud convention: the vxnet router is the first address of the
    /// primary NIC's subnet.
    async fn primary_subnet_gateway(
        &self,
        index: u32,
        primary_ip: Ipv4Addr,
    ) -> Result<Ipv4Addr, LinuxError> {
        let addresses = nl::addresses_v4(&self.conn, index).await?;
        let net = addresses
            .iter()
            .find_map(|a| {
                a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Address(std::net::IpAddr::V4(v)) if *v == primary_ip => {
                        Ipv4Net::new(*v, a.header.prefix_len).ok()
                    }
                    _ => None,
                })
            })
            .ok_or_else(|| {
                LinuxError::LinkNotFound(format!("primary address {primary_ip} on the primary NIC"))
            })?;
        Ok(Ipv4Addr::from(u32::from(net.network()) + 1))
    }
}

/// The whole `hostnic` table as one `nft -j` transaction. Chains and sets are
/// created if missing and flushed, then refilled: objects other software (or the
/// policy engine) adds to the table are left alone, nothing outside it is touched.
pub(crate) fn nft_ruleset(
    veth_prefix: &str,
    mark: bool,
    snat: bool,
    vpc_mark: u32,
    node: &NodePlumbing,
) -> Value {
    let table = json!({"family": "inet", "name": NFT_TABLE});
    let set = |name: &str| json!({"family": "inet", "table": NFT_TABLE, "name": name, "type": "ipv4_addr", "flags": ["interval"]});
    let chain = |name: &str, kind: &str, hook: &str, prio: i32| json!({"family": "inet", "table": NFT_TABLE, "name": name, "type": kind, "hook": hook, "prio": prio, "policy": "accept"});
    let chain_ref = |name: &str| json!({"family": "inet", "table": NFT_TABLE, "name": name});
    let elements = |nets: Vec<Ipv4Net>| -> Vec<Value> {
        // Overlapping intervals are rejected by nft: merge them first.
        Ipv4Net::aggregate(&nets)
            .into_iter()
            .map(|n| json!({"prefix": {"addr": n.network().to_string(), "len": n.prefix_len()}}))
            .collect()
    };
    let vpc = elements(node.vpc_cidrs.clone());
    let no_snat = elements(
        node.vpc_cidrs
            .iter()
            .chain(&node.snat_exclusions)
            .copied()
            .collect(),
    );
    let from_pod = json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": format!("{veth_prefix}*")}});
    let daddr = json!({"payload": {"protocol": "ip", "field": "daddr"}});

    let mut cmds = vec![
        json!({"add": {"table": table}}),
        json!({"add": {"set": set("vpc")}}),
        json!({"flush": {"set": set("vpc")}}),
        json!({"add": {"set": set("no-snat")}}),
        json!({"flush": {"set": set("no-snat")}}),
        json!({"add": {"chain": chain(NFT_MARK_CHAIN, "filter", "prerouting", -150)}}),
        json!({"flush": {"chain": chain_ref(NFT_MARK_CHAIN)}}),
        json!({"add": {"chain": chain(NFT_SNAT_CHAIN, "nat", "postrouting", 100)}}),
        json!({"flush": {"chain": chain_ref(NFT_SNAT_CHAIN)}}),
    ];
    let add_elements = |name: &str, elem: Vec<Value>| json!({"add": {"element": {"family": "inet", "table": NFT_TABLE, "name": name, "elem": elem}}});
    if !vpc.is_empty() {
        cmds.push(add_elements("vpc", vpc));
    }
    if !no_snat.is_empty() {
        cmds.push(add_elements("no-snat", no_snat));
    }
    if mark {
        cmds.push(json!({"add": {"rule": {"family": "inet", "table": NFT_TABLE, "chain": NFT_MARK_CHAIN, "expr": [
            from_pod.clone(),
            {"match": {"op": "==", "left": daddr.clone(), "right": "@vpc"}},
            // The node's own addresses are reached through the main table.
            {"match": {"op": "!=", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}},
            {"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"|": [{"meta": {"key": "mark"}}, vpc_mark]}}}
        ]}}}));
    }
    if snat {
        cmds.push(json!({"add": {"rule": {"family": "inet", "table": NFT_TABLE, "chain": NFT_SNAT_CHAIN, "expr": [
            from_pod,
            {"match": {"op": "!=", "left": daddr, "right": "@no-snat"}},
            {"snat": {"family": "ip", "addr": node.primary_ip.to_string()}}
        ]}}}));
    }
    json!({"nftables": cmds})
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostnic_core::types::NicId;

    fn node() -> NodePlumbing {
        NodePlumbing {
            primary_nic: NicId::new("52:54:00:00:00:01").unwrap(),
            primary_ip: "10.200.0.10".parse().unwrap(),
            vpc_cidrs: vec![
                "172.20.0.0/16".parse().unwrap(),
                "172.20.1.0/24".parse().unwrap(),
            ],
            snat_exclusions: vec!["192.168.0.0/16".parse().unwrap()],
            external_snat: false,
        }
    }

    #[test]
    fn ruleset_fits_the_nftables_schema() {
        let v = nft_ruleset("nic", true, true, 0x0100_0000, &node());
        let parsed: nftables::schema::Nftables<'_> = serde_json::from_value(v).unwrap();
        assert!(parsed.objects.len() > 9);
    }

    #[test]
    fn every_object_is_in_the_hostnic_table() {
        let v = nft_ruleset("nic", true, true, 0x0100_0000, &node());
        for cmd in v["nftables"].as_array().unwrap() {
            let (_, obj) = cmd.as_object().unwrap().iter().next().unwrap();
            let (kind, body) = obj.as_object().unwrap().iter().next().unwrap();
            let table = if kind == "table" {
                &body["name"]
            } else {
                &body["table"]
            };
            assert_eq!(table, NFT_TABLE, "{cmd}");
        }
    }

    #[test]
    fn overlapping_vpc_cidrs_are_merged_and_snat_can_be_off() {
        let v = nft_ruleset("nic", true, false, 0x0100_0000, &node());
        let text = v.to_string();
        assert!(
            !text.contains("172.20.1.0"),
            "the /24 is inside the /16: {text}"
        );
        assert!(
            !text.contains("\"snat\":{"),
            "no SNAT statement with SNAT off"
        );
        assert!(text.contains("\"mangle\""), "marking stays on");
    }
}
