//! `hostnic-lab podman --dir DIR --node NODE -- CMD…`: a throwaway busybox
//! container started by podman 4 (CNI backend) on the node's hostnic network,
//! so a container gets a hostnic NIC from a runtime we did not write.
//!
//! podman itself runs in the node's namespace, like a runtime on that node.
//! The image is imported locally from Debian's busybox-static (no registry),
//! and podman reads one config file (`CONTAINERS_CONF`) that points it at the
//! node's conflist and CNI binaries, leaving `/etc` untouched.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use clap::Args;

use crate::labfile::{self, LabFile, NodeEntry};

const IMAGE: &str = "localhost/hostnic-lab-busybox:latest";
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "ip", "cat", "ls", "sleep", "ping", "wget", "nc", "echo", "hostname",
];

/// Options of `podman`.
#[derive(Debug, Clone, Args)]
pub struct PodmanArgs {
    /// The lab directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// The node whose hostnic network the container joins.
    #[arg(long)]
    pub node: String,
    /// The command to run in the container.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Runs the container and prints its output; true if the command succeeded.
pub async fn exec(args: PodmanArgs) -> anyhow::Result<bool> {
    let dir = labfile::lab_dir(&args.dir)?;
    let lab: LabFile = labfile::read(&labfile::lab_json(&dir))?;
    let node = lab
        .nodes
        .iter()
        .find(|n| n.name == args.node)
        .with_context(|| format!("no node {} in this lab", args.node))?;
    let conf = containers_conf(&dir, node)?;
    ensure_image(&dir, &conf).await?;
    let conflist: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&node.conflist)
            .with_context(|| format!("read {}", node.conflist.display()))?,
    )?;
    let network = conflist["name"].as_str().unwrap_or("hostnic");
    // podman runs *on the node* (in its namespace), as a runtime does: the
    // chained plugins of the conflist (portmap) then act on the node, never on
    // the machine's own namespace.
    // `nsenter --net` and not `ip netns exec`: the latter gives podman a mount
    // namespace of its own, where the container namespaces it bind-mounts under
    // /run/netns would be invisible to the agent.
    let status = tokio::process::Command::new("nsenter")
        .arg(format!("--net={}", node.netns.display()))
        .arg("podman")
        .env("CONTAINERS_CONF", &conf)
        .args(["run", "--rm", "--network", network, IMAGE])
        .args(&args.command)
        .stdin(Stdio::null())
        .status()
        .await
        .context("run podman (apt-get install podman runc busybox-static)")?;
    Ok(status.success())
}

/// Writes `DIR/podman/<node>.conf`: the CNI backend on the node's conflist and
/// binaries, runc with cgroupfs, ulimits below the sandbox's.
fn containers_conf(dir: &Path, node: &NodeEntry) -> anyhow::Result<PathBuf> {
    let root = dir.join("podman");
    std::fs::create_dir_all(&root)?;
    let conf_dir = node
        .conflist
        .parent()
        .context("conflist without a directory")?;
    let path = root.join(format!("{}.conf", node.name));
    let text = format!(
        "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\n[network]\nnetwork_backend = \"cni\"\nnetwork_config_dir = \"{}\"\ncni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\n\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n",
        conf_dir.display(),
        node.cni_bin_dir.display()
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Imports the busybox image once.
async fn ensure_image(dir: &Path, conf: &Path) -> anyhow::Result<()> {
    let exists = tokio::process::Command::new("podman")
        .env("CONTAINERS_CONF", conf)
        .args(["image", "exists", IMAGE])
        .status()
        .await
        .context("run podman (apt-get install podman runc busybox-static)")?;
    if exists.success() {
        return Ok(());
    }
    if !Path::new(BUSYBOX).is_file() {
        bail!("{BUSYBOX} is missing: apt-get install busybox-static");
    }
    let rootfs = dir.join("podman").join("rootfs");
    let _ = std::fs::remove_dir_all(&rootfs);
    std::fs::create_dir_all(rootfs.join("bin"))?;
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox"))?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    let tar = dir.join("podman").join("busybox.tar");
    let out = tokio::process::Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .await?;
    if !out.status.success() {
        bail!("tar: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = tokio::process::Command::new("podman")
        .env("CONTAINERS_CONF", conf)
        .args(["import", "--change", "CMD [\"/bin/sh\"]"])
        .arg(&tar)
        .arg(IMAGE)
        .output()
        .await?;
    if !out.status.success() {
        bail!("podman import: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
