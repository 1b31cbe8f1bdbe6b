//! The agent with the real QingCloud client against the in-process simulator
//! (HTTP, signatures, asynchronous jobs with real latency) and the fake host, whose
//! NIC links appear when the simulator attaches a NIC.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use hostnic_core::api::{Outcome, Reply};
use hostnic_core::config::PoolConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_of_40_pods_with_1s_attach_latency_serves_them_all() {
    let pool = PoolConfig {
        min_free: 0,
        max_free: 5,
        batch_size: 10,
        ..PoolConfig::default()
    };
    let agent = SimAgent::start(Duration::from_secs(1), pool, 1.0).await;
    let (socket, metrics, host) = (agent.socket.clone(), agent.metrics.clone(), &agent.host);
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
    let state = agent.sim.state();
    let named = format!("hostnic_{INSTANCE}");
    let cloud_nics = state.nics.values().filter(|n| n.nic_name == named).count();
    assert!(cloud_nics >= 40, "{cloud_nics}");
    agent.stop().await.unwrap();
}
