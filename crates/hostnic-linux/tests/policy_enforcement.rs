//! NetworkPolicy on real packets: policies compiled by the core and rendered
//! by [`PolicyRenderer`] into a test node's `hostnic` table, probed with TCP
//! connects between pod sandboxes (see `common/policy.rs`).
//!
//! Root: `cargo test -p hostnic-linux --test policy_enforcement -- --include-ignored`.

mod common;

use std::net::Ipv4Addr;

use common::policy::{ALLOW_TIMEOUT, Node, nft, non_policy_objects, round_trip};
use hostnic_core::policy::{NetworkPolicy, compile};
use hostnic_linux::policy::{LocalPod, PolicyRenderer};
use serde_json::json;

fn policy(v: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(v).expect("a NetworkPolicy")
}

const A: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const B: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 3);
const C: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 4);
const YA: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
const YB: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 3);

#[test]
#[ignore = "needs root: cargo test -- --include-ignored"]
fn default_deny_ingress_blocks_new_connections_into_the_namespace_only() {
    let mut node = Node::new();
    node.add_pod("x/a", &[("pod", "a")], A, &[80]);
    node.add_pod("x/b", &[("pod", "b")], B, &[80]);
    node.add_pod("y/a", &[("pod", "a")], YA, &[80]);
    node.enforce(&[], &[]);
    node.assert_flows(80, &[("y/a", "x/a", true), ("x/b", "x/a", true)]);

    let deny = policy(json!({"metadata": {"name": "deny", "namespace": "x"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}));
    node.enforce(&[deny], &[]);
    node.assert_flows(
        80,
        &[
            ("y/a", "x/a", false),
            ("x/b", "x/a", false),
            ("y/a", "x/b", false),
            ("x/a", "y/a", true),
            ("x/b", "y/a", true),
        ],
    );

    // The policy deleted: everything flows again.
    node.enforce(&[], &[]);
    node.assert_flows(80, &[("y/a", "x/a", true), ("x/b", "x/a", true)]);
}

#[test]
#[ignore = "needs root: cargo test -- --include-ignored"]
fn namespace_and_pod_selector_together_allow_only_matching_pods_of_matching_namespaces() {
    let mut node = Node::new();
    node.add_pod("x/a", &[("pod", "a")], A, &[80]);
    node.add_pod("x/b", &[("pod", "b")], B, &[80]);
    node.add_pod("y/a", &[("pod", "a")], YA, &[80]);
    node.add_pod("y/b", &[("pod", "b")], YB, &[80]);
    let allow = policy(json!({"metadata": {"name": "from-y-b", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"pod": "a"}},
                 "ingress": [{"from": [{
                     "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}},
                     "podSelector": {"matchLabels": {"pod": "b"}}}]}],
                 "policyTypes": ["Ingress"]}}));
    node.enforce(std::slice::from_ref(&allow), &[]);
    node.assert_flows(
        80,
        &[
            ("y/b", "x/a", true),
            ("y/a", "x/a", false),
            ("x/b", "x/a", false),
            ("y/a", "x/b", true),
        ],
    );

    // A new pod joins the selected set: only set elements change, and it is let in.
    node.add_pod("y/c", &[("pod", "b")], Ipv4Addr::new(10, 2, 0, 4), &[80]);
    let compiled = compile(&node.policy_pods(&[]), &node.namespaces, &[allow]);
    // Render as if y/c lived on another node: x/a's chain must not change.
    let local: Vec<LocalPod> = node
        .local()
        .into_iter()
        .filter(|l| l.pod.to_string() != "y/c")
        .collect();
    let stats = node.renderer.sync_blocking(&compiled, &local).unwrap();
    assert!(stats.only_elements(), "{stats:?}");
    assert_eq!(stats.elements_added, 1, "{stats:?}");
    node.assert_flows(80, &[("y/c", "x/a", true), ("y/a", "x/a", false)]);
}

#[test]
#[ignore = "needs root: cargo test -- --include-ignored"]
fn ip_block_except_carves_a_pod_out_of_an_allowed_egress_range() {
    let mut node = Node::new();
    node.add_pod("x/a", &[("pod", "a")], A, &[80]);
    node.add_pod("x/b", &[("pod", "b")], B, &[80]);
    node.add_pod("x/c", &[("pod", "c")], C, &[80]);
    node.add_pod("y/a", &[("pod", "a")], YA, &[80]);
    let egress = policy(json!({"metadata": {"name": "cidr", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"pod": "a"}},
                 "egress": [{"to": [{"ipBlock": {"cidr": "10.1.0.0/16", "except": ["10.1.0.4/32"]}}]}],
                 "policyTypes": ["Egress"]}}));
    node.enforce(&[egress], &[]);
    node.assert_flows(
        80,
        &[
            ("x/a", "x/b", true),
            ("x/a", "x/c", false),
            ("x/a", "y/a", false),
            ("x/c", "x/b", true),
            ("y/a", "x/a", true),
        ],
    );
}

#[test]
#[ignore = "needs root: cargo test -- --include-ignored"]
fn named_ports_resolve_on_the_destination_pod() {
    let mut node = Node::new();
    node.add_pod("x/a", &[("pod", "a")], A, &[80, 81]);
    node.add_pod("y/a", &[("pod", "a")], YA, &[80, 81]);
    let ports = [(80, "serve-80-tcp"), (81, "serve-81-tcp")];
    let ingress = policy(json!({"metadata": {"name": "named-in", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-tcp"}]}],
                 "policyTypes": ["Ingress"]}}));
    node.enforce(&[ingress], &ports);
    node.assert_flows(81, &[("y/a", "x/a", true)]);
    node.assert_flows(80, &[("y/a", "x/a", false), ("x/a", "y/a", true)]);

    let egress = policy(json!({"metadata": {"name": "named-out", "namespace": "y"},
        "spec": {"podSelector": {}, "egress": [{"ports": [{"port": "serve-80-tcp"}]}],
                 "policyTypes": ["Egress"]}}));
    node.enforce(&[egress], &ports);
    node.assert_flows(80, &[("y/a", "x/a", true), ("x/a", "y/a", true)]);
    node.assert_flows(81, &[("y/a", "x/a", false), ("x/a", "y/a", true)]);
}

#[test]
#[ignore = "needs root: cargo test -- --include-ignored"]
fn established_connections_survive_a_new_deny_policy() {
    let mut node = Node::new();
    node.add_pod("x/a", &[("pod", "a")], A, &[80]);
    node.add_pod("y/a", &[("pod", "a")], YA, &[80]);
    node.enforce(&[], &[]);
    let mut open = node
        .connect("y/a", "x/a", 80, ALLOW_TIMEOUT)
        .expect("connect before the policy");
    assert!(round_trip(&mut open));

    let deny = policy(json!({"metadata": {"name": "deny", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [], "egress": [], "policyTypes": ["Ingress", "Egress"]}}));
    node.enforce(&[deny], &[]);
    assert!(
        round_trip(&mut open),
        "the established connection still carries data"
    );
    node.assert_flows(80, &[("y/a", "x/a", false), ("x/a", "y/a", false)]);
}

#[test]
#[ignore = "needs root: cargo test -- --include-ignored"]
fn nothing_outside_the_policy_objects_is_touched() {
    let mut node = Node::new();
    node.add_pod("x/a", &[("pod", "a")], A, &[80]);
    node.add_pod("y/a", &[("pod", "a")], YA, &[80]);
    // Another table, and hostnic's own SNAT objects, exist before policy is rendered.
    let foreign = json!({"nftables": [
        {"add": {"table": {"family": "ip", "name": "other"}}},
        {"add": {"chain": {"family": "ip", "table": "other", "name": "fwd", "type": "filter", "hook": "forward", "prio": 10, "policy": "accept"}}},
        {"add": {"rule": {"family": "ip", "table": "other", "chain": "fwd", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "192.0.2.1"}}, {"accept": null}]}}},
        {"add": {"table": {"family": "inet", "name": "hostnic"}}},
        {"add": {"set": {"family": "inet", "table": "hostnic", "name": "vpc", "type": "ipv4_addr", "flags": ["interval"]}}},
        {"add": {"element": {"family": "inet", "table": "hostnic", "name": "vpc", "elem": [{"prefix": {"addr": "172.20.0.0", "len": 16}}]}}},
        {"add": {"chain": {"family": "inet", "table": "hostnic", "name": "snat", "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}},
        {"add": {"rule": {"family": "inet", "table": "hostnic", "chain": "snat", "expr": [{"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "@vpc"}}, {"accept": null}]}}}
    ]});
    let path = std::env::temp_dir().join(format!("{}.json", node.name));
    std::fs::write(&path, foreign.to_string()).unwrap();
    nft(&node.name, &["-j", "-f", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    let other_before = nft(&node.name, &["list", "table", "ip", "other"]);
    let snat_before = non_policy_objects(&node.name);
    assert_eq!(
        snat_before.len(),
        4,
        "table, set, chain, rule: {snat_before:?}"
    );

    let deny = policy(json!({"metadata": {"name": "deny", "namespace": "x"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}));
    node.enforce(&[deny], &[]);
    node.assert_flows(80, &[("y/a", "x/a", false)]);
    let table = nft(&node.name, &["list", "table", "inet", "hostnic"]);
    assert!(
        table.contains("ct state established,related accept"),
        "{table}"
    );
    assert_eq!(
        other_before,
        nft(&node.name, &["list", "table", "ip", "other"])
    );
    assert_eq!(snat_before, non_policy_objects(&node.name));

    // A fresh renderer (an agent restart) replaces what it finds, then removes everything it owns.
    let mut restarted = PolicyRenderer::new(Some(node.netns.clone()), "nft");
    restarted.remove_all_blocking().unwrap();
    node.assert_flows(80, &[("y/a", "x/a", true)]);
    let table = nft(&node.name, &["list", "table", "inet", "hostnic"]);
    for gone in ["policy-forward", "policy-ingress", "pin-", "pol-"] {
        assert!(!table.contains(gone), "{gone} left behind:\n{table}");
    }
    assert_eq!(
        other_before,
        nft(&node.name, &["list", "table", "ip", "other"])
    );
    assert_eq!(snat_before, non_policy_objects(&node.name));
}

#[test]
#[ignore = "needs root: cargo test -- --include-ignored"]
fn port_ranges_protocols_and_whole_space_blocks_render_and_enforce() {
    let mut node = Node::new();
    node.add_pod("x/a", &[("pod", "a")], A, &[80, 81, 82]);
    node.add_pod("y/a", &[("pod", "a")], YA, &[80]);
    let p = policy(json!({"metadata": {"name": "mixed", "namespace": "x"},
        "spec": {"podSelector": {},
                 "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["192.0.2.0/24"]}}],
                              "ports": [{"port": 80, "endPort": 81}, {"port": 53, "protocol": "UDP"},
                                        {"protocol": "SCTP"}]}],
                 "egress": [{"to": [{"ipBlock": {"cidr": "10.2.0.0/16"}}]}]}}));
    node.enforce(&[p], &[]);
    let table = nft(&node.name, &["list", "table", "inet", "hostnic"]);
    for text in [
        "tcp dport 80-81",
        "udp dport 53",
        "meta l4proto sctp",
        "192.0.2.0/24",
    ] {
        assert!(table.contains(text), "{text} missing:\n{table}");
    }
    node.assert_flows(80, &[("y/a", "x/a", true), ("x/a", "y/a", true)]);
    node.assert_flows(81, &[("y/a", "x/a", true)]);
    node.assert_flows(82, &[("y/a", "x/a", false)]);
}
