//! The two images the suites run, built locally (there is no registry): a
//! static `pause` for sandboxes and a busybox from Debian's `busybox-static`,
//! each a one-layer OCI image layout in a tar archive that `ctr images import`
//! takes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The sandbox image containerd's CRI is configured with.
pub const PAUSE: &str = "localhost/hostnic-e2e/pause:1";
/// The busybox image of the test containers.
pub const BUSYBOX: &str = "localhost/hostnic-e2e/busybox:1";

/// busybox-static's binary.
const BUSYBOX_BIN: &str = "/bin/busybox";
/// Applets linked in the busybox image.
const APPLETS: &[&str] = &[
    "sh", "ip", "ping", "nc", "sleep", "cat", "echo", "ls", "hostname", "wget", "timeout",
];

/// A sandbox's PID 1: sleeps until SIGTERM/SIGINT, reaps children meanwhile.
const PAUSE_C: &str = r#"#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void quit(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
    signal(SIGTERM, quit);
    signal(SIGINT, quit);
    signal(SIGCHLD, reap);
    for (;;) pause();
}
"#;

/// Builds both archives under `dir` (once; later calls reuse them) and returns
/// their paths: `(pause.tar, busybox.tar)`.
pub fn build(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let pause_tar = dir.join("pause.tar");
    let busybox_tar = dir.join("busybox.tar");
    if pause_tar.is_file() && busybox_tar.is_file() {
        return Ok((pause_tar, busybox_tar));
    }
    crate::bins::require("gcc", "gcc libc6-dev")?;
    crate::bins::require(BUSYBOX_BIN, "busybox-static")?;

    let root = dir.join("pause-rootfs");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let source = dir.join("pause.c");
    std::fs::write(&source, PAUSE_C)?;
    run(Command::new("gcc")
        .args(["-static", "-Os", "-s", "-o"])
        .arg(root.join("pause"))
        .arg(&source))?;
    layout(
        PAUSE,
        &root,
        &json!({"Entrypoint": ["/pause"], "Env": ["PATH=/"]}),
        &pause_tar,
    )?;

    let root = dir.join("busybox-rootfs");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::copy(BUSYBOX_BIN, root.join("bin/busybox"))?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    layout(
        BUSYBOX,
        &root,
        &json!({"Cmd": ["sh"], "Env": ["PATH=/bin"]}),
        &busybox_tar,
    )?;
    Ok((pause_tar, busybox_tar))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes an OCI image layout for `name` with one uncompressed layer holding
/// `rootfs`, archived as `out`.
fn layout(name: &str, rootfs: &Path, config: &Value, out: &Path) -> anyhow::Result<()> {
    let work = out.with_extension("layout");
    let _ = std::fs::remove_dir_all(&work);
    let blobs = work.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let layer_tar = work.join("layer.tar");
    // Reproducible: sorted, owned by root, epoch mtimes.
    run(Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
            "-C",
        ])
        .arg(rootfs)
        .arg("-cf")
        .arg(&layer_tar)
        .arg("."))?;
    let layer = std::fs::read(&layer_tar)?;
    std::fs::remove_file(&layer_tar)?;
    let blob = |bytes: &[u8]| -> anyhow::Result<(String, usize)> {
        let digest = sha256(bytes);
        std::fs::write(blobs.join(&digest), bytes)?;
        Ok((format!("sha256:{digest}"), bytes.len()))
    };
    let (layer_digest, layer_size) = blob(&layer)?;
    let image_config = json!({
        "architecture": "amd64", "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = blob(image_config.to_string().as_bytes())?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = blob(manifest.to_string().as_bytes())?;
    let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(work.join("index.json"), index.to_string())?;
    std::fs::write(
        work.join("oci-layout"),
        json!({"imageLayoutVersion": "1.0.0"}).to_string(),
    )?;
    run(Command::new("tar")
        .arg("-C")
        .arg(&work)
        .arg("-cf")
        .arg(out)
        .args(["oci-layout", "index.json", "blobs"]))?;
    std::fs::remove_dir_all(&work)?;
    Ok(())
}
