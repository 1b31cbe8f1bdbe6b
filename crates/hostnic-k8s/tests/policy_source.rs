//! [`KubePolicySource`] through a real `kube::Client` against the fake API server:
//! policies, namespaces and pods of every namespace, their changes, the highest
//! resourceVersion, the direct pod lookup and an outage.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::time::Duration;

use hostnic_core::policy::{ContainerPort, PodRef, Protocol};
use hostnic_k8s::KubePolicySource;
use hostnic_k8s::fake_apiserver::FakeApiServer;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// Polls `f` every 20 ms until it returns `Some`, failing after [`WAIT`].
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rv(obj: &serde_json::Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn namespace(name: &str, labels: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn deny_all(ns: &str, name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    })
}

async fn setup() -> (FakeApiServer, KubePolicySource) {
    let server = FakeApiServer::start().await.unwrap();
    server
        .apply(namespace("x", json!({"kubernetes.io/metadata.name": "x"})))
        .unwrap();
    server.apply(deny_all("x", "deny")).unwrap();
    let mut a = server.add_pod("x", "a", "node-1", Some("10.0.0.5"));
    a["metadata"]["labels"] = json!({"pod": "a"});
    a["spec"]["containers"][0]["ports"] = json!([{"name": "serve-80-tcp", "containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}]);
    server.apply(a).unwrap();
    // Elsewhere and without an IP: still selectable.
    server.add_pod("y", "b", "node-2", None);
    let mut host = server.add_pod("kube-system", "proxy", "node-1", Some("192.168.0.2"));
    host["spec"]["hostNetwork"] = json!(true);
    server.apply(host).unwrap();
    let client = kube::Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap();
    let source = KubePolicySource::spawn(client);
    (server, source)
}

#[tokio::test]
async fn the_view_holds_policies_namespaces_and_pods_of_every_namespace() {
    let (server, source) = setup().await;
    assert!(source.wait_synced(WAIT).await);
    let view = source.view();
    assert_eq!(view.policies.len(), 1);
    assert_eq!(view.policies[0].metadata.name, "deny");
    assert_eq!(view.namespaces.len(), 1);
    assert_eq!(
        view.namespaces[0].labels,
        BTreeMap::from([("kubernetes.io/metadata.name".into(), "x".into())])
    );
    let pods: Vec<_> = view.pods.iter().map(|p| p.pod.to_string()).collect();
    assert_eq!(pods, ["x/a", "y/b"], "host-network pods are left out");
    let a = &view.pods[0];
    assert_eq!(a.ip, Some(Ipv4Addr::new(10, 0, 0, 5)));
    assert_eq!(a.labels.get("pod").map(String::as_str), Some("a"));
    assert_eq!(
        a.ports,
        vec![
            ContainerPort {
                name: Some("serve-80-tcp".into()),
                container_port: 80,
                protocol: Protocol::Tcp
            },
            ContainerPort {
                name: None,
                container_port: 53,
                protocol: Protocol::Udp
            },
        ]
    );
    assert_eq!(view.pods[1].ip, None);
    // The highest resourceVersion of the objects seen.
    let highest = server
        .list("v1", "Pod")
        .iter()
        .chain(&server.list("v1", "Namespace"))
        .chain(&server.list("networking.k8s.io/v1", "NetworkPolicy"))
        .map(rv)
        .max()
        .unwrap();
    assert_eq!(view.resource_version, highest);

    // A change wakes subscribers and the view follows; its resourceVersion is the write's.
    let mut changes = source.subscribe();
    changes.borrow_and_update();
    let written = server.apply(deny_all("y", "deny-y")).unwrap();
    tokio::time::timeout(WAIT, changes.changed())
        .await
        .unwrap()
        .unwrap();
    let view = eventually("the new policy", || async {
        let v = source.view();
        (v.policies.len() == 2).then_some(v)
    })
    .await;
    assert_eq!(view.resource_version, rv(&written));
    let (_, arrived) = source.take_view();
    assert!(
        arrived.is_some(),
        "a change not yet taken has an arrival time"
    );
    assert_eq!(source.take_view().1, None, "taken once");

    // Deletion: gone from the view, and the deletion's resourceVersion counts.
    let deleted = server
        .delete("networking.k8s.io/v1", "NetworkPolicy", "x", "deny")
        .unwrap();
    let view = eventually("the deletion", || async {
        let v = source.view();
        (v.policies.len() == 1).then_some(v)
    })
    .await;
    assert_eq!(view.resource_version, rv(&deleted));

    // A write none of the three watches carries (a Node) still moves every watch's
    // progress (bookmarks): the view is current up to it.
    let node = server.add_node("node-9", &[]);
    eventually("the bookmarks", || async {
        (source.view().resource_version == rv(&node)).then_some(())
    })
    .await;
    assert_eq!(source.highest_resource_version(), rv(&node));

    // Namespace labels change.
    server
        .apply(namespace(
            "x",
            json!({"kubernetes.io/metadata.name": "x", "team": "t"}),
        ))
        .unwrap();
    eventually("the namespace label", || async {
        source.view().namespaces[0]
            .labels
            .contains_key("team")
            .then_some(())
    })
    .await;
    // A pod deleted leaves; a pod finishing leaves too.
    server.delete_pod("y", "b").unwrap();
    let mut a = server.get("v1", "Pod", "x", "a").unwrap();
    a["status"]["phase"] = json!("Succeeded");
    server.apply(a).unwrap();
    eventually("the pods to leave", || async {
        source.view().pods.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_pod_not_yet_watched_is_read_directly_and_an_outage_is_an_error() {
    let (server, source) = setup().await;
    assert!(source.wait_synced(WAIT).await);
    let mut c = server.add_pod("z", "c", "node-1", None);
    c["metadata"]["labels"] = json!({"pod": "c"});
    server.apply(c).unwrap();
    let got = source.pod("z", "c").await.unwrap().unwrap();
    assert_eq!(got.pod, PodRef::new("z", "c"));
    assert_eq!(got.labels.get("pod").map(String::as_str), Some("c"));
    assert_eq!(source.pod("z", "nope").await.unwrap(), None);
    eventually("the cache to have it", || async {
        source.cached_pod("z", "c")
    })
    .await;

    server.set_available(false);
    let err = source.pod("z", "c").await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    // The cache keeps what it had while the server is away.
    assert!(source.cached_pod("x", "a").is_some());
    server.set_available(true);
    // The watches come back and see what changed meanwhile.
    server.apply(deny_all("z", "later")).unwrap();
    eventually("the watch to resume", || async {
        (source.view().policies.len() == 2).then_some(())
    })
    .await;
}
