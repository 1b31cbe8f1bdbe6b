//! The network namespaces of the root tests that run the agent BINARY against the
//! QingCloud simulator: a "node" whose NICs appear (as veth pairs into a "vpc"
//! namespace) when the simulator attaches them and disappear when it detaches
//! them, a primary NIC into an "inet" namespace with the node's default route.
//! Everything is deleted on drop.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use hostnic_linux::NetNs;
use hostnic_qingcloud::sim::{AttachHook, NicEvent, NicEventKind, SimHandle};

use super::INSTANCE;

/// Runs `ip` with `args`, panicking with its stderr on failure; returns stdout.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Namespaces named `<prefix>-<pid>-<n>-<role>`, deleted on drop.
pub struct Namespaces {
    prefix: String,
    names: Vec<String>,
}

impl Namespaces {
    /// No namespace yet; `prefix` tells the tests' namespaces apart.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            names: Vec::new(),
        }
    }

    /// A fresh namespace for `role`.
    pub fn create(&mut self, role: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{}-{n}-{role}", self.prefix, std::process::id());
        NetNs::create_named(&name).expect("create namespace");
        self.names.push(name.clone());
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.names.drain(..).rev() {
            let _ = NetNs::delete_named(&name);
        }
    }
}

/// Makes a NIC's link appear in the node namespace when the simulator attaches
/// it, and disappear when it is detached or vanishes.
pub struct VethLinks {
    /// The node namespace.
    pub node: String,
    /// The namespace of the links' peers.
    pub vpc: String,
}

#[async_trait]
impl AttachHook for VethLinks {
    async fn on_nic_event(&self, event: &NicEvent) {
        let mac = event.nic.to_string();
        let tail: String = mac.replace(':', "")[4..].to_string();
        match event.kind {
            NicEventKind::Attached => {
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
            NicEventKind::Detached | NicEventKind::Vanished => {
                // The agent may have renamed the link: find it by MAC.
                let links = ip(&["-n", &self.node, "-j", "link", "show"]);
                let links: serde_json::Value = serde_json::from_str(&links).unwrap();
                for l in links.as_array().unwrap() {
                    if l["address"] == mac.as_str() {
                        let name = l["ifname"].as_str().unwrap();
                        let _ = Command::new("ip")
                            .args(["-n", &self.node, "link", "del", name])
                            .status();
                    }
                }
            }
        }
    }
}

/// Gives `node` the simulator's primary NIC of [`INSTANCE`] (`prim0`, peer `up0`
/// in `inet` at 172.16.1.1/24) and a default route through it; `lo` up in `node`,
/// `vpc` and `inet`.
pub fn plug_primary(sim: &SimHandle, node: &str, vpc: &str, inet: &str) {
    let primary = sim
        .state()
        .nics
        .values()
        .find(|n| n.role == 1 && n.instance_id.as_deref() == Some(INSTANCE))
        .expect("the simulator has the instance's primary NIC")
        .clone();
    for n in [node, vpc, inet] {
        ip(&["-n", n, "link", "set", "lo", "up"]);
    }
    ip(&[
        "-n",
        node,
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
        inet,
    ]);
    let primary_ip = format!("{}/24", primary.private_ip);
    ip(&["-n", node, "addr", "add", &primary_ip, "dev", "prim0"]);
    ip(&["-n", node, "link", "set", "prim0", "up"]);
    ip(&["-n", inet, "addr", "add", "172.16.1.1/24", "dev", "up0"]);
    ip(&["-n", inet, "link", "set", "up0", "up"]);
    ip(&["-n", node, "route", "add", "default", "via", "172.16.1.1"]);
}

/// The files an agent binary under test reads, in a test's temporary directory.
pub struct AgentFiles {
    /// `agent.yaml`.
    pub config: std::path::PathBuf,
    /// The `qcsecret` `config.yaml` pointing at the simulator.
    pub credentials: std::path::PathBuf,
    /// The plugin's socket.
    pub socket: std::path::PathBuf,
    /// The checkpoint directory.
    pub state_dir: std::path::PathBuf,
    /// The agent's HTTP address.
    pub metrics_addr: std::net::SocketAddr,
}

impl AgentFiles {
    /// Writes `dir/agent.yaml` (`pool` holds the indented `pool:` keys, one per
    /// line; the agent plumbs `/run/netns/<node>`) and `dir/config.yaml` with the
    /// simulator's endpoint and the key pair it was started with.
    pub fn write(
        dir: &std::path::Path,
        sim: &SimHandle,
        (key, secret): (&str, &str),
        node: &str,
        pool: &str,
        reconcile_interval_secs: u32,
    ) -> Self {
        let files = AgentFiles {
            config: dir.join("agent.yaml"),
            credentials: dir.join("config.yaml"),
            socket: dir.join("hostnic.sock"),
            state_dir: dir.join("state"),
            metrics_addr: super::free_port(),
        };
        std::fs::write(
            &files.config,
            format!(
                "pool:\n{pool}socket: {}\nstate_dir: {}\ncni_conf_dir: {}\ncni_bin_dir: {}\nmetrics_addr: {}\n\
                 host_netns: /run/netns/{node}\npool_interval_secs: 0.5\nreconcile_interval_secs: {reconcile_interval_secs}\n",
                files.socket.display(),
                files.state_dir.display(),
                dir.join("net.d").display(),
                dir.join("bin").display(),
                files.metrics_addr,
            ),
        )
        .unwrap();
        let addr = sim.addr();
        std::fs::write(
            &files.credentials,
            format!(
                "qy_access_key_id: {key}\nqy_secret_access_key: {secret}\nzone: {}\nhost: {}\nport: {}\nprotocol: http\nuri: /iaas\n",
                sim.zone(),
                addr.ip(),
                addr.port()
            ),
        )
        .unwrap();
        files
    }
}
