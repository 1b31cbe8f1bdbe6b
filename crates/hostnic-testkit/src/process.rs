//! Workspace binaries as child processes for tests: the agent started against
//! a simulator with its files in a temporary directory, killed on drop, and
//! waited for until it serves the plugin.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hostnic_qingcloud::sim::SimHandle;

use crate::netns::ip;
use crate::requests::{free_port, status_req, try_call};

/// A child process, killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct ChildProcess(pub Child);

impl ChildProcess {
    /// Starts `command` with stdout discarded and stderr appended to `log`.
    pub fn spawn(mut command: Command, log: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the process log");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
        Self(child)
    }

    /// SIGKILL now (a crash), and reap it.
    pub fn kill9(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent binary under test as a command: `--cloud qingcloud --instance-id
/// INSTANCE --config DIR/agent.yaml --credentials DIR/config.yaml`, logging at
/// info. The caller adds its pod source (`--pods …`) and what else it needs.
pub fn agent_command(binary: &Path, instance: &str, files: &AgentFiles) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["--cloud", "qingcloud", "--instance-id", instance])
        .arg("--config")
        .arg(&files.config)
        .arg("--credentials")
        .arg(&files.credentials)
        .env("RUST_LOG", "info");
    command
}

/// Waits until the agent answers STATUS on `socket` (with anything); panics
/// with the agent's `log` after `timeout`.
pub async fn wait_serving(socket: &Path, log: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while try_call(socket, status_req()).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "agent not serving after {timeout:?}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A binary of this workspace next to `sibling` (a `CARGO_BIN_EXE_*` of the
/// calling test), or `env` when that variable is set; panics naming how to
/// build it when it is missing.
pub fn workspace_binary(sibling: &str, name: &str, env: &str) -> PathBuf {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(sibling).with_file_name(name));
    assert!(
        path.is_file(),
        "{name} {} is missing: build it first (`cargo build --workspace`, or \
         `cargo build -p {name}`), or point {env} at one",
        path.display()
    );
    path
}

/// The files an agent binary under test reads, in a test's temporary directory.
#[derive(Debug, Clone)]
pub struct AgentFiles {
    /// `agent.yaml`.
    pub config: PathBuf,
    /// The `qcsecret` `config.yaml` pointing at the simulator.
    pub credentials: PathBuf,
    /// The plugin's socket.
    pub socket: PathBuf,
    /// The checkpoint directory.
    pub state_dir: PathBuf,
    /// The agent's HTTP address.
    pub metrics_addr: SocketAddr,
}

impl AgentFiles {
    /// Writes `dir/agent.yaml` (`pool` holds the indented `pool:` keys, one per
    /// line; the agent plumbs `/run/netns/<node>`) and `dir/config.yaml` with the
    /// simulator's endpoint and the key pair it was started with.
    pub fn write(
        dir: &Path,
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
            metrics_addr: free_port(),
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
        .expect("write agent.yaml");
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
        .expect("write config.yaml");
        files
    }
}

/// Gives `node` the simulator's primary NIC of `instance` (`prim0`, peer `up0`
/// in `inet` at 172.16.1.1/24) and a default route through it; `lo` up in
/// `node`, `vpc` and `inet`.
pub fn plug_primary(sim: &SimHandle, instance: &str, node: &str, vpc: &str, inet: &str) {
    let primary = sim
        .state()
        .nics
        .values()
        .find(|n| n.role == 1 && n.instance_id.as_deref() == Some(instance))
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
