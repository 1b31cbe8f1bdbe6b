//! The one way this crate runs `nft`: a child process with arguments and,
//! optionally, a ruleset on stdin; its stdout on success, its stderr in the
//! error otherwise. Callers that need another namespace run it from a thread
//! inside it ([`NetNs::run`](crate::NetNs::run), [`NetNs::run_blocking`](crate::NetNs::run_blocking)).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::LinuxError;

/// Runs `program args…` (the `nft` binary), writing `stdin` to it when given.
/// Blocks until it exits.
pub(crate) fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, LinuxError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LinuxError::Nftables(format!("run {program}: {e}")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| LinuxError::Nftables(format!("write to {program}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| LinuxError::Nftables(format!("wait for {program}: {e}")))?;
    if !out.status.success() {
        return Err(LinuxError::Nftables(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Applies a JSON ruleset (`nft -j -f -`) as one transaction.
pub(crate) fn apply_json(program: &str, ruleset: &serde_json::Value) -> Result<(), LinuxError> {
    run(program, &["-j", "-f", "-"], Some(&ruleset.to_string())).map(|_| ())
}
