//! Running `ip` (and friends) for the lab, and the lab's error type.

use std::process::Stdio;

use tokio::process::Command;

/// A lab operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command could not be started (e.g. iproute2 is not installed).
    #[error("cannot run {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A namespace could not be entered, created or deleted.
    #[error(transparent)]
    Netns(#[from] crate::NetnsError),
    /// Something the caller asked for does not exist or is not valid.
    #[error("{0}")]
    Invalid(String),
    /// An I/O error of a probe.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// Runs `program args…` and returns its stdout; a non-zero exit is an error.
pub async fn run(program: &str, args: &[&str]) -> Result<String, LabError> {
    let command = format!("{program} {}", args.join(" "));
    tracing::debug!(%command, "lab");
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(LabError::Failed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip -n NETNS args…`.
pub async fn ip_in(netns: &str, args: &[&str]) -> Result<String, LabError> {
    let mut all = vec!["-n", netns];
    all.extend_from_slice(args);
    run("ip", &all).await
}

/// Sets a sysctl inside a namespace (`ip netns exec NETNS sysctl -qw KEY=VALUE`).
pub async fn sysctl_in(netns: &str, key: &str, value: &str) -> Result<(), LabError> {
    let kv = format!("{key}={value}");
    run("ip", &["netns", "exec", netns, "sysctl", "-qw", &kv]).await?;
    Ok(())
}
