//! Root: the agent BINARY with `--pods kube`, against the fake Kubernetes API server
//! (`hostnic-k8s`, feature `fake-apiserver`) and the QingCloud simulator, plumbing a
//! "node" network namespace whose NICs appear (as veth pairs into a "vpc" namespace)
//! when the simulator attaches them.
//!
//! - A pod bound to the node but without a sandbox yet makes the agent pre-warm a NIC,
//!   with a pool configured to keep no free NIC otherwise (`min_free: 0`).
//! - A pod deleted from the API server while the agent was stopped has its NIC
//!   released when the agent starts again.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use hostnic_core::api::{AddRequest, Outcome, RequestBody};
use hostnic_core::types::PodKey;
use hostnic_k8s::fake_apiserver::FakeApiServer;
use hostnic_linux::NetNs;
use hostnic_qingcloud::sim::{AttachHook, NicEvent, NicEventKind, SimConfig, Simulator};

const NODE: &str = "node-1";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces deleted on drop.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn create(&mut self, role: &str) -> String {
        let name = format!("hnk-{}-{role}", std::process::id());
        NetNs::create_named(&name).expect("create namespace");
        self.0.push(name.clone());
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.0.drain(..).rev() {
            let _ = NetNs::delete_named(&name);
        }
    }
}

/// Makes a NIC's link appear in the node namespace when the simulator attaches it.
struct VethLinks {
    node: String,
    vpc: String,
}

#[async_trait]
impl AttachHook for VethLinks {
    async fn on_nic_event(&self, event: &NicEvent) {
        let mac = event.nic.to_string();
        let tail: String = mac.replace(':', "")[4..].to_string();
        if let NicEventKind::Attached = event.kind {
            let (name, peer) = (format!("e{tail}"), format!("v{tail}"));
            let _ = Command::new("ip")
                .args([
                    "-n", &self.node, "link", "add", &name, "address", &mac, "type", "veth",
                    "peer", "name", &peer, "netns", &self.vpc,
                ])
                .status();
            let _ = Command::new("ip")
                .args(["-n", &self.vpc, "link", "set", &peer, "up"])
                .status();
        }
    }
}

/// The agent process, killed on drop.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Lab {
    _ns: Namespaces,
    sandbox: String,
    _sim: hostnic_qingcloud::sim::SimHandle,
    api: FakeApiServer,
    dir: tempfile::TempDir,
    socket: PathBuf,
    metrics_addr: std::net::SocketAddr,
}

impl Lab {
    async fn new() -> Self {
        let mut ns = Namespaces(Vec::new());
        let node = ns.create("node");
        let vpc = ns.create("vpc");
        let inet = ns.create("inet");
        let sandbox = ns.create("pod");
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
        let primary = sim
            .state()
            .nics
            .values()
            .find(|n| n.role == 1 && n.instance_id.as_deref() == Some(INSTANCE))
            .unwrap()
            .clone();
        for n in [&node, &vpc, &inet] {
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n",
            &node,
            "link",
            "add",
            "prim0",
            "address",
            &primary.nic_id,
            "type",
            "veth",
            "peer",
            "name",
            "up0",
            "netns",
            &inet,
        ]);
        let primary_ip = format!("{}/24", primary.private_ip);
        ip(&["-n", &node, "addr", "add", &primary_ip, "dev", "prim0"]);
        ip(&["-n", &node, "link", "set", "prim0", "up"]);
        ip(&["-n", &inet, "addr", "add", "172.16.1.1/24", "dev", "up0"]);
        ip(&["-n", &inet, "link", "set", "up0", "up"]);
        ip(&["-n", &node, "route", "add", "default", "via", "172.16.1.1"]);

        let api = FakeApiServer::start().await.unwrap();
        api.add_node(NODE, &[]);

        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("hostnic.sock");
        let metrics_addr = free_port();
        // No free NIC is kept for nobody: any NIC the agent prepares is for demand.
        std::fs::write(
            dir.path().join("agent.yaml"),
            format!(
                "pool:\n  min_free: 0\n  max_free: 2\n  batch_size: 1\n  ip_cooldown: 0\n  min_lifetime: 0\n  backoff_base: 0.2\n  backoff_max: 2\n  pod_gone_grace: 0\n\
                 socket: {}\nstate_dir: {}\ncni_conf_dir: {}\ncni_bin_dir: {}\nmetrics_addr: {metrics_addr}\n\
                 host_netns: /run/netns/{node}\npool_interval_secs: 0.5\nreconcile_interval_secs: 2\n",
                socket.display(),
                dir.path().join("state").display(),
                dir.path().join("net.d").display(),
                dir.path().join("bin").display(),
            ),
        )
        .unwrap();
        let addr = sim.addr();
        std::fs::write(
            dir.path().join("config.yaml"),
            format!(
                "qy_access_key_id: AKIDK8S\nqy_secret_access_key: k8s-secret\nzone: {}\nhost: {}\nport: {}\nprotocol: http\nuri: /iaas\n",
                sim.zone(),
                addr.ip(),
                addr.port()
            ),
        )
        .unwrap();
        api.write_kubeconfig(dir.path()).unwrap();
        Lab {
            _ns: ns,
            sandbox,
            _sim: sim,
            api,
            dir,
            socket,
            metrics_addr,
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    async fn start_agent(&self) -> AgentProcess {
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

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    async fn status(&self) -> serde_json::Value {
        let (_, body) = http_get(self.metrics_addr, "/v1/status").await;
        serde_json::from_str(&body).unwrap_or_default()
    }

    /// Polls `/v1/status` until `f` holds (20 s at most).
    async fn wait_status(&self, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
        let mut last = serde_json::Value::Null;
        for _ in 0..200 {
            last = self.status().await;
            if f(&last) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "timed out waiting for {what}; status {last:#}\nlog:\n{}",
            self.log_text()
        );
    }
}

fn pod_key() -> PodKey {
    PodKey {
        namespace: "default".into(),
        name: "web".into(),
        container_id: "k8s0001".into(),
        ifname: "eth0".into(),
    }
}

fn add(netns: &Path) -> RequestBody {
    RequestBody::Add(AddRequest {
        pod: pod_key(),
        pod_uid: None,
        netns: netns.display().to_string(),
        network: "hostnic".into(),
        cni_version: "1.1.0".into(),
        veth_prefix: None,
        mtu: None,
        runtime_config: None,
        timeout_ms: 30_000,
    })
}

fn pool(s: &serde_json::Value, key: &str) -> u64 {
    s["pool"][key].as_u64().unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn pending_pods_are_prewarmed_and_pods_deleted_while_stopped_are_released() {
    let lab = Lab::new().await;
    let agent = lab.start_agent().await;

    // Nothing pending: after a reconcile the pool holds and asks for nothing.
    lab.wait_status("an idle pool", |s| {
        s["last_reconcile_at_ms"].is_u64()
            && pool(s, "pending_pods") == 0
            && pool(s, "free") + pool(s, "preparing") + pool(s, "creating") == 0
    })
    .await;

    // A pod is scheduled here: the agent learns it from the watch and warms a NIC up.
    lab.api.add_pod("default", "web", NODE, None);
    lab.wait_status("a NIC pre-warmed for the pending pod", |s| {
        pool(s, "pending_pods") == 1 && pool(s, "free") >= 1
    })
    .await;

    // Its sandbox comes: ADD gets the warm NIC; the pod then has its IP in the API.
    let netns = PathBuf::from(format!("/run/netns/{}", lab.sandbox));
    let reply = call(&lab.socket, add(&netns)).await;
    assert!(matches!(reply.outcome, Outcome::Ok(_)), "{reply:?}");
    lab.api.add_pod("default", "web", NODE, Some("172.16.1.50"));
    lab.wait_status("the pod attached", |s| {
        s["pods"] == 1 && pool(s, "assigned") == 1 && pool(s, "pending_pods") == 0
    })
    .await;

    // The node's capacity is published on the Node after the pool rounds.
    let mut published = None;
    for _ in 0..100 {
        let node = lab.api.get("v1", "Node", "", NODE).expect("the node");
        let annotations = &node["metadata"]["annotations"];
        if let Some(assignable) =
            annotations[hostnic_k8s::node::ASSIGNABLE_PODS_ANNOTATION].as_str()
        {
            published = Some((
                assignable.to_string(),
                annotations[hostnic_k8s::node::FREE_NICS_ANNOTATION]
                    .as_str()
                    .map(str::to_string),
            ));
            if assignable == "61" {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (assignable, free) = published.expect("capacity annotations on the Node");
    assert_eq!(assignable, "61", "62 pod NICs at most, one assigned");
    assert!(free.is_some(), "free-nics annotation");

    // The agent stops; meanwhile the pod is deleted and its DEL never reaches us.
    drop(agent);
    lab.api.delete_pod("default", "web").unwrap();
    let _agent = lab.start_agent().await;
    lab.wait_status("the deleted pod's NIC released", |s| {
        s["pods"] == 0 && pool(s, "assigned") == 0
    })
    .await;
}
