//! `KubeNicSupply` (the agent's controller mode) against the fake API server
//! through a real `kube::Client`: the HostnicNode created with an owner
//! reference to its Node, spec writes coalesced and none for an unchanged
//! request, the status watched, an outage waited out without blocking.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt as _;
use hostnic_core::fleet::{NodeDemand, NodeName};
use hostnic_core::ports::NicSupply as _;
use hostnic_core::types::{InstanceId, NicId};
use hostnic_k8s::crd::{HostnicCondition, HostnicNic, HostnicNode, HostnicNodeStatus};
use hostnic_k8s::fake_apiserver::FakeApiServer;
use hostnic_k8s::{KubeNicSupply, SupplyOptions};
use kube::api::PostParams;
use kube::{Api, Client};

async fn setup() -> (FakeApiServer, Client, tempfile::TempDir) {
    let server = FakeApiServer::start().await.unwrap();
    server
        .install_crd_yaml(&hostnic_k8s::crd::crd_yaml())
        .unwrap();
    server.add_node("node-1", &[]);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.write_kubeconfig(dir.path()).unwrap();
    let client = hostnic_k8s::client(Some(&kubeconfig)).await.unwrap();
    (server, client, dir)
}

fn options() -> SupplyOptions {
    SupplyOptions {
        min_interval: Duration::from_millis(500),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
    }
}

fn demand(want: u32) -> NodeDemand {
    NodeDemand::new(NodeName::new("node-1"), InstanceId::new("i-1"), want)
}

async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never: {what}");
}

#[tokio::test]
async fn the_first_request_creates_the_object_owned_by_its_node() {
    let (server, client, _dir) = setup().await;
    let supply = KubeNicSupply::spawn(client.clone(), "node-1", options());
    let mut d = demand(5);
    d.release = BTreeSet::from([NicId::new("52:54:00:00:00:01").unwrap()]);
    d.waiting = 2;
    supply.request(&d).await.unwrap();
    let api: Api<HostnicNode> = Api::all(client);
    let obj = until("created", async || api.get_opt("node-1").await.unwrap()).await;
    assert_eq!(obj.spec.instance_id, "i-1");
    assert_eq!(obj.spec.want_nics, 5);
    assert_eq!(obj.spec.max_nics, 62);
    assert_eq!(obj.spec.release, vec!["52:54:00:00:00:01".to_string()]);
    assert_eq!(obj.spec.waiting_pods, 2);
    assert_eq!(obj.demand(), d, "the controller reads back what was asked");
    let owners = obj.metadata.owner_references.expect("owned by its Node");
    let node = server.get("v1", "Node", "", "node-1").unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].kind, "Node");
    assert_eq!(owners[0].name, "node-1");
    assert_eq!(
        Some(owners[0].uid.as_str()),
        node.pointer("/metadata/uid").and_then(|u| u.as_str())
    );
    assert_eq!(supply.writes(), 1);
}

#[tokio::test]
async fn unchanged_requests_write_nothing_and_bursts_of_changes_are_coalesced() {
    let (_server, client, _dir) = setup().await;
    let supply = KubeNicSupply::spawn(client.clone(), "node-1", options());
    let api: Api<HostnicNode> = Api::all(client);
    supply.request(&demand(5)).await.unwrap();
    until("created", async || api.get_opt("node-1").await.unwrap()).await;
    // The same request, many times: nothing written.
    for _ in 0..20 {
        supply.request(&demand(5)).await.unwrap();
    }
    // Ten changes in a burst: the last one is written, in one write.
    for want in 6..=15 {
        supply.request(&demand(want)).await.unwrap();
    }
    until("the last request written", async || {
        let obj = api.get_opt("node-1").await.unwrap()?;
        (obj.spec.want_nics == 15).then_some(())
    })
    .await;
    // Let a second interval pass: nothing more to write.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(supply.writes(), 2, "one create, one coalesced replace");
    let obj = api.get_opt("node-1").await.unwrap().unwrap();
    assert_eq!(obj.metadata.generation, Some(2));
}

/// An object deleted while its agent runs (by hand, or by a mistaken cleanup) is
/// created again with the agent's current request, without waiting for the
/// request to change.
#[tokio::test]
async fn a_deleted_object_is_created_again_with_the_current_request() {
    let (_server, client, _dir) = setup().await;
    let supply = KubeNicSupply::spawn(client.clone(), "node-1", options());
    let api: Api<HostnicNode> = Api::all(client);
    supply.request(&demand(7)).await.unwrap();
    let first = until("created", async || api.get_opt("node-1").await.unwrap()).await;
    api.delete("node-1", &Default::default()).await.unwrap();
    let again = until("created again", async || {
        let obj = api.get_opt("node-1").await.unwrap()?;
        (obj.metadata.uid != first.metadata.uid).then_some(obj)
    })
    .await;
    assert_eq!(again.spec.want_nics, 7);
    assert_eq!(supply.writes(), 2);
}

#[tokio::test]
async fn the_status_is_watched_and_read_as_what_was_supplied() {
    let (_server, client, _dir) = setup().await;
    let supply = KubeNicSupply::spawn(client.clone(), "node-1", options());
    let mut changes = supply.changes();
    assert!(!supply.supplied().await.unwrap().answered, "no object yet");
    supply.request(&demand(1)).await.unwrap();
    let api: Api<HostnicNode> = Api::all(client);
    let mut obj = until("created", async || api.get_opt("node-1").await.unwrap()).await;
    obj.status = Some(HostnicNodeStatus {
        nics: vec![HostnicNic {
            id: "52:54:00:00:00:07".into(),
            ip: "172.16.1.7".into(),
            vxnet: "vxnet-1".into(),
            cidr: Some("172.16.1.0/24".into()),
            gateway: Some("172.16.1.1".into()),
            phase: "Attached".into(),
        }],
        attached: 1,
        conditions: vec![HostnicCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "NicsAttached".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    api.replace_status("node-1", &PostParams::default(), &obj)
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let s = changes.next().await.expect("the stream goes on");
            if !s.nics.is_empty() {
                return s;
            }
        }
    })
    .await
    .expect("the status change is streamed");
    assert!(seen.answered && seen.ready && seen.refusal.is_none());
    assert_eq!(seen.nics[0].id, NicId::new("52:54:00:00:00:07").unwrap());
    assert_eq!(seen.nics[0].gateway, Some("172.16.1.1".parse().unwrap()));
    assert_eq!(supply.supplied().await.unwrap(), seen);

    // A refusal is read from the Valid condition.
    let mut obj = api.get("node-1").await.unwrap();
    obj.status
        .as_mut()
        .unwrap()
        .conditions
        .push(HostnicCondition {
            type_: "Valid".into(),
            status: "False".into(),
            reason: "UnknownInstance".into(),
            message: "the cloud does not know instance i-1".into(),
            ..Default::default()
        });
    api.replace_status("node-1", &PostParams::default(), &obj)
        .await
        .unwrap();
    let refused = until("the refusal", async || {
        supply.supplied().await.unwrap().refusal
    })
    .await;
    assert!(refused.starts_with("UnknownInstance: "), "{refused}");
}

#[tokio::test]
async fn a_request_during_an_outage_returns_at_once_and_is_written_after_it() {
    let (server, client, _dir) = setup().await;
    let supply = KubeNicSupply::spawn(client.clone(), "node-1", options());
    server.set_available(false);
    tokio::time::timeout(Duration::from_millis(100), supply.request(&demand(4)))
        .await
        .expect("a request never waits on the API server")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(supply.writes(), 0);
    server.set_available(true);
    let api: Api<HostnicNode> = Api::all(client);
    let obj = until("written after the outage", async || {
        api.get_opt("node-1").await.unwrap()
    })
    .await;
    assert_eq!(obj.spec.want_nics, 4);
}
