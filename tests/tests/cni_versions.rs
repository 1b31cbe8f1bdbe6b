//! Root, end to end per CNI version: the real `hostnic` CNI binary, run as a
//! runtime runs it (`CNI_*` environment, the network config on stdin), against
//! the real `hostnic-agent` binary and the QingCloud simulator, whose attach hook
//! plugs each NIC into a VPC of network namespaces (`hostnic_linux::lab`: a
//! router with the vxnet gateways, a node, a VPC client host).
//!
//! For configs at cniVersion 0.4.0, 1.0.0 and 1.1.0: ADD two pods (the result
//! parses and is in the requested version) → TCP pod → pod and pod → VPC client
//! through the pod's NIC, and client → pod → CHECK with the ADD's result as
//! `prevResult` succeeds → CHECK after breaking the plumbing fails with code 100
//! naming what is missing → DEL → no veth, address, rule or route of the pod is
//! left, no pending-DEL record was needed, and the NIC is free in the pool again.
//!
//! The binaries are the workspace's (`cargo build --workspace` builds them next
//! to this test); `HOSTNIC_E2E_HOSTNIC` / `HOSTNIC_E2E_HOSTNIC_AGENT` select others.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hostnic_core::api::introspect;
use hostnic_e2e::bins;
use hostnic_linux::NetNs;
use hostnic_linux::lab::{Fabric, fabric};
use hostnic_qingcloud::sim::{InstanceSpec, SimConfig, SimHandle, Topology};
use hostnic_testkit::cni::{self, CniCall, Invocation};
use hostnic_testkit::netns::ip;
use hostnic_testkit::probe::{PeerServer, tcp_peer};
use hostnic_testkit::process::{AgentFiles, ChildProcess, agent_command, wait_serving};
use hostnic_testkit::requests::http_get;
use hostnic_testkit::vpc::Vpc;
use ipnet::Ipv4Net;
use serde_json::{Value, json};

const INSTANCE: &str = "i-sim00001";
const CLIENT_INSTANCE: &str = "i-simclient";
const NETWORK: &str = "hostnic";

/// The `hostnic` CNI plugin binary.
fn plugin_binary() -> PathBuf {
    bins::binary("hostnic").expect("the hostnic plugin binary")
}

/// The VPC, the simulator, a running agent and its files. Drop order: agent,
/// simulator, then every namespace with the lab's prefix.
struct Lab {
    agent: Option<ChildProcess>,
    sim: Option<SimHandle>,
    fabric: Fabric,
    dir: tempfile::TempDir,
    socket: PathBuf,
    state_dir: PathBuf,
    metrics_addr: std::net::SocketAddr,
    log: PathBuf,
    node: String,
    client_ip: Ipv4Addr,
}

impl Drop for Lab {
    fn drop(&mut self) {
        drop(self.agent.take());
        drop(self.sim.take());
        for name in fabric::lab_namespaces(self.fabric.prefix()) {
            let _ = NetNs::delete_named(&name);
        }
    }
}

impl Lab {
    async fn up() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("hl-cni{:x}x{n}-", std::process::id());
        let topology = Topology {
            instances: vec![
                InstanceSpec {
                    id: INSTANCE.into(),
                    vxnet: "vxnet-sim1".into(),
                },
                InstanceSpec {
                    id: CLIENT_INSTANCE.into(),
                    vxnet: "vxnet-sim2".into(),
                },
            ],
            ..Topology::default()
        };
        let hosts: BTreeMap<String, String> = [
            (INSTANCE.to_string(), "node".to_string()),
            (CLIENT_INSTANCE.to_string(), "client".to_string()),
        ]
        .into();
        let mut config = SimConfig::new("AKIDCNI", "cni-e2e-secret");
        config.topology = topology;
        config.attach_latency = Duration::from_millis(200);
        config.job_latency = Duration::from_millis(50);
        let internet = "198.51.100.0/24".parse().unwrap();
        let vpc = match Vpc::build(&prefix, internet, config, hosts).await {
            Ok(vpc) => vpc,
            Err(e) => {
                fabric::destroy(&prefix).await;
                panic!("{e}");
            }
        };
        let client_ip = vpc.primary_ip(CLIENT_INSTANCE).unwrap();
        let Vpc { fabric, sim, .. } = vpc;

        let dir = tempfile::tempdir().unwrap();
        let node = fabric.netns_name("node");
        let files = AgentFiles::write(
            dir.path(),
            &sim,
            ("AKIDCNI", "cni-e2e-secret"),
            &node,
            "  min_free: 2\n  max_free: 4\n  batch_size: 4\n  ip_cooldown: 0\n  min_lifetime: 0\n  backoff_base: 0.2\n  backoff_max: 2\n",
            30,
        );
        let (socket, state_dir, metrics_addr) = (
            files.socket.clone(),
            files.state_dir.clone(),
            files.metrics_addr,
        );
        let log = dir.path().join("agent.log");
        let mut lab = Lab {
            agent: None,
            sim: Some(sim),
            fabric,
            dir,
            socket,
            state_dir,
            metrics_addr,
            log,
            node,
            client_ip,
        };
        let agent = bins::binary("hostnic-agent").expect("the hostnic-agent binary");
        let mut command = agent_command(&agent, INSTANCE, &files);
        command.args(["--pods", "none"]);
        lab.agent = Some(ChildProcess::spawn(command, &lab.log));
        wait_serving(&lab.socket, &lab.log, Duration::from_secs(30)).await;
        lab
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A pod sandbox namespace (removed with the lab).
    fn sandbox(&self, short: &str) -> PathBuf {
        NetNs::create_named(&self.fabric.netns_name(short)).expect("create sandbox namespace");
        ip(&[
            "-n",
            &self.fabric.netns_name(short),
            "link",
            "set",
            "lo",
            "up",
        ]);
        self.fabric.netns_path(short)
    }

    /// The network configuration a runtime passes on stdin.
    fn netconf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": NETWORK,
            "type": "hostnic",
            "agentSocket": self.socket,
            "stateDir": self.state_dir,
            "logFile": self.dir.path().join("cni.log"),
            "logLevel": "debug",
        })
    }

    async fn pods(&self) -> Vec<introspect::Pod> {
        let (_, body) = http_get(self.metrics_addr, "/v1/pods").await;
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/v1/pods: {e}: {body}"))
    }

    async fn nics(&self) -> Vec<introspect::Nic> {
        let (_, body) = http_get(self.metrics_addr, "/v1/nics").await;
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/v1/nics: {e}: {body}"))
    }

    /// Packets sent by the node's link with MAC `mac` (a pod NIC).
    fn nic_tx_packets(&self, mac: &str) -> u64 {
        let links: Value =
            serde_json::from_str(&ip(&["-n", &self.node, "-s", "-j", "link", "show"])).unwrap();
        let link = links
            .as_array()
            .unwrap()
            .iter()
            .find(|l| {
                l["address"]
                    .as_str()
                    .is_some_and(|a| a.eq_ignore_ascii_case(mac))
            })
            .unwrap_or_else(|| panic!("no link with MAC {mac} in the node: {links}"));
        link["stats64"]["tx"]["packets"]
            .as_u64()
            .unwrap_or_else(|| panic!("no tx counter in {link}"))
    }
}

/// A pod as the runtime knows it.
struct Pod {
    name: &'static str,
    container_id: String,
    netns: PathBuf,
}

/// Runs the plugin as a runtime does.
async fn cni(verb: &str, pod: &Pod, netconf: &Value) -> Invocation {
    let call = CniCall {
        verb,
        container_id: &pod.container_id,
        netns: &pod.netns,
        pod: ("default", pod.name),
        cni_path: Path::new("/usr/lib/cni"),
    };
    cni::invoke(&plugin_binary(), &call, netconf, Duration::from_secs(60)).await
}

/// What the test needs from an ADD result, after checking it is a valid result
/// of `version` for this pod.
struct Added {
    result: Value,
    ip: Ipv4Addr,
    host_veth: String,
}

fn check_add_result(version: &str, pod: &Pod, out: &Invocation) -> Added {
    assert_eq!(out.code, 0, "ADD {}: {out:?}", pod.name);
    let r = out.json();
    assert_eq!(
        r["cniVersion"], version,
        "ADD answered in another version: {r}"
    );
    let interfaces = r["interfaces"].as_array().expect("interfaces");
    let sandbox = interfaces
        .iter()
        .position(|i| i["sandbox"].as_str() == pod.netns.to_str())
        .unwrap_or_else(|| panic!("no interface in sandbox {}: {r}", pod.netns.display()));
    assert_eq!(interfaces[sandbox]["name"], "eth0", "{r}");
    let host = interfaces
        .iter()
        .find(|i| i.get("sandbox").is_none_or(|s| s.as_str() == Some("")))
        .unwrap_or_else(|| panic!("no host veth among the interfaces: {r}"));
    for i in interfaces {
        let mac = i["mac"].as_str().unwrap_or_default();
        assert_eq!(mac.len(), 17, "interface without a MAC: {r}");
    }
    let ips = r["ips"].as_array().expect("ips");
    assert_eq!(ips.len(), 1, "one address per pod: {r}");
    let address: Ipv4Net = ips[0]["address"].as_str().unwrap().parse().unwrap();
    assert_eq!(address.prefix_len(), 32, "{r}");
    assert_eq!(ips[0]["gateway"], "169.254.1.1", "{r}");
    assert_eq!(ips[0]["interface"], json!(sandbox), "{r}");
    // 0.3.x/0.4.0 name the IP version in each entry; 1.0.0 dropped the field.
    if version.starts_with("0.") {
        assert_eq!(ips[0]["version"], "4", "{r}");
    } else {
        assert!(ips[0].get("version").is_none(), "{r}");
    }
    let routes = r["routes"].as_array().expect("routes");
    assert!(
        routes.iter().any(|rt| rt["dst"] == "0.0.0.0/0"),
        "no default route: {r}"
    );
    Added {
        ip: address.addr(),
        host_veth: host["name"].as_str().unwrap().to_string(),
        result: r,
    }
}

/// `netconf` with the ADD's result as `prevResult`.
fn with_prev(netconf: &Value, added: &Added) -> Value {
    let mut conf = netconf.clone();
    conf["prevResult"] = added.result.clone();
    conf
}

/// TCP from `from` to a server in `to` at `dst`: the source address the server saw.
async fn tcp(from: &Path, to: &Path, dst: Ipv4Addr, port: u16) -> Ipv4Addr {
    let server = PeerServer::start(to, port).unwrap();
    let from = from.to_path_buf();
    let seen =
        tokio::task::spawn_blocking(move || tcp_peer(&from, dst, port, Duration::from_secs(5)))
            .await
            .unwrap();
    drop(server);
    seen.unwrap_or_else(|e| panic!("TCP to {dst}:{port}: {e}"))
}

/// Whitespace-separated words of `text` that are exactly `ip` or `ip/32`.
fn mentions(text: &str, ip: Ipv4Addr) -> Vec<String> {
    let (a, b) = (ip.to_string(), format!("{ip}/32"));
    text.lines()
        .filter(|l| l.split_whitespace().any(|w| w == a || w == b))
        .map(str::to_string)
        .collect()
}

/// After DEL: nothing of the pod on the node or in its sandbox, its NIC free.
async fn assert_gone(lab: &Lab, pod: &Pod, added: &Added, nic: &str) {
    // When DEL answers the pod is cut off: no rule, route or address for it, and
    // its host veth, if still there, is down.
    let host_veth = || -> Option<Value> {
        let links: Value =
            serde_json::from_str(&ip(&["-n", &lab.node, "-j", "link", "show"])).unwrap();
        links
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["ifname"] == added.host_veth.as_str())
            .cloned()
    };
    if let Some(link) = host_veth() {
        assert!(
            !link["flags"].to_string().contains("\"UP\""),
            "host veth {} still up after DEL: {link}",
            added.host_veth
        );
    }
    let rules = ip(&["-n", &lab.node, "-4", "rule", "show"]);
    assert!(
        mentions(&rules, added.ip).is_empty(),
        "rules for {} left: {:?}",
        added.ip,
        mentions(&rules, added.ip)
    );
    let routes = ip(&["-n", &lab.node, "-4", "route", "show", "table", "all"]);
    assert!(
        mentions(&routes, added.ip).is_empty(),
        "routes for {} left: {:?}",
        added.ip,
        mentions(&routes, added.ip)
    );
    let addrs = ip(&["-n", &lab.node, "-4", "-o", "addr", "show"]);
    assert!(
        mentions(&addrs, added.ip).is_empty() && !addrs.contains(&format!("{}/", added.ip)),
        "address {} left on the node:\n{addrs}",
        added.ip
    );
    // The sandbox outlives DEL here, so the pair is the agent's to delete: in its
    // batched reaping once the node has been quiet for a second.
    let ns = pod.netns.file_name().unwrap().to_str().unwrap();
    let sandbox_links = || -> Vec<String> {
        let inside: Value = serde_json::from_str(&ip(&["-n", ns, "-j", "link", "show"])).unwrap();
        inside
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(str::to_string))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while (host_veth().is_some() || sandbox_links() != ["lo"]) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        host_veth(),
        None,
        "host veth {} left in the node",
        added.host_veth
    );
    assert_eq!(sandbox_links(), ["lo"], "interfaces left in the sandbox");
    let pending = lab.state_dir.join("pending-del");
    let records = std::fs::read_dir(&pending).map_or(0, |d| d.count());
    assert_eq!(
        records, 0,
        "the DEL was recorded as pending instead of reaching the agent"
    );
    assert!(
        !lab.pods()
            .await
            .iter()
            .any(|p| p.container_id == pod.container_id),
        "the agent still lists {}",
        pod.container_id
    );
    // The NIC is back in the pool: free (no cooldown here) and holding no pod.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let nics = lab.nics().await;
        let n = nics.iter().find(|n| n.id.eq_ignore_ascii_case(nic));
        if n.is_some_and(|n| n.usage == "free" && n.pod.is_none() && n.host_ready) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "NIC {nic} of {} not free in the pool: {n:?}",
            pod.name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn end_to_end(version: &str) {
    let lab = Lab::up().await;
    let conf = lab.netconf(version);
    let a = Pod {
        name: "web-a",
        container_id: format!("cafe{}a", version.replace('.', "")),
        netns: lab.sandbox("pa"),
    };
    let b = Pod {
        name: "web-b",
        container_id: format!("cafe{}b", version.replace('.', "")),
        netns: lab.sandbox("pb"),
    };

    // ADD: valid results in the asked version.
    let add_a = check_add_result(version, &a, &cni("ADD", &a, &conf).await);
    let add_b = check_add_result(version, &b, &cni("ADD", &b, &conf).await);
    assert_ne!(add_a.ip, add_b.ip);
    let pods = lab.pods().await;
    let nic_of = |p: &Pod, added: &Added| {
        let found = pods
            .iter()
            .find(|x| x.container_id == p.container_id)
            .unwrap_or_else(|| panic!("agent does not list {}: {pods:?}", p.container_id));
        assert_eq!(found.ip, added.ip.to_string());
        found.nic.clone()
    };
    let (nic_a, nic_b) = (nic_of(&a, &add_a), nic_of(&b, &add_b));
    eprintln!(
        "{version}: pod a {} on NIC {nic_a} (veth {}), pod b {} on NIC {nic_b}",
        add_a.ip, add_a.host_veth, add_b.ip
    );

    // Packets: pod → pod on the node; pod → VPC client leaving through the pod's
    // own NIC without SNAT; the client → pod back in through it.
    assert_eq!(tcp(&a.netns, &b.netns, add_b.ip, 7001).await, add_a.ip);
    let client = lab.fabric.netns_path("client");
    let tx_before = lab.nic_tx_packets(&nic_a);
    assert_eq!(tcp(&a.netns, &client, lab.client_ip, 7002).await, add_a.ip);
    let tx_after = lab.nic_tx_packets(&nic_a);
    assert!(
        tx_after > tx_before,
        "pod a's TCP to the VPC client did not leave through its NIC {nic_a} ({tx_before} → {tx_after} packets)"
    );
    eprintln!("{version}: pod a → client left through {nic_a}: {tx_before} → {tx_after} packets");
    assert_eq!(tcp(&client, &a.netns, add_a.ip, 7003).await, lab.client_ip);
    assert_eq!(tcp(&b.netns, &client, lab.client_ip, 7004).await, add_b.ip);

    // CHECK with the ADD's result.
    cni("CHECK", &a, &with_prev(&conf, &add_a))
        .await
        .assert_silent_success("CHECK of an intact pod");
    cni("CHECK", &b, &with_prev(&conf, &add_b))
        .await
        .assert_silent_success("CHECK of an intact pod");

    // Break pod a's plumbing: its host route goes away. CHECK names it.
    let route = format!("{}/32", add_a.ip);
    ip(&[
        "-n",
        &lab.node,
        "route",
        "del",
        &route,
        "dev",
        &add_a.host_veth,
    ]);
    let broken = cni("CHECK", &a, &with_prev(&conf, &add_a)).await;
    assert_eq!(
        broken.code, 1,
        "CHECK of a broken pod must fail: {broken:?}"
    );
    let err = broken.json();
    assert_eq!(err["cniVersion"], version, "{err}");
    assert_eq!(err["code"], 100, "CHECK_MISMATCH expected: {err}");
    let text = format!("{} {}", err["msg"], err["details"]);
    let missing = format!("route {route} dev {}", add_a.host_veth);
    assert!(
        text.contains(&missing),
        "error does not say `{missing}`: {err}"
    );
    eprintln!("{version}: CHECK of the broken pod: {err}");
    // Pod b is unaffected.
    cni("CHECK", &b, &with_prev(&conf, &add_b))
        .await
        .assert_silent_success("CHECK of the other pod");

    // DEL (with prevResult, as runtimes send it) cleans up even the broken pod.
    cni("DEL", &a, &with_prev(&conf, &add_a))
        .await
        .assert_silent_success("DEL");
    assert_gone(&lab, &a, &add_a, &nic_a).await;
    cni("DEL", &a, &with_prev(&conf, &add_a))
        .await
        .assert_silent_success("repeated DEL");
    let after = cni("CHECK", &a, &with_prev(&conf, &add_a)).await;
    assert_eq!(
        after.json()["code"],
        3,
        "CHECK after DEL: container unknown: {after:?}"
    );
    cni("DEL", &b, &with_prev(&conf, &add_b))
        .await
        .assert_silent_success("DEL");
    assert_gone(&lab, &b, &add_b, &nic_b).await;
    // Both NICs stayed attached to the node as pool supply (not deleted).
    let sim = lab.sim.as_ref().unwrap().state();
    for nic in [&nic_a, &nic_b] {
        let n = sim
            .nics
            .values()
            .find(|n| n.nic_id.eq_ignore_ascii_case(nic))
            .unwrap_or_else(|| panic!("NIC {nic} gone from the cloud"));
        assert_eq!(n.instance_id.as_deref(), Some(INSTANCE), "{nic}");
    }
    let log = lab.agent_log();
    assert!(!log.contains("panicked"), "agent log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn cni_0_4_0_add_traffic_check_del() {
    end_to_end("0.4.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn cni_1_0_0_add_traffic_check_del() {
    end_to_end("1.0.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: cargo test -- --include-ignored"]
async fn cni_1_1_0_add_traffic_check_del() {
    end_to_end("1.1.0").await;
}
