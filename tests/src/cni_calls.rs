//! What the runtime asked the plugin and what it answered: a recording shim
//! installed under the plugin's name in containerd's `bin_dir`, in front of the
//! binary the agent installed. Each call leaves a directory with the `CNI_*`
//! environment, stdin, stdout and the exit code, so a test can assert the
//! exact answer containerd got (error JSON and its code, or success).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

/// One plugin call as containerd made it.
#[derive(Debug, Clone)]
pub struct CniCall {
    /// The call's directory (named by its start time).
    pub dir: PathBuf,
    /// `CNI_COMMAND`.
    pub command: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (empty when the runtime sent none).
    pub netns: String,
    /// `CNI_ARGS` as key → value.
    pub args: BTreeMap<String, String>,
    /// `CNI_ARGS` as it came, in the runtime's order.
    pub raw_args: String,
    /// The network configuration on stdin.
    pub stdin: Value,
    /// The plugin's stdout (`Null` when empty).
    pub stdout: Value,
    /// The plugin's exit code (`None`: still running or killed).
    pub exit_code: Option<i32>,
}

impl CniCall {
    /// The CNI error code of a failed call.
    pub fn error_code(&self) -> Option<u64> {
        self.stdout["code"].as_u64()
    }

    /// The pod address of a successful ADD (`ips[0].address` without the prefix length).
    pub fn ip(&self) -> Option<String> {
        self.stdout["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .map(str::to_owned)
    }

    /// Whether the runtime sent a `prevResult`.
    pub fn has_prev_result(&self) -> bool {
        self.stdin.get("prevResult").is_some_and(|v| !v.is_null())
    }
}

/// Writes the recording shim `bin_dir/<plugin>` that runs `real` and records
/// every call under `calls_dir`.
pub fn install_recorder(
    bin_dir: &Path,
    plugin: &str,
    real: &Path,
    calls_dir: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(bin_dir)?;
    std::fs::create_dir_all(calls_dir)?;
    let script = format!(
        r#"#!/bin/sh
# Records one CNI call for the hostnic end-to-end suite, then answers as {real}.
d=$(mktemp -d "{calls}/$(date +%s%N).XXXX") || exit 1
env | grep '^CNI_' > "$d/env"
cat > "$d/stdin"
"{real}" < "$d/stdin" > "$d/stdout"
rc=$?
echo "$rc" > "$d/rc"
cat "$d/stdout"
exit "$rc"
"#,
        real = real.display(),
        calls = calls_dir.display()
    );
    let path = bin_dir.join(plugin);
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, script)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Every recorded call, in the order they started.
pub fn read_calls(calls_dir: &Path) -> anyhow::Result<Vec<CniCall>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(calls_dir)
        .with_context(|| format!("read {}", calls_dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut calls = Vec::new();
    for dir in dirs {
        let env_text = std::fs::read_to_string(dir.join("env")).unwrap_or_default();
        let env: BTreeMap<&str, &str> =
            env_text.lines().filter_map(|l| l.split_once('=')).collect();
        let get = |k: &str| env.get(k).copied().unwrap_or_default().to_owned();
        let raw_args = get("CNI_ARGS");
        let args = raw_args
            .split(';')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let json = |name: &str| -> Value {
            let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            }
        };
        calls.push(CniCall {
            command: get("CNI_COMMAND"),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            args,
            raw_args,
            stdin: json("stdin"),
            stdout: json("stdout"),
            exit_code: std::fs::read_to_string(dir.join("rc"))
                .ok()
                .and_then(|s| s.trim().parse().ok()),
            dir,
        });
    }
    Ok(calls)
}

/// The calls for sandbox `container_id`, in order.
pub fn calls_for(calls_dir: &Path, container_id: &str) -> anyhow::Result<Vec<CniCall>> {
    Ok(read_calls(calls_dir)?
        .into_iter()
        .filter(|c| c.container_id == container_id)
        .collect())
}
