//! Root: NetworkPolicy enforced by the agent BINARY (`--pods kube`, policy on by
//! default) against the fake Kubernetes API server and the QingCloud simulator, with
//! real packets: two pods on the node, a NetworkPolicy created in the API server
//! blocks the flow between them, deleting it restores the flow, a new pod a policy
//! selects is isolated the moment its ADD answers, and an agent
//! restarted with `--network-policy false` removes the chains an earlier run left.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::kube_lab::{Lab, NODE};
use common::*;
use hostnic_core::api::{AddRequest, Outcome, Reply, RequestBody};
use hostnic_core::types::PodKey;
use hostnic_k8s::fake_apiserver::FakeApiServer;
use hostnic_linux::NetNs;
use hostnic_testkit::probe;
use serde_json::json;

fn add(name: &str, netns: &str) -> RequestBody {
    RequestBody::Add(AddRequest {
        pod: PodKey {
            namespace: "default".into(),
            name: name.into(),
            container_id: format!("ctr-{name}"),
            ifname: "eth0".into(),
        },
        pod_uid: None,
        netns: format!("/run/netns/{netns}"),
        network: "hostnic".into(),
        cni_version: "1.1.0".into(),
        veth_prefix: None,
        mtu: None,
        runtime_config: None,
        timeout_ms: 30_000,
    })
}

fn labelled_pod(api: &FakeApiServer, name: &str) {
    let mut pod = api.add_pod("default", name, NODE, None);
    pod["metadata"]["labels"] = json!({"app": name});
    api.apply(pod).unwrap();
}

/// True when a TCP connection from the sandbox `from` to `to` opens and echoes.
fn can_connect(from: &str, to: SocketAddr, timeout: Duration) -> bool {
    let ns = NetNs::open(format!("/run/netns/{from}")).unwrap();
    probe::echoes(&ns, to, timeout, Duration::from_secs(3))
}

/// An echo listener on `addr` inside the sandbox `ns`.
fn listen(ns: &str, addr: SocketAddr) {
    let ns = NetNs::open(format!("/run/netns/{ns}")).unwrap();
    probe::serve_echo(probe::listen_in(&ns, addr).expect("bind in the pod namespace"));
}

fn rv(obj: &serde_json::Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a resourceVersion")
}

/// Polls `/v1/policy` until the agent enforces everything up to `rv` (the lab's
/// way of waiting: the contract of `synced_resource_version`).
async fn wait_enforced(lab: &Lab, rv: u64) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..200 {
        let (_, body) = http_get(lab.metrics_addr, "/v1/policy").await;
        last = serde_json::from_str(&body).unwrap_or_default();
        if last["synced_resource_version"].as_u64().unwrap_or(0) >= rv {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "resourceVersion {rv} not enforced; /v1/policy {last:#}\nlog:\n{}",
        lab.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn a_network_policy_in_the_api_server_blocks_a_flow_and_deleting_it_restores_it() {
    let lab = Lab::new("hnp", 3).await;
    lab.api
        .apply(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "default", "labels": {"kubernetes.io/metadata.name": "default"}}}))
        .unwrap();
    labelled_pod(&lab.api, "a");
    labelled_pod(&lab.api, "b");
    let agent = lab.start_agent().await;

    let mut ips: Vec<Ipv4Addr> = Vec::new();
    for (name, ns) in [("a", &lab.sandboxes[0]), ("b", &lab.sandboxes[1])] {
        let reply = call(&lab.socket, add(name, ns)).await;
        match &reply.outcome {
            Outcome::Ok(Reply::Add(a)) => ips.push(a.ip.addr()),
            other => panic!("ADD {name}: {other:?}\nlog:\n{}", lab.log_text()),
        }
    }
    // The kubelet reports the pods' IPs after ADD.
    for (name, ip) in ["a", "b"].iter().zip(&ips) {
        let mut pod = lab.api.get("v1", "Pod", "default", name).unwrap();
        pod["status"]["podIP"] = json!(ip.to_string());
        pod["status"]["phase"] = json!("Running");
        lab.api.apply(pod).unwrap();
    }
    let b = SocketAddr::from((ips[1], 8080));
    listen(&lab.sandboxes[1], b);
    assert!(
        can_connect(&lab.sandboxes[0], b, Duration::from_secs(3)),
        "a -> b before any policy\nlog:\n{}",
        lab.log_text()
    );

    // Only pods labelled app=x may reach b: a is cut off once the agent enforces it.
    let created = lab.api.apply(policy_b_from_x()).unwrap();
    let status = wait_enforced(&lab, rv(&created)).await;
    assert_eq!(status["policies"], 1, "{status:#}");
    assert_eq!(status["isolated_local_pods"], 1, "{status:#}");
    assert!(
        !can_connect(&lab.sandboxes[0], b, Duration::from_millis(800)),
        "a -> b must be blocked"
    );
    // b still reaches a: a is not isolated, and b's egress is free.
    let a = SocketAddr::from((ips[0], 8081));
    listen(&lab.sandboxes[0], a);
    assert!(can_connect(&lab.sandboxes[1], a, Duration::from_secs(3)));
    let (line, body) = http_get(lab.metrics_addr, "/v1/policy/pods/default/b").await;
    assert!(line.contains("200"), "{line}: {body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["ingress"]["isolated"], true, "{doc:#}");

    // Deleting the policy restores the flow.
    let deleted = lab
        .api
        .delete(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "default",
            "b-from-x",
        )
        .unwrap();
    let status = wait_enforced(&lab, rv(&deleted)).await;
    assert_eq!(status["policies"], 0, "{status:#}");
    assert!(
        can_connect(&lab.sandboxes[0], b, Duration::from_secs(3)),
        "a -> b after the policy is gone"
    );

    // A new pod selected by a policy is isolated the moment its ADD answers: its
    // listener is up before the ADD (on 0.0.0.0), and the first connection after
    // the answer is already dropped.
    let created = lab.api.apply(only_from_x("c")).unwrap();
    wait_enforced(&lab, rv(&created)).await;
    labelled_pod(&lab.api, "c");
    listen(&lab.sandboxes[2], SocketAddr::from(([0, 0, 0, 0], 8082)));
    let reply = call(&lab.socket, add("c", &lab.sandboxes[2])).await;
    let c = match &reply.outcome {
        Outcome::Ok(Reply::Add(r)) => SocketAddr::from((r.ip.addr(), 8082)),
        other => panic!("ADD c: {other:?}\nlog:\n{}", lab.log_text()),
    };
    assert!(
        !can_connect(&lab.sandboxes[0], c, Duration::from_millis(800)),
        "a -> c right after c's ADD must be blocked"
    );
    let deleted = lab
        .api
        .delete(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "default",
            "c-from-x",
        )
        .unwrap();
    wait_enforced(&lab, rv(&deleted)).await;
    assert!(
        can_connect(&lab.sandboxes[0], c, Duration::from_secs(3)),
        "a -> c once c's policy is gone"
    );

    // Enforcement turned off while a policy exists: the agent removes the chains
    // an earlier run programmed, so nothing isolates pods any more.
    let recreated = lab.api.apply(policy_b_from_x()).unwrap();
    wait_enforced(&lab, rv(&recreated)).await;
    assert!(!can_connect(
        &lab.sandboxes[0],
        b,
        Duration::from_millis(800)
    ));
    drop(agent);
    let _agent = lab.start_agent_with(&["--network-policy", "false"]).await;
    let (_, body) = http_get(lab.metrics_addr, "/v1/policy").await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["enabled"], false, "{status:#}");
    assert!(
        can_connect(&lab.sandboxes[0], b, Duration::from_secs(3)),
        "a -> b with enforcement off\nlog:\n{}",
        lab.log_text()
    );
}

/// Only pods labelled app=x may reach b.
fn policy_b_from_x() -> serde_json::Value {
    only_from_x("b")
}

/// `<target>-from-x`: only pods labelled app=x may reach pods labelled app=`target`.
fn only_from_x(target: &str) -> serde_json::Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": format!("{target}-from-x"), "namespace": "default"},
        "spec": {
            "podSelector": {"matchLabels": {"app": target}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "x"}}}]}],
        },
    })
}
