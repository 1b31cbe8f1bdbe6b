//! The adapter driven through a real `kube::Client`, built from a generated kubeconfig,
//! against the fake API server on loopback.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use hostnic_core::ports::PodSource;
use hostnic_core::types::{PodEvent, PodInfo, VxnetId};
use hostnic_k8s::fake_apiserver::FakeApiServer;
use hostnic_k8s::node::{ASSIGNABLE_PODS_ANNOTATION, FREE_NICS_ANNOTATION, VXNET_ANNOTATION};
use hostnic_k8s::{Capacity, KubeAdapter, NicShortage};

const WAIT: Duration = Duration::from_secs(20);

fn info(name: &str, ip: Option<&str>) -> PodInfo {
    PodInfo {
        namespace: "default".into(),
        name: name.into(),
        pending: ip.is_none(),
        ip: ip.map(|ip| ip.parse().unwrap()),
    }
}

async fn next(changes: &mut BoxStream<'static, PodEvent>) -> PodEvent {
    tokio::time::timeout(WAIT, changes.next())
        .await
        .expect("a change within the wait")
        .expect("the stream is open")
}

/// Polls `f` every 50 ms until it returns `Some`, failing after [`WAIT`].
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn setup() -> (FakeApiServer, tempfile::TempDir, KubeAdapter) {
    let server = FakeApiServer::start().await.unwrap();
    server.add_node("node-1", &[(VXNET_ANNOTATION, "vxnet-a, vxnet-b")]);
    server.add_node("node-2", &[]);
    server.add_pod("default", "pending", "node-1", None);
    server.add_pod("default", "running", "node-1", Some("10.0.0.5"));
    server.add_pod("default", "elsewhere", "node-2", Some("10.0.0.6"));
    let mut host = server.add_pod("kube-system", "kube-proxy", "node-1", Some("192.168.0.2"));
    host["spec"]["hostNetwork"] = serde_json::json!(true);
    server.apply(host).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.write_kubeconfig(dir.path()).unwrap();
    let adapter = hostnic_k8s::connect(Some(&kubeconfig), "node-1")
        .await
        .unwrap();
    (server, dir, adapter)
}

#[tokio::test]
async fn pods_of_the_node_and_their_changes() {
    let (server, _dir, k8s) = setup().await;
    let mut changes = k8s.pods.changes();
    assert!(k8s.pods.wait_synced(WAIT).await);
    assert_eq!(
        k8s.pods.pods().await.unwrap(),
        vec![info("pending", None), info("running", Some("10.0.0.5"))]
    );
    let mut initial = vec![next(&mut changes).await, next(&mut changes).await];
    initial.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        initial,
        vec![
            PodEvent::Upserted(info("pending", None)),
            PodEvent::Upserted(info("running", Some("10.0.0.5")))
        ]
    );

    // A pod bound elsewhere is not seen; one bound here is, pending until it has an IP.
    server.add_pod("default", "other-node", "node-2", None);
    server.add_pod("default", "new", "", None);
    server.add_pod("default", "new", "node-1", None);
    assert_eq!(
        next(&mut changes).await,
        PodEvent::Upserted(info("new", None))
    );
    server.add_pod("default", "new", "node-1", Some("10.0.0.7"));
    assert_eq!(
        next(&mut changes).await,
        PodEvent::Upserted(info("new", Some("10.0.0.7")))
    );
    server.delete_pod("default", "running").unwrap();
    assert_eq!(
        next(&mut changes).await,
        PodEvent::Deleted {
            namespace: "default".into(),
            name: "running".into()
        }
    );

    // Every pod request was node-scoped: never a cluster-wide pod list or watch.
    let pod_requests: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/pods"))
        .collect();
    assert!(pod_requests.len() >= 2, "{pod_requests:?}");
    for r in &pod_requests {
        assert!(
            r.query.contains("fieldSelector=spec.nodeName=node-1"),
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn an_outage_is_retryable_and_deletions_during_it_are_reported_after() {
    let (server, _dir, k8s) = setup().await;
    let mut changes = k8s.pods.changes();
    assert!(k8s.pods.wait_synced(WAIT).await);
    next(&mut changes).await;
    next(&mut changes).await;

    server.set_available(false);
    let err = eventually("pods() to fail", || async { k8s.pods.pods().await.err() }).await;
    assert!(err.retryable, "{err:?}");
    // While it is down, a pod goes away and the server forgets its history, so the
    // watch cannot resume and must list again.
    server.delete_pod("default", "pending").unwrap();
    server.compact();
    server.set_available(true);

    assert_eq!(
        next(&mut changes).await,
        PodEvent::Deleted {
            namespace: "default".into(),
            name: "pending".into()
        }
    );
    let pods = eventually("pods() to answer", || async { k8s.pods.pods().await.ok() }).await;
    assert_eq!(pods, vec![info("running", Some("10.0.0.5"))]);
}

#[tokio::test]
async fn node_vxnets_capacity_and_events() {
    let (server, _dir, k8s) = setup().await;
    assert_eq!(
        k8s.node.vxnets().await.unwrap(),
        vec![VxnetId::new("vxnet-a"), VxnetId::new("vxnet-b")]
    );

    k8s.capacity.publish(Capacity {
        free_nics: 3,
        assignable_pods: 41,
    });
    eventually("capacity annotations", || async {
        let node = server.get("v1", "Node", "", "node-1")?;
        let a = &node["metadata"]["annotations"];
        (a[FREE_NICS_ANNOTATION] == "3" && a[ASSIGNABLE_PODS_ANNOTATION] == "41").then_some(())
    })
    .await;
    // The vxnet annotation is untouched by the merge patch.
    assert_eq!(
        k8s.node.vxnets().await.unwrap(),
        vec![VxnetId::new("vxnet-a"), VxnetId::new("vxnet-b")]
    );

    assert!(k8s.pods.wait_synced(WAIT).await);
    k8s.record_nic_shortage(
        "default",
        "pending",
        NicShortage::QuotaExceeded,
        "CreateNics: quota of NICs per instance exceeded",
    );
    let pod_uid = server.get("v1", "Pod", "default", "pending").unwrap()["metadata"]["uid"].clone();
    let event = eventually("the event", || async { server.events().into_iter().next() }).await;
    assert_eq!(event["reason"], "NicQuotaExceeded");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["regarding"]["name"], "pending");
    assert_eq!(event["regarding"]["kind"], "Pod");
    assert_eq!(event["regarding"]["uid"], pod_uid);
    assert_eq!(event["reportingController"], "hostnic");

    // A pod the agent recovered from the node after losing its checkpoint.
    k8s.record_checkpoint_recovered(
        "default",
        "running",
        "the hostnic agent's checkpoint was missing; this pod keeps its address 10.0.0.5",
    );
    let running_uid =
        server.get("v1", "Pod", "default", "running").unwrap()["metadata"]["uid"].clone();
    let event = eventually("the recovery event", || async {
        server
            .events()
            .into_iter()
            .find(|e| e["reason"] == "CheckpointRecovered")
    })
    .await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["action"], "RecoverCheckpoint");
    assert_eq!(event["regarding"]["name"], "running");
    assert_eq!(event["regarding"]["uid"], running_uid);
    assert!(
        event["note"].as_str().unwrap().contains("10.0.0.5"),
        "{event}"
    );
}

#[tokio::test]
async fn the_vxnet_lookup_is_retryable_while_the_server_is_down() {
    let (server, _dir, k8s) = setup().await;
    server.set_available(false);
    let err = k8s.node.vxnets().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    server.set_available(true);
    assert_eq!(k8s.node.vxnets().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_missing_kubeconfig_is_a_configuration_error() {
    let err = hostnic_k8s::connect(Some(std::path::Path::new("/nonexistent/kubeconfig")), "n")
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
}
