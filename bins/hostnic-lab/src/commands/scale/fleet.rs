//! The fleet: N nodes, each running the agent's own code in-process — its library
//! `run`, its server on a real Unix socket, its pool and reconcile tasks, its real
//! QingCloud client over HTTP to the simulator, its checkpoint in a temp dir — with
//! the host datapath replaced by the core's `FakeHost` and a pod source per node.
//!
//! [`Wiring`] is the seam between the harness and what runs on a node: [`Direct`]
//! (each agent calls the cloud with its own client) and [`Controlled`] (agents
//! without credentials: their cloud is the core's `SuppliedCloud` over their
//! `HostnicNode` on the fake API server, over HTTP, and one leader-elected
//! controller makes every cloud call).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hostnic_agent::settings::Settings;
use hostnic_agent::{AgentError, CloudClient, Deps, Metrics};
use hostnic_core::config::PoolConfig;
use hostnic_core::pool::ShortageCause;
use hostnic_core::ports::{CloudError, CloudNetwork, CloudNics, NicFilter, NodeReporter};
use hostnic_core::testing::{AttachHook as _, FakeHost, FakePods};
use hostnic_core::types::{
    CloudNic, CloudNicStatus, Instance, InstanceId, JobId, JobOutcome, JobStatus, NicId, PodKey,
    Vxnet, VxnetId,
};
use hostnic_qingcloud::QingCloudClient;
use hostnic_testkit::time::ScaledClock;
use ipnet::Ipv4Net;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::cloud::SimCloud;

/// What the harness knows of one node's agent from the outside: what it reported
/// through the core's `NodeReporter` port (as the Kubernetes adapter would turn
/// into node annotations and events).
#[derive(Debug, Default)]
pub struct NodeRecord {
    /// Times the agent reported the request quota exhausted (its breaker opened).
    pub quota_exhausted: AtomicU64,
    /// Times it reported the quota back (its breaker closed).
    pub quota_recovered: AtomicU64,
    /// NIC shortage events by reason.
    pub shortages: Mutex<BTreeMap<&'static str, u64>>,
    /// The last capacity reported: (free NICs, assignable pods).
    pub capacity: Mutex<Option<(u32, u32)>>,
}

impl NodeReporter for NodeRecord {
    fn capacity(&self, free_nics: u32, assignable_pods: u32) {
        *self.capacity.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((free_nics, assignable_pods));
    }

    fn nic_shortage(&self, _: &PodKey, quota: bool, _: &str) {
        let reason = if quota { "QuotaExceeded" } else { "NoFreeNic" };
        *self
            .shortages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    fn nic_shortage_because(&self, _: &PodKey, cause: Option<ShortageCause>, _: &str) {
        let reason = cause.map_or("NoFreeNic", ShortageCause::reason);
        *self
            .shortages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    fn request_quota(&self, exhausted: bool, _: &str) {
        if exhausted {
            self.quota_exhausted.fetch_add(1, Ordering::Relaxed);
        } else {
            self.quota_recovered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One node of the fleet: its instance, directory, fake host, pod source and record.
pub struct Node {
    /// Index in the fleet (0-based).
    pub index: usize,
    /// The QingCloud instance it is.
    pub instance: String,
    /// Its socket, state, CNI config directory.
    pub dir: PathBuf,
    /// Its kernel: NIC links follow the simulator's attachments.
    pub host: FakeHost,
    /// Its pods, as the API server would list them.
    pub pods: FakePods,
    /// What its agent reported.
    pub record: Arc<NodeRecord>,
}

impl Node {
    /// The agent's Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("hostnic.sock")
    }

    /// The conflist the agent writes once it can serve (kubelet waits for it).
    pub fn conflist(&self) -> PathBuf {
        self.dir.join("net.d").join(hostnic_agent::CONFLIST_NAME)
    }
}

/// A running agent of a node.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), AgentError>>,
    /// Its cloud client, if it has one (its calls, breaker, budget).
    pub client: Option<QingCloudClient>,
}

impl Running {
    /// Stops the agent as SIGTERM would (in-flight requests finish) and waits.
    pub async fn stop(mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts what runs on a node.
#[async_trait]
pub trait Wiring: Send + Sync {
    /// Starts the node's agent (and whatever it needs) and returns it running.
    async fn start(&self, node: &Node) -> anyhow::Result<Running>;
}

/// Direct mode: each agent calls the cloud with its own client (today's design).
pub struct Direct {
    /// The simulator.
    pub cloud: Arc<SimCloud>,
    /// The fleet's one clock, on the simulator's time scale.
    pub clock: ScaledClock,
    /// A stand-in for the plugin binary the agent installs with its conflist.
    pub plugin: PathBuf,
}

impl Direct {
    /// The agent's settings for `node`: the defaults (in simulated seconds; the agent
    /// runs them `time_scale` times faster), its files under the node's directory,
    /// a small checkpoint journal (a thousand agents share one disk).
    pub fn settings(&self, node: &Node) -> Settings {
        Settings {
            pool: PoolConfig::default(),
            socket: node.socket(),
            state_dir: node.dir.join("state"),
            cni_conf_dir: node.dir.join("net.d"),
            cni_bin_dir: node.dir.join("bin"),
            plugin_binary: Some(self.plugin.clone()),
            metrics_addr: "127.0.0.1:0".parse().expect("literal"),
            journal_bytes: Some(256 << 10),
            ..Settings::default()
        }
    }
}

#[async_trait]
impl Wiring for Direct {
    async fn start(&self, node: &Node) -> anyhow::Result<Running> {
        let settings = self.settings(node);
        let config = hostnic_qingcloud::Config::new(
            &self.cloud.key,
            self.cloud.secret.clone(),
            &self.cloud.zone,
        );
        let unscaled = hostnic_agent::cloud::client_options(&settings, &config);
        // Every duration of the client runs on the time scale but the timeout of one
        // HTTP attempt: the simulator answers in real time, and a timeout of 30 s / K
        // would retry (and duplicate) calls a loaded machine answers a little late.
        let options = hostnic_qingcloud::ClientOptions {
            request_timeout: unscaled.request_timeout,
            ..unscaled.clone().time_scaled(self.cloud.scale)
        };
        let client = QingCloudClient::for_url(
            &self.cloud.url,
            &self.cloud.key,
            self.cloud.secret.clone(),
            &self.cloud.zone,
            options,
        )?;
        let metrics = Arc::new(Metrics::default());
        client.add_observer(metrics.clone());
        let instance = InstanceId::new(node.instance.clone());
        let pods: Arc<dyn hostnic_core::ports::PodSource> = Arc::new(node.pods.clone());
        let reporter: Arc<dyn NodeReporter> = node.record.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let deps_client = Some(CloudClient {
            client: client.clone(),
            credentials: None,
        });
        let task = if self.cloud.hosts.is_some() {
            // In-process simulator: the host's links follow its attach hook.
            let deps = Deps {
                cloud: client.clone(),
                host: node.host.clone(),
                clock: self.clock,
                pods: Some(pods),
                nic_events: None,
                metrics,
                reporter: Some(reporter),
                policy: None,
                client: deps_client,
                time_scale: self.cloud.scale,
            };
            tokio::spawn(hostnic_agent::run(deps, settings, instance, shutdown))
        } else {
            // A simulator in another process cannot tell the host: the links follow
            // the jobs the agent sees succeed and the NICs it sees attached.
            let deps = Deps {
                cloud: Follower {
                    client: client.clone(),
                    host: node.host.clone(),
                    instance: instance.clone(),
                    jobs: Mutex::new(BTreeMap::new()),
                },
                host: node.host.clone(),
                clock: self.clock,
                pods: Some(pods),
                nic_events: None,
                metrics,
                reporter: Some(reporter),
                policy: None,
                client: deps_client,
                time_scale: self.cloud.scale,
            };
            tokio::spawn(hostnic_agent::run(deps, settings, instance, shutdown))
        };
        Ok(Running {
            stop: Some(stop),
            task,
            client: Some(client),
        })
    }
}

/// Controller mode: the agent holds no cloud client and no credentials; its cloud
/// is `SuppliedCloud` over `KubeNicSupply` (its `HostnicNode`, over HTTP to the fake
/// API server), composed as the agent binary does (`hostnic_agent::supply`). The
/// node's primary interface, which the binary reads from the host, comes from the
/// simulator's state here. The fake host's links follow the simulator's attach hook
/// (the kernel's hotplug), as in direct mode.
pub struct Controlled {
    /// How agents start, but for the cloud.
    pub direct: Direct,
    /// The fake API server's client (one connection pool for the fleet, as each
    /// node's agent would have its own; the watches are HTTP streams each).
    pub kube: kube::Client,
    /// Each node's primary interface, by instance.
    pub primaries: BTreeMap<String, hostnic_agent::supply::Primary>,
}

impl Controlled {
    /// The node's name in the cluster (its `Node` and `HostnicNode`).
    pub fn node_name(node: &Node) -> String {
        format!("node-{:05}", node.index)
    }
}

#[async_trait]
impl Wiring for Controlled {
    async fn start(&self, node: &Node) -> anyhow::Result<Running> {
        let scale = self.direct.cloud.scale;
        let settings = self.direct.settings(node);
        let primary = self
            .primaries
            .get(&node.instance)
            .ok_or_else(|| anyhow::anyhow!("no primary NIC for {}", node.instance))?;
        let instance = InstanceId::new(node.instance.clone());
        let defaults = hostnic_k8s::SupplyOptions::default();
        let scaled = |d: Duration| d.div_f64(scale).max(Duration::from_millis(1));
        let supply = Arc::new(hostnic_k8s::KubeNicSupply::spawn(
            self.kube.clone(),
            &Self::node_name(node),
            hostnic_k8s::SupplyOptions {
                min_interval: scaled(defaults.min_interval),
                backoff_initial: scaled(defaults.backoff_initial),
                backoff_max: scaled(defaults.backoff_max),
            },
        ));
        let cloud = hostnic_agent::supply::controller_cloud(supply, &instance, primary, &settings);
        let settings = hostnic_agent::supply::controller_settings(settings);
        let pods: Arc<dyn hostnic_core::ports::PodSource> = Arc::new(node.pods.clone());
        let reporter: Arc<dyn NodeReporter> = node.record.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let deps = Deps {
            cloud,
            host: node.host.clone(),
            clock: self.direct.clock,
            pods: Some(pods),
            nic_events: None,
            metrics: Arc::new(Metrics::default()),
            reporter: Some(reporter),
            policy: None,
            client: None,
            time_scale: scale,
        };
        let task = tokio::spawn(hostnic_agent::run(deps, settings, instance, shutdown));
        Ok(Running {
            stop: Some(stop),
            task,
            client: None,
        })
    }
}

/// The agent's cloud with a simulator in another process: the node's fake host
/// gets a NIC's link when the agent sees its attach job succeed or the NIC attached
/// here, and loses it when it sees it detached.
struct Follower {
    client: QingCloudClient,
    host: FakeHost,
    instance: InstanceId,
    /// Jobs in flight: their NICs, and whether they attach.
    jobs: Mutex<BTreeMap<JobId, (Vec<NicId>, bool)>>,
}

impl Follower {
    fn finished(&self, job: &JobId, outcome: JobOutcome) {
        let Some((nics, attach)) = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(job)
        else {
            return;
        };
        if outcome == JobOutcome::Successful {
            for nic in &nics {
                if attach {
                    self.host.attached(nic, &self.instance);
                } else {
                    self.host.detached(nic, &self.instance);
                }
            }
        }
    }
}

#[async_trait]
impl CloudNics for Follower {
    async fn describe_nics(&self, filter: &NicFilter) -> Result<Vec<CloudNic>, CloudError> {
        let nics = self.client.describe_nics(filter).await?;
        for nic in &nics {
            if nic.status == CloudNicStatus::InUse && nic.instance.as_ref() == Some(&self.instance)
            {
                self.host.attached(&nic.id, &self.instance);
            }
        }
        Ok(nics)
    }
    async fn create_nics(
        &self,
        vxnet: &VxnetId,
        count: u32,
        name: &str,
    ) -> Result<Vec<CloudNic>, CloudError> {
        CloudNics::create_nics(&self.client, vxnet, count, name).await
    }
    async fn attach_nics(
        &self,
        instance: &InstanceId,
        nics: &[NicId],
    ) -> Result<JobId, CloudError> {
        let job = CloudNics::attach_nics(&self.client, instance, nics).await?;
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.clone(), (nics.to_vec(), true));
        Ok(job)
    }
    async fn detach_nics(&self, nics: &[NicId]) -> Result<JobId, CloudError> {
        let job = CloudNics::detach_nics(&self.client, nics).await?;
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.clone(), (nics.to_vec(), false));
        Ok(job)
    }
    async fn delete_nics(&self, nics: &[NicId]) -> Result<(), CloudError> {
        CloudNics::delete_nics(&self.client, nics).await
    }
    async fn wait_job(&self, job: &JobId, timeout: Duration) -> Result<JobOutcome, CloudError> {
        let outcome = CloudNics::wait_job(&self.client, job, timeout).await?;
        self.finished(job, outcome);
        Ok(outcome)
    }
    async fn job_statuses(&self, jobs: &[JobId]) -> Result<BTreeMap<JobId, JobStatus>, CloudError> {
        let statuses = CloudNics::job_statuses(&self.client, jobs).await?;
        for (job, status) in &statuses {
            if let JobStatus::Done(outcome) = status {
                self.finished(job, *outcome);
            }
        }
        Ok(statuses)
    }
}

#[async_trait]
impl CloudNetwork for Follower {
    async fn describe_instance(&self, instance: &InstanceId) -> Result<Instance, CloudError> {
        CloudNetwork::describe_instance(&self.client, instance).await
    }
    async fn describe_vxnets(&self, vxnets: &[VxnetId]) -> Result<Vec<Vxnet>, CloudError> {
        CloudNetwork::describe_vxnets(&self.client, vxnets).await
    }
    async fn vpc_cidrs(&self, vxnet: &VxnetId) -> Result<Vec<Ipv4Net>, CloudError> {
        CloudNetwork::vpc_cidrs(&self.client, vxnet).await
    }
}
