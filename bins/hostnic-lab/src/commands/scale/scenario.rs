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

use hostnic_k8s::fake_apiserver::FakeApiServer;
use hostnic_qingcloud::QingCloudClient;
use hostnic_qingcloud::sim::WindowLimit;
use hostnic_testkit::hooks::FakeHosts;
use hostnic_testkit::requests::{status_req, try_call};
use hostnic_testkit::time::ScaledClock;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::cloud::{self, Counter, SimCloud};
use super::driver::{Driver, PodResult};
use super::fleet::{Controlled, Direct, Node, NodeRecord, Running, Wiring};
use super::report::{Phase, Report, Sample, quantile};
use super::{Mode, ScaleArgs, Scenario};

/// What the simulator and the agents' clients counted at one moment.
struct Snapshot {
    at: f64,
    counters: BTreeMap<String, Counter>,
    rejections: u64,
    harness: u64,
}

/// The agents' `HostnicNode` writes by node, at each sample's simulated second.
type WriteSamples = Arc<Mutex<Vec<(f64, BTreeMap<String, u64>)>>>;

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
    /// Controller mode: the cluster's API server and its controller.
    cluster: Option<Arc<Cluster>>,
    /// Controller mode: the agents' writes by node, every sample (simulated second).
    writes: WriteSamples,
    _dir: tempfile::TempDir,
}

/// Controller mode's cluster: the fake API server (HTTP) every agent writes its
/// `HostnicNode` to, and the one controller replica (the controller crate's
/// library, leader-elected on the server's Lease) that makes every cloud call.
struct Cluster {
    server: FakeApiServer,
    controller: Mutex<Option<hostnic_controller::Running>>,
}

/// The controller's cluster name (its NICs are named `hostnic_<cluster>`).
const CLUSTER: &str = "scale";

impl Cluster {
    async fn start(
        cloud: &SimCloud,
        names: impl Iterator<Item = String>,
        dir: &std::path::Path,
    ) -> anyhow::Result<(Self, kube::Client, QingCloudClient)> {
        let server = FakeApiServer::start().await?;
        server
            .install_crd_yaml(&hostnic_k8s::crd::crd_yaml())
            .map_err(|e| anyhow::anyhow!("installing the HostnicNode CRD: {e:?}"))?;
        for name in names {
            server.add_node(&name, &[]);
        }
        let kube = hostnic_k8s::client(Some(&server.write_kubeconfig(dir)?)).await?;
        let mut settings =
            hostnic_controller::Settings::new(CLUSTER, "scale-a").time_scaled(cloud.scale);
        settings.metrics_addr = "127.0.0.1:0".parse().expect("literal");
        let unscaled = hostnic_qingcloud::ClientOptions::default();
        // As the agents' clients in direct mode: every duration on the time scale
        // but one HTTP attempt's timeout.
        let options = hostnic_qingcloud::ClientOptions {
            budget: Some(settings.budget),
            request_timeout: unscaled.request_timeout,
            ..unscaled.clone().time_scaled(cloud.scale)
        };
        let client = QingCloudClient::for_url(
            &cloud.url,
            &cloud.key,
            cloud.secret.clone(),
            &cloud.zone,
            options,
        )?;
        let controller = hostnic_controller::start(
            hostnic_controller::Deps {
                cloud: client.clone(),
                kube: kube.clone(),
            },
            settings,
        )
        .await?;
        Ok((
            Self {
                server,
                controller: Mutex::new(Some(controller)),
            },
            kube,
            client,
        ))
    }

    /// The agents' `HostnicNode` spec writes so far (the server's request log), by
    /// node name (creates, which name no object in the path, under ""). Status
    /// writes are the controller's, not counted.
    fn writes(&self) -> BTreeMap<String, u64> {
        let mut by_node = BTreeMap::new();
        for r in self.server.requests() {
            if !matches!(r.method.as_str(), "POST" | "PUT" | "PATCH") {
                continue;
            }
            let Some((_, rest)) = r.path.split_once("/hostnicnodes") else {
                continue;
            };
            if rest.ends_with("/status") {
                continue;
            }
            let name = rest.trim_start_matches('/').to_string();
            *by_node.entry(name).or_default() += 1;
        }
        by_node
    }

    /// Stops the controller (the Lease released).
    async fn stop(&self) {
        let running = self
            .controller
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(r) = running {
            r.stop().await;
        }
    }
}

impl Run {
    async fn new(args: &ScaleArgs) -> anyhow::Result<Self> {
        anyhow::ensure!(
            args.mode == Mode::Direct || args.sim_url.is_none(),
            "--mode controller runs with the in-process simulator only (the nodes' fake \
             hosts follow its attach hook); use --mode direct with --sim-url"
        );
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
        let direct = Direct {
            cloud: cloud.clone(),
            clock,
            plugin,
        };
        let mut all_clients = Vec::new();
        let (wiring, cluster): (Box<dyn Wiring>, _) = match args.mode {
            Mode::Direct => (Box::new(direct), None),
            Mode::Controller => {
                let state = cloud.state().await?;
                let primaries = instances
                    .iter()
                    .map(|i| Ok((i.clone(), state.primary(i)?)))
                    .collect::<anyhow::Result<_>>()?;
                let (cluster, kube, client) = Cluster::start(
                    &cloud,
                    nodes.iter().map(|n| Controlled::node_name(n)),
                    dir.path(),
                )
                .await?;
                all_clients.push(client);
                let wiring = Controlled {
                    direct,
                    kube,
                    primaries,
                };
                (Box::new(wiring) as Box<dyn Wiring>, Some(Arc::new(cluster)))
            }
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
            all_clients,
            cluster,
            writes: Arc::default(),
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
        let (cluster, writes) = (self.cluster.clone(), self.writes.clone());
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
                if let Some(cluster) = &cluster {
                    let by_node = cluster.writes();
                    writes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((driver.now(), by_node));
                }
                tokio::time::sleep(every).await;
            }
        });
    }

    /// Controller mode: the agents' `HostnicNode` writes so far, in all.
    fn crd_writes(&self) -> Option<u64> {
        self.cluster.as_ref().map(|c| c.writes().values().sum())
    }

    /// Controller mode: the most writes one node made between two samples (30
    /// simulated seconds apart) from simulated second `from` on.
    fn max_writes_per_window(&self, from: f64) -> Option<u64> {
        self.cluster.as_ref()?;
        let samples = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        let mut max = 0;
        for pair in samples.windows(2) {
            let ((_, a), (at, b)) = (&pair[0], &pair[1]);
            if *at < from {
                continue;
            }
            // Creates (POST to the collection) carry no name in the path: "".
            for (node, n) in b.iter().filter(|(node, _)| !node.is_empty()) {
                max = max.max(n.saturating_sub(a.get(node).copied().unwrap_or(0)));
            }
        }
        Some(max)
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
            // One controller under one budget: the fleet joins at once.
            _ if self.cluster.is_some() => (n, 0.0),
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
        if self.cluster.is_some() {
            // The controller's NICs are the cluster's, named `hostnic_<cluster>`: one
            // left detached after settling, or a node holding more than its pods and
            // `max_free`, leaks.
            let name = format!("hostnic_{CLUSTER}");
            let mut per: BTreeMap<&str, u64> = BTreeMap::new();
            for nic in state.nics.values().filter(|n| n.nic_name == name) {
                *per.entry(nic.instance_id.as_deref().unwrap_or(""))
                    .or_default() += 1;
            }
            let mut leaks = per.get("").copied().unwrap_or(0);
            for node in &self.nodes {
                let here = per.get(node.instance.as_str()).copied().unwrap_or(0);
                let pods = self.served[node.index].len() as u64;
                leaks += here.saturating_sub(pods + max_free);
            }
            return Ok(leaks);
        }
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
        if let Some(cluster) = &self.cluster {
            cluster.stop().await;
        }
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
            report.hostnicnode_writes_setup = run.crd_writes();
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
            if let Some(w) = run.crd_writes() {
                let total = report.setup.calls_total + report.calls_total;
                report.cold_start_calls = Some(total);
                report.hostnicnode_writes = Some(w - report.hostnicnode_writes_setup.unwrap_or(0));
                report.hostnicnode_writes_max_per_node_window = run.max_writes_per_window(start);
                report.write_window_secs = Some(WRITE_WINDOW);
                if full_quota(run.quota) {
                    report.target(
                        "controller: cold start <= 1.6 calls per node (1,600 for 1,000 nodes)",
                        total as f64 <= 1.6 * n as f64,
                        format!("{total} ({:.2} per node)", total as f64 / n as f64),
                    );
                }
                report.writes_target();
            }
            run.results = results;
        }
        Scenario::Rest | Scenario::Restart => {
            run.setup(args.pods_per_node, deadline, 600.0).await?;
            let before = run.snapshot().await?;
            report.setup = Run::phase(&zero, &before);
            let setup_results = std::mem::take(&mut run.results);
            let writes_before = run.crd_writes();
            report.hostnicnode_writes_setup = writes_before;
            run.idle(Duration::from_secs_f64(args.rest_secs)).await;
            let after = run.snapshot().await?;
            let rest = Run::phase(&before, &after);
            if let (Some(a), Some(b)) = (writes_before, run.crd_writes()) {
                let cluster_hour = rest.calls_total as f64 / (rest.seconds / 3600.0).max(1e-9);
                report.hostnicnode_writes_at_rest = Some(b - a);
                report.target(
                    "controller at rest: <= 30 calls per hour for the whole cluster",
                    cluster_hour <= 30.0,
                    format!("{cluster_hour:.1}"),
                );
                report.target(
                    "controller at rest: no HostnicNode write by an agent",
                    b == a,
                    (b - a).to_string(),
                );
            }
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
                let writes_before = run.crd_writes();
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
                if run.cluster.is_some() {
                    // The storm itself: every agent back and every pod checked. The
                    // controller's own idle round may fall in it (its inventory, a
                    // handful an hour): counted, not excused.
                    let served = run.snapshot().await?;
                    let storm_calls = Run::phase(&after, &served);
                    report.target(
                        "controller: the restart storm costs zero cloud calls",
                        storm_calls.calls_total == 0,
                        format!(
                            "{} in {:.0} simulated s {:?}",
                            storm_calls.calls_total,
                            storm_calls.seconds,
                            storm_calls.calls_by_action
                        ),
                    );
                }
                run.idle(Duration::from_secs(300)).await;
                let end = run.snapshot().await?;
                let phase = Run::phase(&after, &end);
                report.calls_total = phase.calls_total;
                report.calls_by_action = phase.calls_by_action;
                report.quota_errors = phase.quota_errors;
                report.errors_by_action = phase.errors_by_action;
                report.harness_calls_total = end.harness - after.harness;
                if let (Some(a), Some(b)) = (writes_before, run.crd_writes()) {
                    report.hostnicnode_writes = Some(b - a);
                }
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
            report.hostnicnode_writes_setup = run.crd_writes();
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
            if let Some(w) = run.crd_writes() {
                report.hostnicnode_writes = Some(w - report.hostnicnode_writes_setup.unwrap_or(0));
                report.hostnicnode_writes_max_per_node_window = run.max_writes_per_window(start);
                report.write_window_secs = Some(WRITE_WINDOW);
                report.writes_target();
            }
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

/// The window of the agents' write rate (the sampler's period, simulated seconds).
const WRITE_WINDOW: f64 = 30.0;

/// The agents' spec writes are coalesced to one per this many simulated seconds
/// (`hostnic_k8s::SupplyOptions::default().min_interval`).
const WRITE_EVERY: f64 = 3.0;

impl Report {
    /// Controller mode: no node wrote its `HostnicNode` more than once per
    /// `WRITE_EVERY` seconds (the sampler's windows are wall-clock-late under load:
    /// one write of slack).
    fn writes_target(&mut self) {
        let max = self.hostnicnode_writes_max_per_node_window.unwrap_or(0);
        let allowed = (WRITE_WINDOW / WRITE_EVERY) as u64 + 1;
        self.target(
            "controller: <= 1 HostnicNode write per node per 3 s",
            max <= allowed,
            format!("at most {max} by one node in {WRITE_WINDOW:.0} s (allowed {allowed})"),
        );
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(mode: Mode) -> ScaleArgs {
        ScaleArgs {
            nodes: 4,
            pods_per_node: 6,
            scenario: vec![Scenario::Cold],
            quota: "2000/3600".into(),
            time_scale: 60.0,
            sim_url: None,
            credentials: None,
            json: None,
            mode,
            assert: true,
            rest_secs: 3600.0,
            churn_secs: 1800.0,
            churn_every_secs: 60.0,
            deadline_secs: 43200.0,
        }
    }

    /// Controller mode end to end, small: credential-less agents get their NICs
    /// through their `HostnicNode`s from the one controller, every pod is served,
    /// the controller's client made every call the simulator counted, the agents
    /// wrote their objects, and nothing leaked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn controller_mode_serves_every_pod_through_the_controller() {
        hostnic_qingcloud::transport::install_crypto_provider();
        let report = run(Scenario::Cold, &args(Mode::Controller)).await.unwrap();
        assert_eq!(report.mode, "controller");
        assert_eq!(report.pods_served, 24, "{}", report.summary());
        assert_eq!(report.pods_failed, 0);
        assert_eq!(report.leaks, 0, "{}", report.summary());
        assert_eq!(report.quota_errors, 0);
        // Only the controller's client calls: its count is the simulator's.
        assert_eq!(report.harness_calls_total, report.calls_total);
        assert!(
            report.calls_by_action.contains_key("AttachNics")
                || report.setup.calls_by_action.contains_key("AttachNics")
        );
        let setup = report.hostnicnode_writes_setup.unwrap();
        assert!(setup >= 4, "each agent created its HostnicNode: {setup}");
        assert!(report.cold_start_calls.is_some());
        // Every target but the calls per node, which 4 nodes cannot meet (the
        // controller's fixed inventory calls dominate a fleet this small).
        for t in &report.targets {
            assert!(
                t.ok || t.name.starts_with("controller: cold start"),
                "{}",
                report.summary()
            );
        }
        assert!(
            report
                .targets
                .iter()
                .any(|t| t.name.starts_with("controller: <= 1 HostnicNode write"))
        );
    }

    /// `--mode controller` with a simulator started separately is refused
    /// clearly (the fake hosts follow the in-process simulator's attach hook).
    #[tokio::test]
    async fn controller_mode_refuses_an_external_simulator() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("config.yaml");
        std::fs::write(
            &creds,
            "qy_access_key_id: 'K'\nqy_secret_access_key: 'S'\nzone: 'pek3a'\n",
        )
        .unwrap();
        let mut a = args(Mode::Controller);
        a.sim_url = Some("http://127.0.0.1:9/iaas/".into());
        a.credentials = Some(creds);
        let err = run(Scenario::Cold, &a).await.expect_err("refused");
        assert!(
            format!("{err:#}").contains("in-process simulator only"),
            "{err:#}"
        );
    }
}
