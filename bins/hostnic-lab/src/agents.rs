//! The per-node `hostnic-agent` processes: where their files are, how they are
//! started (detached, so they survive the command that started them), signalled
//! and watched.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::labfile::{self, LabFile, NodeEntry};

/// The files of one node's agent, under `DIR/nodes/<node>/`.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    /// `DIR/nodes/<node>`.
    pub root: PathBuf,
}

impl NodeFiles {
    /// The files of `node` in lab `dir`.
    pub fn new(dir: &Path, node: &str) -> Self {
        Self {
            root: dir.join("nodes").join(node),
        }
    }
    /// The agent's socket.
    pub fn socket(&self) -> PathBuf {
        self.root.join("agent.sock")
    }
    /// The agent's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }
    /// The node's CNI configuration directory.
    pub fn conf_dir(&self) -> PathBuf {
        self.root.join("net.d")
    }
    /// The node's conflist.
    pub fn conflist(&self) -> PathBuf {
        self.conf_dir().join("10-hostnic.conflist")
    }
    /// The node's CNI binary directory.
    pub fn bin_dir(&self) -> PathBuf {
        self.root.join("bin")
    }
    /// The agent's log.
    pub fn log(&self) -> PathBuf {
        self.root.join("agent.log")
    }
    /// The command line that starts the agent (JSON array), written by the daemon.
    pub fn argv(&self) -> PathBuf {
        self.root.join("agent-argv.json")
    }
    /// Creates the directories.
    pub fn create(&self) -> anyhow::Result<()> {
        for d in [self.state_dir(), self.conf_dir(), self.bin_dir()] {
            std::fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
        }
        Ok(())
    }
}

/// A binary of this workspace: `HOSTNIC_LAB_<NAME>` if set, else next to `hostnic-lab`.
pub fn sibling_binary(name: &str) -> Option<PathBuf> {
    let var = format!("HOSTNIC_LAB_{}", name.to_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join(name);
    p.is_file().then_some(p)
}

/// Whether process `pid` runs (a zombie does not).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Sends `signal` to `pid`; gone already is fine.
pub fn signal(pid: u32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), signal);
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILL. True if it ended within `grace`.
pub async fn stop(pid: u32, grace: Duration) -> bool {
    signal(pid, Signal::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < grace {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(pid, Signal::SIGKILL);
    false
}

/// Starts the agent of `node`, waits until it serves, and only then records its
/// pid in lab.json: an agent that exits while starting is not listed (it is
/// killed if it is still there when the wait gives up).
pub async fn start(dir: &Path, node: &NodeEntry, timeout: Duration) -> anyhow::Result<u32> {
    let pid = spawn_detached(dir, &node.name)?;
    if let Err(e) = wait_ready(node, pid, timeout).await {
        signal(pid, Signal::SIGKILL);
        set_pid(dir, &node.name, None)?;
        return Err(e);
    }
    set_pid(dir, &node.name, Some(pid))?;
    Ok(pid)
}

/// Starts the agent of `node` from its saved command line, detached (own
/// process group, log in `DIR/nodes/<node>/agent.log`).
pub fn spawn_detached(dir: &Path, node: &str) -> anyhow::Result<u32> {
    let files = NodeFiles::new(dir, node);
    let argv: Vec<String> = labfile::read(&files.argv())
        .context("this lab has no agent command line (was hostnic-agent built?)")?;
    let Some((program, args)) = argv.split_first() else {
        bail!("empty agent command line in {}", files.argv().display());
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(files.log())?;
    use std::os::unix::process::CommandExt;
    let child = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("start {program}"))?;
    Ok(child.id())
}

/// Waits until the agent `pid` of `node` wrote its conflist and accepts on its socket.
pub async fn wait_ready(node: &NodeEntry, pid: u32, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if node.conflist.exists() && tokio::net::UnixStream::connect(&node.socket).await.is_ok() {
            return Ok(());
        }
        if !alive(pid) {
            bail!("the agent of {} exited; see its agent.log", node.name);
        }
        if start.elapsed() > timeout {
            bail!(
                "the agent of {} was not ready within {timeout:?}",
                node.name
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records the agent pid of `node` in lab.json.
pub fn set_pid(dir: &Path, node: &str, pid: Option<u32>) -> anyhow::Result<()> {
    let path = labfile::lab_json(dir);
    let mut lab: LabFile = labfile::read(&path)?;
    for n in lab.nodes.iter_mut().filter(|n| n.name == node) {
        n.pid = pid;
    }
    labfile::write(&path, &lab)
}

/// Writes the conflist the lab uses when no agent writes one: the `hostnic`
/// plugin pointed at the node's agent socket.
pub fn write_conflist(files: &NodeFiles) -> anyhow::Result<()> {
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "hostnic",
        "plugins": [{
            "type": "hostnic",
            "agentSocket": files.socket(),
            "stateDir": files.state_dir(),
            "logFile": files.root.join("cni.log"),
        }]
    });
    std::fs::write(
        files.conflist(),
        serde_json::to_string_pretty(&conf)? + "\n",
    )
    .with_context(|| format!("write {}", files.conflist().display()))
}
