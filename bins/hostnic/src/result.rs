//! The CNI result: rendering the agent's ADD answer in the configuration's
//! version, and reading a `prevResult` of any version back for CHECK.
//!
//! Shapes (CNI spec, "Success"): `interfaces` lists the host veth (index 0,
//! no `sandbox`) and the pod's interface (index 1, `sandbox` = netns path);
//! `ips` has the pod's /32 with gateway 169.254.1.1 and `interface: 1`, plus
//! `"version": "4"` before 1.0.0; `routes` and `dns` follow. Interface `mtu`
//! exists from 1.1.0 on.

use hostnic_core::api::{AddReply, Dns, ExpectedAttachment, ExpectedInterface};
use ipnet::Ipv4Net;
use serde_json::{Map, Value, json};

use crate::version::CniVersion;

/// The CNI result of a successful ADD in `version`. `config_dns` is used when
/// the agent gave no DNS settings.
pub fn add_result(version: CniVersion, reply: &AddReply, config_dns: Option<&Dns>) -> Value {
    let mut host = json!({"name": reply.host.name, "mac": reply.host.mac.to_string()});
    let mut sandbox = json!({
        "name": reply.sandbox.name,
        "mac": reply.sandbox.mac.to_string(),
        "sandbox": reply.sandbox.netns,
    });
    if let (true, Some(mtu)) = (version.interfaces_carry_mtu(), reply.mtu) {
        host["mtu"] = json!(mtu);
        sandbox["mtu"] = json!(mtu);
    }
    let mut ip = json!({
        "address": reply.ip.to_string(),
        "gateway": reply.gateway.to_string(),
        "interface": 1,
    });
    if version.ips_carry_version() {
        ip["version"] = json!("4");
    }
    let routes: Vec<Value> = reply
        .routes
        .iter()
        .map(|r| {
            let mut route = json!({"dst": r.dst.to_string()});
            if let Some(gw) = r.gw {
                route["gw"] = json!(gw.to_string());
            }
            route
        })
        .collect();
    let mut result = json!({
        "cniVersion": version.as_str(),
        "interfaces": [host, sandbox],
        "ips": [ip],
        "routes": routes,
    });
    let dns = reply
        .dns
        .as_ref()
        .or(config_dns)
        .filter(|d| **d != Dns::default());
    if let Some(dns) = dns {
        result["dns"] = serde_json::to_value(dns).unwrap_or(Value::Null);
    }
    result
}

/// Reads what a `prevResult` (any supported version) says about the
/// attachment of `ifname`. Tolerant: entries it cannot read are skipped, so
/// the agent reports precisely what is missing.
pub fn expected_from_prev_result(prev: &Value, ifname: &str) -> ExpectedAttachment {
    let interfaces: Vec<&Map<String, Value>> = prev
        .get("interfaces")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default();
    let read_iface = |o: &Map<String, Value>| ExpectedInterface {
        name: o
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        mac: o
            .get("mac")
            .and_then(Value::as_str)
            .and_then(|m| m.parse().ok()),
        sandbox: o
            .get("sandbox")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    };
    let in_sandbox = |o: &Map<String, Value>| {
        o.get("sandbox")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    let sandbox = interfaces
        .iter()
        .find(|o| in_sandbox(o) && o.get("name").and_then(Value::as_str) == Some(ifname))
        .map(|o| read_iface(o));
    let host = interfaces
        .iter()
        .find(|o| !in_sandbox(o))
        .map(|o| read_iface(o));
    let ip_entries: Vec<&Value> = prev
        .get("ips")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let ips: Vec<Ipv4Net> = ip_entries
        .iter()
        .filter_map(|ip| ip.get("address")?.as_str()?.parse().ok())
        .collect();
    let gateway = ip_entries
        .iter()
        .find_map(|ip| ip.get("gateway")?.as_str()?.parse().ok());
    ExpectedAttachment {
        host,
        sandbox,
        ips,
        gateway,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostnic_core::api::{HostInterface, POD_GATEWAY, Route, SandboxInterface};
    use hostnic_core::types::NicId;

    fn reply() -> AddReply {
        AddReply {
            host: HostInterface {
                name: "hnic5d41402abc4".into(),
                mac: "ee:ee:ee:ee:ee:ee".parse().unwrap(),
            },
            sandbox: SandboxInterface {
                name: "eth0".into(),
                mac: "52:54:9e:00:00:05".parse().unwrap(),
                netns: "/run/netns/pod".into(),
            },
            ip: "172.16.1.5/32".parse().unwrap(),
            gateway: POD_GATEWAY,
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some(POD_GATEWAY),
            }],
            mtu: Some(1450),
            dns: None,
            nic: NicId::new("52:54:9e:00:00:05").unwrap(),
            table: 261,
        }
    }

    #[test]
    fn legacy_results_carry_ip_version_and_no_mtu() {
        let r = add_result(CniVersion::V0_4_0, &reply(), None);
        assert_eq!(r["ips"][0]["version"], "4");
        assert!(r["interfaces"][1].get("mtu").is_none());
        assert!(r.get("dns").is_none());
    }

    #[test]
    fn v1_results_drop_ip_version_and_1_1_adds_mtu() {
        let r = add_result(CniVersion::V1_0_0, &reply(), None);
        assert!(r["ips"][0].get("version").is_none());
        assert!(r["interfaces"][1].get("mtu").is_none());
        let r = add_result(CniVersion::V1_1_0, &reply(), None);
        assert_eq!(r["interfaces"][1]["mtu"], 1450);
    }

    #[test]
    fn config_dns_fills_in() {
        let dns = Dns {
            nameservers: vec!["10.96.0.10".into()],
            ..Dns::default()
        };
        let r = add_result(CniVersion::V1_0_0, &reply(), Some(&dns));
        assert_eq!(r["dns"]["nameservers"][0], "10.96.0.10");
    }

    #[test]
    fn prev_result_round_trips_for_every_version() {
        for v in [
            CniVersion::V0_3_0,
            CniVersion::V0_4_0,
            CniVersion::V1_0_0,
            CniVersion::V1_1_0,
        ] {
            let prev = add_result(v, &reply(), None);
            let exp = expected_from_prev_result(&prev, "eth0");
            assert_eq!(exp.ips, vec!["172.16.1.5/32".parse::<Ipv4Net>().unwrap()]);
            assert_eq!(exp.gateway, Some(POD_GATEWAY));
            assert_eq!(exp.host.unwrap().name, "hnic5d41402abc4");
            let sb = exp.sandbox.unwrap();
            assert_eq!(sb.sandbox.as_deref(), Some("/run/netns/pod"));
            assert_eq!(sb.mac, Some("52:54:9e:00:00:05".parse().unwrap()));
        }
    }

    #[test]
    fn garbage_prev_result_yields_an_empty_expectation() {
        let exp = expected_from_prev_result(
            &json!({"ips": [1, {"address": "x"}], "interfaces": "no"}),
            "eth0",
        );
        assert_eq!(exp, ExpectedAttachment::default());
    }
}
