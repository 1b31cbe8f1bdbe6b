//! The controller and agents in controller mode, end to end in-process: the
//! QingCloud simulator over HTTP, the fake API server, one controller replica,
//! and three nodes whose agents' engines run over `SuppliedCloud` on their
//! `HostnicNode` (`KubeNicSupply`), with a fake host whose links appear when
//! the status says a NIC is attached (the kernel's hotplug). The agents hold no
//! credentials: the only cloud client is the controller's.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use hostnic_controller::{Deps, Running, Settings};
use hostnic_core::config::PoolConfig;
use hostnic_core::engine::Engine;
use hostnic_core::fleet::NicPhase;
use hostnic_core::identity::NodeIdentity;
use hostnic_core::ports::{NicSupply as _, SystemClock};
use hostnic_core::supply::SuppliedCloud;
use hostnic_core::testing::{AttachHook as _, FakeHost, MemoryStore};
use hostnic_core::types::{Instance, InstanceId, NicId, PodKey, VxnetId};
use hostnic_k8s::fake_apiserver::FakeApiServer;
use hostnic_k8s::{KubeNicSupply, SupplyOptions};
use hostnic_qingcloud::sim::{SimConfig, SimHandle, Simulator, Topology};
use hostnic_qingcloud::{ClientOptions, QingCloudClient, Secret};

const KEY: &str = "AGENTKEY";
const SECRET: &str = "AGENTSECRET";

type AgentEngine = Engine<SuppliedCloud, FakeHost, SystemClock, MemoryStore>;

struct Node {
    instance: InstanceId,
    supply: Arc<KubeNicSupply>,
    host: FakeHost,
    engine: AgentEngine,
}

impl Node {
    /// What the kernel does: links of the NICs the status lists attached appear.
    async fn hotplug(&self) {
        if let Ok(s) = self.supply.supplied().await {
            for nic in s.nics.iter().filter(|n| n.phase == NicPhase::Attached) {
                if !self.host.links().contains(&nic.id) {
                    self.host.attached(&nic.id, &self.instance);
                }
            }
        }
    }

    async fn round(&self) {
        self.hotplug().await;
        let round = self.engine.run_pool().await;
        assert!(round.failures.is_empty(), "{:?}", round.failures);
    }
}

async fn node(kube: &kube::Client, server: &FakeApiServer, n: u32) -> Node {
    let name = format!("node-{n}");
    server.add_node(&name, &[]);
    let instance = InstanceId::new(format!("i-sim{n:05}"));
    let supply = Arc::new(KubeNicSupply::spawn(
        kube.clone(),
        &name,
        SupplyOptions {
            min_interval: Duration::from_millis(300),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
        },
    ));
    let cloud = SuppliedCloud::new(
        supply.clone(),
        Instance {
            id: instance.clone(),
            primary_nic: NicId::from_mac([0x52, 0x54, 0x99, 0, 0, n as u8]),
            primary_ip: Ipv4Addr::new(172, 16, 1, 200 + n as u8),
            primary_vxnet: VxnetId::new("primary"),
        },
        "172.16.1.0/24".parse().unwrap(),
        Ipv4Addr::new(172, 16, 1, 1),
        Vec::new(),
        vec!["172.16.0.0/12".parse().unwrap()],
    );
    let identity = NodeIdentity::resolve(&cloud, &instance, &[], &[], false)
        .await
        .unwrap();
    let host = FakeHost::new(instance.clone(), "nic");
    let engine = Engine::open(
        cloud,
        host.clone(),
        SystemClock,
        MemoryStore::new(),
        PoolConfig {
            min_free: 3,
            max_free: 5,
            batch_size: 3,
            ip_cooldown: Duration::from_millis(200),
            min_lifetime: Duration::from_millis(200),
            ..PoolConfig::default()
        },
        instance.clone(),
        identity.vxnets,
    )
    .unwrap();
    engine
        .reconcile(None, true)
        .await
        .expect("startup reads the status, no cloud");
    Node {
        instance,
        supply,
        host,
        engine,
    }
}

async fn controller(sim: &SimHandle, kube: &kube::Client) -> Running {
    let cloud = QingCloudClient::for_url(
        &sim.url(),
        KEY,
        Secret::new(SECRET),
        "pek3a",
        ClientOptions {
            budget: Some(hostnic_controller::DEFAULT_BUDGET),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let mut s = Settings::new("e2e", "a");
    s.metrics_addr = "127.0.0.1:0".parse().unwrap();
    s.lease.lease_duration = Duration::from_millis(1500);
    s.lease.renew_deadline = Duration::from_millis(1000);
    s.lease.retry_period = Duration::from_millis(100);
    s.idle_round = Duration::from_millis(300);
    s.debounce = Duration::from_millis(20);
    s.fleet.job_poll_initial = Duration::from_millis(50);
    s.fleet.job_poll_max = Duration::from_millis(200);
    s.fleet.stock_cooldown = Duration::from_millis(200);
    s.fleet.stock_linger = Duration::from_millis(500);
    hostnic_controller::start(
        Deps {
            cloud,
            kube: kube.clone(),
        },
        s,
    )
    .await
    .unwrap()
}

fn pod(n: u32, i: u32) -> PodKey {
    PodKey {
        namespace: "default".into(),
        name: format!("pod-{n}-{i}"),
        container_id: format!("c-{n}-{i}"),
        ifname: "eth0".into(),
    }
}

/// Pool rounds on every node until `done` holds (at most 30 s).
async fn rounds(nodes: &[Node], what: &str, done: impl Fn(&[Node]) -> bool) {
    for _ in 0..300 {
        for n in nodes {
            n.round().await;
        }
        if done(nodes) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_less_agents_get_their_nics_from_the_controller_and_serve_pods() {
    hostnic_qingcloud::transport::install_crypto_provider();
    let sim = Simulator::start(
        SimConfig {
            topology: Topology::default(),
            job_latency: Duration::from_millis(5),
            attach_latency: Duration::from_millis(30),
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
    let kube = hostnic_k8s::client(Some(&server.write_kubeconfig(dir.path()).unwrap()))
        .await
        .unwrap();
    let _controller = controller(&sim, &kube).await;
    let mut nodes = Vec::new();
    for n in 1..=3 {
        nodes.push(node(&kube, &server, n).await);
    }

    // Warm pools from the controller.
    rounds(&nodes, "every warm pool ready", |nodes| {
        nodes.iter().all(|n| n.host.prepared().len() >= 3)
    })
    .await;

    // A burst of 8 pods on node 1: the first are served from the warm pool at
    // once, the rest as the controller attaches more.
    let mut served = 0;
    for _ in 0..300 {
        while served < 8 && nodes[0].engine.add(&pod(1, served), "/ns").await.is_ok() {
            served += 1;
        }
        if served == 8 {
            break;
        }
        nodes[0].engine.set_demand(8 - served);
        for n in &nodes {
            n.round().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served, 8, "every pod of the burst got a NIC");
    nodes[0].engine.set_demand(0);

    // Settle: every node holds exactly the NICs the cloud has attached to it.
    rounds(&nodes, "the pools settle", |nodes| {
        nodes.iter().all(|n| {
            n.engine
                .with_state(|s| s.nics().values().all(|e| e.host_ready))
        })
    })
    .await;
    for _ in 0..10 {
        for n in &nodes {
            n.round().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let state = sim.state();
    for n in &nodes {
        let in_cloud: std::collections::BTreeSet<NicId> = state
            .nics
            .values()
            .filter(|c| c.instance_id.as_deref() == Some(n.instance.as_str()))
            .filter(|c| c.nic_name == "hostnic_e2e")
            .map(|c| NicId::new(&c.nic_id).unwrap())
            .collect();
        let held: std::collections::BTreeSet<NicId> =
            n.engine.with_state(|s| s.nics().keys().cloned().collect());
        assert_eq!(
            held, in_cloud,
            "node {} holds what is attached to it",
            n.instance
        );
    }
    let plumbed = nodes[0].host.plumbed();
    assert_eq!(plumbed.len(), 8);

    // At rest: no HostnicNode write, however many pool rounds run.
    let writes: Vec<u64> = nodes.iter().map(|n| n.supply.writes()).collect();
    for _ in 0..15 {
        for n in &nodes {
            n.round().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after: Vec<u64> = nodes.iter().map(|n| n.supply.writes()).collect();
    assert_eq!(writes, after, "agents at rest write nothing");
    for (n, w) in nodes.iter().zip(&after) {
        assert!(*w >= 1 && *w <= 12, "node {}: {w} writes", n.instance);
    }
}
