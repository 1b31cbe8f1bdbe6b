//! Root: the agent BINARY with `--pods kube`, against the fake Kubernetes API server
//! (`hostnic-k8s`, feature `fake-apiserver`) and the QingCloud simulator, plumbing a
//! "node" network namespace whose NICs appear (as veth pairs into a "vpc" namespace)
//! when the simulator attaches them.
//!
//! - A pod bound to the node but without a sandbox yet makes the agent pre-warm a NIC,
//!   with a pool configured to keep no free NIC otherwise (`min_free: 0`).
//! - A pod deleted from the API server while the agent was stopped has its NIC
//!   released when the agent starts again.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::kube_lab::{Lab, NODE};
use common::*;
use hostnic_core::api::{AddRequest, Outcome, RequestBody};
use hostnic_core::types::PodKey;

/// `/v1/status` as JSON.
async fn status(lab: &Lab) -> serde_json::Value {
    let (_, body) = http_get(lab.metrics_addr, "/v1/status").await;
    serde_json::from_str(&body).unwrap_or_default()
}

/// Polls `/v1/status` until `f` holds (20 s at most).
async fn wait_status(lab: &Lab, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
    let mut last = serde_json::Value::Null;
    for _ in 0..200 {
        last = status(lab).await;
        if f(&last) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "timed out waiting for {what}; status {last:#}\nlog:\n{}",
        lab.log_text()
    );
}

fn pod_key() -> PodKey {
    PodKey {
        namespace: "default".into(),
        name: "web".into(),
        container_id: "k8s0001".into(),
        ifname: "eth0".into(),
    }
}

fn add(netns: &Path) -> RequestBody {
    RequestBody::Add(AddRequest {
        pod: pod_key(),
        pod_uid: None,
        netns: netns.display().to_string(),
        network: "hostnic".into(),
        cni_version: "1.1.0".into(),
        veth_prefix: None,
        mtu: None,
        runtime_config: None,
        timeout_ms: 30_000,
    })
}

fn pool(s: &serde_json::Value, key: &str) -> u64 {
    s["pool"][key].as_u64().unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn pending_pods_are_prewarmed_and_pods_deleted_while_stopped_are_released() {
    let lab = Lab::new("hnk", 1).await;
    let agent = lab.start_agent().await;

    // Nothing pending: after a reconcile the pool holds and asks for nothing.
    wait_status(&lab, "an idle pool", |s| {
        s["last_reconcile_at_ms"].is_u64()
            && pool(s, "pending_pods") == 0
            && pool(s, "free") + pool(s, "preparing") + pool(s, "creating") == 0
    })
    .await;

    // A pod is scheduled here: the agent learns it from the watch and warms a NIC up.
    lab.api.add_pod("default", "web", NODE, None);
    wait_status(&lab, "a NIC pre-warmed for the pending pod", |s| {
        pool(s, "pending_pods") == 1 && pool(s, "free") >= 1
    })
    .await;

    // Its sandbox comes: ADD gets the warm NIC; the pod then has its IP in the API.
    let netns = PathBuf::from(format!("/run/netns/{}", lab.sandboxes[0]));
    let reply = call(&lab.socket, add(&netns)).await;
    assert!(matches!(reply.outcome, Outcome::Ok(_)), "{reply:?}");
    lab.api.add_pod("default", "web", NODE, Some("172.16.1.50"));
    wait_status(&lab, "the pod attached", |s| {
        s["pods"] == 1 && pool(s, "assigned") == 1 && pool(s, "pending_pods") == 0
    })
    .await;

    // The node's capacity is published on the Node after the pool rounds.
    let mut published = None;
    for _ in 0..100 {
        let node = lab.api.get("v1", "Node", "", NODE).expect("the node");
        let annotations = &node["metadata"]["annotations"];
        if let Some(assignable) =
            annotations[hostnic_k8s::node::ASSIGNABLE_PODS_ANNOTATION].as_str()
        {
            published = Some((
                assignable.to_string(),
                annotations[hostnic_k8s::node::FREE_NICS_ANNOTATION]
                    .as_str()
                    .map(str::to_string),
            ));
            if assignable == "61" {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (assignable, free) = published.expect("capacity annotations on the Node");
    assert_eq!(assignable, "61", "62 pod NICs at most, one assigned");
    assert!(free.is_some(), "free-nics annotation");

    // The agent stops; meanwhile the pod is deleted and its DEL never reaches us.
    drop(agent);
    lab.api.delete_pod("default", "web").unwrap();
    let _agent = lab.start_agent().await;
    wait_status(&lab, "the deleted pod's NIC released", |s| {
        s["pods"] == 0 && pool(s, "assigned") == 0
    })
    .await;
}
