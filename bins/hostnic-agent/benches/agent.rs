//! Agent benchmarks (not tests: they measure, they do not judge). Run with
//! `cargo bench -p hostnic-agent --bench agent` (add `-- --quick` for a smoke run).
//!
//! 1. The ADD path with a free NIC: plugin-protocol round trips on the agent's
//!    socket (in-process agent over the core's fakes), p50/p99.
//! 2. Cold start: 40 pods at once on an empty node, simulator with 1 s attach latency.
//! 3. Cloud API calls per pod under steady churn against the simulator.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::*;
use hostnic_agent::settings::Settings;
use hostnic_agent::{Deps, Metrics};
use hostnic_core::api::Outcome;
use hostnic_core::config::PoolConfig;
use hostnic_core::ports::SystemClock;
use hostnic_core::testing::{AttachHook as _, FakeHost};
use hostnic_core::types::InstanceId;
use hostnic_qingcloud::sim::{AttachHook, NicEvent, NicEventKind, SimConfig, Simulator};
use hostnic_qingcloud::{ClientOptions, QingCloudClient, Secret};

struct Links(FakeHost);

#[async_trait]
impl AttachHook for Links {
    async fn on_nic_event(&self, event: &NicEvent) {
        let instance = InstanceId::new(event.instance.clone());
        match event.kind {
            NicEventKind::Attached => self.0.attached(&event.nic, &instance),
            _ => self.0.detached(&event.nic, &instance),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn add_path(iterations: usize) {
    let world = World::new(PoolConfig {
        min_free: 8,
        max_free: 16,
        ip_cooldown: Duration::ZERO,
        min_lifetime: Duration::ZERO,
        ..PoolConfig::default()
    });
    let agent = world.start();
    agent.serving().await;
    let socket = world.socket();
    // Warm the pool.
    for i in 0..8 {
        call(&socket, add_req(i, 30_000)).await;
    }
    for i in 0..8 {
        call(&socket, del_req(i)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let pod = 1000 + i;
        let t = Instant::now();
        let r = call(&socket, add_req(pod, 30_000)).await;
        samples.push(t.elapsed());
        assert!(matches!(r.outcome, Outcome::Ok(_)), "{r:?}");
        call(&socket, del_req(pod)).await;
    }
    samples.sort();
    println!(
        "add_path: {iterations} ADDs with a free NIC (socket round trip, fakes): p50 {:?}  p99 {:?}  max {:?}",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
    agent.stop().unwrap();
}

struct SimAgent {
    socket: std::path::PathBuf,
    metrics: Arc<Metrics>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), hostnic_agent::AgentError>>,
    _dir: tempfile::TempDir,
    sim: hostnic_qingcloud::sim::SimHandle,
}

async fn sim_agent(attach_latency: Duration, pool: PoolConfig) -> SimAgent {
    let host = FakeHost::new(InstanceId::new(INSTANCE), &pool.veth_prefix);
    let sim = Simulator::start(
        SimConfig {
            attach_latency,
            ..SimConfig::new("AKID", "SECRET")
        },
        Some(Arc::new(Links(host.clone()))),
    )
    .await
    .unwrap();
    let client = QingCloudClient::for_url(
        &sim.url(),
        "AKID",
        Secret::new("SECRET"),
        &sim.zone(),
        ClientOptions {
            job_poll_initial: Duration::from_millis(200),
            job_poll_max: Duration::from_millis(500),
            ..ClientOptions::default()
        },
    )
    .unwrap();
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
        ..Settings::default()
    };
    let socket = settings.socket.clone();
    let deps = Deps {
        cloud: client,
        host,
        clock: SystemClock,
        pods: None,
        nic_events: None,
        reporter: None,
        policy: None,
        metrics: metrics.clone(),
    };
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(hostnic_agent::run(
        deps,
        settings,
        InstanceId::new(INSTANCE),
        async move {
            let _ = rx.await;
        },
    ));
    for _ in 0..500 {
        if try_call(&socket, status_req()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    SimAgent {
        socket,
        metrics,
        stop,
        task,
        _dir: dir,
        sim,
    }
}

impl SimAgent {
    fn calls(&self) -> u64 {
        self.metrics.counter_total("hostnic_cloud_api_calls_total")
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.sim.shutdown().await;
    }
}

async fn cold_start() {
    let latency = Duration::from_secs(1);
    let a = sim_agent(
        latency,
        PoolConfig {
            min_free: 0,
            max_free: 5,
            batch_size: 10,
            ..PoolConfig::default()
        },
    )
    .await;
    let before = a.calls();
    let t = Instant::now();
    let adds: Vec<_> = (0..40)
        .map(|i| {
            let s = a.socket.clone();
            tokio::spawn(async move { call(&s, add_req(i, 60_000)).await })
        })
        .collect();
    for add in adds {
        let r = add.await.unwrap();
        assert!(matches!(r.outcome, Outcome::Ok(_)), "{r:?}");
    }
    let elapsed = t.elapsed();
    println!(
        "cold_start: 40 pods on an empty node, attach latency {latency:?}: {:.2} s ({:.1}x the latency), {} API calls",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() / latency.as_secs_f64(),
        a.calls() - before
    );
    a.stop().await;
}

async fn churn(cycles: usize) {
    let a = sim_agent(
        Duration::from_millis(200),
        PoolConfig {
            min_free: 5,
            max_free: 10,
            batch_size: 5,
            ip_cooldown: Duration::from_secs(1),
            ..PoolConfig::default()
        },
    )
    .await;
    let live = 20;
    for i in 0..live {
        call(&a.socket, add_req(i, 60_000)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = a.calls();
    let t = Instant::now();
    for k in 0..cycles {
        // Replace the oldest pod with a new one.
        call(&a.socket, del_req(k)).await;
        let r = call(&a.socket, add_req(live + k, 60_000)).await;
        assert!(matches!(r.outcome, Outcome::Ok(_)), "{r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls = a.calls() - before;
    println!(
        "churn: {cycles} pod replacements (20 live pods) in {:.1} s: {calls} API calls = {:.3} per pod",
        t.elapsed().as_secs_f64(),
        calls as f64 / cycles as f64
    );
    a.stop().await;
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        add_path(if quick { 50 } else { 2000 }).await;
        cold_start().await;
        churn(if quick { 20 } else { 200 }).await;
    });
}
