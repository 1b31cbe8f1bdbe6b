//! The upstream Kubernetes NetworkPolicy truth tables (`data/netpol-cases.json`,
//! see `data/README.md`) through the compiler and `evaluate`: every expected
//! cell of every case must hold, self-connections excepted (upstream does not
//! judge them). No case-specific code: each case is only data.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use hostnic_core::policy::{
    ContainerPort, NetworkPolicy, PodRef, PolicyNamespace, PolicyPod, Protocol, compile,
};
use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::Value;

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

fn cases() -> Vec<Case> {
    let text = include_str!("data/netpol-cases.json");
    serde_json::from_str(text).expect("netpol-cases.json parses")
}

/// Replaces every `{"ipBlockOfPod": "ns/pod", "prefix": N}` with the CIDR string.
fn resolve_symbols(v: &mut Value, ips: &BTreeMap<String, Ipv4Addr>) {
    match v {
        Value::Object(map) => {
            if let Some(pod) = map.get("ipBlockOfPod").and_then(Value::as_str) {
                let ip = ips[pod];
                let prefix = map["prefix"].as_u64().expect("prefix") as u8;
                let net = Ipv4Net::new(ip, prefix).expect("prefix fits").trunc();
                *v = Value::String(net.to_string());
                return;
            }
            map.values_mut().for_each(|x| resolve_symbols(x, ips));
        }
        Value::Array(items) => items.iter_mut().for_each(|x| resolve_symbols(x, ips)),
        _ => {}
    }
}

#[test]
fn all_upstream_truth_tables_hold() {
    let cases = cases();
    assert_eq!(cases.len(), 26, "the shipped table has 26 cases");
    let mut judged = 0;
    let mut failures = Vec::new();
    let mut self_reports = Vec::new();
    for case in &cases {
        // Pods get addresses in 10.<namespace index>.0.<pod index + 2>: distinct
        // namespaces land in distinct /16s, so blocks of any prefix are meaningful.
        let ns_index: BTreeMap<&str, u8> = case
            .namespaces
            .keys()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as u8 + 1))
            .collect();
        let ips: BTreeMap<String, Ipv4Addr> = case
            .pods
            .keys()
            .enumerate()
            .map(|(i, key)| {
                let ns = key.split_once('/').expect("ns/pod").0;
                (key.clone(), Ipv4Addr::new(10, ns_index[ns], 0, i as u8 + 2))
            })
            .collect();
        let pods: Vec<PolicyPod> = case
            .pods
            .iter()
            .map(|(key, labels)| PolicyPod {
                pod: key.parse::<PodRef>().expect("ns/pod"),
                labels: labels.clone(),
                ip: Some(ips[key]),
                ports: case.container_ports.clone(),
            })
            .collect();
        let namespaces: Vec<PolicyNamespace> = case
            .namespaces
            .iter()
            .map(|(name, labels)| PolicyNamespace {
                name: name.clone(),
                labels: labels.clone(),
            })
            .collect();
        let policies: Vec<NetworkPolicy> = case
            .policies
            .iter()
            .map(|p| {
                let mut p = p.clone();
                resolve_symbols(&mut p, &ips);
                serde_json::from_value(p).expect("a NetworkPolicy")
            })
            .collect();
        let compiled = compile(&pods, &namespaces, &policies);

        assert_eq!(
            case.probes.len(),
            case.expected.len(),
            "{}: one matrix per probe",
            case.id
        );
        for probe in &case.probes {
            let key = format!("{}/{}", probe.port, probe.protocol);
            let matrix = case
                .expected
                .get(&key)
                .unwrap_or_else(|| panic!("{}: no matrix for {key}", case.id));
            for (from, row) in matrix {
                for (to, &want) in row {
                    let got = compiled.evaluate(ips[from], ips[to], probe.port, probe.protocol);
                    if from == to {
                        self_reports.push(format!("{} {key} {from}->{to}: {got}", case.id));
                        continue;
                    }
                    judged += 1;
                    if got != want {
                        failures.push(format!(
                            "{} [{key}] {from} -> {to}: expected {want}, got {got}",
                            case.id
                        ));
                    }
                }
            }
        }
    }
    println!("self-connections (reported, not judged):");
    for line in &self_reports {
        println!("  {line}");
    }
    // 262 = the off-diagonal cells of all matrices in the shipped table.
    assert_eq!(judged, 262, "every off-diagonal cell is judged");
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}
