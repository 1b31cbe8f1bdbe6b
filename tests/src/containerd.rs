//! A private containerd for one lab node, as a node's runtime: its own root,
//! state, sockets, runc root and CNI `bin_dir`/`conf_dir` under the lab
//! directory, run inside the node's network namespace (so the chained plugins,
//! such as `portmap`, act on the node and never on the machine), with the CRI
//! plugin set up as on a kubelet node and the suite's two images imported.
//!
//! What containerd 1.6 cannot redirect (`../shared/reference/cri-notes.md`):
//! shim sockets under `/run/containerd/s`, libcni's cache under `/var/lib/cni`,
//! cgroups. [`Containerd::shutdown`] removes our pods' processes, mounts and
//! cgroups; [`crate::host::HostSnapshot`] removes what appeared in the host paths.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::images;

/// The CRI plugin's namespace in containerd.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// The cgroup every pod of the suites lives under (`/hostnic-e2e/<tag>/…`).
pub const CGROUP_ROOT: &str = "hostnic-e2e";

/// Where containerd finds its CNI configuration and plugins.
#[derive(Debug, Clone)]
pub struct CniDirs {
    /// `conf_dir`: the node's conflist (the agent's directory, as on a real node).
    pub conf_dir: PathBuf,
    /// `bin_dir`: the plugins.
    pub bin_dir: PathBuf,
}

/// A running private containerd.
#[derive(Debug)]
pub struct Containerd {
    /// `DIR/cri/<name>`: config, root, state, log, sockets.
    pub dir: PathBuf,
    /// The node's network namespace it runs in.
    pub netns: PathBuf,
    /// Its CNI directories.
    pub cni: CniDirs,
    /// The cgroup parent of its pods, `/hostnic-e2e/<tag>`.
    pub cgroup_parent: String,
    child: Option<Child>,
}

impl Containerd {
    /// Writes the configuration of a containerd named `name` under `lab_dir/cri`
    /// (not started yet). `tag` makes its cgroup parent unique.
    pub fn new(
        lab_dir: &Path,
        name: &str,
        tag: &str,
        netns: &Path,
        cni: CniDirs,
    ) -> anyhow::Result<Self> {
        crate::bins::require("containerd", "containerd")?;
        crate::bins::require("runc", "runc")?;
        let dir = lab_dir.join("cri").join(name);
        std::fs::create_dir_all(&dir)?;
        let this = Self {
            dir,
            netns: netns.to_path_buf(),
            cni,
            cgroup_parent: format!("/{CGROUP_ROOT}/{tag}"),
            child: None,
        };
        std::fs::write(this.config_path(), this.config())?;
        Ok(this)
    }

    /// Its gRPC (CRI) socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// Its log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// runc's state directory for its containers.
    pub fn runc_root(&self) -> PathBuf {
        self.dir.join("runc")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// The configuration: everything under `dir`, the CRI plugin as on a node.
    fn config(&self) -> String {
        let d = self.dir.display();
        format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # root may not lower oom_score_adj on this kind of VM: runc fails without it.
  restrict_oom_score_adj = true
  # Pod network namespaces under the state directory, not /var/run/netns.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{runc}"
        SystemdCgroup = false
"#,
            pause = images::PAUSE,
            bin = self.cni.bin_dir.display(),
            conf = self.cni.conf_dir.display(),
            runc = self.runc_root().display(),
        )
    }

    /// Starts containerd in the node's network namespace and waits until it serves.
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("containerd in {} already runs", self.dir.display());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        use std::os::unix::process::CommandExt;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns.display()))
            .arg("containerd")
            .arg("--config")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("start containerd")?;
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if self.ctr(&["version"]).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "containerd exited ({status}); see {}",
                    self.log_path().display()
                );
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!(
                    "containerd did not serve within 30 s; see {}",
                    self.log_path().display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM and wait (SIGKILL after 15 s), as a service manager stops it.
    /// Pods keep running in their shims.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let started = Instant::now();
        while child.try_wait()?.is_none() {
            if started.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stop + start: a runtime restart in the middle of things.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.start()
    }

    /// Whether it runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `ctr -a SOCKET -n k8s.io ARGS`; its stdout.
    pub fn ctr(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("ctr")
            .arg("-a")
            .arg(self.socket())
            .args(["-n", K8S_NAMESPACE])
            .args(args)
            .output()
            .context("run ctr")?;
        if !out.status.success() {
            bail!(
                "ctr {}: {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Imports the suite's images (built once under `image_dir`).
    pub fn import_images(&self, image_dir: &Path) -> anyhow::Result<()> {
        let (pause, busybox) = images::build(image_dir)?;
        for tar in [pause, busybox] {
            self.ctr(&["images", "import", &tar.display().to_string()])?;
        }
        Ok(())
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops containerd and removes what it and its pods left on the machine:
    /// the pods' processes and shims, mounts under its directory, and its cgroups.
    /// The pods should have been stopped and removed through CRI first; this is
    /// the safety net. Returns what had to be cleaned up by force.
    pub fn shutdown(&mut self) -> Vec<String> {
        let _ = self.stop();
        let mut forced = Vec::new();
        let socket = self.socket().display().to_string();
        for pid in processes_with_arg(&socket) {
            forced.push(format!("shim {pid}"));
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        forced.extend(kill_cgroup(&self.cgroup_parent));
        forced.extend(unmount_under(&self.dir));
        forced
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for f in self.shutdown() {
            eprintln!(
                "containerd {}: cleaned up by force: {f}",
                self.dir.display()
            );
        }
    }
}

/// Processes whose command line has `arg` as one of its arguments.
pub fn processes_with_arg(arg: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline"))
            && cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes())
        {
            pids.push(pid);
        }
    }
    pids
}

/// The cgroup directories of `parent` (`/hostnic-e2e/<tag>`) in every
/// hierarchy (cgroup v1 controllers, or the v2 tree).
fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let rel = parent.trim_start_matches('/');
    let mut dirs = Vec::new();
    let root = Path::new("/sys/fs/cgroup");
    if root.join(rel).is_dir() {
        dirs.push(root.join(rel));
    }
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let d = e.path().join(rel);
            if d.is_dir() {
                dirs.push(d);
            }
        }
    }
    dirs
}

/// Kills every process in the cgroups under `parent` and removes them (deepest
/// first); what had to be killed or could not be removed.
pub fn kill_cgroup(parent: &str) -> Vec<String> {
    let mut forced = Vec::new();
    for _ in 0..50 {
        let mut alive = false;
        for dir in cgroup_dirs(parent) {
            for procs in walk(&dir).into_iter().map(|d| d.join("cgroup.procs")) {
                for pid in std::fs::read_to_string(&procs)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse::<i32>().ok())
                {
                    alive = true;
                    forced.push(format!("pod process {pid}"));
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        if !alive {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    forced.sort();
    forced.dedup();
    for dir in cgroup_dirs(parent) {
        let mut all = walk(&dir);
        all.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in all {
            if std::fs::remove_dir(&d).is_err() && d.exists() {
                forced.push(format!("cgroup {} not removable", d.display()));
            }
        }
    }
    // The shared root goes when the last suite's parent went.
    for dir in cgroup_dirs(CGROUP_ROOT) {
        let _ = std::fs::remove_dir(dir);
    }
    forced
}

/// `dir` and every directory below it.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = std::fs::read_dir(&out[i]) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

/// Unmounts (lazily, deepest first) every mount point under `dir`.
pub fn unmount_under(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(unescape_mount))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    let mut forced = Vec::new();
    for p in points {
        forced.push(format!("mount {p}"));
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    forced
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}
