//! NetworkPolicy on the real hostnic datapath: pods plumbed by [`LinuxHost`]
//! onto their own NICs, the node's `hostnic` table with VPC marking and SNAT
//! from `ensure_node`, and the policy renderer adding its chains to that same
//! table. Traffic crosses the NICs to a VPC client and the primary NIC to an
//! internet host (see `common/mod.rs` for the topology).
//!
//! Root: `cargo test -p hostnic-linux --test policy_datapath -- --include-ignored`.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use hostnic_core::policy::{NetworkPolicy, PodRef, PolicyNamespace, PolicyPod, compile};
use hostnic_core::ports::HostNetwork;
use hostnic_linux::NetNs;
use hostnic_linux::policy::{LocalPod, PolicyRenderer};
use hostnic_testkit::probe;
use serde_json::json;

/// True when a TCP connection from inside `from` to `to:port` completes in time.
fn connects(from: &NetNs, to: Ipv4Addr, port: u16) -> bool {
    probe::connects(
        from,
        SocketAddr::from((to, port)),
        Duration::from_millis(700),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn policy_chains_coexist_with_snat_and_filter_traffic_through_the_nics() {
    let mut topo = Topology::new();
    let host = topo.host().await;
    host.ensure_node(&topo.node_plumbing()).await.unwrap();
    let (ip1, ip2) = (Ipv4Addr::new(172, 20, 1, 5), Ipv4Addr::new(172, 20, 2, 5));
    let (nic1, nic2) = (topo.nic(1, ip1), topo.nic(2, ip2));
    host.prepare_nic(&nic1).await.unwrap();
    host.prepare_nic(&nic2).await.unwrap();
    let req1 = topo.pod("a", nic1);
    let req2 = topo.pod("b", nic2);
    let p1 = host.plumb_pod(&req1).await.unwrap();
    let p2 = host.plumb_pod(&req2).await.unwrap();
    topo.vpc_knows_pod(1, ip1);
    topo.vpc_knows_pod(2, ip2);
    let ns1 = NetNs::open(&req1.netns).unwrap();
    let ns2 = NetNs::open(&req2.netns).unwrap();

    let key = |req: &hostnic_core::types::PodPlumbing| {
        PodRef::new(req.pod.namespace.clone(), req.pod.name.clone())
    };
    let pods = vec![
        PolicyPod {
            pod: key(&req1),
            labels: [("app".to_string(), "web".to_string())].into(),
            ip: Some(ip1),
            ports: Vec::new(),
        },
        PolicyPod {
            pod: key(&req2),
            labels: [("app".to_string(), "client".to_string())].into(),
            ip: Some(ip2),
            ports: Vec::new(),
        },
    ];
    let local = vec![
        LocalPod {
            pod: key(&req1),
            veth: p1.host_veth.clone(),
        },
        LocalPod {
            pod: key(&req2),
            veth: p2.host_veth.clone(),
        },
    ];
    let namespaces = [PolicyNamespace::named("default")];
    // The web pod accepts connections from the VPC except the client pod's
    // subnet, and may open connections into the VPC only.
    let web: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                 "ingress": [{"from": [{"ipBlock": {"cidr": "172.20.0.0/16", "except": ["172.20.2.0/24"]}}]}],
                 "egress": [{"to": [{"ipBlock": {"cidr": "172.20.0.0/16"}}]}]}
    }))
    .unwrap();
    let snat_before = nft_listing(&topo.node, "snat");

    let mut renderer = PolicyRenderer::new(Some(topo.node_ns.clone()), "nft");
    renderer
        .sync(&compile(&pods, &namespaces, &[web]), &local)
        .await
        .unwrap();

    // VPC → web pod (arrives through NIC 1, from the VPC router's address on
    // that subnet): allowed by the ip block.
    let on_web = listen(&ns1, ip1);
    let seen = tcp_roundtrip(&topo.vpc_ns, &on_web, ip1);
    assert!(seen.octets()[..2] == [172, 20] && seen != ip2, "{seen}");
    // client pod → web pod on the same node: excepted from the block.
    let port = on_web.local_addr().unwrap().port();
    assert!(!connects(&ns2, ip1, port), "same-node pod must be denied");
    // web pod → VPC client: egress allowed, and its replies come back.
    let in_vpc = listen(&topo.vpc_ns, VPC_CLIENT);
    assert_eq!(tcp_roundtrip(&ns1, &in_vpc, VPC_CLIENT), ip1);
    // web pod → internet: egress denied before SNAT ever sees it.
    let on_inet = listen(&topo.inet_ns, INTERNET_HOST);
    let inet_port = on_inet.local_addr().unwrap().port();
    assert!(
        !connects(&ns1, INTERNET_HOST, inet_port),
        "web egress to the internet must be denied"
    );
    // The unselected client pod still reaches the internet, SNATed to the node.
    assert_eq!(tcp_roundtrip(&ns2, &on_inet, INTERNET_HOST), PRIMARY_IP);
    assert_eq!(
        snat_before,
        nft_listing(&topo.node, "snat"),
        "SNAT chain untouched"
    );

    // Policies gone: the same-node connection works again.
    renderer
        .sync(&compile(&pods, &namespaces, &[]), &local)
        .await
        .unwrap();
    assert_eq!(tcp_roundtrip(&ns2, &on_web, ip1), ip2);
    assert_eq!(tcp_roundtrip(&ns1, &on_inet, INTERNET_HOST), PRIMARY_IP);
}

/// The rules of chain `chain` of table `inet hostnic`, as JSON text.
fn nft_listing(ns: &str, chain: &str) -> String {
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", ns, "nft", "-j", "list", "table", "inet", "hostnic",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rules: Vec<&serde_json::Value> = v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["rule"]["chain"] == chain)
        .collect();
    assert!(!rules.is_empty(), "chain {chain} has rules");
    serde_json::to_string(&rules).unwrap()
}
