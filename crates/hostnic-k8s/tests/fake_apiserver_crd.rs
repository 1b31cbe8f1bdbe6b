//! The fake API server's custom resources, Leases and optimistic concurrency,
//! driven through a real `kube::Client` with the semantics a real API server has:
//! the CRD itself makes `hostnicnodes` served; the status subresource; generation;
//! 409 on a stale resourceVersion; watches with bookmarks.

use std::time::Duration;

use futures::StreamExt;
use hostnic_k8s::crd::{HostnicNode, HostnicNodeSpec, HostnicNodeStatus};
use hostnic_k8s::fake_apiserver::FakeApiServer;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, CustomResourceExt as _};
use serde_json::json;

async fn client(server: &FakeApiServer) -> (Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.write_kubeconfig(dir.path()).unwrap();
    (hostnic_k8s::client(Some(&kubeconfig)).await.unwrap(), dir)
}

fn spec(want: i64) -> HostnicNodeSpec {
    HostnicNodeSpec {
        instance_id: "i-1".into(),
        want_nics: want,
        max_nics: 62,
        ..Default::default()
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict")
}

#[tokio::test]
async fn a_crd_created_through_the_api_serves_its_kind_with_a_status_subresource() {
    let server = FakeApiServer::start().await.unwrap();
    let (client, _dir) = client(&server).await;
    let nodes: Api<HostnicNode> = Api::all(client.clone());
    // Not served before its CRD exists.
    assert!(nodes.list(&Default::default()).await.is_err());
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds
        .create(&PostParams::default(), &HostnicNode::crd())
        .await
        .unwrap();
    let established = crd.status.unwrap().conditions.unwrap();
    assert!(
        established
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );

    // Created with a status: the status subresource owns it, so it is dropped.
    let mut obj = HostnicNode::new("node-1", spec(3));
    obj.status = Some(HostnicNodeStatus {
        attached: 9,
        ..Default::default()
    });
    let created = nodes.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.status.is_none());

    // The controller writes status: the spec it sends along is ignored.
    let mut answer = created.clone();
    answer.spec.want_nics = 100;
    answer.status = Some(HostnicNodeStatus {
        attached: 3,
        observed_generation: Some(1),
        ..Default::default()
    });
    let written = nodes
        .replace_status("node-1", &PostParams::default(), &answer)
        .await
        .unwrap();
    assert_eq!(written.spec.want_nics, 3);
    assert_eq!(written.status.as_ref().unwrap().attached, 3);
    assert_eq!(
        written.metadata.generation,
        Some(1),
        "a status write is no spec change"
    );

    // The agent writes spec: the status it sends along is ignored; the generation
    // counts the spec change; a label change is no spec change.
    let mut request = written.clone();
    request.spec.want_nics = 5;
    request.status = None;
    let replaced = nodes
        .replace("node-1", &PostParams::default(), &request)
        .await
        .unwrap();
    assert_eq!(replaced.status.as_ref().unwrap().attached, 3, "status kept");
    assert_eq!(replaced.metadata.generation, Some(2));
    let labelled = nodes
        .patch(
            "node-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));
    let patched = nodes
        .patch_status(
            "node-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"wantNics": 0}, "status": {"attached": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(
        (patched.spec.want_nics, patched.status.unwrap().attached),
        (5, 5)
    );

    // A write from a stale read is a conflict, on the resource and on /status.
    let stale = created;
    let e = nodes
        .replace("node-1", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(is_conflict(&e), "{e:?}");
    let e = nodes
        .replace_status("node-1", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(is_conflict(&e), "{e:?}");
    let e = nodes
        .patch(
            "node-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "spec": {"wantNics": 1}})),
        )
        .await
        .unwrap_err();
    assert!(is_conflict(&e), "{e:?}");

    // Deleting the CRD stops serving the kind and deletes its objects.
    crds.delete("hostnicnodes.hostnic.io", &Default::default())
        .await
        .unwrap();
    assert!(nodes.list(&Default::default()).await.is_err());
    assert!(server.list("hostnic.io/v1alpha1", "HostnicNode").is_empty());
}

#[tokio::test]
async fn discovery_lists_the_custom_kind_with_its_short_name() {
    let server = FakeApiServer::start().await.unwrap();
    server
        .install_crd_yaml(&hostnic_k8s::crd::crd_yaml())
        .unwrap();
    let (client, _dir) = client(&server).await;
    let discovery = kube::discovery::Discovery::new(client).run().await.unwrap();
    let (resource, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(r, _)| r.plural == "hostnicnodes")
        .expect("hostnicnodes in discovery");
    assert_eq!(resource.group, "hostnic.io");
    assert_eq!(caps.scope, kube::discovery::Scope::Cluster);
    assert!(caps.subresources.iter().any(|(r, _)| r.plural == "status"));
}

type Events = futures::stream::BoxStream<'static, watcher::Result<watcher::Event<HostnicNode>>>;

async fn next(events: &mut Events) -> watcher::Result<watcher::Event<HostnicNode>> {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event")
        .expect("open")
}

#[tokio::test]
async fn a_watch_sees_spec_writes_and_status_writes() {
    let server = FakeApiServer::start().await.unwrap();
    server
        .install_crd_yaml(&hostnic_k8s::crd::crd_yaml())
        .unwrap();
    let (client, _dir) = client(&server).await;
    let nodes: Api<HostnicNode> = Api::all(client);
    nodes
        .create(&PostParams::default(), &HostnicNode::new("node-1", spec(1)))
        .await
        .unwrap();
    let mut events: Events = watcher(nodes.clone(), watcher::Config::default()).boxed();
    // Until the initial list is in.
    loop {
        if let watcher::Event::InitDone = next(&mut events).await.unwrap() {
            break;
        }
    }
    nodes
        .patch_status(
            "node-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"attached": 1}})),
        )
        .await
        .unwrap();
    match next(&mut events).await.unwrap() {
        watcher::Event::Apply(n) => assert_eq!(n.status.unwrap().attached, 1),
        other => panic!("{other:?}"),
    }
    // Writes to other kinds are bookmarks: nothing for this watch.
    server.add_node("node-1", &[]);
    nodes
        .patch(
            "node-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"wantNics": 2}})),
        )
        .await
        .unwrap();
    match next(&mut events).await.unwrap() {
        watcher::Event::Apply(n) => {
            assert_eq!(n.spec.want_nics, 2);
            assert_eq!(n.metadata.generation, Some(2));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn leases_are_served_with_optimistic_concurrency() {
    let server = FakeApiServer::start().await.unwrap();
    let (client, _dir) = client(&server).await;
    let leases: Api<Lease> = Api::namespaced(client, "kube-system");
    let mut lease = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some("hostnic-controller".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }),
    };
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    lease = created.clone();
    lease.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("hostnic-controller", &PostParams::default(), &lease)
        .await
        .unwrap();
    // The other candidate read before that write: its takeover conflicts.
    let mut late = created;
    late.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let e = leases
        .replace("hostnic-controller", &PostParams::default(), &late)
        .await
        .unwrap_err();
    assert!(is_conflict(&e), "{e:?}");
    let now = leases.get("hostnic-controller").await.unwrap();
    assert_eq!(now.spec.unwrap().holder_identity.as_deref(), Some("b"));
}
