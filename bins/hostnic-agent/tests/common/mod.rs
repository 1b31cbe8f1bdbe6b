//! An in-process agent over the core's fakes, on a temporary socket and state
//! directory, in its own tokio runtime so that a "kill" drops every task at once
//! (like `kill -9`, minus the kernel).

#![allow(dead_code)]

pub mod kube_lab;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hostnic_agent::settings::Settings;
use hostnic_agent::{Deps, Metrics};
use hostnic_core::config::PoolConfig;
use hostnic_core::ports::SystemClock;
use hostnic_core::testing::{FakeCloud, FakeCloudConfig, FakeHost, ManualClock};
use hostnic_core::types::{InstanceId, Timestamp};
use hostnic_qingcloud::sim::SimHandle;
pub use hostnic_testkit::requests::*;
use hostnic_testkit::sim::SimCloud;

pub const INSTANCE: &str = "i-sim00001";

/// The world the agent lives in: cloud, host and clock survive agent restarts.
pub struct World {
    pub clock: ManualClock,
    pub cloud: FakeCloud,
    pub host: FakeHost,
    pub dir: tempfile::TempDir,
    pub settings: Settings,
}

/// The settings of an agent under test whose files live in `dir`.
pub fn settings_in(dir: &Path, pool: PoolConfig) -> Settings {
    Settings {
        pool,
        socket: dir.join("hostnic.sock"),
        state_dir: dir.join("state"),
        cni_conf_dir: dir.join("net.d"),
        cni_bin_dir: dir.join("bin"),
        metrics_addr: free_port(),
        ..Settings::default()
    }
}

/// The agent in-process on the caller's runtime, with the real QingCloud client
/// against the simulator and the fake host whose NIC links follow it.
pub struct SimAgent {
    pub sim: SimHandle,
    pub host: FakeHost,
    pub socket: PathBuf,
    pub metrics: Arc<Metrics>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), hostnic_agent::AgentError>>,
    _dir: tempfile::TempDir,
}

impl SimAgent {
    /// Starts the simulator (`attach_latency`) and the agent (`pool`, a pool
    /// round every `pool_interval_secs`), and waits until it serves.
    pub async fn start(
        attach_latency: Duration,
        pool: PoolConfig,
        pool_interval_secs: f64,
    ) -> Self {
        let SimCloud { sim, client, host } =
            SimCloud::start(INSTANCE, &pool.veth_prefix, attach_latency).await;
        let metrics = Arc::new(Metrics::default());
        client.add_observer(metrics.clone());
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            pool_interval_secs,
            ..settings_in(dir.path(), pool)
        };
        let socket = settings.socket.clone();
        let deps = Deps {
            cloud: client.clone(),
            host: host.clone(),
            clock: SystemClock,
            pods: None,
            nic_events: None,
            reporter: None,
            policy: None,
            metrics: metrics.clone(),
            client: Some(hostnic_agent::CloudClient {
                client,
                credentials: None,
            }),
            time_scale: 1.0,
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
        Self {
            sim,
            host,
            socket,
            metrics,
            stop,
            task,
            _dir: dir,
        }
    }

    /// Cloud API calls so far.
    pub fn calls(&self) -> u64 {
        self.metrics.counter_total("hostnic_cloud_api_calls_total")
    }

    /// Stops the agent, then the simulator; the agent's result.
    pub async fn stop(self) -> Result<(), hostnic_agent::AgentError> {
        let _ = self.stop.send(());
        let result = self.task.await.expect("the agent task");
        self.sim.shutdown().await;
        result
    }
}

impl World {
    pub fn new(pool: PoolConfig) -> Self {
        let clock = ManualClock::new(Timestamp(1_700_000_000_000));
        let cloud = FakeCloud::new(
            FakeCloudConfig {
                attach_latency: Duration::from_secs(1),
                detach_latency: Duration::from_secs(1),
                ..FakeCloudConfig::default()
            },
            clock.clone(),
        );
        let host = FakeHost::new(InstanceId::new(INSTANCE), &pool.veth_prefix);
        cloud.set_hook(Arc::new(host.clone()));
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            plugin_binary: None,
            pool_interval_secs: 0.2,
            reconcile_interval_secs: 3600.0,
            ..settings_in(dir.path(), pool)
        };
        Self {
            clock,
            cloud,
            host,
            dir,
            settings,
        }
    }

    /// A small fast pool: no cooldown or minimum lifetime (the manual clock barely moves).
    pub fn small() -> Self {
        Self::new(PoolConfig {
            min_free: 2,
            max_free: 4,
            batch_size: 5,
            ip_cooldown: Duration::ZERO,
            min_lifetime: Duration::ZERO,
            ..PoolConfig::default()
        })
    }

    pub fn socket(&self) -> PathBuf {
        self.settings.socket.clone()
    }

    pub fn conflist(&self) -> PathBuf {
        self.settings
            .cni_conf_dir
            .join(hostnic_agent::CONFLIST_NAME)
    }

    /// Starts the agent in its own runtime on another thread.
    pub fn start(&self) -> Agent {
        self.start_with_pods(None)
    }

    /// Starts the agent with a pod source.
    pub fn start_with_pods(&self, pods: Option<Arc<dyn hostnic_core::ports::PodSource>>) -> Agent {
        self.start_with(pods, None)
    }

    /// Starts the agent with a pod source and a stream standing in for kernel link events.
    pub fn start_with(
        &self,
        pods: Option<Arc<dyn hostnic_core::ports::PodSource>>,
        nic_events: Option<futures::stream::BoxStream<'static, hostnic_agent::HostEvent>>,
    ) -> Agent {
        self.start_full(pods, nic_events, None)
    }

    /// Starts the agent enforcing NetworkPolicy with `policy`.
    pub fn start_with_policy(&self, policy: hostnic_agent::policy::PolicyDeps) -> Agent {
        self.start_full(None, None, Some(policy))
    }

    /// Starts the agent with everything optional given.
    pub fn start_full(
        &self,
        pods: Option<Arc<dyn hostnic_core::ports::PodSource>>,
        nic_events: Option<futures::stream::BoxStream<'static, hostnic_agent::HostEvent>>,
        policy: Option<hostnic_agent::policy::PolicyDeps>,
    ) -> Agent {
        self.start_reporting(pods, nic_events, policy, None)
    }

    /// [`World::start_full`] with a reporter of the node's state.
    pub fn start_reporting(
        &self,
        pods: Option<Arc<dyn hostnic_core::ports::PodSource>>,
        nic_events: Option<futures::stream::BoxStream<'static, hostnic_agent::HostEvent>>,
        policy: Option<hostnic_agent::policy::PolicyDeps>,
        reporter: Option<Arc<dyn hostnic_core::ports::NodeReporter>>,
    ) -> Agent {
        let deps = Deps {
            cloud: self.cloud.clone(),
            host: self.host.clone(),
            clock: self.clock.clone(),
            pods,
            nic_events,
            metrics: Arc::new(Metrics::default()),
            reporter,
            policy,
            client: None,
            time_scale: 1.0,
        };
        let metrics = deps.metrics.clone();
        let settings = self.settings.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let result = rt.block_on(async move {
                let shutdown = async move {
                    let _ = stop_rx.await;
                };
                tokio::select! {
                    r = hostnic_agent::run(deps, settings, InstanceId::new(INSTANCE), shutdown) => {
                        r.map_err(|e| e.to_string())
                    }
                    _ = kill_rx => Ok(()),
                }
            });
            // Dropping the runtime cancels every task of the agent at its next await.
            rt.shutdown_timeout(Duration::from_secs(5));
            result
        });
        Agent {
            stop: Some(stop_tx),
            kill: Some(kill_tx),
            thread: Some(thread),
            metrics,
            socket: self.socket(),
        }
    }
}

pub struct Agent {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    pub metrics: Arc<Metrics>,
    pub socket: PathBuf,
}

impl Agent {
    /// Waits until the agent answers STATUS (with anything).
    pub async fn serving(&self) {
        for _ in 0..500 {
            if try_call(&self.socket, status_req()).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the agent did not start serving within 10 s");
    }

    /// SIGTERM: finish in-flight requests, return.
    pub fn stop(mut self) -> Result<(), String> {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap()
    }

    /// Crash: every task is dropped where it is.
    pub fn kill(mut self) {
        let _ = self.kill.take().unwrap().send(());
        let _ = self.thread.take().unwrap().join();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
