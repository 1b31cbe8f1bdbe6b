//! The controller in-process, against the QingCloud simulator (over HTTP, with the
//! account's request quota on) and the fake API server (CRD, status subresource,
//! Leases), with test code writing `HostnicNode` specs as agents would.

use std::collections::BTreeMap;
use std::time::Duration;

use hostnic_controller::{Deps, Running, Settings};
use hostnic_k8s::crd::{HostnicNode, HostnicNodeSpec};
use hostnic_k8s::fake_apiserver::FakeApiServer;
use hostnic_qingcloud::sim::{SimConfig, SimHandle, Simulator, Topology};
use hostnic_qingcloud::{ClientOptions, QingCloudClient, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};

const KEY: &str = "CTRLKEY";
const SECRET: &str = "CTRLSECRET";
const CLUSTER: &str = "test";

struct World {
    sim: SimHandle,
    server: FakeApiServer,
    _dir: tempfile::TempDir,
    kube: Client,
}

async fn world(topology: Topology, attach_latency: Duration) -> World {
    let sim = Simulator::start(
        SimConfig {
            topology,
            job_latency: Duration::from_millis(5),
            attach_latency,
            ..SimConfig::new(KEY, SECRET)
        },
        None,
    )
    .await
    .unwrap();
    let server = FakeApiServer::start().await.unwrap();
    server
        .install_crd_yaml(&hostnic_k8s::crd::crd_yaml())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.write_kubeconfig(dir.path()).unwrap();
    let kube = hostnic_k8s::client(Some(&kubeconfig)).await.unwrap();
    World {
        sim,
        server,
        _dir: dir,
        kube,
    }
}

fn settings(identity: &str) -> Settings {
    let mut s = Settings::new(CLUSTER, identity);
    s.metrics_addr = "127.0.0.1:0".parse().unwrap();
    s.lease.lease_duration = Duration::from_millis(1500);
    s.lease.renew_deadline = Duration::from_millis(1000);
    s.lease.retry_period = Duration::from_millis(100);
    s.idle_round = Duration::from_millis(500);
    s.debounce = Duration::from_millis(20);
    let f = &mut s.fleet;
    f.job_poll_initial = Duration::from_millis(50);
    f.job_poll_max = Duration::from_millis(200);
    f.stock_cooldown = Duration::from_millis(200);
    f.stock_linger = Duration::from_millis(500);
    f.node_gone_grace = Duration::from_secs(1);
    f.backoff_base = Duration::from_millis(100);
    f.backoff_max = Duration::from_secs(1);
    s
}

async fn replica(w: &World, identity: &str) -> Running {
    let cloud = QingCloudClient::for_url(
        &w.sim.url(),
        KEY,
        Secret::new(SECRET),
        "pek3a",
        ClientOptions {
            budget: Some(hostnic_controller::DEFAULT_BUDGET),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    hostnic_controller::start(
        Deps {
            cloud,
            kube: w.kube.clone(),
        },
        settings(identity),
    )
    .await
    .unwrap()
}

fn instance(n: u32) -> String {
    format!("i-sim{n:05}")
}

/// Node `n` (its Node object and the HostnicNode its agent writes).
async fn agent(w: &World, n: u32, want: i64, vxnets: Vec<String>) {
    let name = format!("node-{n}");
    w.server.add_node(&name, &[]);
    let api: Api<HostnicNode> = Api::all(w.kube.clone());
    let spec = HostnicNodeSpec {
        instance_id: instance(n),
        vxnets,
        want_nics: want,
        max_nics: 62,
        ..Default::default()
    };
    api.create(&PostParams::default(), &HostnicNode::new(&name, spec))
        .await
        .unwrap();
}

async fn get(w: &World, n: u32) -> HostnicNode {
    Api::<HostnicNode>::all(w.kube.clone())
        .get(&format!("node-{n}"))
        .await
        .unwrap()
}

fn condition(h: &HostnicNode, type_: &str) -> Option<(String, String)> {
    h.status
        .as_ref()?
        .condition(type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Polls until `f` holds, failing after `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + within;
    while !f().await {
        assert!(tokio::time::Instant::now() < until, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ready(w: &World, n: u32, want: i64) -> bool {
    let h = get(w, n).await;
    h.status.as_ref().is_some_and(|s| s.attached == want)
        && condition(&h, "Ready").is_some_and(|(s, _)| s == "True")
}

/// The cluster's NICs in the simulator, by the instance they are attached to
/// (`""`: detached).
fn cloud_nics(w: &World) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for nic in w.sim.state().nics.values() {
        if nic.nic_name == format!("hostnic_{CLUSTER}") {
            *out.entry(nic.instance_id.clone().unwrap_or_default())
                .or_default() += 1;
        }
    }
    out
}

async fn get_text(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demands_are_met_and_answered_in_status() {
    let w = world(Topology::default(), Duration::from_millis(30)).await;
    hostnic_qingcloud::transport::install_crypto_provider();
    // The three agents asked before the controller starts: one round serves them all.
    for n in 1..=3 {
        agent(&w, n, 4, Vec::new()).await;
    }
    let c = replica(&w, "a").await;
    eventually("every node ready", Duration::from_secs(20), || async {
        ready(&w, 1, 4).await && ready(&w, 2, 4).await && ready(&w, 3, 4).await
    })
    .await;
    let h = get(&w, 1).await;
    let status = h.status.clone().unwrap();
    assert_eq!(status.observed_generation, h.metadata.generation);
    assert_eq!(status.room, 58);
    for nic in &status.nics {
        assert_eq!(nic.phase, "Attached");
        assert_eq!(nic.vxnet, "vxnet-sim1", "the primary NIC's vxnet");
        assert_eq!(nic.cidr.as_deref(), Some("172.16.1.0/24"));
        assert_eq!(nic.gateway.as_deref(), Some("172.16.1.1"));
    }
    assert_eq!(
        condition(&h, "Valid"),
        Some(("True".into(), "Accepted".into()))
    );
    let nics = cloud_nics(&w);
    for n in 1..=3 {
        assert_eq!(nics.get(&instance(n)), Some(&4));
    }
    // One CreateNics for the three nodes, one AttachNics per node.
    let counters = w.sim.counters();
    assert_eq!(counters["CreateNics"].requests, 1, "{counters:?}");
    assert_eq!(counters["AttachNics"].requests, 3);
    assert_eq!(w.sim.quota().rejections_total, 0);

    // A node gives two back and wants two fewer: detached, kept a while, deleted.
    let api: Api<HostnicNode> = Api::all(w.kube.clone());
    let give: Vec<String> = status.nics[..2].iter().map(|n| n.id.clone()).collect();
    api.patch(
        "node-1",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"wantNics": 2, "release": give}})),
    )
    .await
    .unwrap();
    eventually("node-1 down to 2", Duration::from_secs(20), || async {
        cloud_nics(&w).get(&instance(1)) == Some(&2) && ready(&w, 1, 2).await
    })
    .await;
    eventually(
        "the given-back NICs deleted",
        Duration::from_secs(20),
        || async { !cloud_nics(&w).contains_key("") },
    )
    .await;

    let (code, metrics) = get_text(c.metrics_addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(metrics.contains("hostnic_controller_leader 1"), "{metrics}");
    assert!(
        metrics.contains(
            r#"hostnic_controller_calls_total{action="AttachNics",lane="demand",result="ok"} 3"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("hostnic_controller_budget_remaining"));
    assert!(metrics.contains(r#"hostnic_controller_breaker_state{state="closed"} 1"#));
    assert!(metrics.contains("hostnic_controller_round_duration_seconds_count"));
    assert_eq!(get_text(c.metrics_addr, "/healthz").await.0, 200);
    assert_eq!(get_text(c.metrics_addr, "/readyz").await.0, 200);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_in_status_and_change_nothing() {
    let mut topology = Topology::default();
    topology.routers.push(hostnic_qingcloud::sim::RouterSpec {
        id: "rtr-other".into(),
        vpc_network: "10.9.0.0/16".parse().unwrap(),
    });
    topology.vxnets.push(hostnic_qingcloud::sim::VxnetSpec {
        id: "vxnet-other".into(),
        cidr: "10.9.1.0/24".parse().unwrap(),
        router: Some("rtr-other".into()),
    });
    let w = world(topology, Duration::from_millis(30)).await;
    hostnic_qingcloud::transport::install_crypto_provider();
    let c = replica(&w, "a").await;
    agent(&w, 1, 2, Vec::new()).await;
    eventually("node-1 ready", Duration::from_secs(20), || ready(&w, 1, 2)).await;
    let api: Api<HostnicNode> = Api::all(w.kube.clone());
    let create = |name: &str, spec: HostnicNodeSpec| {
        w.server.add_node(name, &[]);
        let api = api.clone();
        let obj = HostnicNode::new(name, spec);
        async move { api.create(&PostParams::default(), &obj).await.unwrap() }
    };
    let base = |instance: &str| HostnicNodeSpec {
        instance_id: instance.into(),
        want_nics: 1,
        max_nics: 62,
        ..Default::default()
    };
    create("ghost", base("i-nosuch")).await;
    create(
        "negative",
        HostnicNodeSpec {
            want_nics: -3,
            ..base("i-sim00002")
        },
    )
    .await;
    create(
        "foreign",
        HostnicNodeSpec {
            vxnets: vec!["vxnet-other".into()],
            ..base("i-sim00003")
        },
    )
    .await;
    let theirs = get(&w, 1).await.status.unwrap().nics[0].id.clone();
    let attaches = w.sim.counters()["AttachNics"].requests;
    let detaches = w.sim.counters().get("DetachNics").map_or(0, |c| c.requests);
    // A node that names node-1's NIC as its own to give back (on node-2's instance).
    api.delete("negative", &DeleteParams::default())
        .await
        .unwrap();
    create(
        "thief",
        HostnicNodeSpec {
            release: vec![theirs.clone()],
            want_nics: 0,
            ..base("i-sim00002")
        },
    )
    .await;
    let reason = |name: &'static str| {
        let api = api.clone();
        async move {
            let h = api.get(name).await.unwrap();
            condition(&h, "Valid").map(|(_, r)| r)
        }
    };
    eventually(
        "every bad request refused",
        Duration::from_secs(20),
        || async {
            reason("ghost").await.as_deref() == Some("UnknownInstance")
                && reason("foreign").await.as_deref() == Some("ForeignVxnet")
                && reason("thief").await.as_deref() == Some("ForeignNic")
        },
    )
    .await;
    let h = api.get("foreign").await.unwrap();
    let valid = h.status.as_ref().unwrap().condition("Valid").unwrap();
    assert!(valid.message.contains("vxnet-other"), "{valid:?}");
    // The negative request, before it was deleted, was refused as well.
    create(
        "negative",
        HostnicNodeSpec {
            want_nics: -3,
            ..base("i-sim00004")
        },
    )
    .await;
    eventually(
        "the negative request refused",
        Duration::from_secs(20),
        || async { reason("negative").await.as_deref() == Some("InvalidRequest") },
    )
    .await;
    // Nothing changed in the cloud for them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.sim.counters()["AttachNics"].requests, attaches);
    assert_eq!(
        w.sim.counters().get("DetachNics").map_or(0, |c| c.requests),
        detaches
    );
    assert_eq!(cloud_nics(&w).get(&instance(1)), Some(&2));
    // And the Nodes got Warning events.
    let events = w.server.events();
    let reasons: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    for r in ["UnknownInstance", "ForeignVxnet", "ForeignNic"] {
        assert!(reasons.contains(&r), "{reasons:?}");
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_adopts_the_jobs_of_a_leader_killed_mid_round() {
    // Attach jobs that take a second: the leader dies while they run.
    let w = world(
        Topology::generated(6, 2).unwrap(),
        Duration::from_millis(1000),
    )
    .await;
    hostnic_qingcloud::transport::install_crypto_provider();
    let a = replica(&w, "a").await;
    let mut a_lead = a.leadership.clone();
    tokio::time::timeout(Duration::from_secs(10), a_lead.wait_for(|l| l.is_leader()))
        .await
        .unwrap()
        .unwrap();
    let b = replica(&w, "b").await;
    for n in 1..=6 {
        agent(&w, n, 10, Vec::new()).await;
    }
    // Until attach jobs are recorded in some status: the leader is mid-burst.
    eventually("jobs recorded", Duration::from_secs(20), || async {
        let list = Api::<HostnicNode>::all(w.kube.clone())
            .list(&Default::default())
            .await
            .unwrap();
        list.items
            .iter()
            .any(|h| h.status.as_ref().is_some_and(|s| !s.jobs.is_empty()))
    })
    .await;
    let creates = w.sim.counters()["CreateNics"].requests;
    a.kill();
    let mut b_lead = b.leadership.clone();
    tokio::time::timeout(Duration::from_secs(10), b_lead.wait_for(|l| l.is_leader()))
        .await
        .unwrap()
        .unwrap();
    eventually(
        "every node ready under the new leader",
        Duration::from_secs(30),
        || async {
            let mut all = true;
            for n in 1..=6 {
                all &= ready(&w, n, 10).await;
            }
            all
        },
    )
    .await;
    // Nothing twice: exactly the NICs wanted, each on its node, none left over.
    let nics = cloud_nics(&w);
    for n in 1..=6 {
        assert_eq!(nics.get(&instance(n)), Some(&10), "{nics:?}");
    }
    assert!(!nics.contains_key(""), "a detached NIC left over: {nics:?}");
    assert_eq!(
        w.sim.counters()["CreateNics"].requests,
        creates,
        "no NIC created again"
    );
    assert_eq!(w.sim.quota().rejections_total, 0);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nics_of_a_node_that_left_are_freed_after_the_grace_period() {
    let w = world(Topology::default(), Duration::from_millis(30)).await;
    hostnic_qingcloud::transport::install_crypto_provider();
    let c = replica(&w, "a").await;
    agent(&w, 1, 2, Vec::new()).await;
    agent(&w, 2, 3, Vec::new()).await;
    eventually("ready", Duration::from_secs(20), || async {
        ready(&w, 1, 2).await && ready(&w, 2, 3).await
    })
    .await;
    // The Node goes; Kubernetes' garbage collector deletes its HostnicNode.
    w.server.delete("v1", "Node", "", "node-2").unwrap();
    let left = tokio::time::Instant::now();
    Api::<HostnicNode>::all(w.kube.clone())
        .delete("node-2", &DeleteParams::default())
        .await
        .unwrap();
    eventually("node-2's NICs deleted", Duration::from_secs(20), || async {
        let nics = cloud_nics(&w);
        !nics.contains_key(&instance(2)) && !nics.contains_key("")
    })
    .await;
    assert!(
        left.elapsed() >= Duration::from_secs(1),
        "before the grace period"
    );
    assert_eq!(
        cloud_nics(&w).get(&instance(1)),
        Some(&2),
        "node-1 untouched"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_nodes_of_thirty_nics_within_the_default_quota() {
    // 3,000 NICs and 100 primaries need 13 vxnets of 252: 16, each node preferring
    // the vxnet of its primary NIC, then the next ones.
    const NODES: u32 = 100;
    let w = world(
        Topology::generated(NODES as usize, 16).unwrap(),
        Duration::from_millis(200),
    )
    .await;
    hostnic_qingcloud::transport::install_crypto_provider();
    for n in 1..=NODES {
        let first = (n - 1) % 16;
        let vxnets = (0..3)
            .map(|k| format!("vxnet-sim{}", 1 + (first + k) % 16))
            .collect();
        agent(&w, n, 30, vxnets).await;
    }
    let started = tokio::time::Instant::now();
    let c = replica(&w, "a").await;
    eventually("3,000 NICs attached", Duration::from_secs(60), || async {
        let nics = cloud_nics(&w);
        (1..=NODES).all(|n| nics.get(&instance(n)) == Some(&30))
    })
    .await;
    eventually("every node ready", Duration::from_secs(30), || async {
        let list = Api::<HostnicNode>::all(w.kube.clone())
            .list(&Default::default())
            .await
            .unwrap();
        list.items
            .iter()
            .all(|h| condition(h, "Ready").is_some_and(|(s, _)| s == "True"))
    })
    .await;
    let counters = w.sim.counters();
    let total: u64 = counters.values().map(|c| c.requests).sum();
    let by_action: BTreeMap<&str, u64> = counters
        .iter()
        .map(|(a, c)| (a.as_str(), c.requests))
        .collect();
    eprintln!(
        "{NODES} nodes x 30 NICs: {total} requests, {:?} to all served: {by_action:?}",
        started.elapsed()
    );
    assert_eq!(w.sim.quota().rejections_total, 0, "no request-quota 2500");
    assert_eq!(
        counters["AttachNics"].requests,
        u64::from(NODES),
        "one attach per node"
    );
    // The issue's bar for the whole cluster is 1,000 calls; the controller alone
    // needs a fraction of it.
    assert!(total <= 400, "{total}: {by_action:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_budget_is_never_exceeded_and_waiting_nodes_say_why() {
    let w = world(
        Topology::generated(8, 2).unwrap(),
        Duration::from_millis(30),
    )
    .await;
    hostnic_qingcloud::transport::install_crypto_provider();
    for n in 1..=8 {
        agent(&w, n, 2, Vec::new()).await;
    }
    // 15 requests an hour: the describes, two creates and a few attaches fit, the
    // rest waits for the window (an hour) — and says so.
    let budget = hostnic_qingcloud::WindowLimit::new(15, Duration::from_secs(3600));
    let cloud = QingCloudClient::for_url(
        &w.sim.url(),
        KEY,
        Secret::new(SECRET),
        "pek3a",
        ClientOptions {
            budget: Some(budget),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let mut s = settings("a");
    s.budget = budget;
    let c = hostnic_controller::start(
        Deps {
            cloud,
            kube: w.kube.clone(),
        },
        s,
    )
    .await
    .unwrap();
    eventually(
        "a node waiting for the budget says so",
        Duration::from_secs(20),
        || async {
            let list = Api::<HostnicNode>::all(w.kube.clone())
                .list(&Default::default())
                .await
                .unwrap();
            list.items
                .iter()
                .any(|h| condition(h, "QuotaExhausted").is_some_and(|(s, _)| s == "True"))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let total: u64 = w.sim.counters().values().map(|c| c.requests).sum();
    assert!(total <= 15, "{total} requests with a budget of 15");
    assert_eq!(w.sim.quota().rejections_total, 0);
    let (_, metrics) = get_text(c.metrics_addr, "/metrics").await;
    let queued: u32 = metrics
        .lines()
        .filter(|l| l.starts_with("hostnic_controller_queue_depth{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u32>().ok())
        .sum();
    assert!(
        queued > 0,
        "held-back calls show as queue depth:\n{metrics}"
    );
    assert!(
        w.server
            .events()
            .iter()
            .any(|e| e["reason"] == "CloudRequestBudgetSpent"),
        "an event on the waiting nodes"
    );
    c.stop().await;
}
