//! NetworkPolicy on real packets: a "node" namespace with pod sandboxes wired
//! like hostnic wires them (veth, `<podIP>/32` routes, a permanent neighbour for
//! 169.254.1.1), policies compiled by the core and rendered by
//! [`PolicyRenderer`] into the node's `hostnic` table, and TCP connects between
//! the sandboxes. Every namespace is created fresh and removed on drop.
//!
//! Root: `cargo test -p hostnic-linux --test policy_enforcement -- --include-ignored`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hostnic_core::policy::{
    CompiledPolicy, ContainerPort, NetworkPolicy, PodRef, PolicyNamespace, PolicyPod, Protocol,
    compile,
};
use hostnic_linux::NetNs;
use hostnic_linux::policy::{LocalPod, PolicyRenderer};
use serde_json::json;

const ALLOW_TIMEOUT: Duration = Duration::from_secs(3);
const DENY_TIMEOUT: Duration = Duration::from_millis(600);

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn nft(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args)
        .output()
        .expect("run nft");
    assert!(
        out.status.success(),
        "nft {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct TestPod {
    netns: NetNs,
    ip: Ipv4Addr,
    veth: String,
    labels: BTreeMap<String, String>,
}

/// One node namespace and pod sandboxes; all namespaces removed on drop.
struct Node {
    name: String,
    netns: NetNs,
    pods: BTreeMap<PodRef, TestPod>,
    namespaces: Vec<PolicyNamespace>,
    created: Vec<String>,
    renderer: PolicyRenderer,
}

impl Node {
    fn new() -> Self {
        let id = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("hnpol-{}-{id}-node", std::process::id());
        let netns = NetNs::create_named(&name).expect("create node namespace");
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &name,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])
            .status()
            .expect("sysctl");
        assert!(out.success());
        let renderer = PolicyRenderer::new(Some(netns.clone()), "nft");
        Self {
            created: vec![name.clone()],
            name,
            netns,
            pods: BTreeMap::new(),
            namespaces: ["x", "y", "z"]
                .into_iter()
                .map(PolicyNamespace::named)
                .collect(),
            renderer,
        }
    }

    /// A sandbox for `ns/name` with `ip`, wired into the node, listening on `ports`.
    fn add_pod(&mut self, key: &str, labels: &[(&str, &str)], ip_addr: Ipv4Addr, ports: &[u16]) {
        let pod: PodRef = key.parse().unwrap();
        let index = self.created.len();
        let ns_name = format!("{}-p{index}", self.name.trim_end_matches("-node"));
        let netns = NetNs::create_named(&ns_name).expect("create pod namespace");
        self.created.push(ns_name.clone());
        let veth = format!("nicp{index:010x}");
        ip(&[
            "-n", &self.name, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
            "netns", &ns_name,
        ]);
        ip(&["-n", &self.name, "link", "set", &veth, "up"]);
        // The host veth's MAC, for the sandbox's permanent 169.254.1.1 neighbour.
        let out = Command::new("ip")
            .args(["-n", &self.name, "-o", "link", "show", &veth])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mac = text
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .expect("veth MAC")
            .to_string();
        let addr = format!("{ip_addr}/32");
        ip(&["-n", &ns_name, "link", "set", "lo", "up"]);
        ip(&["-n", &ns_name, "addr", "add", &addr, "dev", "eth0"]);
        ip(&["-n", &ns_name, "link", "set", "eth0", "up"]);
        ip(&[
            "-n",
            &ns_name,
            "route",
            "add",
            "169.254.1.1",
            "dev",
            "eth0",
            "scope",
            "link",
        ]);
        ip(&[
            "-n",
            &ns_name,
            "route",
            "add",
            "default",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
        ]);
        ip(&[
            "-n",
            &ns_name,
            "neigh",
            "add",
            "169.254.1.1",
            "lladdr",
            &mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]);
        ip(&[
            "-n", &self.name, "route", "add", &addr, "dev", &veth, "scope", "link",
        ]);
        for &port in ports {
            let listener = netns
                .run_blocking(move || TcpListener::bind((ip_addr, port)))
                .expect("enter pod namespace")
                .expect("bind listener");
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    std::thread::spawn(move || echo(stream));
                }
            });
        }
        self.pods.insert(
            pod,
            TestPod {
                netns,
                ip: ip_addr,
                veth,
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        );
    }

    fn policy_pods(&self, ports: &[(u16, &str)]) -> Vec<PolicyPod> {
        self.pods
            .iter()
            .map(|(key, p)| PolicyPod {
                pod: key.clone(),
                labels: p.labels.clone(),
                ip: Some(p.ip),
                ports: ports
                    .iter()
                    .map(|(port, name)| ContainerPort {
                        name: Some(name.to_string()),
                        container_port: *port,
                        protocol: Protocol::Tcp,
                    })
                    .collect(),
            })
            .collect()
    }

    fn local(&self) -> Vec<LocalPod> {
        self.pods
            .iter()
            .map(|(key, p)| LocalPod {
                pod: key.clone(),
                veth: p.veth.clone(),
            })
            .collect()
    }

    /// Compiles `policies` over this node's pods and programs the result.
    fn enforce(&mut self, policies: &[NetworkPolicy], ports: &[(u16, &str)]) -> CompiledPolicy {
        let compiled = compile(&self.policy_pods(ports), &self.namespaces, policies);
        let local = self.local();
        self.renderer
            .sync_blocking(&compiled, &local)
            .expect("policy sync");
        compiled
    }

    fn connect(&self, from: &str, to: &str, port: u16, timeout: Duration) -> Option<TcpStream> {
        let src = &self.pods[&from.parse::<PodRef>().unwrap()];
        let dst = SocketAddr::from((self.pods[&to.parse::<PodRef>().unwrap()].ip, port));
        let stream = src
            .netns
            .run_blocking(move || TcpStream::connect_timeout(&dst, timeout))
            .expect("enter pod namespace")
            .ok()?;
        Some(stream)
    }

    /// True when `from` can open a TCP connection to `to:port` and exchange
    /// data. A denied SYN is dropped, so `timeout` bounds the wait; an allowed
    /// connection on this node answers within microseconds.
    fn can_connect(&self, from: &str, to: &str, port: u16, timeout: Duration) -> bool {
        match self.connect(from, to, port, timeout) {
            Some(mut s) => round_trip(&mut s),
            None => false,
        }
    }

    fn assert_flows(&self, port: u16, expected: &[(&str, &str, bool)]) {
        let mut wrong = Vec::new();
        for &(from, to, want) in expected {
            let timeout = if want { ALLOW_TIMEOUT } else { DENY_TIMEOUT };
            let got = self.can_connect(from, to, port, timeout);
            if got != want {
                wrong.push(format!("{from} -> {to}:{port}: expected {want}, got {got}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "{}\n{}",
            wrong.join("\n"),
            nft(&self.name, &["list", "table", "inet", "hostnic"])
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for name in self.created.drain(..).rev() {
            if let Err(e) = NetNs::delete_named(&name) {
                eprintln!("cleanup of namespace {name} failed: {e}");
            }
        }
    }
}

fn echo(mut stream: TcpStream) {
    let mut buf = [0u8; 64];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 || stream.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

fn round_trip(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(ALLOW_TIMEOUT)).unwrap();
    let mut buf = [0u8; 4];
    stream.write_all(b"ping").is_ok() && stream.read_exact(&mut buf).is_ok() && &buf == b"ping"
}

/// Every object of table `inet hostnic` that the policy renderer does not own, as JSON.
fn non_policy_objects(ns: &str) -> Vec<serde_json::Value> {
    let listing: serde_json::Value =
        serde_json::from_str(&nft(ns, &["-j", "list", "table", "inet", "hostnic"])).unwrap();
    listing["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| !item.get("metainfo").is_some())
        .filter(|item| {
            let (kind, body) = item.as_object().unwrap().iter().next().unwrap();
            let name = match kind.as_str() {
                "rule" => body["chain"].as_str(),
                _ => body["name"].as_str(),
            }
            .unwrap_or_default();
            !(name.starts_with("pol") || name.starts_with("pin-") || name.starts_with("pout-"))
        })
        .cloned()
        .collect()
}

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
