//! Shared by the `policy_*` root tests: a "node" namespace with pod sandboxes
//! wired like hostnic wires them (veth, `<podIP>/32` routes, a permanent
//! neighbour for 169.254.1.1), a [`PolicyRenderer`] programming the node's
//! `hostnic` table, and TCP probes between sandboxes. Every namespace is
//! created fresh and removed on drop.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use hostnic_core::policy::{
    CompiledPolicy, ContainerPort, NetworkPolicy, PodRef, PolicyNamespace, PolicyPod, Protocol,
    compile,
};
use hostnic_linux::NetNs;
use hostnic_linux::policy::{LocalPod, PolicyRenderer};

use hostnic_testkit::probe;

use super::{NsGuard, ip};

pub const ALLOW_TIMEOUT: Duration = Duration::from_secs(3);
pub const DENY_TIMEOUT: Duration = Duration::from_millis(600);

pub fn nft(ns: &str, args: &[&str]) -> String {
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

pub struct TestPod {
    pub netns: NetNs,
    pub ip: Ipv4Addr,
    pub veth: String,
    pub labels: BTreeMap<String, String>,
}

/// One node namespace and pod sandboxes; all namespaces removed on drop.
pub struct Node {
    pub name: String,
    pub netns: NetNs,
    pub pods: BTreeMap<PodRef, TestPod>,
    pub namespaces: Vec<PolicyNamespace>,
    pub renderer: PolicyRenderer,
    guard: NsGuard,
}

impl Node {
    pub fn new() -> Self {
        let mut guard = NsGuard::new("hn");
        let (name, netns) = guard.create_ns("node");
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
            guard,
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
    pub fn add_pod(
        &mut self,
        key: &str,
        labels: &[(&str, &str)],
        ip_addr: Ipv4Addr,
        ports: &[u16],
    ) {
        let pod: PodRef = key.parse().unwrap();
        let index = self.pods.len();
        let (ns_name, netns) = self.guard.create_ns("pod");
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
            let listener = probe::listen_in(&netns, SocketAddr::from((ip_addr, port)))
                .expect("bind listener in the pod namespace");
            probe::serve_echo(listener);
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

    pub fn policy_pods(&self, ports: &[(u16, &str)]) -> Vec<PolicyPod> {
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

    pub fn local(&self) -> Vec<LocalPod> {
        self.pods
            .iter()
            .map(|(key, p)| LocalPod {
                pod: key.clone(),
                veth: p.veth.clone(),
            })
            .collect()
    }

    /// Compiles `policies` over this node's pods and programs the result.
    pub fn enforce(&mut self, policies: &[NetworkPolicy], ports: &[(u16, &str)]) -> CompiledPolicy {
        let compiled = compile(&self.policy_pods(ports), &self.namespaces, policies);
        let local = self.local();
        self.renderer
            .sync_blocking(&compiled, &local)
            .expect("policy sync");
        compiled
    }

    pub fn connect(&self, from: &str, to: &str, port: u16, timeout: Duration) -> Option<TcpStream> {
        let src = &self.pods[&from.parse::<PodRef>().unwrap()];
        let dst = SocketAddr::from((self.pods[&to.parse::<PodRef>().unwrap()].ip, port));
        probe::connect_from(&src.netns, dst, timeout).ok()
    }

    /// True when `from` can open a TCP connection to `to:port` and exchange
    /// data. A denied SYN is dropped, so `timeout` bounds the wait; an allowed
    /// connection on this node answers within microseconds.
    pub fn can_connect(&self, from: &str, to: &str, port: u16, timeout: Duration) -> bool {
        match self.connect(from, to, port, timeout) {
            Some(mut s) => round_trip(&mut s),
            None => false,
        }
    }

    pub fn assert_flows(&self, port: u16, expected: &[(&str, &str, bool)]) {
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

/// True when `stream` echoes within [`ALLOW_TIMEOUT`].
pub fn round_trip(stream: &mut TcpStream) -> bool {
    probe::round_trip(stream, ALLOW_TIMEOUT)
}

/// Every object of table `inet hostnic` that the policy renderer does not own, as JSON.
pub fn non_policy_objects(ns: &str) -> Vec<serde_json::Value> {
    let listing: serde_json::Value =
        serde_json::from_str(&nft(ns, &["-j", "list", "table", "inet", "hostnic"])).unwrap();
    listing["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item.get("metainfo").is_none())
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
