//! The 26 upstream NetworkPolicy truth tables (the core's
//! `tests/data/netpol-cases.json`, see the README there) on real packets: per
//! case, one test node with every pod as a local sandbox listening on the
//! case's container ports, the policies compiled by the core and rendered into
//! the node's `hostnic` table, and a TCP connect for every probe and ordered
//! pair. Self-connections are reported, not judged (as upstream).
//!
//! Root: `cargo test -p hostnic-linux --test policy_truth_tables -- --include-ignored`.

#[path = "policy_support.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use hostnic_core::policy::{ContainerPort, NetworkPolicy, PolicyNamespace, Protocol};
use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::Value;
use support::{ALLOW_TIMEOUT, Node};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    id: String,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pods: BTreeMap<String, BTreeMap<String, String>>,
    container_ports: Vec<ContainerPort>,
    policies: Vec<Value>,
    probes: Vec<Probe>,
    expected: BTreeMap<String, BTreeMap<String, BTreeMap<String, bool>>>,
}

#[derive(Deserialize)]
struct Probe {
    port: u16,
    protocol: Protocol,
}

/// Replaces every `{"ipBlockOfPod": "ns/pod", "prefix": N}` with the CIDR string.
fn resolve_symbols(v: &mut Value, ips: &BTreeMap<String, Ipv4Addr>) {
    match v {
        Value::Object(map) => {
            if let Some(pod) = map.get("ipBlockOfPod").and_then(Value::as_str) {
                let prefix = map["prefix"].as_u64().expect("prefix") as u8;
                let net = Ipv4Net::new(ips[pod], prefix).expect("prefix fits").trunc();
                *v = Value::String(net.to_string());
                return;
            }
            map.values_mut().for_each(|x| resolve_symbols(x, ips));
        }
        Value::Array(items) => items.iter_mut().for_each(|x| resolve_symbols(x, ips)),
        _ => {}
    }
}

/// A connect probe of a denied flow waits this long before calling it blocked
/// (upstream uses ~1 s); allowed flows between local sandboxes answer at once.
const DENY_WAIT: std::time::Duration = std::time::Duration::from_millis(1000);

#[test]
#[ignore = "needs root: cargo test -- --include-ignored"]
fn all_upstream_truth_tables_hold_on_real_packets() {
    let cases: Vec<Case> = serde_json::from_str(include_str!(
        "../../hostnic-core/tests/data/netpol-cases.json"
    ))
    .expect("netpol-cases.json parses");
    assert_eq!(cases.len(), 26);
    let mut failures = Vec::new();
    let mut judged = 0;
    for case in &cases {
        let mut node = Node::new();
        node.namespaces = case
            .namespaces
            .iter()
            .map(|(name, labels)| PolicyNamespace {
                name: name.clone(),
                labels: labels.clone(),
            })
            .collect();
        let ns_index: BTreeMap<&str, u8> = case
            .namespaces
            .keys()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as u8 + 1))
            .collect();
        let mut ips = BTreeMap::new();
        let listen: Vec<u16> = case
            .container_ports
            .iter()
            .map(|p| p.container_port)
            .collect();
        for (i, (key, labels)) in case.pods.iter().enumerate() {
            let ns = key.split_once('/').expect("ns/pod").0;
            let ip = Ipv4Addr::new(10, ns_index[ns], 0, i as u8 + 2);
            ips.insert(key.clone(), ip);
            let labels: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            node.add_pod(key, &labels, ip, &listen);
        }
        let policies: Vec<NetworkPolicy> = case
            .policies
            .iter()
            .map(|p| {
                let mut p = p.clone();
                resolve_symbols(&mut p, &ips);
                serde_json::from_value(p).expect("a NetworkPolicy")
            })
            .collect();
        let names: Vec<(u16, String)> = case
            .container_ports
            .iter()
            .map(|p| (p.container_port, p.name.clone().unwrap_or_default()))
            .collect();
        let names: Vec<(u16, &str)> = names.iter().map(|(p, n)| (*p, n.as_str())).collect();
        node.enforce(&policies, &names);

        for probe in &case.probes {
            assert_eq!(
                probe.protocol,
                Protocol::Tcp,
                "only TCP probes are transcribed"
            );
            let key = format!("{}/{}", probe.port, probe.protocol);
            let cells: Vec<(&String, &String, bool)> = case.expected[&key]
                .iter()
                .flat_map(|(from, row)| row.iter().map(move |(to, want)| (from, to, *want)))
                .collect();
            // Probe every pair at once: denied flows cost a timeout each.
            let observed: Vec<bool> = std::thread::scope(|s| {
                let handles: Vec<_> = cells
                    .iter()
                    .map(|(from, to, want)| {
                        let node = &node;
                        s.spawn(move || {
                            let wait = if *want { ALLOW_TIMEOUT } else { DENY_WAIT };
                            node.can_connect(from, to, probe.port, wait)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for ((from, to, want), got) in cells.iter().zip(observed) {
                if from == to {
                    println!("{} [{key}] self {from}: {got} (not judged)", case.id);
                    continue;
                }
                judged += 1;
                if got != *want {
                    failures.push(format!(
                        "{} [{key}] {from} -> {to}: expected {want}, got {got}",
                        case.id
                    ));
                }
            }
        }
    }
    // 262 = the off-diagonal cells of all matrices in the shipped table.
    assert_eq!(judged, 262);
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}
