//! The agent with the real QingCloud client against the in-process simulator
//! (HTTP, signatures, asynchronous jobs with real latency) and the fake host, whose
//! NIC links appear when the simulator attaches a NIC.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hostnic_agent::settings::Settings;
use hostnic_agent::{Deps, Metrics};
use hostnic_core::api::{Outcome, Reply};
use hostnic_core::config::PoolConfig;
use hostnic_core::ports::SystemClock;
use hostnic_core::testing::FakeHost;
use hostnic_core::types::InstanceId;
use hostnic_qingcloud::QingCloudClient;
use hostnic_qingcloud::sim::SimHandle;
use hostnic_testkit::sim::SimCloud;

async fn start(
    attach_latency: Duration,
    pool: PoolConfig,
) -> (
    SimHandle,
    QingCloudClient,
    FakeHost,
    Arc<Metrics>,
    Settings,
    tempfile::TempDir,
) {
    let SimCloud { sim, client, host } =
        SimCloud::start(INSTANCE, &pool.veth_prefix, attach_latency).await;
    let metrics = Arc::new(Metrics::default());
    client.add_observer(metrics.clone());
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        pool,
        socket: dir.path().join("hostnic.sock"),
        state_dir: dir.path().join("state"),
        cni_conf_dir: dir.path().join("net.d"),
        cni_bin_dir: dir.path().join("bin"),
        metrics_addr: free_port(),
        pool_interval_secs: 1.0,
        ..Settings::default()
    };
    (sim, client, host, metrics, settings, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_of_40_pods_with_1s_attach_latency_serves_them_all() {
    let pool = PoolConfig {
        min_free: 0,
        max_free: 5,
        batch_size: 10,
        ..PoolConfig::default()
    };
    let (sim, client, host, metrics, settings, _dir) = start(Duration::from_secs(1), pool).await;
    let socket = settings.socket.clone();
    let deps = Deps {
        cloud: client,
        host: host.clone(),
        clock: SystemClock,
        pods: None,
        nic_events: None,
        reporter: None,
        policy: None,
        metrics: metrics.clone(),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(hostnic_agent::run(
        deps,
        settings,
        InstanceId::new(INSTANCE),
        async move {
            let _ = stop_rx.await;
        },
    ));
    for _ in 0..500 {
        if try_call(&socket, status_req()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls_before = metrics.counter_total("hostnic_cloud_api_calls_total");
    let started = Instant::now();
    let adds: Vec<_> = (0..40)
        .map(|i| {
            let s = socket.clone();
            tokio::spawn(async move { call(&s, add_req(i, 60_000)).await })
        })
        .collect();
    let mut ips = BTreeSet::new();
    for a in adds {
        match a.await.unwrap().outcome {
            Outcome::Ok(Reply::Add(r)) => assert!(ips.insert(r.ip)),
            other => panic!("ADD failed: {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    let calls = metrics.counter_total("hostnic_cloud_api_calls_total") - calls_before;
    assert_eq!(ips.len(), 40);
    assert_eq!(host.plumbed().len(), 40);
    // Numbers for the report (not asserted: tests do not judge speed).
    eprintln!(
        "cold start: 40 pods served in {:.2} s with 1 s attach latency, {calls} API calls",
        elapsed.as_secs_f64()
    );
    // Every NIC the simulator has for this node is known to the agent.
    let state = sim.state();
    let named = format!("hostnic_{INSTANCE}");
    let cloud_nics = state.nics.values().filter(|n| n.nic_name == named).count();
    assert!(cloud_nics >= 40, "{cloud_nics}");
    let _ = stop_tx.send(());
    agent.await.unwrap().unwrap();
    sim.shutdown().await;
}
