//! `KubePods` against kube's mock service pattern (`tower_test::mock::pair`): the
//! requests it sends are asserted on, list and watch responses are served by hand.

use std::time::Duration;

use futures::StreamExt;
use hostnic_core::ports::PodSource;
use hostnic_core::types::{PodEvent, PodInfo};
use hostnic_k8s::KubePods;
use http::{Request, Response};
use kube::client::Body;
use serde_json::json;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn pod(name: &str, host_network: bool, ip: Option<&str>, rv: &str) -> serde_json::Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": rv, "uid": format!("uid-{name}")},
        "spec": {"nodeName": "node-1", "hostNetwork": host_network, "containers": []},
        "status": {"phase": "Pending"},
    });
    if let Some(ip) = ip {
        p["status"]["podIP"] = json!(ip);
        p["status"]["phase"] = json!("Running");
    }
    p
}

async fn next(
    handle: &mut Handle,
) -> (
    Request<Body>,
    tower_test::mock::SendResponse<Response<Body>>,
) {
    tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("a request within 10 s")
        .expect("the client is alive")
}

fn query(req: &Request<Body>) -> String {
    percent_encoding::percent_decode_str(req.uri().query().unwrap_or_default())
        .decode_utf8_lossy()
        .into_owned()
}

#[tokio::test]
async fn lists_and_watches_only_this_nodes_pods_and_skips_host_network() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let pods = KubePods::spawn(client, "node-1");
    let mut changes = pods.changes();

    // The initial LIST: cluster-wide path, but restricted to the node by fieldSelector.
    let (req, send) = next(&mut handle).await;
    assert_eq!(req.method(), http::Method::GET);
    assert_eq!(req.uri().path(), "/api/v1/pods");
    let q = query(&req);
    assert!(q.contains("fieldSelector=spec.nodeName=node-1"), "{q}");
    assert!(!q.contains("watch=true"), "{q}");
    let list = json!({
        "apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": "10"},
        "items": [pod("web", false, None, "8"), pod("proxy", true, Some("192.168.0.2"), "9")],
    });
    send.send_response(Response::new(Body::from(
        serde_json::to_vec(&list).unwrap(),
    )));

    // The WATCH resumes from the list's resource version, with the same fieldSelector.
    let (req, send) = next(&mut handle).await;
    let q = query(&req);
    assert_eq!(req.uri().path(), "/api/v1/pods");
    assert!(q.contains("watch=true"), "{q}");
    assert!(q.contains("fieldSelector=spec.nodeName=node-1"), "{q}");
    assert!(q.contains("resourceVersion=10"), "{q}");

    // The initial list is announced: the pending pod, never the host-network one.
    let web_pending = PodInfo {
        namespace: "default".into(),
        name: "web".into(),
        pending: true,
        ip: None,
    };
    let first = tokio::time::timeout(Duration::from_secs(5), changes.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, PodEvent::Upserted(web_pending.clone()));
    assert!(pods.wait_synced(Duration::from_secs(5)).await);
    assert_eq!(pods.pods().await.unwrap(), vec![web_pending]);

    // The pod gets its IP, then is deleted.
    let mut events = Vec::new();
    for (kind, obj) in [
        ("MODIFIED", pod("web", false, Some("10.0.0.9"), "11")),
        ("DELETED", pod("web", false, Some("10.0.0.9"), "12")),
    ] {
        events.extend(serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap());
        events.push(b'\n');
    }
    send.send_response(Response::new(Body::from(events)));
    let got: Vec<PodEvent> =
        tokio::time::timeout(Duration::from_secs(5), changes.by_ref().take(2).collect())
            .await
            .unwrap();
    assert_eq!(
        got,
        vec![
            PodEvent::Upserted(PodInfo {
                namespace: "default".into(),
                name: "web".into(),
                pending: false,
                ip: Some("10.0.0.9".parse().unwrap()),
            }),
            PodEvent::Deleted {
                namespace: "default".into(),
                name: "web".into()
            },
        ]
    );

    // The watch ended with the response body: it is re-established from the last
    // resource version seen, still node-scoped.
    let (req, _send) = next(&mut handle).await;
    let q = query(&req);
    assert!(
        q.contains("watch=true") && q.contains("resourceVersion=12"),
        "{q}"
    );
    assert!(q.contains("fieldSelector=spec.nodeName=node-1"), "{q}");
}

#[tokio::test]
async fn pods_is_a_retryable_error_until_the_first_list_succeeded() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let pods = KubePods::spawn(client, "node-1");
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "etcd down", "reason": "InternalError", "code": 500});
    let answer_500 = tokio::spawn(async move {
        // Every request (the watcher's LIST and pods()' own LIST) fails with 500.
        while let Some((_req, send)) = handle.next_request().await {
            send.send_response(
                Response::builder()
                    .status(500)
                    .body(Body::from(serde_json::to_vec(&status).unwrap()))
                    .unwrap(),
            );
        }
    });
    let err = pods.pods().await.unwrap_err();
    assert!(err.retryable, "{err:?}");
    assert!(!pods.is_synced());
    drop(pods);
    answer_500.abort();
}
