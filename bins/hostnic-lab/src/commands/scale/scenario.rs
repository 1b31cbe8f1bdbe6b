//! The scenarios, on one fleet each: `rest` (idle for a simulated hour), `cold`
//! (N × M pods arriving at once on nodes starting at once), `churn` (pods replaced
//! at a steady rate), `restart` (every agent restarted at once, after an idle hour
//! that lets the quota's window slide past the fleet's setup).
//!
//! Every duration is simulated: the agents, their clients, the simulator and the
//! core's clock run `time_scale` times faster than the wall clock.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hostnic_qingcloud::QingCloudClient;
use hostnic_qingcloud::sim::WindowLimit;
use hostnic_testkit::hooks::FakeHosts;
use hostnic_testkit::requests::{status_req, try_call};
use hostnic_testkit::time::ScaledClock;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::cloud::{self, Counter, SimCloud};
use super::driver::{Driver, PodResult};
use super::fleet::{Direct, Node, NodeRecord, Running, Wiring};
use super::report::{Phase, Report, Sample, quantile};
use super::{Mode, ScaleArgs, Scenario};

/// What the simulator and the agents' clients counted at one moment.
struct Snapshot {
    at: f64,
    counters: BTreeMap<String, Counter>,
    rejections: u64,
    harness: u64,
}

/// A fleet against one simulator, for one scenario.
struct Run {
    cloud: Arc<SimCloud>,
    wiring: Box<dyn Wiring>,
    driver: Driver,
    nodes: Vec<Arc<Node>>,
    running: Vec<Option<Running>>,
    /// Every client of every agent started (they keep their counts when stopped).
    all_clients: Vec<QingCloudClient>,
    /// The running agents' clients, by node (for the breakers in the samples).
    clients: Arc<Mutex<Vec<Option<QingCloudClient>>>>,
    /// Pods served, by node: name → sandbox.
    served: Vec<BTreeMap<String, String>>,
    results: Vec<PodResult>,
    samples: Arc<Mutex<Vec<Sample>>>,
    sampling: Arc<AtomicBool>,
    quota: Option<WindowLimit>,
    _dir: tempfile::TempDir,
}

impl Run {
    async fn new(args: &ScaleArgs) -> anyhow::Result<Self> {
        let nics = args.pods_per_node + 10;
        let cloud = match (&args.sim_url, &args.credentials) {
            (Some(url), Some(credentials)) => SimCloud::connect(url, credentials).await?,
            (None, None) => {
                let quota = WindowLimit::parse_optional(&args.quota)?;
                SimCloud::start(args.nodes, nics, quota, args.time_scale).await?
            }
            _ => anyhow::bail!("--sim-url and --credentials go together"),
        };
        cloud.install().await?;
        let instances = cloud.instances(args.nodes).await?;
        let cloud = Arc::new(cloud);
        // tmpfs when there is one: a thousand agents' checkpoint syncs on a disk would
        // show up, multiplied by the time scale, as simulated latency.
        let shm = std::path::Path::new("/dev/shm");
        let mut builder = tempfile::Builder::new();
        builder.prefix("hostnic-scale-");
        let dir = if shm.is_dir() {
            builder.tempdir_in(shm)?
        } else {
            builder.tempdir()?
        };
        let plugin = dir.path().join("hostnic-plugin");
        std::fs::write(&plugin, "#!/bin/sh\nexit 0\n")?;
        let clock = ScaledClock::new(cloud.scale);
        let hosts = cloud.hosts.clone().unwrap_or_else(FakeHosts::default);
        let veth_prefix = hostnic_core::config::PoolConfig::default().veth_prefix;
        let nodes: Vec<Arc<Node>> = instances
            .iter()
            .enumerate()
            .map(|(index, instance)| {
                let node_dir = dir.path().join(format!("n{index:05}"));
                std::fs::create_dir_all(&node_dir)?;
                Ok(Arc::new(Node {
                    index,
                    instance: instance.clone(),
                    dir: node_dir,
                    host: hosts.host(instance, &veth_prefix),
                    pods: hostnic_core::testing::FakePods::new(),
                    record: Arc::new(NodeRecord::default()),
                }))
            })
            .collect::<anyhow::Result<_>>()?;
        let wiring: Box<dyn Wiring> = match args.mode {
            Mode::Direct => Box::new(Direct {
                cloud: cloud.clone(),
                clock,
                plugin,
            }),
            Mode::Controller => anyhow::bail!(
                "--mode controller: the cluster controller is the next issue's; only direct is built"
            ),
        };
        let n = nodes.len();
        Ok(Self {
            quota: cloud.quota,
            cloud,
            wiring,
            driver: Driver {
                clock,
                inflight: Arc::new(Semaphore::new(2000)),
                served: Arc::default(),
            },
            nodes,
            running: (0..n).map(|_| None).collect(),
            all_clients: Vec::new(),
            clients: Arc::new(Mutex::new(vec![None; n])),
            served: vec![BTreeMap::new(); n],
            results: Vec::new(),
            samples: Arc::default(),
            sampling: Arc::new(AtomicBool::new(true)),
            _dir: dir,
        })
    }

    fn now(&self) -> f64 {
        self.driver.now()
    }

    async fn idle(&self, simulated: Duration) {
        tokio::time::sleep(self.driver.clock.real(simulated)).await;
    }

    /// Samples the simulator and the fleet every 30 simulated seconds.
    fn start_sampler(&self) {
        let (cloud, driver, clients, samples, on) = (
            self.cloud.clone(),
            self.driver.clone(),
            self.clients.clone(),
            self.samples.clone(),
            self.sampling.clone(),
        );
        let key = cloud.key.clone();
        let every = driver
            .clock
            .real(Duration::from_secs(30))
            .max(Duration::from_millis(100));
        tokio::spawn(async move {
            while on.load(Ordering::Relaxed) {
                if let (Ok(counters), Ok(quota)) = (cloud.counters().await, cloud.quota().await) {
                    let breakers_open = clients
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter()
                        .flatten()
                        .filter(|c| c.breaker().is_open())
                        .count() as u64;
                    samples
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Sample {
                            sim_secs: driver.now(),
                            calls_total: cloud::totals(&counters).0,
                            window_used: quota.keys.get(&key).map_or(0, |k| u64::from(k.used)),
                            pods_served: driver.served.load(Ordering::Relaxed),
                            breakers_open,
                        });
                }
                tokio::time::sleep(every).await;
            }
        });
    }

    async fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let counters = self.cloud.counters().await?;
        let rejections = self.cloud.quota().await?.rejections_total;
        let harness = self
            .all_clients
            .iter()
            .map(|c| {
                let sent: u64 = c
                    .stats()
                    .snapshot()
                    .values()
                    .map(|s| s.calls + s.retries)
                    .sum();
                sent.saturating_sub(c.breaker().refused + c.budget().refused)
            })
            .sum();
        Ok(Snapshot {
            at: self.now(),
            counters,
            rejections,
            harness,
        })
    }

    fn phase(before: &Snapshot, after: &Snapshot) -> Phase {
        let by_action = cloud::delta(&before.counters, &after.counters);
        Phase {
            calls_total: by_action.values().sum(),
            calls_by_action: by_action,
            quota_errors: after.rejections.saturating_sub(before.rejections),
            errors_by_action: cloud::error_delta(&before.counters, &after.counters),
            seconds: after.at - before.at,
        }
    }

    async fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        let running = self.wiring.start(&self.nodes[i]).await?;
        if let Some(c) = &running.client {
            self.all_clients.push(c.clone());
        }
        self.clients.lock().unwrap_or_else(|e| e.into_inner())[i] = running.client.clone();
        self.running[i] = Some(running);
        Ok(())
    }

    /// Schedules `per_node` new pods on each node of `nodes`, run until `deadline`.
    /// A node's pods are listed together (the scheduler binds a burst at once), then
    /// their sandboxes start.
    fn place(
        &self,
        nodes: Range<usize>,
        per_node: usize,
        deadline: f64,
        tasks: &mut JoinSet<PodResult>,
        first: usize,
    ) {
        for i in nodes.clone() {
            for p in 0..per_node {
                self.nodes[i].pods.upsert(hostnic_core::types::PodInfo {
                    namespace: super::driver::NAMESPACE.into(),
                    name: format!("p{i:05}-{:04}", first + p),
                    pending: true,
                    ip: None,
                });
            }
        }
        for i in nodes {
            for p in 0..per_node {
                let (driver, node) = (self.driver.clone(), self.nodes[i].clone());
                let name = format!("p{i:05}-{:04}", first + p);
                tasks.spawn(async move { driver.run_pod(node, name, deadline).await });
            }
        }
    }

    async fn collect(&mut self, mut tasks: JoinSet<PodResult>) -> Vec<PodResult> {
        let mut out = Vec::new();
        while let Some(r) = tasks.join_next().await {
            if let Ok(r) = r {
                if let Some((_, container)) = &r.ip {
                    self.served[r.node].insert(r.name.clone(), container.clone());
                }
                out.push(r);
            }
        }
        out
    }

    /// The fleet joins, each node with `per_node` pods once it is ready, then
    /// settles `settle` simulated seconds. It joins in waves that each take at most
    /// half the quota, one per quota window (a cluster is built over time; a fleet
    /// joining at once beyond the quota is the cold start's business).
    async fn setup(
        &mut self,
        per_node: usize,
        deadline_after: f64,
        settle: f64,
    ) -> anyhow::Result<()> {
        let n = self.nodes.len();
        // A node costs about 10 requests to start and fill its warm pool, about 5
        // more per round of pods.
        let per_node_cost = if per_node == 0 { 10 } else { 15 };
        let (wave, every) = match self.quota {
            Some(q) => (
                ((q.requests as usize) / 2 / per_node_cost).max(1),
                q.window.as_secs_f64(),
            ),
            None => (n, 0.0),
        };
        let mut tasks = JoinSet::new();
        let mut start = 0;
        while start < n {
            let end = (start + wave).min(n);
            for i in start..end {
                self.start_node(i).await?;
            }
            let deadline = self.now() + deadline_after;
            self.place(start..end, per_node, deadline, &mut tasks, 0);
            start = end;
            if start < n {
                self.idle(Duration::from_secs_f64(every)).await;
            }
        }
        let results = self.collect(tasks).await;
        self.results.extend(results);
        self.idle(Duration::from_secs_f64(settle)).await;
        Ok(())
    }

    async fn stop_all(&mut self) {
        let mut stops = JoinSet::new();
        for slot in &mut self.running {
            if let Some(r) = slot.take() {
                stops.spawn(r.stop());
            }
        }
        while stops.join_next().await.is_some() {}
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
            .for_each(|c| *c = None);
    }

    /// Waits until every agent answers on its socket; the simulated seconds it took.
    async fn all_serving(&self, deadline: f64) -> Option<f64> {
        let start = self.now();
        for node in &self.nodes {
            loop {
                if try_call(&node.socket(), status_req()).await.is_ok() {
                    break;
                }
                if self.now() > deadline {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Some(self.now() - start)
    }

    /// NICs named after a node but not attached to it, or more than its pods plus
    /// `max_free`.
    async fn leaks(&self) -> anyhow::Result<u64> {
        let state = self.cloud.state().await?;
        let max_free = hostnic_core::config::PoolConfig::default().max_free as u64;
        let mut leaks = 0;
        for node in &self.nodes {
            let name = format!("hostnic_{}", node.instance);
            let (mut here, mut astray) = (0u64, 0u64);
            for nic in state.nics.values().filter(|n| n.nic_name == name) {
                if nic.instance_id.as_deref() == Some(node.instance.as_str()) {
                    here += 1;
                } else {
                    astray += 1;
                }
            }
            let pods = self.served[node.index].len() as u64;
            leaks += astray + here.saturating_sub(pods + max_free);
        }
        Ok(leaks)
    }

    fn records(&self) -> (u64, u64) {
        self.nodes.iter().fold((0, 0), |(o, c), n| {
            (
                o + n.record.quota_exhausted.load(Ordering::Relaxed),
                c + n.record.quota_recovered.load(Ordering::Relaxed),
            )
        })
    }

    /// Fills the report with the pods' figures from `results` (the measured phase).
    fn pods_figures(report: &mut Report, results: &[PodResult], phase_start: f64) {
        report.pods_served = results.iter().filter(|r| r.served.is_some()).count() as u64;
        report.pods_failed = results.len() as u64 - report.pods_served;
        if report.pods_failed == 0 && !results.is_empty() {
            report.seconds_to_all_served = results
                .iter()
                .filter_map(|r| r.served)
                .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))))
                .map(|last| last - phase_start);
        }
        let mut adds: Vec<f64> = results.iter().flat_map(|r| r.add_ms.clone()).collect();
        report.add_p50_ms = quantile(&mut adds, 0.5);
        report.add_p99_ms = quantile(&mut adds, 0.99);
        let mut ready: Vec<f64> = results
            .iter()
            .filter_map(|r| r.served.map(|s| s - r.scheduled))
            .collect();
        report.pod_ready_p50_s = quantile(&mut ready, 0.5);
        report.pod_ready_p99_s = quantile(&mut ready, 0.99);
        for r in results {
            if (r.attempts > 1 || r.served.is_none())
                && let Some(e) = &r.last_error
            {
                let words = e.split(':').take(2).collect::<Vec<_>>().join(":");
                *report.add_errors.entry(words).or_default() += 1;
            }
        }
    }

    async fn finish(mut self, report: &mut Report, wall: Instant) -> anyhow::Result<()> {
        report.leaks = self.leaks().await?;
        let (opened, closed) = self.records();
        report.breaker_opened = opened;
        report.breaker_closed = closed;
        report.breakers_open_at_end = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flatten()
            .filter(|c| c.breaker().is_open())
            .count() as u64;
        self.sampling.store(false, Ordering::Relaxed);
        if let Ok(last) = self.snapshot().await {
            let served = self.driver.served.load(Ordering::Relaxed);
            let window_used = self
                .cloud
                .quota()
                .await
                .ok()
                .and_then(|q| q.keys.get(&self.cloud.key).map(|k| u64::from(k.used)))
                .unwrap_or(0);
            self.samples
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Sample {
                    sim_secs: last.at,
                    calls_total: cloud::totals(&last.counters).0,
                    window_used,
                    pods_served: served,
                    breakers_open: report.breakers_open_at_end,
                });
        }
        report.samples = self
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        report.sim_seconds = self.now();
        report.wall_seconds = wall.elapsed().as_secs_f64();
        self.stop_all().await;
        if let Ok(cloud) = Arc::try_unwrap(self.cloud) {
            cloud.shutdown().await;
        }
        Ok(())
    }
}

/// True when the quota is at least the account's default rate (2,000 an hour):
/// then no request-quota 2500 is acceptable.
fn full_quota(quota: Option<WindowLimit>) -> bool {
    quota.is_none_or(|q| f64::from(q.requests) / q.window.as_secs_f64() >= 2000.0 / 3600.0 - 1e-9)
}

/// Runs `scenario`.
pub async fn run(scenario: Scenario, args: &ScaleArgs) -> anyhow::Result<Report> {
    let wall = Instant::now();
    let mut run = Run::new(args).await?;
    let mut report = Report {
        scenario: scenario.as_str().into(),
        mode: args.mode.as_str().into(),
        nodes: args.nodes,
        pods_per_node: args.pods_per_node,
        quota: run
            .quota
            .map_or_else(|| "off".to_string(), |q| q.to_string()),
        time_scale: run.cloud.scale,
        sim_url: args.sim_url.clone(),
        quota_line: run.quota.map(|q| (q.requests, q.window.as_secs_f64())),
        ..Report::default()
    };
    run.start_sampler();
    let n = args.nodes;
    let deadline = args.deadline_secs;
    let zero = run.snapshot().await?;
    match scenario {
        Scenario::Cold => {
            // The fleet starts (each agent resolves its node and fills its warm pool;
            // the scheduler places no pod on a node before its CNI is ready), then
            // the N × M pods arrive at once: the measured phase.
            run.setup(0, deadline, 120.0).await?;
            let before = run.snapshot().await?;
            report.setup = Run::phase(&zero, &before);
            let start = run.now();
            let mut tasks = JoinSet::new();
            run.place(0..n, args.pods_per_node, start + deadline, &mut tasks, 0);
            let results = run.collect(tasks).await;
            run.idle(Duration::from_secs(300)).await;
            let end = run.snapshot().await?;
            let zero = before;
            let phase = Run::phase(&zero, &end);
            report.calls_total = phase.calls_total;
            report.calls_by_action = phase.calls_by_action;
            report.quota_errors = phase.quota_errors;
            report.errors_by_action = phase.errors_by_action;
            report.harness_calls_total = end.harness - zero.harness;
            Run::pods_figures(&mut report, &results, start);
            let per_node = report.calls_total as f64 / n as f64;
            report.finish_targets_cold(full_quota(run.quota), per_node);
            run.results = results;
        }
        Scenario::Rest | Scenario::Restart => {
            run.setup(args.pods_per_node, deadline, 600.0).await?;
            let before = run.snapshot().await?;
            report.setup = Run::phase(&zero, &before);
            let setup_results = std::mem::take(&mut run.results);
            run.idle(Duration::from_secs_f64(args.rest_secs)).await;
            let after = run.snapshot().await?;
            let rest = Run::phase(&before, &after);
            let per_node_hour =
                rest.calls_total as f64 / n as f64 / (rest.seconds / 3600.0).max(1e-9);
            report.calls_per_node_hour_at_rest = Some(per_node_hour);
            report.target(
                "at rest: <= 2 calls per node per hour",
                per_node_hour <= 2.0,
                format!("{per_node_hour:.2}"),
            );
            report.target(
                "at rest: no request-quota 2500",
                rest.quota_errors == 0,
                rest.quota_errors.to_string(),
            );
            if scenario == Scenario::Rest {
                report.calls_total = rest.calls_total;
                report.calls_by_action = rest.calls_by_action.clone();
                report.quota_errors = rest.quota_errors;
                report.errors_by_action = rest.errors_by_action.clone();
                report.harness_calls_total = after.harness - before.harness;
                Run::pods_figures(&mut report, &setup_results, 0.0);
                report.rest = Some(rest);
            } else {
                report.rest = Some(rest);
                // Every agent stops (SIGTERM) and starts again at once.
                run.stop_all().await;
                let storm = run.now();
                for i in 0..n {
                    run.start_node(i).await?;
                }
                report.seconds_to_all_served = run.all_serving(storm + deadline).await;
                let mut failed = 0;
                for node in &run.nodes {
                    for (name, container) in &run.served[node.index] {
                        if run.driver.check(node, name, container).await.is_err() {
                            failed += 1;
                        }
                    }
                }
                report.checks_failed = Some(failed);
                run.idle(Duration::from_secs(300)).await;
                let end = run.snapshot().await?;
                let phase = Run::phase(&after, &end);
                report.calls_total = phase.calls_total;
                report.calls_by_action = phase.calls_by_action;
                report.quota_errors = phase.quota_errors;
                report.errors_by_action = phase.errors_by_action;
                report.harness_calls_total = end.harness - after.harness;
                report.pods_served = run.served.iter().map(|s| s.len() as u64).sum();
                report.pods_failed =
                    setup_results.iter().filter(|r| r.served.is_none()).count() as u64;
                report.target(
                    "restart storm: no request-quota 2500",
                    phase.quota_errors == 0,
                    phase.quota_errors.to_string(),
                );
                report.target(
                    "restart storm: every agent serves again",
                    report.seconds_to_all_served.is_some(),
                    format!("{:?} s", report.seconds_to_all_served.map(|s| s.round())),
                );
                report.target(
                    "restart storm: every pod keeps its plumbing (CHECK)",
                    failed == 0,
                    failed.to_string(),
                );
            }
            report.target(
                "every pod got its address",
                report.pods_failed == 0,
                report.pods_failed.to_string(),
            );
        }
        Scenario::Churn => {
            run.setup(args.pods_per_node, deadline, 600.0).await?;
            let before = run.snapshot().await?;
            report.setup = Run::phase(&zero, &before);
            run.results.clear();
            // Each node replaces one pod every `churn_every_secs`, nodes staggered.
            let start = run.now();
            let end_at = start + args.churn_secs;
            let every = args.churn_every_secs.max(1.0);
            let mut tasks = JoinSet::new();
            let mut replaced = 0u64;
            let mut round = 0usize;
            while run.now() < end_at {
                for i in 0..n {
                    let victim = run.served[i]
                        .iter()
                        .next()
                        .map(|(k, v)| (k.clone(), v.clone()));
                    let Some((name, container)) = victim else {
                        continue;
                    };
                    run.served[i].remove(&name);
                    let node = run.nodes[i].clone();
                    let _ = run.driver.delete_pod(&node, &name, &container).await;
                    let driver = run.driver.clone();
                    let new = format!("p{i:05}-c{round:05}");
                    tasks.spawn(async move { driver.run_pod(node, new, end_at + 600.0).await });
                    replaced += 1;
                    // Spread the nodes over the period.
                    run.idle(Duration::from_secs_f64(every / n as f64)).await;
                }
                round += 1;
            }
            let results = run.collect(tasks).await;
            run.idle(Duration::from_secs(120)).await;
            let after = run.snapshot().await?;
            let phase = Run::phase(&before, &after);
            report.calls_total = phase.calls_total;
            report.calls_by_action = phase.calls_by_action;
            report.quota_errors = phase.quota_errors;
            report.errors_by_action = phase.errors_by_action;
            report.harness_calls_total = after.harness - before.harness;
            Run::pods_figures(&mut report, &results, start);
            report.pods_replaced = Some(replaced);
            let per_pod = phase.calls_total as f64 / replaced.max(1) as f64;
            report.calls_per_replaced_pod = Some(per_pod);
            report.target(
                "churn: <= 0.5 calls per replaced pod",
                per_pod <= 0.5,
                format!("{per_pod:.2}"),
            );
            report.target(
                "churn: no request-quota 2500",
                phase.quota_errors == 0,
                phase.quota_errors.to_string(),
            );
            report.target(
                "every pod got its address",
                report.pods_failed == 0,
                report.pods_failed.to_string(),
            );
        }
    }
    run.finish(&mut report, wall).await?;
    report.target("nothing leaks", report.leaks == 0, report.leaks.to_string());
    if scenario == Scenario::Cold
        && !full_quota(WindowLimit::parse_optional(&report.quota).unwrap_or(None))
    {
        report.target(
            "under a small quota the breakers open and close",
            report.breaker_opened > 0 && report.breaker_closed > 0,
            format!(
                "opened {}, closed {}",
                report.breaker_opened, report.breaker_closed
            ),
        );
    }
    Ok(report)
}

impl Report {
    fn finish_targets_cold(&mut self, full_quota: bool, per_node: f64) {
        self.target(
            "every pod got its address",
            self.pods_failed == 0,
            self.pods_failed.to_string(),
        );
        if full_quota {
            self.target(
                "no request-quota 2500",
                self.quota_errors == 0,
                self.quota_errors.to_string(),
            );
            self.target(
                "<= 10 calls per node (1,000 for 100 nodes)",
                per_node <= 10.0,
                format!("{} ({per_node:.2} per node)", self.calls_total),
            );
        }
    }
}
