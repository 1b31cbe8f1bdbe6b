//! Runs a CNI plugin as a runtime does: `CNI_*` in a cleared environment, the
//! network configuration on stdin, the result (or error) on stdout.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// One invocation's parameters.
#[derive(Debug, Clone)]
pub struct CniCall<'a> {
    /// `ADD`, `DEL`, `CHECK`, `GC`, `STATUS`.
    pub verb: &'a str,
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_NETNS`.
    pub netns: &'a Path,
    /// The pod's namespace and name (in `CNI_ARGS`, as kubelet passes them).
    pub pod: (&'a str, &'a str),
    /// `CNI_PATH`.
    pub cni_path: &'a Path,
}

/// The environment of `call` (`CNI_IFNAME` is `eth0`; `PATH` is kept).
pub fn env(call: &CniCall<'_>) -> Vec<(&'static str, OsString)> {
    let (namespace, name) = call.pod;
    vec![
        ("PATH", std::env::var_os("PATH").unwrap_or_default()),
        ("CNI_COMMAND", call.verb.into()),
        ("CNI_CONTAINERID", call.container_id.into()),
        ("CNI_NETNS", call.netns.into()),
        ("CNI_IFNAME", "eth0".into()),
        (
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={}",
                call.container_id
            )
            .into(),
        ),
        ("CNI_PATH", call.cni_path.into()),
    ]
}

/// `binary` ready to run `call` (cleared environment, piped stdio).
pub fn command(binary: &Path, call: &CniCall<'_>) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary);
    command
        .env_clear()
        .envs(env(call))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// What one plugin invocation printed and how it exited.
#[derive(Debug)]
pub struct Invocation {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// The result or error JSON.
    pub stdout: String,
    /// The plugin's own diagnostics.
    pub stderr: String,
}

impl Invocation {
    /// Stdout as JSON; panics with the whole invocation if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Panics unless the plugin exited 0 and printed nothing (DEL, CHECK).
    pub fn assert_silent_success(&self, what: &str) {
        assert!(
            self.code == 0 && self.stdout.trim().is_empty(),
            "{what}: expected exit 0 and no output: exit {}, stdout {:?}, stderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
    }
}

/// Runs `binary` for `call` with `netconf` on stdin; panics when it cannot be
/// started or does not exit within `timeout`.
pub async fn invoke(
    binary: &Path,
    call: &CniCall<'_>,
    netconf: &serde_json::Value,
    timeout: Duration,
) -> Invocation {
    let mut child = command(binary, call)
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()));
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(netconf.to_string().as_bytes())
        .await
        .expect("write the network configuration");
    drop(stdin);
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the plugin did not exit within {timeout:?}"))
        .expect("wait for the plugin");
    Invocation {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
