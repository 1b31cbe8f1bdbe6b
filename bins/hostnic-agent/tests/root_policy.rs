//! Root: NetworkPolicy enforced by the agent BINARY (`--pods kube`, policy on by
//! default) against the fake Kubernetes API server and the QingCloud simulator, with
//! real packets: two pods on the node, a NetworkPolicy created in the API server
//! blocks the flow between them, deleting it restores the flow, and an agent
//! restarted with `--network-policy false` removes the chains an earlier run left.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use hostnic_core::api::{AddRequest, Outcome, Reply, RequestBody};
use hostnic_core::types::PodKey;
use hostnic_k8s::fake_apiserver::FakeApiServer;
use hostnic_linux::NetNs;
use hostnic_qingcloud::sim::{AttachHook, NicEvent, NicEventKind, SimConfig, Simulator};
use serde_json::json;

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
        let name = format!("hnp-{}-{role}", std::process::id());
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
    sandboxes: Vec<String>,
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
        let sandboxes = vec![ns.create("pa"), ns.create("pb")];
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
            sandboxes,
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
        self.start_agent_with(&[]).await
    }

    async fn start_agent_with(&self, extra: &[&str]) -> AgentProcess {
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

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
}

fn add(name: &str, netns: &str) -> RequestBody {
    RequestBody::Add(AddRequest {
        pod: PodKey {
            namespace: "default".into(),
            name: name.into(),
            container_id: format!("ctr-{name}"),
            ifname: "eth0".into(),
        },
        pod_uid: None,
        netns: format!("/run/netns/{netns}"),
        network: "hostnic".into(),
        cni_version: "1.1.0".into(),
        veth_prefix: None,
        mtu: None,
        runtime_config: None,
        timeout_ms: 30_000,
    })
}

fn labelled_pod(api: &FakeApiServer, name: &str) {
    let mut pod = api.add_pod("default", name, NODE, None);
    pod["metadata"]["labels"] = json!({"app": name});
    api.apply(pod).unwrap();
}

/// True when a TCP connection from the sandbox `from` to `to` opens and echoes.
fn can_connect(from: &str, to: SocketAddr, timeout: Duration) -> bool {
    let ns = NetNs::open(format!("/run/netns/{from}")).unwrap();
    let stream = ns
        .run_blocking(move || TcpStream::connect_timeout(&to, timeout))
        .expect("enter the pod namespace");
    let Ok(mut s) = stream else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 4];
    s.write_all(b"ping").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"ping"
}

/// An echo listener on `addr` inside the sandbox `ns`.
fn listen(ns: &str, addr: SocketAddr) {
    let ns = NetNs::open(format!("/run/netns/{ns}")).unwrap();
    let listener = ns
        .run_blocking(move || TcpListener::bind(addr))
        .expect("enter the pod namespace")
        .expect("bind");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

fn rv(obj: &serde_json::Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a resourceVersion")
}

impl Lab {
    /// Polls `/v1/policy` until the agent enforces everything up to `rv` (the lab's
    /// way of waiting: the contract of `synced_resource_version`).
    async fn wait_enforced(&self, rv: u64) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        for _ in 0..200 {
            let (_, body) = http_get(self.metrics_addr, "/v1/policy").await;
            last = serde_json::from_str(&body).unwrap_or_default();
            if last["synced_resource_version"].as_u64().unwrap_or(0) >= rv {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "resourceVersion {rv} not enforced; /v1/policy {last:#}\nlog:\n{}",
            self.log_text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn a_network_policy_in_the_api_server_blocks_a_flow_and_deleting_it_restores_it() {
    let lab = Lab::new().await;
    lab.api
        .apply(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "default", "labels": {"kubernetes.io/metadata.name": "default"}}}))
        .unwrap();
    labelled_pod(&lab.api, "a");
    labelled_pod(&lab.api, "b");
    let agent = lab.start_agent().await;

    let mut ips: Vec<Ipv4Addr> = Vec::new();
    for (name, ns) in [("a", &lab.sandboxes[0]), ("b", &lab.sandboxes[1])] {
        let reply = call(&lab.socket, add(name, ns)).await;
        match &reply.outcome {
            Outcome::Ok(Reply::Add(a)) => ips.push(a.ip.addr()),
            other => panic!("ADD {name}: {other:?}\nlog:\n{}", lab.log_text()),
        }
    }
    // The kubelet reports the pods' IPs after ADD.
    for (name, ip) in ["a", "b"].iter().zip(&ips) {
        let mut pod = lab.api.get("v1", "Pod", "default", name).unwrap();
        pod["status"]["podIP"] = json!(ip.to_string());
        pod["status"]["phase"] = json!("Running");
        lab.api.apply(pod).unwrap();
    }
    let b = SocketAddr::from((ips[1], 8080));
    listen(&lab.sandboxes[1], b);
    assert!(
        can_connect(&lab.sandboxes[0], b, Duration::from_secs(3)),
        "a -> b before any policy\nlog:\n{}",
        lab.log_text()
    );

    // Only pods labelled app=x may reach b: a is cut off once the agent enforces it.
    let created = lab.api.apply(policy_b_from_x()).unwrap();
    let status = lab.wait_enforced(rv(&created)).await;
    assert_eq!(status["policies"], 1, "{status:#}");
    assert_eq!(status["isolated_local_pods"], 1, "{status:#}");
    assert!(
        !can_connect(&lab.sandboxes[0], b, Duration::from_millis(800)),
        "a -> b must be blocked"
    );
    // b still reaches a: a is not isolated, and b's egress is free.
    let a = SocketAddr::from((ips[0], 8081));
    listen(&lab.sandboxes[0], a);
    assert!(can_connect(&lab.sandboxes[1], a, Duration::from_secs(3)));
    let (line, body) = http_get(lab.metrics_addr, "/v1/policy/pods/default/b").await;
    assert!(line.contains("200"), "{line}: {body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["ingress"]["isolated"], true, "{doc:#}");

    // Deleting the policy restores the flow.
    let deleted = lab
        .api
        .delete(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "default",
            "b-from-x",
        )
        .unwrap();
    let status = lab.wait_enforced(rv(&deleted)).await;
    assert_eq!(status["policies"], 0, "{status:#}");
    assert!(
        can_connect(&lab.sandboxes[0], b, Duration::from_secs(3)),
        "a -> b after the policy is gone"
    );

    // Enforcement turned off while a policy exists: the agent removes the chains
    // an earlier run programmed, so nothing isolates pods any more.
    let recreated = lab.api.apply(policy_b_from_x()).unwrap();
    lab.wait_enforced(rv(&recreated)).await;
    assert!(!can_connect(
        &lab.sandboxes[0],
        b,
        Duration::from_millis(800)
    ));
    drop(agent);
    let _agent = lab.start_agent_with(&["--network-policy", "false"]).await;
    let (_, body) = http_get(lab.metrics_addr, "/v1/policy").await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["enabled"], false, "{status:#}");
    assert!(
        can_connect(&lab.sandboxes[0], b, Duration::from_secs(3)),
        "a -> b with enforcement off\nlog:\n{}",
        lab.log_text()
    );
}

/// Only pods labelled app=x may reach b.
fn policy_b_from_x() -> serde_json::Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "b-from-x", "namespace": "default"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "b"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "x"}}}]}],
        },
    })
}
