//! The 26 upstream NetworkPolicy truth tables (the core's
//! `tests/data/netpol-cases.json`, see the README there) on real packets: per
//! case, one test node with every pod as a local sandbox listening on the
//! case's container ports, the policies compiled by the core and rendered into
//! the node's `hostnic` table, and a TCP connect for every probe and ordered
//! pair. Self-connections are reported, not judged (as upstream).
//!
//! Root: `cargo test -p hostnic-linux --test policy_truth_tables -- --include-ignored`.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use common::policy::{ALLOW_TIMEOUT, Node};
use hostnic_core::policy::Protocol;
use hostnic_core::policy::cases::parse_cases;

/// A connect probe of a denied flow waits this long before calling it blocked
/// (upstream uses ~1 s); allowed flows between local sandboxes answer at once.
const DENY_WAIT: std::time::Duration = std::time::Duration::from_millis(1000);

#[test]
#[ignore = "needs root: cargo test -- --include-ignored"]
fn all_upstream_truth_tables_hold_on_real_packets() {
    let cases = parse_cases(include_str!(
        "../../hostnic-core/tests/data/netpol-cases.json"
    ))
    .expect("netpol-cases.json parses");
    assert_eq!(cases.len(), 26);
    let mut failures = Vec::new();
    let mut judged = 0;
    for case in &cases {
        let mut node = Node::new();
        node.namespaces = case.policy_namespaces();
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
        let policies = case.policies(&ips).expect("the case's policies");
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
            let key = probe.key();
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
