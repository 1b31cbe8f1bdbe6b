//! Kubelet's path: containerd's CRI runs pod sandboxes on lab nodes and its CNI
//! library calls `hostnic` (see `../shared/reference/cri-notes.md` for what
//! containerd 1.6 does). Each test brings up a lab whose nodes run a private
//! containerd on the conflist their agent wrote, drives it through CRI as
//! kubelet does, and ends by removing every sandbox and checking that nothing
//! is left on the nodes, in the cloud beyond the warm pool, or in the host's
//! runtime and CNI paths.
//!
//! Needs root, containerd, runc, busybox-static, containernetworking-plugins,
//! gcc, the binaries of `cargo build --workspace` and the CRI client's venv
//! (`scripts/cri-venv.sh`); `.ci/run` provides all of them.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use hostnic_e2e::{CriLab, CriPod, pod_veths};

/// Polls `check` every 100 ms until it holds or `timeout` passes.
async fn eventually(timeout: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The agent's record of `pod` on its node: (namespace/name, ip) of each pod.
async fn agent_holds(lab: &CriLab, pod: &CriPod) -> bool {
    lab.lab
        .agent_pods(&pod.node)
        .await
        .unwrap_or_default()
        .iter()
        .any(|p| p.to_string().contains(&pod.sandbox))
}

fn vpc_address(ip: Ipv4Addr) -> bool {
    // vxnet-sim1, the nodes' vxnet in the lab (172.16.1.0/24), excluding the
    // gateway and the nodes' primary addresses.
    ip.octets()[..3] == [172, 16, 1] && ip.octets()[3] > 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network namespaces, a private containerd per lab node"]
async fn cri_pods_on_two_nodes_get_vpc_addresses_reach_each_other_and_the_vpc_and_leave_nothing() {
    let lab = CriLab::up("cri-pods", 2).await.unwrap();
    let client = lab.lab.file.client.ip;

    // Pods exist in the API server before kubelet runs their sandboxes.
    let a = lab.run_pod("node1", "default", "web-a", &[("app", "web-a")]).await.unwrap();
    let b = lab.run_pod("node2", "default", "web-b", &[("app", "web-b")]).await.unwrap();
    for pod in [&a, &b] {
        assert!(vpc_address(pod.ip), "{} got {} from PodSandboxStatus", pod.meta.name, pod.ip);
        // What containerd passed and what the plugin answered.
        let calls = lab.node(&pod.node).calls_for(&pod.sandbox);
        let adds: Vec<_> = calls.iter().filter(|c| c.command == "ADD").collect();
        assert_eq!(adds.len(), 1, "{calls:#?}");
        let add = adds[0];
        assert_eq!(add.exit_code, Some(0), "{add:#?}");
        assert_eq!(add.ip(), Some(pod.ip.to_string()), "the status IP is the ADD result's");
        assert_eq!(add.args.get("K8S_POD_NAMESPACE").map(String::as_str), Some("default"));
        assert_eq!(add.args.get("K8S_POD_NAME"), Some(&pod.meta.name));
        assert_eq!(add.args.get("K8S_POD_UID"), Some(&pod.meta.uid));
        assert_eq!(add.args.get("K8S_POD_INFRA_CONTAINER_ID"), Some(&pod.sandbox));
        assert_eq!(add.stdout["interfaces"][1]["name"], "eth0", "{:#}", add.stdout);
        assert!(
            add.netns.starts_with(&lab.node(&pod.node).containerd.dir.display().to_string()),
            "containerd's netns lives under its state: {}",
            add.netns
        );
        assert!(agent_holds(&lab, pod).await, "the agent of {} holds no {}", pod.node, pod.sandbox);
    }

    // Across nodes, to the VPC client, and from it; TCP too.
    assert!(lab.pings(&a, b.ip).await.unwrap(), "web-a → web-b (other node)");
    assert!(lab.pings(&b, a.ip).await.unwrap(), "web-b → web-a (other node)");
    assert!(lab.pings(&a, client).await.unwrap(), "web-a → the VPC client");
    assert!(lab.client_pings(a.ip), "the VPC client → web-a");
    assert!(lab.client_pings(b.ip), "the VPC client → web-b");
    lab.serve_tcp(&b, 8080).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || lab.connects(&a, b.ip, 8080).await.unwrap()).await,
        "web-a cannot open TCP to web-b:8080"
    );
    // The container sees its address on eth0.
    let (code, out) = lab.exec(&a, &["ip", "-4", "addr", "show", "eth0"]).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("inet {}/32", a.ip)), "{out}");

    // Kubelet deletes web-a: Stop + Remove, two DELs, the second without a netns.
    lab.delete_pod(&a).await.unwrap();
    let dels: Vec<_> = lab
        .node("node1")
        .calls_for(&a.sandbox)
        .into_iter()
        .filter(|c| c.command == "DEL")
        .collect();
    assert!(dels.len() >= 2, "Stop + Remove send two DELs: {dels:#?}");
    assert!(!dels[0].netns.is_empty() && dels[0].has_prev_result(), "{:#?}", dels[0]);
    for del in &dels[1..] {
        assert!(del.netns.is_empty() && !del.has_prev_result(), "{del:#?}");
    }
    for del in &dels {
        assert_eq!(del.exit_code, Some(0), "a DEL must succeed: {del:#?}");
    }
    assert!(
        eventually(Duration::from_secs(10), async || !agent_holds(&lab, &a).await).await,
        "the agent still holds web-a after Stop + Remove"
    );
    assert!(
        eventually(Duration::from_secs(10), async || pod_veths(&lab.lab.node("node1").netns).is_empty()).await,
        "node1 keeps pod veths: {:?}",
        pod_veths(&lab.lab.node("node1").netns)
    );
    // web-b is untouched.
    assert!(lab.client_pings(b.ip), "the VPC client → web-b after web-a left");

    lab.finish().await.unwrap();
}
