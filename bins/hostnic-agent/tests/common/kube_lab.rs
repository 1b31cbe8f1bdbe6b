//! Root scaffolding shared by the `root_kube*`/`root_policy` tests: the agent BINARY
//! with `--pods kube` against the fake Kubernetes API server and the QingCloud
//! simulator, plumbing a "node" network namespace whose NICs appear (as veth pairs
//! into a "vpc" namespace) when the simulator attaches them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hostnic_k8s::fake_apiserver::FakeApiServer;
use hostnic_qingcloud::sim::{SimConfig, Simulator};

use super::netlab::{AgentFiles, Namespaces, VethLinks, plug_primary};
use super::{INSTANCE, status_req, try_call};

pub const NODE: &str = "node-1";

/// The agent process, killed on drop.
pub struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A node namespace with NICs from the simulator, the fake API server with the
/// node, pod sandboxes, and the agent binary's configuration.
pub struct Lab {
    _ns: Namespaces,
    pub sandboxes: Vec<String>,
    _sim: hostnic_qingcloud::sim::SimHandle,
    pub api: FakeApiServer,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub metrics_addr: std::net::SocketAddr,
}

impl Lab {
    /// Namespaces named `<prefix>-<pid>-…`, with `sandboxes` pod sandboxes.
    pub async fn new(prefix: &str, sandboxes: usize) -> Self {
        let mut ns = Namespaces::new(prefix);
        let node = ns.create("node");
        let vpc = ns.create("vpc");
        let inet = ns.create("inet");
        let sandboxes = (0..sandboxes)
            .map(|i| ns.create(&format!("p{i}")))
            .collect();
        let hook = Arc::new(VethLinks {
            node: node.clone(),
            vpc: vpc.clone(),
        });
        let sim = Simulator::start(
            SimConfig {
                attach_latency: Duration::from_millis(100),
                job_latency: Duration::from_millis(50),
                ..SimConfig::new("AKIDK8S", "k8s-secret")
            },
            Some(hook),
        )
        .await
        .unwrap();
        plug_primary(&sim, &node, &vpc, &inet);

        let api = FakeApiServer::start().await.unwrap();
        api.add_node(NODE, &[]);

        let dir = tempfile::tempdir().unwrap();
        // No free NIC is kept for nobody: any NIC the agent prepares is for demand.
        let files = AgentFiles::write(
            dir.path(),
            &sim,
            ("AKIDK8S", "k8s-secret"),
            &node,
            "  min_free: 0\n  max_free: 2\n  batch_size: 1\n  ip_cooldown: 0\n  min_lifetime: 0\n  backoff_base: 0.2\n  backoff_max: 2\n  pod_gone_grace: 0\n",
            2,
        );
        let (socket, metrics_addr) = (files.socket, files.metrics_addr);
        api.write_kubeconfig(dir.path()).unwrap();
        Lab {
            _ns: ns,
            sandboxes,
            _sim: sim,
            api,
            dir,
            socket,
            metrics_addr,
        }
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    pub async fn start_agent(&self) -> AgentProcess {
        self.start_agent_with(&[]).await
    }

    pub async fn start_agent_with(&self, extra: &[&str]) -> AgentProcess {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hostnic-agent"))
            .args(["--cloud", "qingcloud", "--instance-id", INSTANCE])
            .args(["--pods", "kube", "--node-name", NODE])
            .arg("--kubeconfig")
            .arg(d.join("kubeconfig"))
            .arg("--config")
            .arg(d.join("agent.yaml"))
            .arg("--credentials")
            .arg(d.join("config.yaml"))
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start hostnic-agent");
        let agent = AgentProcess(child);
        for _ in 0..1000 {
            if try_call(&self.socket, status_req()).await.is_ok() {
                return agent;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("agent not serving; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
}
