//! A tiny node/VPC/internet topology in fresh network namespaces, for tests.
//!
//! ```text
//!   [inet]  up0 10.200.0.1/24, lo 198.51.100.7        (an internet host)
//!     |
//!   [node]  prim0 10.200.0.10/24 (MAC 52:54:00:aa:00:01), default via 10.200.0.1
//!           eth1 (MAC 52:54:00:bb:00:01)  eth2 (MAC 52:54:00:bb:00:02)   (pod NICs)
//!     |                                |
//!   [vpc]   vnic1 172.20.1.1/24         vnic2 172.20.2.1/24, lo 172.20.9.9 (the VPC
//!           router + a VPC client; static neighbours for pod IPs play the SDN)
//!   [podN]  empty sandboxes
//! ```
//! Everything is removed by `Drop`, also when a test fails.
//!
//! [`policy`] adds pod sandboxes wired like hostnic wires them and the policy
//! renderer, for the `policy_*` tests.
#![allow(dead_code)]

pub mod policy;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use hostnic_core::types::{NicId, NicPlumbing, NodePlumbing, PodKey, PodPlumbing};
use hostnic_linux::{LinuxHost, LinuxHostConfig, NetNs};

pub const PRIMARY_MAC: &str = "52:54:00:aa:00:01";
pub const PRIMARY_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 10);
pub const INTERNET_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
pub const VPC_CLIENT: Ipv4Addr = Ipv4Addr::new(172, 20, 9, 9);
pub const NIC1_MAC: &str = "52:54:00:bb:00:01";
pub const NIC2_MAC: &str = "52:54:00:bb:00:02";

#[allow(unused_imports)] // each test target uses a different part
pub use hostnic_testkit::netns::{Namespaces as NsGuard, ip, ip_json};
use hostnic_testkit::probe;

/// A unique namespace name for this process and test.
pub fn unique(role: &str) -> String {
    hostnic_testkit::netns::unique("hn", role)
}

pub struct Topology {
    pub guard: NsGuard,
    pub node: String,
    pub node_ns: NetNs,
    pub vpc: String,
    pub vpc_ns: NetNs,
    pub inet: String,
    pub inet_ns: NetNs,
}

impl Topology {
    pub fn new() -> Self {
        let mut guard = NsGuard::new("hn");
        let (node, node_ns) = guard.create_ns("node");
        let (vpc, vpc_ns) = guard.create_ns("vpc");
        let (inet, inet_ns) = guard.create_ns("inet");
        for ns in [&node, &vpc, &inet] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // Primary NIC and the internet behind it.
        ip(&[
            "-n",
            &node,
            "link",
            "add",
            "prim0",
            "address",
            PRIMARY_MAC,
            "type",
            "veth",
            "peer",
            "name",
            "up0",
            "netns",
            &inet,
        ]);
        ip(&["-n", &node, "addr", "add", "10.200.0.10/24", "dev", "prim0"]);
        ip(&["-n", &node, "link", "set", "prim0", "up"]);
        ip(&["-n", &inet, "addr", "add", "10.200.0.1/24", "dev", "up0"]);
        ip(&["-n", &inet, "link", "set", "up0", "up"]);
        ip(&["-n", &inet, "addr", "add", "198.51.100.7/32", "dev", "lo"]);
        ip(&[
            "-n",
            &node,
            "route",
            "add",
            "default",
            "via",
            "10.200.0.1",
            "dev",
            "prim0",
        ]);
        // Two pod NICs into the VPC.
        for (i, mac) in [(1, NIC1_MAC), (2, NIC2_MAC)] {
            let nic = format!("eth{i}");
            let vnic = format!("vnic{i}");
            ip(&[
                "-n", &node, "link", "add", &nic, "address", mac, "type", "veth", "peer", "name",
                &vnic, "netns", &vpc,
            ]);
            ip(&[
                "-n",
                &vpc,
                "addr",
                "add",
                &format!("172.20.{i}.1/24"),
                "dev",
                &vnic,
            ]);
            ip(&["-n", &vpc, "link", "set", &vnic, "up"]);
        }
        ip(&["-n", &vpc, "addr", "add", "172.20.9.9/32", "dev", "lo"]);
        Topology {
            guard,
            node,
            node_ns,
            vpc,
            vpc_ns,
            inet,
            inet_ns,
        }
    }

    pub fn node_path(&self) -> String {
        format!("/run/netns/{}", self.node)
    }

    pub fn config(&self) -> LinuxHostConfig {
        LinuxHostConfig {
            host_netns: Some(self.node_path().into()),
            ..Default::default()
        }
    }

    pub async fn host(&self) -> LinuxHost {
        LinuxHost::new(self.config()).await.expect("LinuxHost")
    }

    pub fn node_plumbing(&self) -> NodePlumbing {
        NodePlumbing {
            primary_nic: NicId::new(PRIMARY_MAC).unwrap(),
            primary_ip: PRIMARY_IP,
            vpc_cidrs: vec!["172.20.0.0/16".parse().unwrap()],
            snat_exclusions: vec![],
            external_snat: false,
        }
    }

    /// NIC `i` (1 or 2) as the core would describe it.
    pub fn nic(&self, i: u8, ip: Ipv4Addr) -> NicPlumbing {
        NicPlumbing {
            nic: NicId::new(if i == 1 { NIC1_MAC } else { NIC2_MAC }).unwrap(),
            ip,
            cidr: format!("172.20.{i}.0/24").parse().unwrap(),
            gateway: Ipv4Addr::new(172, 20, i, 1),
            table: 1000 + u32::from(i),
        }
    }

    /// The VPC side learns where a pod address lives (the cloud SDN's job).
    pub fn vpc_knows_pod(&self, i: u8, ip: Ipv4Addr) {
        let mac = if i == 1 { NIC1_MAC } else { NIC2_MAC };
        ip_cmd_neigh(&self.vpc, &format!("vnic{i}"), ip, mac);
    }

    /// A fresh sandbox and the plumbing request for it.
    pub fn pod(&mut self, name: &str, nic: NicPlumbing) -> PodPlumbing {
        let (ns, _) = self.guard.create_ns("pod");
        PodPlumbing {
            pod: PodKey {
                namespace: "default".into(),
                name: format!("{name}-{ns}"),
                container_id: format!("cid-{ns}"),
                ifname: "eth0".into(),
            },
            netns: format!("/run/netns/{ns}"),
            nic,
        }
    }
}

fn ip_cmd_neigh(ns: &str, dev: &str, addr: Ipv4Addr, mac: &str) {
    ip(&[
        "-n",
        ns,
        "neigh",
        "replace",
        &addr.to_string(),
        "lladdr",
        mac,
        "dev",
        dev,
        "nud",
        "permanent",
    ]);
}

/// A TCP listener bound inside `ns`.
pub fn listen(ns: &NetNs, addr: Ipv4Addr) -> TcpListener {
    probe::listen_in(ns, SocketAddr::from((addr, 0))).expect("bind in the namespace")
}

/// Connects from inside `ns` to `listener` at `to`, sends a line, and returns the
/// peer address the listener saw (what the receiving side sees as the source).
pub fn tcp_roundtrip(from: &NetNs, listener: &TcpListener, to: Ipv4Addr) -> Ipv4Addr {
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let target = SocketAddr::from((to, port));
    let mut stream = probe::connect_from(from, target, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {target}: {e}"));
    stream.write_all(b"hostnic\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut accepted, peer) = loop {
        match listener.accept() {
            Ok(x) => break x,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("accept on {target}: {e}"),
        }
    };
    accepted.set_nonblocking(false).unwrap();
    accepted
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 8];
    accepted.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hostnic\n");
    match peer.ip() {
        std::net::IpAddr::V4(v) => v,
        other => panic!("unexpected peer {other}"),
    }
}

/// Packets received by `dev` in namespace `ns` (from `ip -s -j link`).
pub fn rx_packets(ns: &str, dev: &str) -> u64 {
    let out = ip(&["-n", ns, "-s", "-j", "link", "show", "dev", dev]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .expect("rx packets")
}
