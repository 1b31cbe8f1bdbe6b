//! `hostnic-lab up`: starts the lab daemon (`serve`) in the background and
//! returns once it wrote `DIR/lab.json`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use crate::labfile::{self, LabFile, LabState};

/// Options of `up` (and of the daemon it starts).
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// The lab directory (created if missing).
    #[arg(long)]
    pub dir: PathBuf,
    /// How many nodes.
    #[arg(long, default_value_t = 2)]
    pub nodes: usize,
    /// How long the simulator's attach/detach jobs work.
    #[arg(long, default_value_t = 200)]
    pub attach_latency_ms: u64,
    /// How long the simulator's jobs stay pending.
    #[arg(long, default_value_t = 50)]
    pub job_latency_ms: u64,
    /// Probability that the simulator answers 5000/5100 instead of acting.
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Seconds to wait for the lab (and its agents) to be ready.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
    /// Start no agents: the fabric and the simulator only (a test or a
    /// developer then plays the agent).
    #[arg(long)]
    pub no_agents: bool,
}

impl UpArgs {
    /// The same options as command-line arguments, for the daemon.
    fn to_args(&self, dir: &Path) -> Vec<String> {
        let mut args = vec![
            "--dir".into(),
            dir.display().to_string(),
            "--nodes".into(),
            self.nodes.to_string(),
            "--attach-latency-ms".into(),
            self.attach_latency_ms.to_string(),
            "--job-latency-ms".into(),
            self.job_latency_ms.to_string(),
            "--fault-rate".into(),
            self.fault_rate.to_string(),
            "--timeout-s".into(),
            self.timeout_s.to_string(),
        ];
        if self.no_agents {
            args.push("--no-agents".into());
        }
        args
    }
}

/// Starts the daemon and waits for `lab.json`; prints it (stdout: the
/// contract tools read) and the line that points `kubectl` at the lab's API
/// server (stderr, so stdout stays JSON).
pub async fn exec(args: UpArgs) -> anyhow::Result<bool> {
    let lab = start(&args).await?;
    println!("{}", serde_json::to_string_pretty(&lab)?);
    if let Some(kubeconfig) = &lab.kubeconfig {
        eprintln!("{}", export_line(kubeconfig));
    }
    Ok(true)
}

/// `export KUBECONFIG=PATH`, the path quoted for a POSIX shell when it needs it.
pub fn export_line(kubeconfig: &Path) -> String {
    let path = kubeconfig.display().to_string();
    let plain = path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%".contains(c));
    if plain {
        format!("export KUBECONFIG={path}")
    } else {
        format!("export KUBECONFIG='{}'", path.replace('\'', "'\\''"))
    }
}

/// Starts the daemon for `args` and returns the lab once it is ready.
pub async fn start(args: &UpArgs) -> anyhow::Result<LabFile> {
    if !(1..=9).contains(&args.nodes) {
        bail!("--nodes must be 1 to 9");
    }
    let dir = labfile::lab_dir(&args.dir)?;
    // A running lab is not wiped (its agents would be leaked): `down` first.
    if let Some(pid) = running_daemon(&dir) {
        bail!(
            "lab already up in {dir} (its daemon, pid {pid}, runs); run `hostnic-lab down --dir {dir}` first",
            dir = dir.display()
        );
    }
    // A stale lab.json must not be mistaken for the new lab being ready; the
    // daemon cleans up whatever the previous run left.
    let _ = std::fs::remove_file(labfile::lab_json(&dir));
    let log_path = dir.join("lab.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("create {}", log_path.display()))?;
    let exe = std::env::current_exe()?;
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(exe)
        .arg("serve")
        .args(args.to_args(&dir))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("start the lab daemon")?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s + 10);
    loop {
        if let Ok(lab) = labfile::read::<LabFile>(&labfile::lab_json(&dir)) {
            // Reap the daemon when it ends, so `down` never sees a zombie.
            std::thread::spawn(move || child.wait());
            return Ok(lab);
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("the lab daemon exited ({status}):\n{}", tail.join("\n"));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the lab was not ready in time; see {}", log_path.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pid of the lab daemon of `dir` if it still runs (a crashed lab's stale
/// `lab-state.json` names a dead one, or one reused by another program).
pub fn running_daemon(dir: &Path) -> Option<u32> {
    let state: LabState = labfile::read(&labfile::state_json(dir)).ok()?;
    let pid = state.daemon_pid;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let ours = String::from_utf8_lossy(&cmdline).contains("hostnic-lab");
    (ours && crate::agents::alive(pid)).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_line_is_a_shell_assignment() {
        assert_eq!(
            export_line(Path::new("/tmp/lab/kubeconfig")),
            "export KUBECONFIG=/tmp/lab/kubeconfig"
        );
        assert_eq!(
            export_line(Path::new("/tmp/my lab/kubeconfig")),
            "export KUBECONFIG='/tmp/my lab/kubeconfig'"
        );
    }
}
