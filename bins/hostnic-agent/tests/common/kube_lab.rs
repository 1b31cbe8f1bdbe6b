//! Root scaffolding shared by the `root_kube*`/`root_policy` tests: the agent BINARY
//! with `--pods kube` against the fake Kubernetes API server and the QingCloud
//! simulator, plumbing a "node" network namespace whose NICs appear (as veth pairs
//! into a "vpc" namespace) when the simulator attaches them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hostnic_k8s::fake_apiserver::FakeApiServer;
use hostnic_qingcloud::sim::{SimConfig, Simulator};
use hostnic_testkit::hooks::VethLinks;
use hostnic_testkit::netns::Namespaces;
use hostnic_testkit::process::{
    AgentFiles, ChildProcess as AgentProcess, agent_command, plug_primary, wait_serving,
};

use super::INSTANCE;

pub const NODE: &str = "node-1";

/// A node namespace with NICs from the simulator, the fake API server with the
/// node, pod sandboxes, and the agent binary's configuration.
pub struct Lab {
    _ns: Namespaces,
    pub sandboxes: Vec<String>,
    _sim: hostnic_qingcloud::sim::SimHandle,
    pub api: FakeApiServer,
    pub dir: tempfile::TempDir,
    pub files: AgentFiles,
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
        plug_primary(&sim, INSTANCE, &node, &vpc, &inet);

        let api = FakeApiServer::start().await.unwrap();
        api.add_node(NODE, &[]);

        let dir = tempfile::tempdir().unwrap();
        // No free NIC is kept for nobody: any NIC the agent prepares is for demand.
        // A pod missing from the pod source is released once its attachment is 5 s
        // old: with 0, a periodic reconcile whose pod list was read just before an
        // ADD released that ADD's fresh attachment (the race `pod_gone_grace`
        // exists for), and root_policy failed about every other run.
        let files = AgentFiles::write(
            dir.path(),
            &sim,
            ("AKIDK8S", "k8s-secret"),
            &node,
            "  min_free: 0\n  max_free: 2\n  batch_size: 1\n  ip_cooldown: 0\n  min_lifetime: 0\n  backoff_base: 0.2\n  backoff_max: 2\n  pod_gone_grace: 5\n",
            2,
        );
        let (socket, metrics_addr) = (files.socket.clone(), files.metrics_addr);
        api.write_kubeconfig(dir.path()).unwrap();
        Lab {
            _ns: ns,
            sandboxes,
            _sim: sim,
            api,
            dir,
            files,
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
        let mut command = agent_command(
            std::path::Path::new(env!("CARGO_BIN_EXE_hostnic-agent")),
            INSTANCE,
            &self.files,
        );
        command
            .args(["--pods", "kube", "--node-name", NODE])
            .arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .args(extra);
        let agent = AgentProcess::spawn(command, &self.log());
        wait_serving(&self.socket, &self.log(), Duration::from_secs(20)).await;
        agent
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
}
