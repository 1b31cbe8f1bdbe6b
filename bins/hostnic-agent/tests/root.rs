//! Root: the agent BINARY against the QingCloud simulator, plumbing a "node" network
//! namespace whose NICs appear (as veth pairs into a "vpc" namespace) when the
//! simulator attaches them. The agent is killed with SIGKILL at random points of a
//! burst of 30 pod ADD/DELs, restarted, and the node is then checked: answered pods
//! still check out, DEL'd pods hold nothing, the cloud has no NIC of this node the
//! agent does not know, and the node namespace has no orphan veths or rules.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hostnic_core::api::{AddRequest, DelRequest, Outcome, RequestBody};
use hostnic_core::types::PodKey;
use hostnic_linux::{LinuxHost, LinuxHostConfig};
use hostnic_qingcloud::sim::{SimConfig, Simulator};
use hostnic_testkit::hooks::VethLinks;
use hostnic_testkit::netns::{Namespaces, ip};
use hostnic_testkit::probe;
use hostnic_testkit::process::{self, AgentFiles, ChildProcess, agent_command, plug_primary};

const ROOT: &str = "needs root: cargo test -- --include-ignored";

async fn wait_serving(socket: &Path, log: &Path) {
    process::wait_serving(socket, log, Duration::from_secs(20)).await;
}

fn pod_key(i: usize) -> PodKey {
    PodKey {
        namespace: "default".into(),
        name: format!("p{i}"),
        container_id: format!("k{i:04}"),
        ifname: "eth0".into(),
    }
}

fn add(i: usize, netns: &str) -> RequestBody {
    RequestBody::Add(AddRequest {
        pod: pod_key(i),
        pod_uid: None,
        netns: netns.into(),
        network: "hostnic".into(),
        cni_version: "1.1.0".into(),
        veth_prefix: None,
        mtu: None,
        runtime_config: None,
        timeout_ms: 30_000,
    })
}

fn del(i: usize, netns: &str) -> RequestBody {
    RequestBody::Del(DelRequest {
        pod: pod_key(i),
        netns: Some(netns.into()),
        network: "hostnic".into(),
        cni_version: "1.1.0".into(),
        prev_result: None,
        timeout_ms: 20_000,
    })
}

fn check(i: usize, netns: &str) -> RequestBody {
    RequestBody::Check(hostnic_core::api::CheckRequest {
        pod: pod_key(i),
        netns: netns.into(),
        network: "hostnic".into(),
        cni_version: "1.1.0".into(),
        expected: Default::default(),
        prev_result: serde_json::json!({}),
        timeout_ms: 10_000,
    })
}

/// xorshift, seeded from the pid (printed, so a failure can be replayed by reading it).
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    Added,
    Deleted,
    Unknown,
}

/// The simulator, the namespaces and the agent's files.
struct Lab {
    /// Deleted on drop (after the simulator).
    _ns: Namespaces,
    node: String,
    sim: hostnic_qingcloud::sim::SimHandle,
    _dir: tempfile::TempDir,
    socket: PathBuf,
    metrics_addr: std::net::SocketAddr,
    files: AgentFiles,
    log: PathBuf,
    sandboxes: Vec<String>,
}

impl Lab {
    async fn new(pods: usize, attach_latency: Duration) -> Self {
        let mut ns = Namespaces::new("hna");
        let node = ns.create("node");
        let vpc = ns.create("vpc");
        let inet = ns.create("inet");
        let hook = Arc::new(VethLinks {
            node: node.clone(),
            vpc: vpc.clone(),
        });
        let sim = Simulator::start(
            SimConfig {
                attach_latency,
                job_latency: Duration::from_millis(50),
                ..SimConfig::new("AKIDE2E", "e2e-secret")
            },
            Some(hook),
        )
        .await
        .unwrap();
        // The node's primary NIC, as the simulator knows it, with a default route.
        plug_primary(&sim, INSTANCE, &node, &vpc, &inet);

        let dir = tempfile::tempdir().unwrap();
        let files = AgentFiles::write(
            dir.path(),
            &sim,
            ("AKIDE2E", "e2e-secret"),
            &node,
            "  min_free: 2\n  max_free: 4\n  batch_size: 5\n  ip_cooldown: 0\n  min_lifetime: 0\n  backoff_base: 0.2\n  backoff_max: 2\n  missing_link_grace: 5\n",
            5,
        );
        let (socket, metrics_addr) = (files.socket.clone(), files.metrics_addr);
        let log = dir.path().join("agent.log");
        let sandboxes: Vec<String> = (0..pods).map(|i| ns.create(&format!("p{i}"))).collect();

        Lab {
            _ns: ns,
            node,
            sim,
            _dir: dir,
            socket,
            metrics_addr,
            files,
            log,
            sandboxes,
        }
    }

    fn netns(&self, i: usize) -> String {
        format!("/run/netns/{}", self.sandboxes[i])
    }

    fn start_agent(&self, binary: &Path) -> ChildProcess {
        let mut command = agent_command(binary, INSTANCE, &self.files);
        command.args(["--pods", "none"]);
        ChildProcess::spawn(command, &self.log)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn kill_9_during_a_burst_of_pod_adds_and_dels_leaks_nothing() {
    let _ = ROOT;
    let lab = Lab::new(12, Duration::from_millis(300)).await;
    let (socket, metrics_addr, log, node, sim) =
        (&lab.socket, lab.metrics_addr, &lab.log, &lab.node, &lab.sim);
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_hostnic-agent"));
    let netns = |i: usize| lab.netns(i);
    let seed = u64::from(std::process::id()) | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let mut last: BTreeMap<usize, Last> = BTreeMap::new();
    let mut agent = lab.start_agent(&binary);
    wait_serving(socket, log).await;

    // 3 rounds of 10 operations, each ended by a SIGKILL at a random moment.
    for round in 0..3 {
        let mut ops = Vec::new();
        // One operation per pod and round, so each outcome is the pod's state.
        let mut pods: Vec<usize> = (0..12).collect();
        for k in (1..pods.len()).rev() {
            pods.swap(k, rng.next(k as u64 + 1) as usize);
        }
        for &i in &pods[..10] {
            let is_add = last.get(&i) != Some(&Last::Added) || rng.next(3) == 0;
            let body = if is_add {
                add(i, &netns(i))
            } else {
                del(i, &netns(i))
            };
            let s = socket.clone();
            ops.push((
                i,
                is_add,
                tokio::spawn(async move { try_call(&s, body).await }),
            ));
            tokio::time::sleep(Duration::from_millis(rng.next(60))).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.next(400))).await;
        agent.kill9();
        for (i, is_add, op) in ops {
            let ok = matches!(op.await.unwrap(), Ok(r) if matches!(r.outcome, Outcome::Ok(_)));
            let state = match (ok, is_add) {
                (true, true) => Last::Added,
                (true, false) => Last::Deleted,
                _ => Last::Unknown,
            };
            last.insert(i, state);
        }
        eprintln!("round {round}: {last:?}");
        agent = lab.start_agent(&binary);
        wait_serving(socket, log).await;
    }

    // The runtime retries what it did not see succeed: DEL for unknown outcomes.
    for (&i, state) in last.iter_mut() {
        if *state == Last::Unknown {
            let r = call(socket, del(i, &netns(i))).await;
            assert!(
                matches!(r.outcome, Outcome::Ok(_)),
                "DEL retry of {i}: {r:?}"
            );
            *state = Last::Deleted;
        }
    }
    let live: BTreeSet<usize> = last
        .iter()
        .filter(|(_, s)| **s == Last::Added)
        .map(|(i, _)| *i)
        .collect();
    for &i in &live {
        let r = call(socket, check(i, &netns(i))).await;
        assert!(
            matches!(r.outcome, Outcome::Ok(_)),
            "CHECK of live pod {i}: {r:?}"
        );
    }
    // Every pod that got a success talks: a TCP connection from each live pod to
    // the next one (pod to pod through the node: veths, rules, /32 routes).
    let (_, pods) = http_get(metrics_addr, "/v1/pods").await;
    let pods: Vec<hostnic_agent::introspect::Pod> = serde_json::from_str(&pods).unwrap();
    let ip_of = |i: usize| -> std::net::Ipv4Addr {
        let p = pods
            .iter()
            .find(|p| p.netns == netns(i))
            .unwrap_or_else(|| panic!("live pod {i} not in /v1/pods"));
        p.ip.parse().unwrap()
    };
    let ring: Vec<usize> = live.iter().copied().collect();
    for (k, &from) in ring.iter().enumerate() {
        let to = ring[(k + 1) % ring.len()];
        if to == from {
            continue;
        }
        let (from_ns, to_ns) = (
            hostnic_linux::NetNs::open(netns(from)).unwrap(),
            hostnic_linux::NetNs::open(netns(to)).unwrap(),
        );
        let addr = std::net::SocketAddr::from((ip_of(to), 8080));
        let listener = probe::listen_in(&to_ns, addr)
            .unwrap_or_else(|e| panic!("listen in pod {to} on {addr}: {e}"));
        let connected = probe::connect_from(&from_ns, addr, Duration::from_secs(3));
        assert!(
            connected.is_ok(),
            "pod {from} cannot reach live pod {to} at {addr}: {connected:?}"
        );
        drop(listener);
    }

    for (&i, _) in last.iter().filter(|(_, s)| **s == Last::Deleted) {
        let r = call(socket, check(i, &netns(i))).await;
        assert!(
            matches!(&r.outcome, Outcome::Error(e) if e.code == 3),
            "deleted pod {i} still known: {r:?}"
        );
    }

    // The cloud: every NIC named for this node is known to the agent (jobs in flight at
    // a kill may take a reconcile to settle).
    let named = format!("hostnic_{INSTANCE}");
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (_, nics) = http_get(metrics_addr, "/v1/nics").await;
        let nics: Vec<hostnic_agent::introspect::Nic> = serde_json::from_str(&nics).unwrap();
        let known: BTreeSet<String> = nics.iter().map(|n| n.id.clone()).collect();
        let cloud: BTreeSet<String> = sim
            .state()
            .nics
            .values()
            .filter(|n| n.nic_name == named)
            .map(|n| n.nic_id.clone())
            .collect();
        let unknown: Vec<_> = cloud.difference(&known).collect();
        let assigned = nics.iter().filter(|n| n.usage == "assigned").count();
        if unknown.is_empty() && assigned == live.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cloud NICs unknown to the agent: {unknown:?}; assigned {assigned} for {} live pods; log:\n{}",
            live.len(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The node: one veth per live pod, no rule for an address no pod holds. The
    // veths of pods deleted before a kill wait in the dead link group for the
    // restarted agent's first reaping (about a second after it starts).
    let veths = || {
        let links: serde_json::Value =
            serde_json::from_str(&ip(&["-n", node, "-j", "link", "show"])).unwrap();
        links
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["ifname"].as_str().unwrap_or("").starts_with("nic"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while veths() != live.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(veths(), live.len(), "orphan veths in the node namespace");
    let host = LinuxHost::new(LinuxHostConfig {
        host_netns: Some(PathBuf::from(format!("/run/netns/{node}"))),
        ..LinuxHostConfig::default()
    })
    .await
    .unwrap();
    let inventory = host.inventory_now().await.unwrap();
    assert_eq!(
        inventory.pods.len(),
        live.len(),
        "plumbed pods on the node: {:?}",
        inventory.pods
    );
    assert!(host.orphan_rule_addresses().await.unwrap().is_empty());

    agent.kill9();
    let _ = sim;
}

/// Reads `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The agent binary with 62 pods (a full node): all served and checked; its RSS is
/// printed for the benchmark report. `HOSTNIC_AGENT_BIN` selects another build
/// (the bench script passes the release binary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn a_full_node_of_62_pods_is_served() {
    let lab = Lab::new(62, Duration::from_millis(200)).await;
    let binary = std::env::var_os("HOSTNIC_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hostnic-agent")));
    let agent = lab.start_agent(&binary);
    wait_serving(&lab.socket, &lab.log).await;
    let adds: Vec<_> = (0..62)
        .map(|i| {
            let s = lab.socket.clone();
            let body = add(i, &lab.netns(i));
            tokio::spawn(async move { call(&s, body).await })
        })
        .collect();
    for (i, a) in adds.into_iter().enumerate() {
        let r = a.await.unwrap();
        assert!(matches!(r.outcome, Outcome::Ok(_)), "ADD {i}: {r:?}");
    }
    for i in 0..62 {
        let r = call(&lab.socket, check(i, &lab.netns(i))).await;
        assert!(
            matches!(r.outcome, Outcome::Ok(_)),
            "CHECK {i}: {r:?}; log:\n{}",
            std::fs::read_to_string(&lab.log).unwrap_or_default()
        );
    }
    // The 63rd pod finds the node full: a clear error, not a hang.
    let r = call(&lab.socket, add(0, &lab.netns(0))).await;
    assert!(
        matches!(r.outcome, Outcome::Ok(_)),
        "a repeated ADD is idempotent"
    );
    let rss = rss_kib(agent.0.id());
    eprintln!(
        "agent RSS with 62 pods: {:.1} MiB ({})",
        rss as f64 / 1024.0,
        binary.display()
    );
    agent.kill9();
}
