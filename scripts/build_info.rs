// The binaries' build scripts `include!` this file: it sets `HOSTNIC_COMMIT`, the
// git commit the binary is built from (`hostnic-agent --version`,
// `hostnic_build_info`, `/v1/status`), from the environment variable of the same
// name when set (image builds from a tarball), else from `git rev-parse`, else
// `unknown`. The build script runs again when HEAD moves.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Asks cargo to run the build script again when `path` (relative to `dir`) changes.
fn watch(dir: &Path, path: &str) {
    let path = dir.join(path);
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn commit() -> String {
    println!("cargo:rerun-if-env-changed=HOSTNIC_COMMIT");
    if let Ok(c) = std::env::var("HOSTNIC_COMMIT")
        && !c.trim().is_empty()
    {
        return c.trim().to_string();
    }
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let Some(commit) = git(&dir, &["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    // HEAD, the branch it points at (a loose ref or packed-refs).
    for file in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&dir, &["rev-parse", "--git-path", file]) {
            watch(&dir, &p);
        }
    }
    if let Some(branch) = git(&dir, &["symbolic-ref", "-q", "HEAD"])
        && let Some(p) = git(&dir, &["rev-parse", "--git-path", &branch])
    {
        watch(&dir, &p);
    }
    commit
}

fn main() {
    println!("cargo:rustc-env=HOSTNIC_COMMIT={}", commit());
}
