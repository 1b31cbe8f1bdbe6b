//! The datapath in real network namespaces, proven with real packets.
//! Needs root: `cargo test -p hostnic-linux -- --include-ignored`.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use hostnic_core::ports::{HostErrorKind, HostNetwork};
use hostnic_core::types::{NicId, NicPlumbing, PlumbedPod, PodPlumbing};
use hostnic_linux::{LinkEvent, NetNs};
use hostnic_testkit::probe;

const ROOT: &str = "needs root: cargo test -- --include-ignored";

fn ifindex(ns: &str, dev: &str) -> u32 {
    ip_json(ns, &["link", "show", "dev", dev])[0]["ifindex"]
        .as_u64()
        .unwrap() as u32
}

fn pod_ip(i: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 20, i, host)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn pod_traffic_takes_the_documented_paths() {
    let _ = ROOT;
    let mut topo = Topology::new();
    let host = topo.host().await;
    let report = host.ensure_node(&topo.node_plumbing()).await.unwrap();
    assert!(!report.default_route_restored, "the default route was fine");
    let (ip1, ip2) = (pod_ip(1, 5), pod_ip(2, 5));
    let (nic1, nic2) = (topo.nic(1, ip1), topo.nic(2, ip2));
    host.prepare_nic(&nic1).await.unwrap();
    host.prepare_nic(&nic2).await.unwrap();
    let req1 = topo.pod("a", nic1);
    let req2 = topo.pod("b", nic2);
    let p1 = host.plumb_pod(&req1).await.unwrap();
    let p2 = host.plumb_pod(&req2).await.unwrap();
    assert_eq!((p2.ip, p2.table), (ip2, 1002));
    assert_eq!((p1.ip, p1.table), (ip1, 1001));
    // The MACs ADD reports (from the kernel's echo and the one it chose for the
    // sandbox end) are the links' own.
    let mac = |ns: &str, dev: &str| {
        let a = ip_json(ns, &["link", "show", "dev", dev])[0]["address"]
            .as_str()
            .unwrap()
            .to_string();
        NicId::new(&a).unwrap()
    };
    let sandbox1 = req1.netns.trim_start_matches("/run/netns/");
    assert_eq!(
        Some(mac(sandbox1, "eth0")),
        p1.sandbox_mac.map(NicId::from_mac)
    );
    assert_eq!(
        Some(mac(&topo.node, &p1.host_veth)),
        p1.host_mac.map(NicId::from_mac)
    );
    topo.vpc_knows_pod(1, ip1);
    topo.vpc_knows_pod(2, ip2);
    let ns1 = NetNs::open(&req1.netns).unwrap();
    let ns2 = NetNs::open(&req2.netns).unwrap();

    // pod → other pod on the same node: straight through the host, no NAT.
    let l = listen(&ns2, ip2);
    assert_eq!(tcp_roundtrip(&ns1, &l, ip2), ip1);

    // pod → VPC address: the kernel's lookup picks the pod's NIC, and a real
    // connection arrives on the VPC end of that NIC with the pod's own address.
    let veth1 = ifindex(&topo.node, &p1.host_veth);
    let (oif, gw) = host
        .route_get(VPC_CLIENT, ip1, veth1, Some(host.config().vpc_mark))
        .await
        .unwrap();
    assert_eq!(oif, Some(ifindex(&topo.node, "eth1")));
    assert_eq!(gw, Some(Ipv4Addr::new(172, 20, 1, 1)));
    let before = rx_packets(&topo.vpc, "vnic1");
    let l = listen(&topo.vpc_ns, VPC_CLIENT);
    assert_eq!(tcp_roundtrip(&ns1, &l, VPC_CLIENT), ip1);
    let after = rx_packets(&topo.vpc, "vnic1");
    assert!(
        after >= before + 3,
        "the handshake entered the VPC through NIC 1 ({before} → {after})"
    );

    // VPC → pod: arrives on the NIC, routed into the veth by the /32.
    let l = listen(&ns1, ip1);
    assert_eq!(
        tcp_roundtrip(&topo.vpc_ns, &l, ip1),
        Ipv4Addr::new(172, 20, 1, 1)
    );

    // pod → outside the VPC: main table, primary NIC, SNAT to the node's address.
    let (oif, _) = host
        .route_get(INTERNET_HOST, ip1, veth1, None)
        .await
        .unwrap();
    assert_eq!(oif, Some(ifindex(&topo.node, "prim0")));
    let l = listen(&topo.inet_ns, INTERNET_HOST);
    assert_eq!(tcp_roundtrip(&ns1, &l, INTERNET_HOST), PRIMARY_IP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn add_check_del_are_idempotent() {
    let mut topo = Topology::new();
    let host = topo.host().await;
    let nic = topo.nic(1, pod_ip(1, 7));
    host.prepare_nic(&nic).await.unwrap();
    let req = topo.pod("idem", nic);
    let first = host.plumb_pod(&req).await.unwrap();
    let second = host.plumb_pod(&req).await.unwrap();
    assert_eq!(
        first, second,
        "a repeated ADD converges on the same plumbing"
    );
    host.verify_pod(&req, &first).await.unwrap();

    // CHECK names what is missing.
    ip(&[
        "-n",
        &topo.node,
        "rule",
        "del",
        "priority",
        "512",
        "to",
        "172.20.1.7",
    ]);
    let ns = NetNs::open(&req.netns).unwrap();
    let pod_ns_name = req.netns.trim_start_matches("/run/netns/").to_string();
    ip(&["-n", &pod_ns_name, "route", "del", "default"]);
    let err = host.verify_pod(&req, &first).await.unwrap_err();
    assert_eq!(err.kind, HostErrorKind::Mismatch);
    assert!(
        err.message.contains("rule 512: to 172.20.1.7 lookup 254"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("default via 169.254.1.1"),
        "{}",
        err.message
    );
    drop(ns);
    // ADD again repairs it.
    host.plumb_pod(&req).await.unwrap();
    host.verify_pod(&req, &first).await.unwrap();

    host.unplumb_pod(&first, Some(&req.netns)).await.unwrap();
    host.unplumb_pod(&first, Some(&req.netns)).await.unwrap();
    let inv = host.inventory().await.unwrap();
    assert!(inv.pods.is_empty(), "{inv:?}");
    let rules = ip(&["-n", &topo.node, "rule", "show"]);
    assert!(!rules.contains("172.20.1.7"), "{rules}");
    let err = host.verify_pod(&req, &first).await.unwrap_err();
    assert!(
        err.message
            .contains(&format!("host veth {}", first.host_veth)),
        "{}",
        err.message
    );
}

/// A host whose reaper waits `quiet` after the last ADD/DEL, at most `max_delay`.
async fn host_reaping(
    config: &hostnic_linux::LinuxHostConfig,
    quiet: Duration,
    max_delay: Duration,
) -> hostnic_linux::LinuxHost {
    hostnic_linux::LinuxHost::new(hostnic_linux::LinuxHostConfig {
        reap: hostnic_linux::ReapTiming { quiet, max_delay },
        ..config.clone()
    })
    .await
    .unwrap()
}

/// The link `dev` in `ns`, from `ip -j link show` (None when it does not exist).
fn link(ns: &str, dev: &str) -> Option<serde_json::Value> {
    ip_json(ns, &["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["ifname"] == dev)
        .cloned()
}

fn link_names(ns: &str) -> Vec<String> {
    ip_json(ns, &["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn del_cuts_the_pod_off_at_once_and_reaps_its_veth_in_a_batch_when_quiet() {
    let mut topo = Topology::new();
    let host = host_reaping(
        &topo.config(),
        Duration::from_millis(500),
        Duration::from_secs(30),
    )
    .await;
    host.ensure_node(&topo.node_plumbing()).await.unwrap();
    let (ip_a, ip_b) = (pod_ip(1, 30), pod_ip(1, 31));
    host.prepare_nic(&topo.nic(1, ip_a)).await.unwrap();
    let req_a = topo.pod("reap-a", topo.nic(1, ip_a));
    let req_b = topo.pod("reap-b", topo.nic(1, ip_b));
    let a = host.plumb_pod(&req_a).await.unwrap();
    let b = host.plumb_pod(&req_b).await.unwrap();
    topo.vpc_knows_pod(1, ip_a);
    let ns_a = NetNs::open(&req_a.netns).unwrap();
    let l = listen(&ns_a, ip_a);
    let port = l.local_addr().unwrap().port();
    tcp_roundtrip(&topo.vpc_ns, &l, ip_a);

    // Both sandboxes outlive DEL (as with `podman network disconnect`).
    host.unplumb_pod(&a, Some(&req_a.netns)).await.unwrap();
    host.unplumb_pod(&b, Some(&req_b.netns)).await.unwrap();

    // When DEL answers the pod is cut off: no rule, no route, its veth down in the
    // dead group, not listed as a pod, and no packet reaches it.
    let rules = ip(&["-n", &topo.node, "rule", "show"]);
    assert!(
        !rules.contains("172.20.1.30") && !rules.contains("172.20.1.31"),
        "{rules}"
    );
    let routes = ip(&["-n", &topo.node, "route", "show", "table", "all"]);
    assert!(!routes.contains("172.20.1.30"), "{routes}");
    let dead = link(&topo.node, &a.host_veth).expect("the veth waits for the reaper");
    let flags = dead["flags"].to_string();
    assert!(!flags.contains("\"UP\""), "veth still up: {dead}");
    assert_eq!(
        dead["group"].as_str(),
        Some(host.config().dead_veth_group.to_string().as_str()),
        "{dead}"
    );
    assert!(host.inventory().await.unwrap().pods.is_empty());
    let target = std::net::SocketAddr::from((ip_a, port));
    let refused = probe::connect_from(&topo.vpc_ns, target, Duration::from_millis(500));
    assert!(refused.is_err(), "the deleted pod still answers");

    // Once the node is quiet, the reaper deletes both pairs (one group deletion).
    let mut left = Vec::new();
    for _ in 0..100 {
        left = [&a.host_veth, &b.host_veth]
            .into_iter()
            .filter(|v| link(&topo.node, v).is_some())
            .cloned()
            .collect();
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(left.is_empty(), "not reaped: {left:?}");
    let sandbox = req_a.netns.trim_start_matches("/run/netns/");
    assert_eq!(
        link_names(sandbox),
        ["lo"],
        "the sandbox end goes with the pair"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn a_pod_back_before_its_old_veth_is_reaped_gets_its_veth_and_settle_reaps() {
    let mut topo = Topology::new();
    let never = Duration::from_secs(600);
    let host = host_reaping(&topo.config(), never, never).await;
    let ip_a = pod_ip(1, 32);
    let nic = topo.nic(1, ip_a);
    host.prepare_nic(&nic).await.unwrap();
    let old = topo.pod("back", nic.clone());
    let plumbed = host.plumb_pod(&old).await.unwrap();
    host.unplumb_pod(&plumbed, Some(&old.netns)).await.unwrap();
    assert!(link(&topo.node, &plumbed.host_veth).is_some());

    // Same pod, new sandbox: the parked veth holds the name; ADD reaps it first.
    let mut new = topo.pod("back", nic.clone());
    new.pod.name = old.pod.name.clone();
    let replumbed = host.plumb_pod(&new).await.unwrap();
    assert_eq!(replumbed.host_veth, plumbed.host_veth);
    host.verify_pod(&new, &replumbed).await.unwrap();
    let old_sandbox = old.netns.trim_start_matches("/run/netns/");
    assert_eq!(link_names(old_sandbox), ["lo"], "the old pair was reaped");

    // settle() reaps what is parked, at once.
    host.unplumb_pod(&replumbed, Some(&new.netns))
        .await
        .unwrap();
    assert!(link(&topo.node, &replumbed.host_veth).is_some());
    host.settle().await.unwrap();
    assert!(link(&topo.node, &replumbed.host_veth).is_none());
    // Nothing parked: settle is a no-op, not an error.
    host.settle().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn veths_parked_before_a_crash_are_reaped_by_the_next_start() {
    let mut topo = Topology::new();
    let config = topo.config();
    let never = Duration::from_secs(600);
    let first = host_reaping(&config, never, never).await;
    let ip_a = pod_ip(1, 33);
    let req = topo.pod("crash", topo.nic(1, ip_a));
    first.prepare_nic(&req.nic).await.unwrap();
    let plumbed = first.plumb_pod(&req).await.unwrap();
    first.unplumb_pod(&plumbed, Some(&req.netns)).await.unwrap();
    // The agent dies with the veth parked (its reaper goes with it).
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(link(&topo.node, &plumbed.host_veth).is_some());

    let second = host_reaping(&config, Duration::from_millis(200), never).await;
    let mut gone = false;
    for _ in 0..100 {
        if link(&topo.node, &plumbed.host_veth).is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gone,
        "the first reaping after start-up deletes what a crash left"
    );
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn del_succeeds_when_the_sandbox_is_gone() {
    let mut topo = Topology::new();
    let host = topo.host().await;
    let nic = topo.nic(1, pod_ip(1, 8));
    host.prepare_nic(&nic).await.unwrap();
    let req = topo.pod("gone", nic.clone());
    let plumbed = host.plumb_pod(&req).await.unwrap();
    let name = req.netns.trim_start_matches("/run/netns/").to_string();
    NetNs::delete_named(&name).unwrap();
    host.unplumb_pod(&plumbed, Some(&req.netns)).await.unwrap();
    host.unplumb_pod(&plumbed, None).await.unwrap();
    host.unplumb_pod(&plumbed, Some("")).await.unwrap();
    let rules = ip(&["-n", &topo.node, "rule", "show"]);
    assert!(!rules.contains("172.20.1.8"), "{rules}");
    // The host veth goes with the sandbox (the kernel frees it asynchronously).
    let mut gone = false;
    // Namespace teardown is deferred work in the kernel: allow it up to 20 s on a busy machine.
    for _ in 0..2000 {
        if host.inventory().await.unwrap().pods.is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gone, "host veth still listed");
    // ADD into a namespace that does not exist is NotFound, not a panic.
    let err = host.plumb_pod(&req).await.unwrap_err();
    assert_eq!(err.kind, HostErrorKind::NotFound, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn concurrent_adds_on_different_pods() {
    let mut topo = Topology::new();
    let host = topo.host().await;
    host.ensure_node(&topo.node_plumbing()).await.unwrap();
    host.prepare_nic(&topo.nic(1, pod_ip(1, 20))).await.unwrap();
    let reqs: Vec<_> = (0..6u8)
        .map(|i| {
            let nic = topo.nic(1, pod_ip(1, 20 + i));
            topo.pod(&format!("c{i}"), nic)
        })
        .collect();
    let plumbed = futures::future::join_all(reqs.iter().map(|r| host.plumb_pod(r))).await;
    let plumbed: Vec<_> = plumbed.into_iter().map(Result::unwrap).collect();
    for (req, p) in reqs.iter().zip(&plumbed) {
        host.verify_pod(req, p).await.unwrap();
    }
    let inv = host.inventory().await.unwrap();
    assert_eq!(inv.pods.len(), 6);
    // Two of them talk to each other.
    let a = NetNs::open(&reqs[0].netns).unwrap();
    let b = NetNs::open(&reqs[5].netns).unwrap();
    let l = listen(&b, plumbed[5].ip);
    assert_eq!(tcp_roundtrip(&a, &l, plumbed[5].ip), plumbed[0].ip);
    let errors = futures::future::join_all(plumbed.iter().map(|p| host.unplumb_pod(p, None))).await;
    assert!(errors.iter().all(Result::is_ok), "{errors:?}");
    assert!(host.inventory().await.unwrap().pods.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn orphans_are_listed_after_a_crash() {
    let mut topo = Topology::new();
    let nic = topo.nic(1, pod_ip(1, 30));
    let (a, b, c) = {
        let host = topo.host().await;
        host.prepare_nic(&nic).await.unwrap();
        let mut plumb = |i: u8| {
            let mut n = nic.clone();
            n.ip = pod_ip(1, 30 + i);
            topo.pod(&format!("o{i}"), n)
        };
        let reqs = [plumb(0), plumb(1), plumb(2)];
        let a = host.plumb_pod(&reqs[0]).await.unwrap();
        let b = host.plumb_pod(&reqs[1]).await.unwrap();
        let c = host.plumb_pod(&reqs[2]).await.unwrap();
        (a, b, c)
        // The agent "crashes" here: its LinuxHost and every record are dropped.
    };
    // Crash mid-DEL of b: its veth is gone, its rules are not.
    ip(&["-n", &topo.node, "link", "del", &b.host_veth]);
    // Crash mid-ADD of c: the veth exists, the route not yet.
    ip(&["-n", &topo.node, "route", "del", &format!("{}/32", c.ip)]);

    let host = topo.host().await;
    let inv = host.inventory().await.unwrap();
    assert!(
        inv.pods.contains(&hostnic_core::types::PlumbedPod {
            sandbox_mac: None,
            ..a.clone()
        }),
        "{inv:?}"
    );
    let c_listed = inv
        .pods
        .iter()
        .find(|p| p.host_veth == c.host_veth)
        .expect("c listed");
    assert_eq!(
        c_listed.ip,
        Ipv4Addr::UNSPECIFIED,
        "no route: address unknown"
    );
    assert_eq!(inv.pods.len(), 2);
    assert_eq!(inv.tables, vec![1001]);
    assert!(inv.nic_links.contains(&NicId::new(NIC1_MAC).unwrap()));
    assert!(inv.nic_links.contains(&NicId::new(PRIMARY_MAC).unwrap()));
    let orphans = host.orphan_rule_addresses().await.unwrap();
    assert!(orphans.contains(&b.ip), "{orphans:?}");
    assert!(!orphans.contains(&a.ip), "{orphans:?}");
    // GC removes them with the ordinary DEL.
    host.unplumb_pod(&b, None).await.unwrap();
    host.unplumb_pod(c_listed, None).await.unwrap();
    host.unplumb_pod(&c, None).await.unwrap();
    assert!(!host.orphan_rule_addresses().await.unwrap().contains(&b.ip));
    assert_eq!(host.inventory().await.unwrap().pods.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn rules_carry_the_to_table_action() {
    let mut topo = Topology::new();
    let host = topo.host().await;
    host.ensure_node(&topo.node_plumbing()).await.unwrap();
    let nic = topo.nic(1, pod_ip(1, 40));
    host.prepare_nic(&nic).await.unwrap();
    let req = topo.pod("rule", nic);
    let p = host.plumb_pod(&req).await.unwrap();
    // `ip rule` prints "lookup T none" for a rule whose action is unspec.
    let rules = ip(&["-n", &topo.node, "rule", "show"]);
    let ours: Vec<_> = rules
        .lines()
        .filter(|l| l.contains("172.20.1.40"))
        .collect();
    assert_eq!(ours.len(), 2, "{rules}");
    assert!(ours.iter().all(|l| !l.contains("none")), "{rules}");
    let veth = ifindex(&topo.node, &p.host_veth);
    host.route_get(VPC_CLIENT, p.ip, veth, Some(host.config().vpc_mark))
        .await
        .expect("a lookup through the pod's rule succeeds");

    // The pitfall itself: the same rule with the action left unset makes every
    // matching lookup fail with EINVAL.
    let conn = topo.node_ns.connect().await.unwrap();
    let mut bad = conn
        .handle
        .rule()
        .add()
        .v4()
        .priority(1000)
        .table_id(1001)
        .source_prefix(p.ip, 32);
    bad.message_mut().header.action = rtnetlink::packet_route::rule::RuleAction::Unspec;
    bad.execute().await.unwrap();
    let err = host
        .route_get(VPC_CLIENT, p.ip, veth, None)
        .await
        .unwrap_err();
    assert_eq!(err.errno(), Some(nix::errno::Errno::EINVAL as i32), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn prepare_nic_strips_addresses_and_follows_link_events() {
    let topo = Topology::new();
    let host = topo.host().await;
    let nic = topo.nic(1, pod_ip(1, 50));
    let mut events = host.link_events().await.unwrap();
    // What DHCP would do on a fresh NIC.
    ip(&[
        "-n",
        &topo.node,
        "addr",
        "add",
        "172.20.1.50/24",
        "dev",
        "eth1",
    ]);
    let event = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(LinkEvent::Ipv4AddressAdded { nic, address }) = events.next().await {
                break (nic, address);
            }
        }
    })
    .await
    .expect("an address event");
    assert_eq!(event, (NicId::new(NIC1_MAC).unwrap(), pod_ip(1, 50)));

    host.prepare_nic(&nic).await.unwrap();
    let link = &ip_json(&topo.node, &["addr", "show", "dev", "eth1"])[0];
    let v4: Vec<_> = link["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .collect();
    assert!(v4.is_empty(), "IPv4 addresses left: {v4:?}");
    assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    assert_eq!(link["mtu"], 1500);
    let table = ip(&["-n", &topo.node, "route", "show", "table", "1001"]);
    assert!(table.contains("default via 172.20.1.1 dev eth1"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("172.20.1.1 dev eth1") && l.contains("scope link")),
        "{table}"
    );
    let rp = topo
        .node_ns
        .run_blocking(|| std::fs::read_to_string("/proc/sys/net/ipv4/conf/eth1/rp_filter"))
        .unwrap()
        .unwrap();
    assert_eq!(
        rp.trim(),
        "0",
        "see prepare_nic_now: loose drops VPC replies"
    );
    // Idempotent, and it strips again when the address comes back.
    ip(&[
        "-n",
        &topo.node,
        "addr",
        "add",
        "172.20.1.50/24",
        "dev",
        "eth1",
    ]);
    host.prepare_nic(&nic).await.unwrap();
    let out = ip(&["-n", &topo.node, "-4", "addr", "show", "dev", "eth1"]);
    assert!(!out.contains("inet "), "{out}");

    // A NIC that has not appeared yet is retryable.
    let mut absent = nic.clone();
    absent.nic = NicId::new("52:54:00:cc:cc:cc").unwrap();
    let err = host.prepare_nic(&absent).await.unwrap_err();
    assert_eq!(err.kind, HostErrorKind::Retryable);

    // Release flushes the table and takes the link down; twice is fine.
    host.release_nic(&nic).await.unwrap();
    host.release_nic(&nic).await.unwrap();
    let table = ip(&["-n", &topo.node, "route", "show", "table", "1001"]);
    assert!(table.trim().is_empty(), "{table}");
    let link = &ip_json(&topo.node, &["link", "show", "dev", "eth1"])[0];
    assert!(!link["flags"].as_array().unwrap().iter().any(|f| f == "UP"));

    // The NIC going away is reported.
    ip(&["-n", &topo.node, "link", "del", "eth1"]);
    let removed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(LinkEvent::LinkRemoved { nic }) = events.next().await {
                break nic;
            }
        }
    })
    .await
    .expect("a removal event");
    assert_eq!(removed, NicId::new(NIC1_MAC).unwrap());

    // A NIC being hot-plugged is reported by its MAC.
    ip(&[
        "-n",
        &topo.node,
        "link",
        "add",
        "eth9",
        "address",
        "52:54:00:dd:00:09",
        "type",
        "veth",
        "peer",
        "name",
        "vx9",
    ]);
    let appeared = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(LinkEvent::LinkChanged { nic, name, .. }) = events.next().await
                && name == "eth9"
            {
                break nic;
            }
        }
    })
    .await
    .expect("an appearance event");
    assert_eq!(appeared, NicId::new("52:54:00:dd:00:09").unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn ensure_node_guards_the_default_route_and_owns_only_its_table() {
    let topo = Topology::new();
    let host = topo.host().await;
    // Somebody else's nftables table must survive.
    let other = std::process::Command::new("ip")
        .args([
            "netns", "exec", &topo.node, "nft", "add", "table", "inet", "other",
        ])
        .status()
        .unwrap();
    assert!(other.success());
    let node = topo.node_plumbing();
    assert!(
        !host
            .ensure_node(&node)
            .await
            .unwrap()
            .default_route_restored
    );
    assert!(
        !host
            .ensure_node(&node)
            .await
            .unwrap()
            .default_route_restored
    );

    // A reboot lets a pod NIC take the default route.
    ip(&["-n", &topo.node, "link", "set", "eth1", "up"]);
    ip(&["-n", &topo.node, "route", "del", "default"]);
    ip(&["-n", &topo.node, "route", "add", "default", "dev", "eth1"]);
    assert!(
        host.ensure_node(&node)
            .await
            .unwrap()
            .default_route_restored
    );
    let main = ip(&["-n", &topo.node, "route", "show", "default"]);
    assert_eq!(main.lines().count(), 1, "{main}");
    assert!(
        main.starts_with("default via 10.200.0.1 dev prim0"),
        "{main}"
    );
    assert!(
        !host
            .ensure_node(&node)
            .await
            .unwrap()
            .default_route_restored
    );

    let forward = topo
        .node_ns
        .run_blocking(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward"))
        .unwrap()
        .unwrap();
    assert_eq!(forward.trim(), "1");
    let tables = std::process::Command::new("ip")
        .args(["netns", "exec", &topo.node, "nft", "list", "tables"])
        .output()
        .unwrap();
    let tables = String::from_utf8_lossy(&tables.stdout);
    assert!(tables.contains("table inet other"), "{tables}");
    assert!(tables.contains("table inet hostnic"), "{tables}");
    let ruleset = std::process::Command::new("ip")
        .args([
            "netns", "exec", &topo.node, "nft", "list", "table", "inet", "hostnic",
        ])
        .output()
        .unwrap();
    let ruleset = String::from_utf8_lossy(&ruleset.stdout);
    assert!(ruleset.contains("snat ip to 10.200.0.10"), "{ruleset}");
    assert!(ruleset.contains("172.20.0.0/16"), "{ruleset}");
    // With external SNAT the SNAT rule goes, the marking stays.
    let mut external = node.clone();
    external.external_snat = true;
    host.ensure_node(&external).await.unwrap();
    let ruleset = std::process::Command::new("ip")
        .args([
            "netns", "exec", &topo.node, "nft", "list", "table", "inet", "hostnic",
        ])
        .output()
        .unwrap();
    let ruleset = String::from_utf8_lossy(&ruleset.stdout);
    assert!(!ruleset.contains("snat ip to"), "{ruleset}");
    assert!(ruleset.contains("meta mark set"), "{ruleset}");
}

#[test]
#[ignore = "needs root: cargo test -- --include-ignored"]
fn named_namespaces_are_created_and_deleted_without_forking() {
    let name = unique("ns");
    let ns = NetNs::create_named(&name).unwrap();
    let path = std::path::Path::new("/run/netns").join(&name);
    assert!(path.exists());
    let own = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let inside = ns
        .run_blocking(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap())
        .unwrap();
    assert_ne!(own, inside, "the work ran in the other namespace");
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
        own,
        "the calling thread never switched"
    );
    assert!(NetNs::create_named(&name).is_err(), "names are not reused");
    drop(ns);
    NetNs::delete_named(&name).unwrap();
    assert!(!path.exists());
    NetNs::delete_named(&name).unwrap();
}

/// Whether the VPC connects to a listener at `ip` in sandbox `ns` within
/// `timeout` (false when the sandbox lost its interface and the address with it).
/// A fresh veth may drop packets for up to a second (the kernel's link watch
/// turns its carrier on late), so a connection that must succeed gets 5 s, one
/// that must fail 1 s.
fn vpc_connects(topo: &Topology, ns: &NetNs, ip: Ipv4Addr, timeout: Duration) -> bool {
    let Ok(l) = probe::listen_in(ns, std::net::SocketAddr::from((ip, 0))) else {
        return false;
    };
    let port = l.local_addr().unwrap().port();
    let target = std::net::SocketAddr::from((ip, port));
    probe::connect_from(&topo.vpc_ns, target, timeout).is_ok()
}

fn vpc_reaches(topo: &Topology, ns: &NetNs, ip: Ipv4Addr) -> bool {
    vpc_connects(topo, ns, ip, Duration::from_secs(5))
}

fn vpc_is_cut_off_from(topo: &Topology, ns: &NetNs, ip: Ipv4Addr) -> bool {
    !vpc_connects(topo, ns, ip, Duration::from_secs(1))
}

/// Two sandboxes of one pod (kubelet replacing a sandbox, a runtime that starts the
/// new one before the old one's DEL, a DEL replayed late): each keeps its own veth,
/// and a DEL cuts off only the sandbox it is for, whatever it knows of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn two_sandboxes_of_one_pod_keep_their_veths_and_a_del_cuts_off_only_its_own() {
    let mut topo = Topology::new();
    let never = Duration::from_secs(600);
    let host = host_reaping(&topo.config(), never, never).await;
    host.ensure_node(&topo.node_plumbing()).await.unwrap();
    let (ip1, ip2) = (pod_ip(1, 60), pod_ip(2, 60));
    let (nic1, nic2) = (topo.nic(1, ip1), topo.nic(2, ip2));
    host.prepare_nic(&nic1).await.unwrap();
    host.prepare_nic(&nic2).await.unwrap();
    topo.vpc_knows_pod(1, ip1);
    topo.vpc_knows_pod(2, ip2);
    let sandbox_of = |topo: &mut Topology, first: &PodPlumbing, nic: &NicPlumbing| {
        let (ns, _) = topo.guard.create_ns("pod");
        let mut next = first.clone();
        next.netns = format!("/run/netns/{ns}");
        next.pod.container_id = format!("cid-{ns}");
        next.nic = nic.clone();
        next
    };

    // Sandbox 1, then sandbox 2 of the same pod while 1 lives.
    let one = topo.pod("same", nic1.clone());
    let one_plumbed = host.plumb_pod(&one).await.unwrap();
    let two = sandbox_of(&mut topo, &one, &nic2);
    let two_plumbed = host.plumb_pod(&two).await.unwrap();
    let (ns1, ns2) = (
        NetNs::open(&one.netns).unwrap(),
        NetNs::open(&two.netns).unwrap(),
    );
    assert!(
        vpc_reaches(&topo, &ns1, ip1),
        "sandbox 1 after sandbox 2's ADD"
    );
    assert!(vpc_reaches(&topo, &ns2, ip2), "sandbox 2");
    host.verify_pod(&one, &one_plumbed)
        .await
        .expect("the first sandbox keeps its plumbing");
    host.verify_pod(&two, &two_plumbed).await.unwrap();
    assert_eq!(one_plumbed.host_veth, one.pod.host_veth_name("nic"));
    assert_eq!(
        two_plumbed.host_veth,
        two.pod.sandbox_veth_name("nic"),
        "the second sandbox's veth is named from its container id"
    );
    assert_eq!(
        host.plumb_pod(&two).await.unwrap(),
        two_plumbed,
        "a repeated ADD of sandbox 2 finds its own veth"
    );

    // Sandbox 1's DEL cuts sandbox 1 off, not 2.
    host.unplumb_pod(&one_plumbed, Some(&one.netns))
        .await
        .unwrap();
    assert!(
        vpc_is_cut_off_from(&topo, &ns1, ip1),
        "sandbox 1 after its DEL"
    );
    assert!(
        vpc_reaches(&topo, &ns2, ip2),
        "sandbox 2 after sandbox 1's DEL"
    );
    host.verify_pod(&two, &two_plumbed).await.unwrap();

    // Sandbox 3 takes NIC 1 (its address) and, once sandbox 1's veth is reaped, the
    // name the pod's name gives.
    let three = sandbox_of(&mut topo, &one, &nic1);
    let three_plumbed = host.plumb_pod(&three).await.unwrap();
    assert_eq!(three_plumbed.host_veth, one_plumbed.host_veth);
    let ns3 = NetNs::open(&three.netns).unwrap();
    assert!(vpc_reaches(&topo, &ns3, ip1), "sandbox 3");

    // Late DELs of sandbox 1 (kubelet's Remove, a DEL replayed after the agent was
    // down), with everything, or nothing but the veth's name, known of it: the
    // veth with that name and the address are sandbox 3's now.
    let nameless = PlumbedPod {
        host_mac: None,
        sandbox_mac: None,
        ..one_plumbed.clone()
    };
    for (what, plumbed, netns) in [
        ("recorded plumbing", &one_plumbed, Some(one.netns.as_str())),
        ("no MAC, its netns", &nameless, Some(one.netns.as_str())),
        ("no MAC, no netns", &nameless, None),
    ] {
        host.unplumb_pod(plumbed, netns).await.unwrap();
        host.verify_pod(&three, &three_plumbed)
            .await
            .unwrap_or_else(|e| panic!("sandbox 3 after a late DEL of 1 ({what}): {e}"));
        assert!(
            vpc_reaches(&topo, &ns3, ip1),
            "sandbox 3 after a late DEL of 1 ({what})"
        );
    }

    // A DEL knowing only the name and the sandbox (an ADD that failed before its
    // plumbing was recorded) cuts that sandbox off: its veth's peer is there.
    let three_nameless = PlumbedPod {
        host_mac: None,
        sandbox_mac: None,
        ..three_plumbed.clone()
    };
    host.unplumb_pod(&three_nameless, Some(&three.netns))
        .await
        .unwrap();
    assert!(
        vpc_is_cut_off_from(&topo, &ns3, ip1),
        "sandbox 3 after its DEL"
    );
    assert!(
        vpc_reaches(&topo, &ns2, ip2),
        "sandbox 2 after sandbox 3's DEL"
    );
    host.unplumb_pod(&two_plumbed, Some(&two.netns))
        .await
        .unwrap();
    assert!(host.inventory().await.unwrap().pods.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn a_sandbox_given_as_proc_pid_ns_net_is_plumbed() {
    let mut topo = Topology::new();
    let host = topo.host().await;
    let nic = topo.nic(1, pod_ip(1, 70));
    host.prepare_nic(&nic).await.unwrap();
    let mut req = topo.pod("proc", nic);
    // A thread parked inside the sandbox stands in for the sandbox's process.
    let sandbox = NetNs::open(&req.netns).unwrap();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let parked = std::thread::spawn(move || {
        nix::sched::setns(sandbox.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        tid_tx.send(nix::unistd::gettid()).unwrap();
        let _ = stop_rx.recv();
    });
    let tid = tid_rx.recv().unwrap();
    req.netns = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
    let plumbed = host.plumb_pod(&req).await.unwrap();
    host.verify_pod(&req, &plumbed).await.unwrap();
    host.unplumb_pod(&plumbed, Some(&req.netns)).await.unwrap();
    stop_tx.send(()).unwrap();
    parked.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn without_node_snat_every_pod_packet_leaves_through_its_nic() {
    let mut topo = Topology::new();
    let host = hostnic_linux::LinuxHost::new(hostnic_linux::LinuxHostConfig {
        snat: false,
        ..topo.config()
    })
    .await
    .unwrap();
    host.ensure_node(&topo.node_plumbing()).await.unwrap();
    let ip1 = pod_ip(1, 80);
    let nic = topo.nic(1, ip1);
    host.prepare_nic(&nic).await.unwrap();
    let req = topo.pod("nosnat", nic);
    let p = host.plumb_pod(&req).await.unwrap();
    host.verify_pod(&req, &p).await.unwrap();
    let rules = ip(&["-n", &topo.node, "rule", "show"]);
    let from = rules.lines().find(|l| l.starts_with("1536:")).unwrap();
    assert!(!from.contains("fwmark"), "{rules}");
    let veth = ifindex(&topo.node, &p.host_veth);
    let eth1 = Some(ifindex(&topo.node, "eth1"));
    assert_eq!(
        host.route_get(INTERNET_HOST, ip1, veth, None)
            .await
            .unwrap()
            .0,
        eth1
    );
    assert_eq!(
        host.route_get(VPC_CLIENT, ip1, veth, None).await.unwrap().0,
        eth1
    );
    topo.vpc_knows_pod(1, ip1);
    let l = listen(&topo.vpc_ns, VPC_CLIENT);
    assert_eq!(
        tcp_roundtrip(&NetNs::open(&req.netns).unwrap(), &l, VPC_CLIENT),
        ip1
    );
    let ruleset = std::process::Command::new("ip")
        .args([
            "netns", "exec", &topo.node, "nft", "list", "table", "inet", "hostnic",
        ])
        .output()
        .unwrap();
    let ruleset = String::from_utf8_lossy(&ruleset.stdout);
    assert!(!ruleset.contains("snat ip to"), "{ruleset}");
    assert!(!ruleset.contains("meta mark set"), "{ruleset}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn the_primary_interface_is_the_default_routes_link() {
    // How a controller-mode agent (no DescribeInstances) learns its primary NIC.
    let topo = Topology::new();
    let host = topo.host().await;
    let primary = host.primary_interface().await.unwrap();
    assert_eq!(primary.nic, NicId::new(PRIMARY_MAC).unwrap());
    assert_eq!(primary.ip, PRIMARY_IP);
    assert_eq!(primary.network, "10.200.0.0/24".parse().unwrap());
    assert_eq!(primary.gateway, Ipv4Addr::new(10, 200, 0, 1));
    // Without a default route there is no primary interface to find.
    ip(&["-n", &topo.node, "route", "del", "default"]);
    assert!(host.primary_interface().await.is_err());
}
