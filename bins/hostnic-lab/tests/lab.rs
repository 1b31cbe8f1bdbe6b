//! The lab with real packets, with this test playing the agent: it attaches NICs
//! through the simulator's API (the lab's hook makes them appear on the node),
//! plumbs pods with `hostnic-linux`'s `LinuxHost` in the node namespaces, and
//! then runs the real `hostnic-lab check` matrix. Needs root:
//! `cargo test -p hostnic-lab -- --include-ignored`.

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hostnic_core::ports::HostNetwork;
use hostnic_core::types::{
    InstanceId, JobOutcome, NicId, NicPlumbing, NodePlumbing, PodKey, PodPlumbing, VxnetId,
};
use hostnic_linux::lab::{fabric, probe};
use hostnic_linux::{LinuxHost, LinuxHostConfig, NetNs};
use hostnic_qingcloud::{ClientOptions, Config, QingCloudClient};
use serde_json::Value;

use common::{LabGuard, lab, read_json};

fn mac_of(netns: &str, dev: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", netns, "-j", "link", "show", "dev", dev])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["address"].as_str().unwrap().to_string()
}

fn netns_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

async fn node_host(netns: &str) -> LinuxHost {
    LinuxHost::new(LinuxHostConfig {
        host_netns: Some(PathBuf::from(netns)),
        ..LinuxHostConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn nics_attached_in_the_simulator_carry_real_pod_traffic_through_the_vpc() {
    let guard = LabGuard::new();
    let (ok, out) = lab(&[
        "up",
        "--dir",
        guard.path(),
        "--nodes",
        "2",
        "--attach-latency-ms",
        "20",
        "--job-latency-ms",
        "10",
        "--no-agents",
    ]);
    assert!(ok, "up failed");
    let labj: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(labj, read_json(&guard.dir.path().join("lab.json")));
    let prefix = guard.prefix();
    assert!(prefix.starts_with("hl-"));
    let nodes = labj["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    for ns in fabric::lab_namespaces(&prefix) {
        assert!(ns.starts_with(&prefix));
    }
    assert_eq!(
        fabric::lab_namespaces(&prefix).len(),
        5,
        "router, internet, client, 2 nodes"
    );

    // The cloud side, as the agent would do it.
    let config = Config::load(labj["credentials"].as_str().unwrap()).unwrap();
    let cloud = QingCloudClient::new(&config, ClientOptions::default()).unwrap();
    let vxnet = VxnetId::new("vxnet-sim1");
    let created = cloud.create_nics(&vxnet, 3, "lab-test").await.unwrap();
    assert_eq!(created.len(), 3);
    let plan = [(0usize, 0usize), (0, 1), (1, 2)]; // (node, nic)
    for (node, nics) in [(0, vec![0, 1]), (1, vec![2])] {
        let ids: Vec<NicId> = nics.iter().map(|i| created[*i].id.clone()).collect();
        let instance = InstanceId::new(nodes[node]["instance_id"].as_str().unwrap());
        let job = cloud.attach_nics(&instance, &ids).await.unwrap();
        let outcome = cloud.wait_job(&job, Duration::from_secs(10)).await.unwrap();
        assert_eq!(outcome, JobOutcome::Successful);
    }

    // The hot-plugged NICs appear on their nodes, found by MAC like a real one.
    let mut hosts = Vec::new();
    for node in nodes {
        let netns = node["netns"].as_str().unwrap();
        let host = node_host(netns).await;
        let primary = NicId::new(&mac_of(&netns_name(netns), "eth0")).unwrap();
        host.ensure_node(&NodePlumbing {
            primary_nic: primary,
            primary_ip: node["primary_ip"].as_str().unwrap().parse().unwrap(),
            vpc_cidrs: vec!["172.16.0.0/16".parse().unwrap()],
            snat_exclusions: vec![],
            external_snat: false,
        })
        .await
        .unwrap();
        hosts.push(host);
    }
    for (node, nic) in plan {
        let inv = hosts[node].inventory_now().await.unwrap();
        assert!(
            inv.nic_links.contains(&created[nic].id),
            "NIC {} is on node {node}",
            created[nic].id
        );
    }

    // Pods, plumbed as the agent would, recorded as `pod add` would.
    std::fs::create_dir_all(guard.dir.path().join("pods")).unwrap();
    for (i, (node, nic)) in plan.iter().enumerate() {
        let node_name = nodes[*node]["name"].as_str().unwrap();
        let ns_name = format!("{prefix}pod-{node_name}-default-p{i}");
        let pod_ns = NetNs::create_named(&ns_name).unwrap();
        let nic = NicPlumbing {
            nic: created[*nic].id.clone(),
            ip: created[*nic].ip,
            cidr: "172.16.1.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(172, 16, 1, 1),
            table: 1001 + i as u32,
        };
        hosts[*node].prepare_nic(&nic).await.unwrap();
        let plumbed = hosts[*node]
            .plumb_pod(&PodPlumbing {
                pod: PodKey {
                    namespace: "default".into(),
                    name: format!("p{i}"),
                    container_id: format!("lab-test-{i}"),
                    ifname: "eth0".into(),
                },
                netns: pod_ns.path().display().to_string(),
                nic: nic.clone(),
            })
            .await
            .unwrap();
        assert_eq!(plumbed.ip, nic.ip);
        let record = serde_json::json!({
            "node": node_name, "namespace": "default", "name": format!("p{i}"),
            "container_id": format!("lab-test-{i}"), "netns": pod_ns.path(), "ip": nic.ip,
        });
        std::fs::write(
            guard
                .dir
                .path()
                .join(format!("pods/{node_name}_default_p{i}.json")),
            record.to_string(),
        )
        .unwrap();
    }

    // The real matrix: every kind of path holds, with the right source addresses.
    let (ok, out) = lab(&["check", "--dir", guard.path(), "--json"]);
    let cells: Value = serde_json::from_str(&out).unwrap();
    let cells = cells.as_array().unwrap();
    let mut kinds: Vec<&str> = cells.iter().map(|c| c["kind"].as_str().unwrap()).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "client→pod",
            "pod→VPC client (keeps pod IP)",
            "pod→internet (SNAT to node)",
            "pod→other node",
            "pod→own node",
            "pod→pod across nodes",
            "pod→pod same node",
        ]
    );
    for c in cells {
        assert_eq!(c["icmp"], true, "{c}");
        assert_eq!(c["seen_as"], c["expect"], "{c}");
    }
    let internet: Vec<&Value> = cells
        .iter()
        .filter(|c| c["kind"] == "pod→internet (SNAT to node)")
        .collect();
    assert_eq!(internet.len(), 3);
    assert!(
        internet.iter().all(|c| c["seen_as"] != Value::Null
            && nodes.iter().any(|n| n["primary_ip"] == c["seen_as"]))
    );
    assert!(ok, "check exits 0 when every cell holds");

    // A NIC made to vanish in the cloud disappears from its node, and its pod
    // becomes unreachable from the VPC: the path really went through that NIC.
    let gone = &created[2];
    let (ok, _) = lab(&[
        "nic",
        "vanish",
        "--dir",
        guard.path(),
        "--nic",
        gone.id.as_str(),
    ]);
    assert!(ok);
    let inv = hosts[1].inventory_now().await.unwrap();
    assert!(
        !inv.nic_links.contains(&gone.id),
        "the vanished NIC left node2"
    );
    let client = netns_name(labj["client"]["netns"].as_str().unwrap());
    assert!(!probe::ping(&client, gone.ip, 1).await);
    assert!(probe::ping(&client, created[0].ip, 2).await);
    // …and check now fails, with a non-zero exit.
    let (ok, _) = lab(&["check", "--dir", guard.path()]);
    assert!(!ok, "check exits non-zero when a cell fails");

    // Detaching through the API unplugs too.
    let job = cloud.detach_nics(&[created[1].id.clone()]).await.unwrap();
    cloud.wait_job(&job, Duration::from_secs(10)).await.unwrap();
    let inv = hosts[0].inventory_now().await.unwrap();
    assert!(!inv.nic_links.contains(&created[1].id));
    assert!(inv.nic_links.contains(&created[0].id));

    drop(hosts);
    let (ok, out) = lab(&["down", "--dir", guard.path()]);
    assert!(ok, "down reports no leftovers: {out}");
    assert!(
        fabric::lab_namespaces(&prefix).is_empty(),
        "down removed every namespace, pods included"
    );
}

#[test]
#[ignore = "needs root: cargo test -- --include-ignored"]
fn a_crashed_lab_is_cleaned_up_by_the_next_up() {
    let guard = LabGuard::new();
    assert!(lab(&["up", "--dir", guard.path(), "--nodes", "1", "--no-agents"]).0);
    let prefix = guard.prefix();
    let state: Value = read_json(&guard.dir.path().join("lab-state.json"));
    let daemon = state["daemon_pid"].as_u64().unwrap() as i32;
    // A stray namespace of the crashed lab (a pod that was never deleted).
    NetNs::create_named(&format!("{prefix}pod-node1-default-stray")).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        fabric::lab_namespaces(&prefix).len(),
        5,
        "a crash leaves the namespaces"
    );

    assert!(lab(&["up", "--dir", guard.path(), "--nodes", "1", "--no-agents"]).0);
    let names = fabric::lab_namespaces(&prefix);
    assert_eq!(names.len(), 4, "router, internet, client, node1: {names:?}");
    assert!(!names.iter().any(|n| n.contains("stray")));
    // The new lab works: node1 reaches the internet host and the client.
    let node1 = format!("{prefix}node1");
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert!(rt.block_on(probe::ping(&node1, Ipv4Addr::new(198, 51, 100, 2), 2)));
    assert!(rt.block_on(probe::ping(&node1, Ipv4Addr::new(172, 16, 2, 2), 2)));

    assert!(lab(&["down", "--dir", guard.path()]).0);
    assert!(fabric::lab_namespaces(&prefix).is_empty());
    assert!(
        !guard.dir.path().join("lab.json").exists(),
        "down removes lab.json"
    );
}
