//! # hostnic-e2e: end-to-end suites that span binaries
//!
//! Kubelet's own path: a `hostnic-lab` (simulator, fake API server, node
//! namespaces, real agents) with a private containerd per node, driven through
//! its CRI exactly as kubelet drives it, and `ctr run --cni` as a second client.
//! The suites live in `tests/tests/*.rs` and need root; this library is their
//! glue, also used by the RunPodSandbox benchmark (`examples/bench_cri.rs`).
//!
//! ## Layout
//! - [`bins`]: the workspace binaries and the CRI client's Python.
//! - [`lab`]: a lab for one test, its `lab.json` and its API server.
//! - [`images`]: the pause and busybox images, built locally as OCI archives.
//! - [`containerd`]: a private containerd per node.
//! - [`cri`]: the CRI client (kubelet's calls).
//! - [`cni_calls`]: a recording shim in front of the plugin: what containerd
//!   asked and what it was answered.
//! - [`host`]: the host's runtime and CNI paths, before and after.
//! - [`CriLab`]: all of it for a test: a lab whose nodes run containerd.

pub mod bins;
pub mod cni_calls;
pub mod containerd;
pub mod cri;
pub mod host;
pub mod images;
pub mod lab;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use containerd::{CniDirs, Containerd};
use cri::{Cri, PodMeta};
use host::HostSnapshot;
use lab::Lab;

/// The reference plugins containerd runs next to hostnic: `loopback` for the
/// sandbox's `lo`, `portmap` chained by the agent's conflist.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// One lab node with its runtime.
#[derive(Debug)]
pub struct CriNode {
    /// The node's name.
    pub name: String,
    /// Its containerd.
    pub containerd: Containerd,
    /// A CRI client of it (`None` once the suite closed it); shared, so calls
    /// can be in flight in tasks while the test restarts containerd.
    pub cri: Option<std::sync::Arc<Cri>>,
    /// Where the recording shim leaves the plugin calls.
    pub calls_dir: PathBuf,
    /// Where kubelet would put pod logs.
    pub log_root: PathBuf,
}

impl CriNode {
    /// The CRI client (panics while containerd is down).
    pub fn cri(&self) -> &std::sync::Arc<Cri> {
        self.cri.as_ref().expect("the node's CRI client is open")
    }

    /// Every plugin call recorded on this node.
    pub fn calls(&self) -> Vec<cni_calls::CniCall> {
        cni_calls::read_calls(&self.calls_dir).unwrap_or_default()
    }

    /// The calls for one sandbox.
    pub fn calls_for(&self, sandbox: &str) -> Vec<cni_calls::CniCall> {
        cni_calls::calls_for(&self.calls_dir, sandbox).unwrap_or_default()
    }

    /// Restarts containerd (a new CRI client follows it).
    pub async fn restart_containerd(&mut self) -> anyhow::Result<()> {
        if let Some(cri) = self.cri.take() {
            cri.close().await;
        }
        self.containerd.restart()?;
        self.cri = Some(std::sync::Arc::new(
            Cri::connect(&self.containerd.socket()).await?,
        ));
        Ok(())
    }
}

/// A pod started through CRI: its API object, sandbox and one busybox container.
#[derive(Debug, Clone)]
pub struct CriPod {
    /// Which node.
    pub node: String,
    /// Its identity.
    pub meta: PodMeta,
    /// The PodSandboxConfig it was started with.
    pub config: Value,
    /// The sandbox id (the plugin's `CNI_CONTAINERID`).
    pub sandbox: String,
    /// The address PodSandboxStatus reports.
    pub ip: Ipv4Addr,
    /// A busybox container sleeping in it (`None` for a bare sandbox).
    pub container: Option<String>,
}

/// A lab whose nodes run a private containerd each; checks the host's
/// runtime and CNI paths before and after.
#[derive(Debug)]
pub struct CriLab {
    /// Runtimes, one per node (dropped before the lab).
    pub nodes: Vec<CriNode>,
    /// The lab.
    pub lab: Lab,
    before: HostSnapshot,
    lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

/// Takes the machine-wide suite lock: one CRI suite at a time, so the host
/// snapshots see only their own suite.
pub fn suite_lock() -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/hostnic-e2e.lock")?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("lock /tmp/hostnic-e2e.lock: {e}"))
}

/// Fails unless this process is root (the suites need namespaces and containerd).
pub fn require_root() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("this suite needs root (network namespaces, containerd)");
    }
    Ok(())
}

impl CriLab {
    /// `hostnic-lab up` with `nodes` nodes, then a containerd per node on the
    /// conflist its agent wrote, the images imported, a CRI client each.
    pub async fn up(name: &str, nodes: usize) -> anyhow::Result<Self> {
        Self::up_with(name, nodes, true).await
    }

    /// [`up`](Self::up); with `record` false, containerd runs the agent's
    /// plugin binary directly instead of through the recording shim (benchmarks).
    pub async fn up_with(name: &str, nodes: usize, record: bool) -> anyhow::Result<Self> {
        require_root()?;
        let lock = suite_lock()?;
        let before = HostSnapshot::take();
        let lab = Lab::up(name, nodes)?;
        let mut this = Self {
            nodes: Vec::new(),
            lab,
            before,
            lock: Some(lock),
        };
        let tag = format!("{name}-{}", std::process::id());
        let images = this.lab.dir.join("images");
        for entry in this.lab.file.nodes.clone() {
            let root = this.lab.dir.join("cri").join(&entry.name);
            let bin_dir = root.join("bin");
            let calls_dir = root.join("calls");
            if record {
                cni_calls::install_recorder(
                    &bin_dir,
                    "hostnic",
                    &entry.cni_bin_dir.join("hostnic"),
                    &calls_dir,
                )?;
            } else {
                std::fs::create_dir_all(&bin_dir)?;
                std::os::unix::fs::symlink(
                    entry.cni_bin_dir.join("hostnic"),
                    bin_dir.join("hostnic"),
                )?;
            }
            link_reference_plugins(&bin_dir, &["loopback", "portmap"])?;
            let mut containerd = Containerd::new(
                &this.lab.dir,
                &entry.name,
                &format!("{tag}-{}", entry.name),
                &entry.netns,
                CniDirs {
                    conf_dir: entry.conf_dir(),
                    bin_dir,
                },
            )?;
            // The agent wrote its conflist before `up` returned; containerd reads
            // the directory when it starts.
            containerd.start()?;
            containerd.import_images(&images)?;
            let cri = Cri::connect(&containerd.socket()).await?;
            this.nodes.push(CriNode {
                name: entry.name.clone(),
                containerd,
                cri: Some(std::sync::Arc::new(cri)),
                calls_dir,
                log_root: root.join("pods"),
            });
        }
        Ok(this)
    }

    /// The runtime of `node`.
    pub fn node(&self, node: &str) -> &CriNode {
        self.nodes
            .iter()
            .find(|n| n.name == node)
            .unwrap_or_else(|| panic!("no node {node}"))
    }

    /// The runtime of `node`, mutably.
    pub fn node_mut(&mut self, node: &str) -> &mut CriNode {
        self.nodes
            .iter_mut()
            .find(|n| n.name == node)
            .unwrap_or_else(|| panic!("no node {node}"))
    }

    /// Creates the Pod object bound to `node`, as the scheduler leaves it; its identity.
    pub async fn create_pod_object(
        &self,
        node: &str,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<PodMeta> {
        let pod = self
            .lab
            .api()
            .create_pod(namespace, name, node, labels)
            .await?;
        Ok(PodMeta {
            namespace: namespace.into(),
            name: name.into(),
            uid: pod["metadata"]["uid"]
                .as_str()
                .context("pod without uid")?
                .into(),
            attempt: 0,
        })
    }

    /// Kubelet's start of a pod: RunPodSandbox for the Pod object `meta`,
    /// PodSandboxStatus for its IP, status written to the API server, and a
    /// busybox container that sleeps (when `container`).
    pub async fn start_pod(
        &self,
        node: &str,
        meta: &PodMeta,
        container: bool,
    ) -> anyhow::Result<CriPod> {
        let n = self.node(node);
        let config = cri::sandbox_config(meta, &n.containerd.cgroup_parent, &n.log_root);
        let (sandbox, _) = n
            .cri()
            .run_pod_sandbox(&config)
            .await
            .with_context(|| format!("RunPodSandbox {}/{}", meta.namespace, meta.name))?;
        let ip: Ipv4Addr = n
            .cri()
            .sandbox_ip(&sandbox)
            .await?
            .parse()
            .context("PodSandboxStatus has no IPv4 address")?;
        self.lab
            .api()
            .set_pod_running(&meta.namespace, &meta.name, ip)
            .await?;
        let container = if container {
            Some(
                n.cri()
                    .start_container(&sandbox, &config, "main", &["sleep", "3600"])
                    .await
                    .context("start the busybox container")?,
            )
        } else {
            None
        };
        Ok(CriPod {
            node: node.into(),
            meta: meta.clone(),
            config,
            sandbox,
            ip,
            container,
        })
    }

    /// Pod object + [`start_pod`](Self::start_pod).
    pub async fn run_pod(
        &self,
        node: &str,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<CriPod> {
        let meta = self
            .create_pod_object(node, namespace, name, labels)
            .await?;
        self.start_pod(node, &meta, true).await
    }

    /// Kubelet's end of a pod: StopPodSandbox, RemovePodSandbox, the Pod object deleted.
    pub async fn delete_pod(&self, pod: &CriPod) -> anyhow::Result<()> {
        let cri = self.node(&pod.node).cri();
        cri.stop_pod_sandbox(&pod.sandbox).await?;
        cri.remove_pod_sandbox(&pod.sandbox).await?;
        self.lab
            .api()
            .delete_pod(&pod.meta.namespace, &pod.meta.name)
            .await
    }

    /// Runs `cmd` in the pod's busybox container: (exit code, stdout + stderr).
    pub async fn exec(&self, pod: &CriPod, cmd: &[&str]) -> anyhow::Result<(i64, String)> {
        let container = pod
            .container
            .as_deref()
            .context("the pod has no container")?;
        let (code, out, err) = self
            .node(&pod.node)
            .cri()
            .exec_sync(container, cmd, Duration::from_secs(20))
            .await?;
        Ok((code, format!("{out}{err}")))
    }

    /// Whether `pod` gets an ICMP echo reply from `ip` (one try of 2 s).
    pub async fn pings(&self, pod: &CriPod, ip: Ipv4Addr) -> anyhow::Result<bool> {
        let ip = ip.to_string();
        Ok(self
            .exec(pod, &["ping", "-c", "1", "-W", "2", &ip])
            .await?
            .0
            == 0)
    }

    /// Whether `pod` opens a TCP connection to `ip:port` within 2 s and reads
    /// the "hello" of a [`serve_tcp`](Self::serve_tcp) server.
    pub async fn connects(&self, pod: &CriPod, ip: Ipv4Addr, port: u16) -> anyhow::Result<bool> {
        let (ip, port) = (ip.to_string(), port.to_string());
        let (code, out) = self
            .exec(pod, &["timeout", "3", "nc", "-w", "2", &ip, &port])
            .await?;
        Ok(code == 0 && out.contains("hello"))
    }

    /// Starts a TCP server on `port` in `pod`: busybox `nc` answering "hello"
    /// to every connection, in a second container of the pod.
    pub async fn serve_tcp(&self, pod: &CriPod, port: u16) -> anyhow::Result<()> {
        let n = self.node(&pod.node);
        let port = port.to_string();
        n.cri()
            .start_container(
                &pod.sandbox,
                &pod.config,
                &format!("serve-{port}"),
                &["nc", "-ll", "-p", &port, "-e", "echo", "hello"],
            )
            .await?;
        Ok(())
    }

    /// Whether the VPC client (outside the cluster) reaches `ip` with a ping.
    pub fn client_pings(&self, ip: Ipv4Addr) -> bool {
        in_netns(
            &self.lab.file.client.netns,
            &["ping", "-c", "1", "-W", "2", &ip.to_string()],
        )
    }

    /// Stops and removes every sandbox, stops the runtimes, takes the lab down
    /// and checks the host: nothing left in the cloud beyond the warm pool,
    /// nothing changed in the host's runtime and CNI paths.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        for n in &mut self.nodes {
            if let Some(cri) = n.cri.take() {
                problems.extend(
                    cri.remove_all()
                        .await
                        .into_iter()
                        .map(|e| format!("{}: {e}", n.name)),
                );
                cri.close().await;
            }
        }
        for n in &self.lab.file.nodes {
            match self.lab.agent_pods(&n.name).await {
                Ok(pods) if pods.is_empty() => {}
                Ok(pods) => problems.push(format!("{}: the agent still holds {pods:?}", n.name)),
                Err(e) => problems.push(format!("{}: agent pods: {e:#}", n.name)),
            }
        }
        if let Err(e) = self.lab.leaks(Duration::from_secs(30)) {
            problems.push(format!("leaks after every sandbox was removed: {e:#}"));
        }
        for n in &mut self.nodes {
            // What containerd itself lost track of (a restart in the middle of a
            // RunPodSandbox can orphan a shim): noted, and removed.
            for f in n.containerd.shutdown() {
                eprintln!("{}: cleaned up by force: {f}", n.name);
            }
        }
        self.nodes.clear();
        let before = self.before.clone();
        let lock = self.lock.take();
        drop(self);
        let _ = before.clean_scratch();
        let diff = before.diff(&HostSnapshot::take());
        drop(lock);
        problems.extend(diff.into_iter().map(|d| format!("host path {d}")));
        if !problems.is_empty() {
            bail!("the suite did not end clean:\n{}", problems.join("\n"));
        }
        Ok(())
    }
}

impl Drop for CriLab {
    fn drop(&mut self) {
        // A test that failed half-way: the safety nets, without judging.
        for n in &mut self.nodes {
            n.cri = None;
            n.containerd.shutdown();
        }
        self.nodes.clear();
        let _ = self.before.clean_scratch();
    }
}

/// Symlinks the reference plugins `names` from [`REFERENCE_PLUGINS`] into `bin_dir`.
pub fn link_reference_plugins(bin_dir: &Path, names: &[&str]) -> anyhow::Result<()> {
    bins::require(
        &format!("{REFERENCE_PLUGINS}/loopback"),
        "containernetworking-plugins",
    )?;
    std::fs::create_dir_all(bin_dir)?;
    for name in names {
        let link = bin_dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(Path::new(REFERENCE_PLUGINS).join(name), &link)?;
    }
    Ok(())
}

/// Runs `cmd` in the network namespace at `netns`; whether it succeeded.
pub fn in_netns(netns: &Path, cmd: &[&str]) -> bool {
    std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(cmd)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The pod veths left on a node (links of type veth other than `eth0` and the
/// lab's NIC links `hn…`).
pub fn pod_veths(netns: &Path) -> Vec<String> {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-o", "link", "show", "type", "veth"])
        .output();
    let Ok(out) = out else {
        return vec!["cannot list links".into()];
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n != "eth0" && !n.starts_with("hn"))
        .collect()
}
