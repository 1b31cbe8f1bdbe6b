//! An in-process agent over the core's fakes, on a temporary socket and state
//! directory, in its own tokio runtime so that a "kill" drops every task at once
//! (like `kill -9`, minus the kernel).

#![allow(dead_code)]

pub mod kube_lab;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hostnic_agent::settings::Settings;
use hostnic_agent::{Deps, Metrics};
use hostnic_core::config::PoolConfig;
use hostnic_core::testing::{FakeCloud, FakeCloudConfig, FakeHost, ManualClock};
use hostnic_core::types::{InstanceId, Timestamp};
pub use hostnic_testkit::requests::*;

pub const INSTANCE: &str = "i-sim00001";

/// The world the agent lives in: cloud, host and clock survive agent restarts.
pub struct World {
    pub clock: ManualClock,
    pub cloud: FakeCloud,
    pub host: FakeHost,
    pub dir: tempfile::TempDir,
    pub settings: Settings,
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
            pool,
            socket: dir.path().join("hostnic.sock"),
            state_dir: dir.path().join("state"),
            cni_conf_dir: dir.path().join("net.d"),
            cni_bin_dir: dir.path().join("bin"),
            metrics_addr: free_port(),
            plugin_binary: None,
            pool_interval_secs: 0.2,
            reconcile_interval_secs: 3600.0,
            ..Settings::default()
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
        let deps = Deps {
            cloud: self.cloud.clone(),
            host: self.host.clone(),
            clock: self.clock.clone(),
            pods,
            nic_events,
            metrics: Arc::new(Metrics::default()),
            reporter: None,
            policy,
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
