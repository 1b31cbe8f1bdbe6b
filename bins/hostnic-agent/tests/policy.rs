//! NetworkPolicy enforcement of the whole agent in-process, with fakes of its two
//! policy traits: a source whose view the test edits (and can take down) and a
//! dataplane that records what it was asked to program.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::*;
use futures::StreamExt;
use futures::stream::BoxStream;
use hostnic_agent::introspect::{PodPolicy, PolicyStatus};
use hostnic_agent::policy::PolicyDeps;
use hostnic_core::api::{Outcome, Reply, Response, codes};
use hostnic_core::policy::{
    ClusterView, CompiledPolicy, LocalPod, NetworkPolicy, PodRef, PolicyNamespace, PolicyPod,
    ProgramStats as SyncStats, Programmed,
};
use hostnic_core::ports::{PolicyDataplane, PolicyDataplaneError, PolicySource, PolicySourceError};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(20);

/// A policy source over a view the test edits.
struct FakeSource {
    view: Mutex<ClusterView>,
    synced: AtomicBool,
    /// Direct lookups fail (the API server is unreachable).
    down: AtomicBool,
    /// Pods only a direct lookup finds (the watch has not delivered them yet).
    unwatched: Mutex<BTreeMap<PodRef, PolicyPod>>,
    lookups: AtomicUsize,
    changes: watch::Sender<u64>,
}

impl FakeSource {
    fn new(view: ClusterView) -> Arc<Self> {
        Arc::new(Self {
            view: Mutex::new(view),
            synced: AtomicBool::new(true),
            down: AtomicBool::new(false),
            unwatched: Mutex::new(BTreeMap::new()),
            lookups: AtomicUsize::new(0),
            changes: watch::channel(0).0,
        })
    }

    fn edit(&self, f: impl FnOnce(&mut ClusterView)) {
        {
            let mut v = self.view.lock().unwrap();
            f(&mut v);
            v.resource_version += 1;
        }
        self.changes.send_modify(|n| *n += 1);
    }
}

#[async_trait]
impl PolicySource for FakeSource {
    fn is_synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }
    fn view(&self) -> Arc<ClusterView> {
        Arc::new(self.view.lock().unwrap().clone())
    }
    fn take_view(&self) -> (Arc<ClusterView>, Option<Instant>) {
        (self.view(), Some(Instant::now()))
    }
    fn changes(&self) -> BoxStream<'static, ()> {
        let mut rx = self.changes.subscribe();
        rx.borrow_and_update();
        futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            rx.borrow_and_update();
            Some(((), rx))
        })
        .boxed()
    }
    fn cached_pod(&self, namespace: &str, name: &str) -> Option<PolicyPod> {
        let key = PodRef::new(namespace, name);
        self.view
            .lock()
            .unwrap()
            .pods
            .iter()
            .find(|p| p.pod == key)
            .cloned()
    }
    async fn pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PolicyPod>, PolicySourceError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(PolicySourceError {
                message: "the API server is unreachable".into(),
            });
        }
        Ok(self
            .unwatched
            .lock()
            .unwrap()
            .get(&PodRef::new(namespace, name))
            .cloned())
    }
}

/// One sync the dataplane was asked for.
#[derive(Clone)]
struct Sync {
    compiled: CompiledPolicy,
    local: Vec<LocalPod>,
}

/// Records every sync; committed syncs only. Each sync can be made to take a
/// while, and the most syncs ever in flight at once is kept.
#[derive(Clone, Default)]
struct FakeDataplane {
    syncs: Arc<Mutex<Vec<Sync>>>,
    delay: Duration,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl FakeDataplane {
    fn last(&self) -> Option<Sync> {
        self.syncs.lock().unwrap().last().cloned()
    }
    fn count(&self) -> usize {
        self.syncs.lock().unwrap().len()
    }
}

#[async_trait]
impl PolicyDataplane for FakeDataplane {
    async fn sync(
        &mut self,
        compiled: &CompiledPolicy,
        local: &[LocalPod],
    ) -> Result<Programmed, PolicyDataplaneError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.syncs.lock().unwrap().push(Sync {
            compiled: compiled.clone(),
            local: local.to_vec(),
        });
        Ok(Programmed {
            stats: SyncStats::default(),
            rules: local.len(),
            elements: compiled.pod_sets.values().map(|s| s.len()).sum(),
        })
    }
}

fn policy(json: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(json).unwrap()
}

/// Ingress deny-all for every pod of `default`.
fn deny_ingress() -> NetworkPolicy {
    policy(serde_json::json!({
        "metadata": {"name": "deny", "namespace": "default"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }))
}

fn policy_pod(i: usize) -> PolicyPod {
    PolicyPod {
        pod: PodRef::new("default", format!("pod-{i}")),
        labels: BTreeMap::from([("app".into(), format!("a{i}"))]),
        ip: None,
        ports: Vec::new(),
    }
}

fn view(pods: &[usize], policies: Vec<NetworkPolicy>) -> ClusterView {
    ClusterView {
        policies,
        namespaces: vec![PolicyNamespace::named("default")],
        pods: pods.iter().map(|i| policy_pod(*i)).collect(),
        resource_version: 1,
    }
}

fn is_ok(r: &Response) -> bool {
    matches!(
        r.outcome,
        Outcome::Ok(Reply::Add(_)) | Outcome::Ok(Reply::Del(_))
    )
}

fn err_code(r: &Response) -> u32 {
    match &r.outcome {
        Outcome::Error(e) => e.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn local_names(s: &Sync) -> Vec<String> {
    s.local.iter().map(|l| l.pod.to_string()).collect()
}

async fn policy_status(world: &World) -> PolicyStatus {
    let (line, body) = http_get(world.settings.metrics_addr, "/v1/policy").await;
    assert!(line.contains("200"), "{line}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn start(world: &World, source: &Arc<FakeSource>, dataplane: &FakeDataplane) -> Agent {
    world.start_with_policy(PolicyDeps {
        source: source.clone(),
        dataplane: Box::new(dataplane.clone()),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_programs_the_pods_chains_before_answering_and_del_removes_them() {
    let world = World::small();
    let source = FakeSource::new(view(&[1], vec![deny_ingress()]));
    let dataplane = FakeDataplane::default();
    let agent = start(&world, &source, &dataplane);
    agent.serving().await;

    let r = call(&world.socket(), add_req(1, 30_000)).await;
    assert!(is_ok(&r), "{r:?}");
    let ip = match &r.outcome {
        Outcome::Ok(Reply::Add(a)) => a.ip.addr(),
        _ => unreachable!(),
    };
    // When ADD answered, a committed sync had the pod, isolated, at its address.
    let last = dataplane.last().expect("a sync before the answer");
    assert_eq!(local_names(&last), ["default/pod-1"]);
    let rules = &last.compiled.pods[&PodRef::new("default", "pod-1")];
    assert!(rules.ingress.isolated);
    assert_eq!(rules.ip, Some(ip), "the agent's address, not the API's");
    assert_eq!(
        last.local[0].veth,
        world.host.plumbed()[&ip],
        "hooked on the pod's veth"
    );
    assert_eq!(source.lookups.load(Ordering::SeqCst), 0, "it was cached");

    // The pod's effective policy over HTTP; an unknown pod is 404.
    let (line, body) = http_get(world.settings.metrics_addr, "/v1/policy/pods/default/pod-1").await;
    assert!(line.contains("200"), "{line}");
    let doc: PodPolicy = serde_json::from_str(&body).unwrap();
    assert!(doc.ingress.isolated && doc.ingress.allow.is_empty());
    assert!(!doc.egress.isolated);
    assert_eq!(doc.policies, ["default/deny"]);
    let (line, _) = http_get(world.settings.metrics_addr, "/v1/policy/pods/default/nope").await;
    assert!(line.contains("404"), "{line}");
    let status = policy_status(&world).await;
    assert!(status.enabled);
    assert_eq!(status.local_pods, 1);
    assert_eq!(status.isolated_local_pods, 1);
    assert_eq!(status.policies, 1);
    assert_eq!(status.synced_resource_version, 1);

    // DEL: the pod's chains go before DEL answers.
    let r = call(&world.socket(), del_req(1)).await;
    assert!(is_ok(&r), "{r:?}");
    assert!(local_names(&dataplane.last().unwrap()).is_empty());
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_the_cache_lacks_is_looked_up_and_enforced_with_its_labels() {
    let world = World::small();
    // Only pod-2 is selected, by label; the watch has not delivered pod-2 yet.
    let only_a2 = policy(serde_json::json!({
        "metadata": {"name": "a2", "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": {"app": "a2"}}, "policyTypes": ["Ingress"]},
    }));
    let source = FakeSource::new(view(&[], vec![only_a2]));
    source
        .unwatched
        .lock()
        .unwrap()
        .insert(PodRef::new("default", "pod-2"), policy_pod(2));
    let dataplane = FakeDataplane::default();
    let agent = start(&world, &source, &dataplane);
    agent.serving().await;

    let r = call(&world.socket(), add_req(2, 30_000)).await;
    assert!(is_ok(&r), "{r:?}");
    assert_eq!(source.lookups.load(Ordering::SeqCst), 1);
    let last = dataplane.last().unwrap();
    assert!(
        last.compiled.pods[&PodRef::new("default", "pod-2")]
            .ingress
            .isolated
    );
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_of_an_unknown_pod_with_the_source_down_fails_retryably_and_leaks_nothing() {
    let world = World::small();
    let source = FakeSource::new(view(&[], vec![deny_ingress()]));
    source.down.store(true, Ordering::SeqCst);
    let dataplane = FakeDataplane::default();
    let agent = start(&world, &source, &dataplane);
    agent.serving().await;

    let r = call(&world.socket(), add_req(3, 2_000)).await;
    assert_eq!(err_code(&r), codes::TRY_AGAIN_LATER, "{r:?}");
    assert!(world.host.plumbed().is_empty(), "nothing plumbed");
    let (_, body) = http_get(world.settings.metrics_addr, "/v1/pods").await;
    assert_eq!(body.trim(), "[]", "no NIC assigned");
    assert!(
        dataplane
            .syncs
            .lock()
            .unwrap()
            .iter()
            .all(|s| s.local.is_empty())
    );

    // A source that has not listed yet fails the same way, even for a cached pod.
    source.down.store(false, Ordering::SeqCst);
    source.synced.store(false, Ordering::SeqCst);
    source.edit(|v| v.pods.push(policy_pod(3)));
    let r = call(&world.socket(), add_req(3, 1_000)).await;
    assert_eq!(err_code(&r), codes::TRY_AGAIN_LATER, "{r:?}");
    assert!(world.host.plumbed().is_empty());

    // Once it has, the retry succeeds.
    source.synced.store(true, Ordering::SeqCst);
    source.edit(|_| {});
    let r = call(&world.socket(), add_req(3, 30_000)).await;
    assert!(is_ok(&r), "{r:?}");

    // A pod without Kubernetes names (podman, ctr) is not subject to policy, even
    // with the source down.
    source.down.store(true, Ordering::SeqCst);
    let mut add = add_req(4, 30_000);
    if let hostnic_core::api::RequestBody::Add(a) = &mut add {
        a.pod.namespace.clear();
        a.pod.name.clear();
    }
    let r = call(&world.socket(), add).await;
    assert!(is_ok(&r), "{r:?}");
    let local = local_names(&dataplane.last().unwrap());
    assert_eq!(local, ["default/pod-3"]);
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_triggers_a_sync_and_advances_the_synced_resource_version() {
    let world = World::small();
    let source = FakeSource::new(view(&[5], vec![]));
    let dataplane = FakeDataplane::default();
    let agent = start(&world, &source, &dataplane);
    agent.serving().await;
    let r = call(&world.socket(), add_req(5, 30_000)).await;
    assert!(is_ok(&r), "{r:?}");
    let pod5 = PodRef::new("default", "pod-5");
    assert!(
        !dataplane.last().unwrap().compiled.pods[&pod5]
            .ingress
            .isolated
    );
    let before = dataplane.count();

    source.edit(|v| v.policies.push(deny_ingress()));
    let until = Instant::now() + WAIT;
    loop {
        let status = policy_status(&world).await;
        if status.synced_resource_version >= 2 {
            assert_eq!(status.policies, 1);
            assert_eq!(status.isolated_local_pods, 1);
            break;
        }
        assert!(Instant::now() < until, "no sync of the change: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dataplane.count() > before);
    assert!(
        dataplane.last().unwrap().compiled.pods[&pod5]
            .ingress
            .isolated
    );

    // The metrics tell it too.
    let (_, metrics) = http_get(world.settings.metrics_addr, "/metrics").await;
    assert!(
        metrics.contains("hostnic_policy_objects{kind=\"policies\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("hostnic_policy_syncs_total{result=\"ok\"}"));
    assert!(metrics.contains("hostnic_policy_enforcement_latency_seconds_count"));
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_coalesce_into_one_sync_at_a_time_that_takes_the_latest_view() {
    let world = World::small();
    let source = FakeSource::new(view(&[10, 11, 12, 13], vec![]));
    let dataplane = FakeDataplane {
        delay: Duration::from_millis(100),
        ..FakeDataplane::default()
    };
    let agent = start(&world, &source, &dataplane);
    agent.serving().await;

    // 50 policy writes in a burst while syncs take 100 ms each, and ADDs asking
    // for syncs of their own meanwhile.
    let socket = world.socket();
    let adds: Vec<_> = (10..14)
        .map(|i| {
            let s = socket.clone();
            tokio::spawn(async move { call(&s, add_req(i, 30_000)).await })
        })
        .collect();
    for i in 0..50 {
        source.edit(|v| {
            v.policies.push(policy(serde_json::json!({
                "metadata": {"name": format!("p{i}"), "namespace": "default"},
                "spec": {"podSelector": {}},
            })));
        });
    }
    for a in adds {
        let r = a.await.unwrap();
        assert!(is_ok(&r), "{r:?}");
    }
    let final_rv = source.view().resource_version;
    let until = Instant::now() + WAIT;
    while policy_status(&world).await.synced_resource_version < final_rv {
        assert!(Instant::now() < until, "the last view was never synced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(dataplane.max_in_flight.load(Ordering::SeqCst), 1);
    let syncs = dataplane.count();
    assert!(
        syncs < 50,
        "{syncs} syncs for 50 writes: bursts must coalesce"
    );
    // The last sync had the latest view: all 50 policies select the 4 pods.
    let last = dataplane.last().unwrap();
    let rules = &last.compiled.pods[&PodRef::new("default", "pod-10")];
    assert_eq!(rules.policies.len(), 50);
    assert_eq!(last.local.len(), 4);
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_pods_a_policy_selects_wait_for_a_sync_at_add_and_del() {
    let world = World::small();
    // pod-1 is selected by label, pod-2 by nothing; every sync takes 1.5 s.
    let only_a1 = policy(serde_json::json!({
        "metadata": {"name": "a1", "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": {"app": "a1"}}, "policyTypes": ["Ingress"]},
    }));
    let source = FakeSource::new(view(&[1, 2], vec![only_a1]));
    let dataplane = FakeDataplane {
        delay: Duration::from_millis(1500),
        ..FakeDataplane::default()
    };
    let agent = start(&world, &source, &dataplane);
    agent.serving().await;
    while dataplane.count() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Not selected: ADD answers without waiting for the sync it asks for.
    let r = call(&world.socket(), add_req(2, 30_000)).await;
    assert!(is_ok(&r), "{r:?}");
    assert_eq!(
        dataplane.count(),
        1,
        "ADD of an unselected pod waited for a sync"
    );
    // The sync it asked for still comes, with the pod at its address.
    while dataplane
        .last()
        .is_none_or(|s| local_names(&s) != ["default/pod-2"])
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Selected: ADD answers only once a sync has isolated the pod.
    let r = call(&world.socket(), add_req(1, 30_000)).await;
    assert!(is_ok(&r), "{r:?}");
    let last = dataplane.last().unwrap();
    assert!(
        last.compiled.pods[&PodRef::new("default", "pod-1")]
            .ingress
            .isolated
    );
    assert_eq!(local_names(&last), ["default/pod-1", "default/pod-2"]);

    // DEL of the isolated pod waits for its chains to go; of the other it does not.
    let before = dataplane.count();
    let r = call(&world.socket(), del_req(1)).await;
    assert!(is_ok(&r), "{r:?}");
    assert_eq!(local_names(&dataplane.last().unwrap()), ["default/pod-2"]);
    let before_del2 = dataplane.count();
    assert!(before_del2 > before);
    let r = call(&world.socket(), del_req(2)).await;
    assert!(is_ok(&r), "{r:?}");
    assert_eq!(
        dataplane.count(),
        before_del2,
        "DEL of an unisolated pod waited"
    );
    drop(agent);
}
