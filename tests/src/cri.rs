//! A CRI client that calls containerd the way kubelet does, through the Python
//! driver `tests/cri/cri_driver.py` (generated CRI v1 stubs from PyPI): one
//! long-lived driver process per runtime, requests as JSON lines, answers
//! matched by id, so calls overlap as kubelet's do.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

use crate::bins;
use crate::images;

/// A CRI call that failed: the gRPC status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriError {
    /// The gRPC code's name (`UNKNOWN`, `NOT_FOUND`, …).
    pub code: String,
    /// The message, as kubelet logs it.
    pub details: String,
}

impl std::fmt::Display for CriError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CRI {}: {}", self.code, self.details)
    }
}

impl std::error::Error for CriError {}

/// One answer: the response or the error, and how long the call took.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The response (protobuf JSON, field names as in the .proto).
    pub result: Result<Value, CriError>,
    /// The gRPC call alone.
    pub elapsed: Duration,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Answer>>>>;

/// A CRI client of one runtime socket.
#[derive(Debug)]
pub struct Cri {
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    pending: Pending,
    next: AtomicU64,
    child: tokio::sync::Mutex<Child>,
}

/// What a test pod is, for its sandbox config.
#[derive(Debug, Clone)]
pub struct PodMeta {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod UID (the API server's).
    pub uid: String,
    /// Sandbox attempt (kubelet counts up when it replaces a sandbox).
    pub attempt: u32,
}

impl Cri {
    /// Starts the driver for the runtime at `socket`.
    pub async fn connect(socket: &Path) -> anyhow::Result<Self> {
        let python = bins::cri_python()?;
        let mut child = Command::new(&python)
            .arg(bins::cri_driver())
            .arg("--socket")
            .arg(socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start the CRI driver with {}", python.display()))?;
        let stdin = child.stdin.take().context("driver stdin")?;
        let stdout = child.stdout.take().context("driver stdout")?;
        let pending: Pending = Arc::default();
        let dispatch = pending.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("CRI driver: unreadable line {line}");
                    continue;
                };
                let Some(id) = v["id"].as_u64() else {
                    eprintln!("CRI driver: {line}");
                    continue;
                };
                let elapsed =
                    Duration::from_secs_f64(v["elapsed_ms"].as_f64().unwrap_or(0.0) / 1000.0);
                let result = if v.get("ok").is_some() {
                    Ok(v["ok"].clone())
                } else {
                    Err(CriError {
                        code: v["error"]["code"].as_str().unwrap_or("?").to_owned(),
                        details: v["error"]["details"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    })
                };
                let waiter = dispatch
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                if let Some(tx) = waiter {
                    let _ = tx.send(Answer { result, elapsed });
                }
            }
            // The driver is gone: fail whoever still waits.
            dispatch.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
        let cri = Self {
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            pending,
            next: AtomicU64::new(1),
            child: tokio::sync::Mutex::new(child),
        };
        cri.call("Version", json!({})).await.result?;
        Ok(cri)
    }

    /// Calls `method` with `request` (waits up to `timeout` for the answer).
    pub async fn call_with_timeout(
        &self,
        method: &str,
        request: Value,
        timeout: Duration,
    ) -> Answer {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let line = json!({"id": id, "method": method, "request": request,
                          "timeout": timeout.as_secs_f64()})
        .to_string()
            + "\n";
        let fail = |details: String| Answer {
            result: Err(CriError {
                code: "CLIENT".into(),
                details,
            }),
            elapsed: Duration::ZERO,
        };
        let written = match self.stdin.lock().await.as_mut() {
            Some(stdin) => stdin.write_all(line.as_bytes()).await,
            None => Err(std::io::Error::other("closed")),
        };
        if let Err(e) = written {
            return fail(format!("the CRI driver is gone: {e}"));
        }
        match tokio::time::timeout(timeout + Duration::from_secs(10), rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => fail("the CRI driver exited".into()),
            Err(_) => fail(format!("{method}: no answer within {timeout:?}")),
        }
    }

    /// Calls `method` with the default timeout (2 min, kubelet's runtime request timeout).
    pub async fn call(&self, method: &str, request: Value) -> Answer {
        self.call_with_timeout(method, request, Duration::from_secs(120))
            .await
    }

    /// RunPodSandbox; the sandbox id and how long it took.
    pub async fn run_pod_sandbox(&self, config: &Value) -> Result<(String, Duration), CriError> {
        let a = self.call("RunPodSandbox", json!({"config": config})).await;
        let v = a.result?;
        Ok((
            v["pod_sandbox_id"].as_str().unwrap_or_default().to_owned(),
            a.elapsed,
        ))
    }

    /// PodSandboxStatus: the status object.
    pub async fn sandbox_status(&self, id: &str) -> Result<Value, CriError> {
        let v = self
            .call("PodSandboxStatus", json!({"pod_sandbox_id": id}))
            .await
            .result?;
        Ok(v["status"].clone())
    }

    /// The sandbox's pod IP as PodSandboxStatus reports it (empty if none).
    pub async fn sandbox_ip(&self, id: &str) -> Result<String, CriError> {
        Ok(self.sandbox_status(id).await?["network"]["ip"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// StopPodSandbox.
    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<Duration, CriError> {
        let a = self
            .call("StopPodSandbox", json!({"pod_sandbox_id": id}))
            .await;
        a.result.map(|_| a.elapsed)
    }

    /// RemovePodSandbox.
    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<Duration, CriError> {
        let a = self
            .call("RemovePodSandbox", json!({"pod_sandbox_id": id}))
            .await;
        a.result.map(|_| a.elapsed)
    }

    /// ListPodSandbox: every sandbox the runtime has.
    pub async fn list_pod_sandboxes(&self) -> Result<Vec<Value>, CriError> {
        let v = self.call("ListPodSandbox", json!({})).await.result?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    /// Stops and removes every sandbox the runtime has, as kubelet does when
    /// its pods are gone; errors are collected, not fatal.
    pub async fn remove_all(&self) -> Vec<String> {
        let mut errors = Vec::new();
        match self.list_pod_sandboxes().await {
            Ok(items) => {
                for s in items {
                    let id = s["id"].as_str().unwrap_or_default();
                    if let Err(e) = self.stop_pod_sandbox(id).await {
                        errors.push(format!("stop {id}: {e}"));
                    }
                    if let Err(e) = self.remove_pod_sandbox(id).await {
                        errors.push(format!("remove {id}: {e}"));
                    }
                }
            }
            Err(e) => errors.push(format!("list: {e}")),
        }
        errors
    }

    /// CreateContainer (busybox running `command`) + StartContainer; the container id.
    pub async fn start_container(
        &self,
        sandbox_id: &str,
        sandbox_config: &Value,
        name: &str,
        command: &[&str],
    ) -> Result<String, CriError> {
        // A replacement sandbox's containers count their attempts with it, as
        // container names are unique per pod and attempt.
        let attempt = sandbox_config["metadata"]["attempt"].as_u64().unwrap_or(0);
        let config = json!({
            "metadata": {"name": name, "attempt": attempt},
            "image": {"image": images::BUSYBOX},
            "command": command,
            "log_path": format!("{name}.log"),
            "linux": {},
        });
        let v = self
            .call(
                "CreateContainer",
                json!({"pod_sandbox_id": sandbox_id, "config": config,
                       "sandbox_config": sandbox_config}),
            )
            .await
            .result?;
        let id = v["container_id"].as_str().unwrap_or_default().to_owned();
        self.call("StartContainer", json!({"container_id": id}))
            .await
            .result?;
        Ok(id)
    }

    /// ExecSync: (exit code, stdout, stderr).
    pub async fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[&str],
        timeout: Duration,
    ) -> Result<(i64, String, String), CriError> {
        let v = self
            .call_with_timeout(
                "ExecSync",
                json!({"container_id": container_id, "cmd": cmd, "timeout": timeout.as_secs()}),
                timeout + Duration::from_secs(10),
            )
            .await
            .result?;
        let text = |k: &str| {
            let raw = v[k].as_str().unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(raw)
                .unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        Ok((
            v["exit_code"].as_i64().unwrap_or(0),
            text("stdout"),
            text("stderr"),
        ))
    }

    /// Ends the driver once the calls in flight answered (5 s at most).
    pub async fn close(&self) {
        drop(self.stdin.lock().await.take());
        let mut child = self.child.lock().await;
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// The PodSandboxConfig kubelet sends for `pod`: metadata, hostname, log
/// directory, the pod's cgroup under `cgroup_parent`, pod network namespace.
pub fn sandbox_config(pod: &PodMeta, cgroup_parent: &str, log_root: &Path) -> Value {
    json!({
        "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid,
                     "attempt": pod.attempt},
        "hostname": pod.name,
        "log_directory": log_root.join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid)),
        "labels": {"io.kubernetes.pod.name": pod.name, "io.kubernetes.pod.namespace": pod.namespace,
                   "io.kubernetes.pod.uid": pod.uid},
        "linux": {
            "cgroup_parent": format!("{cgroup_parent}/pod{}", pod.uid),
            "security_context": {"namespace_options": {"network": "POD", "pid": "CONTAINER", "ipc": "POD"}},
        },
    })
}
