//! A `hostnic-lab` brought up for one test and taken down however the test ends,
//! read through its `lab.json` contract (docs/lab.md), and its Kubernetes API server.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::bins;

/// `DIR/lab.json`: the part the suites read.
#[derive(Debug, Clone, Deserialize)]
pub struct LabFile {
    /// One entry per node.
    pub nodes: Vec<NodeEntry>,
    /// A VPC host outside the cluster.
    pub client: HostEntry,
    /// A host outside the VPC.
    pub internet: HostEntry,
    /// The kubeconfig of the lab's API server.
    pub kubeconfig: Option<PathBuf>,
}

/// A node of the lab.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeEntry {
    /// `node1`, …
    pub name: String,
    /// Its network namespace.
    pub netns: PathBuf,
    /// Its primary address.
    pub primary_ip: Ipv4Addr,
    /// The agent's socket.
    pub socket: PathBuf,
    /// The conflist the agent wrote.
    pub conflist: PathBuf,
    /// Where the agent installed the plugin.
    pub cni_bin_dir: PathBuf,
    /// The agent's state directory.
    pub state_dir: PathBuf,
    /// `http://127.0.0.1:PORT/metrics` of the agent.
    pub metrics_url: String,
    /// The agent's pid, if one runs.
    pub pid: Option<u32>,
}

impl NodeEntry {
    /// The agent's CNI configuration directory.
    pub fn conf_dir(&self) -> PathBuf {
        self.conflist
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// The agent's HTTP base, `http://127.0.0.1:PORT`.
    pub fn agent_url(&self) -> String {
        self.metrics_url.trim_end_matches("/metrics").to_owned()
    }
}

/// A host of the lab that is not a node.
#[derive(Debug, Clone, Deserialize)]
pub struct HostEntry {
    /// Its network namespace.
    pub netns: PathBuf,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// A running lab; `down` when dropped.
#[derive(Debug)]
pub struct Lab {
    /// The lab directory.
    pub dir: PathBuf,
    /// What `up` printed (and `lab.json` holds).
    pub file: LabFile,
    api: Api,
}

/// Runs `hostnic-lab ARGS`; its stdout, or an error with both streams.
pub fn lab_cmd(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bins::binary("hostnic-lab")?)
        .args(args)
        .output()
        .context("run hostnic-lab")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "hostnic-lab {}: {}\n{stdout}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

impl Lab {
    /// `hostnic-lab up --nodes N` in a fresh directory under `/tmp` named after `name`.
    pub fn up(name: &str, nodes: usize) -> anyhow::Result<Self> {
        let dir = PathBuf::from(format!("/tmp/hostnic-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let d = dir.display().to_string();
        let out = lab_cmd(&["up", "--dir", &d, "--nodes", &nodes.to_string()])?;
        let file: LabFile = serde_json::from_str(&out).context("parse what `up` printed")?;
        let kubeconfig = file
            .kubeconfig
            .clone()
            .context("the lab has no kubeconfig (no API server)")?;
        let api = Api::from_kubeconfig(&kubeconfig)?;
        Ok(Self { dir, file, api })
    }

    /// The lab directory as a string, for command lines.
    pub fn dir_arg(&self) -> String {
        self.dir.display().to_string()
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> &NodeEntry {
        self.file
            .nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in the lab"))
    }

    /// The lab's Kubernetes API server.
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// `hostnic-lab ARGS --dir DIR`.
    pub fn cmd(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all: Vec<&str> = args.to_vec();
        let dir = self.dir_arg();
        all.extend(["--dir", &dir]);
        lab_cmd(&all)
    }

    /// Restarts the agent of `node` with `pool` keys merged into its config file
    /// (`DIR/nodes/NODE/agent.yaml`) and `top` keys set at its top level.
    pub fn reconfigure_agent(&self, node: &str, top: &[(&str, Value)]) -> anyhow::Result<()> {
        let path = self.dir.join("nodes").join(node).join("agent.yaml");
        let text = std::fs::read_to_string(&path)?;
        let mut config: Value = serde_yaml::from_str(&text)?;
        for (key, value) in top {
            if let (Some(old), Some(new)) = (
                config.get_mut(*key).and_then(Value::as_object_mut),
                value.as_object(),
            ) {
                for (k, v) in new {
                    old.insert(k.clone(), v.clone());
                }
            } else {
                config[*key] = value.clone();
            }
        }
        self.cmd(&["agent", "stop", "--node", node])?;
        std::fs::write(&path, serde_yaml::to_string(&config)?)?;
        self.cmd(&["agent", "start", "--node", node])?;
        Ok(())
    }

    /// The agent's pid on `node` now (lab.json is rewritten by `agent start|stop`).
    pub fn agent_pid(&self, node: &str) -> anyhow::Result<Option<u32>> {
        let file: LabFile =
            serde_json::from_str(&std::fs::read_to_string(self.dir.join("lab.json"))?)?;
        Ok(file
            .nodes
            .into_iter()
            .find(|n| n.name == node)
            .and_then(|n| n.pid))
    }

    /// `GET <agent>/v1/<what>` on `node`.
    pub async fn agent_get(&self, node: &str, what: &str) -> anyhow::Result<Value> {
        let url = format!("{}/v1/{what}", self.node(node).agent_url());
        get_json(&url).await
    }

    /// The pods the agent of `node` holds, as `namespace/name@container_id`.
    pub async fn agent_pods(&self, node: &str) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .agent_get(node, "pods")
            .await?
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// `hostnic-lab leaks`: NICs attached to no instance, pod veths and rules,
    /// policy chains. Waits up to `wait` for the agents to settle.
    pub fn leaks(&self, wait: Duration) -> anyhow::Result<()> {
        self.cmd(&["leaks", "--wait-s", &wait.as_secs().to_string()])
            .map(|_| ())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let dir = self.dir_arg();
        if std::env::var_os("HOSTNIC_E2E_KEEP").is_some() {
            eprintln!("HOSTNIC_E2E_KEEP: the lab in {dir} stays up");
            return;
        }
        match lab_cmd(&["down", "--dir", &dir]) {
            Ok(_) => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
            Err(e) => eprintln!("hostnic-lab down: {e:#} (the lab directory {dir} is kept)"),
        }
    }
}

fn http() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("an HTTP client")
    })
}

/// GETs JSON from a loopback URL.
pub async fn get_json(url: &str) -> anyhow::Result<Value> {
    let response = http()
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("GET {url}: not JSON: {body}"))
}

/// The lab's Kubernetes API server, over plain HTTP on loopback.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    token: String,
}

impl Api {
    /// The server and token of a kubeconfig's first cluster and user.
    pub fn from_kubeconfig(path: &Path) -> anyhow::Result<Self> {
        let config: Value = serde_yaml::from_str(&std::fs::read_to_string(path)?)?;
        let base = config["clusters"][0]["cluster"]["server"]
            .as_str()
            .context("kubeconfig without a server")?
            .trim_end_matches('/')
            .to_owned();
        let token = config["users"][0]["user"]["token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Ok(Self { base, token })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = http()
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Accept", "application/json");
        if let Some(body) = body {
            let content_type = if method == reqwest::Method::PATCH {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            request = request
                .header("Content-Type", content_type)
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// Creates a Pod bound to `node` with `labels`, as the scheduler leaves it
    /// for kubelet; returns it (its `metadata.uid` is what kubelet passes on).
    pub async fn create_pod(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<Value> {
        self.ensure_namespace(namespace).await?;
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "nodeName": node,
                "containers": [{"name": "main", "image": crate::images::BUSYBOX,
                                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}],
            },
            "status": {"phase": "Pending"},
        });
        let path = format!("/api/v1/namespaces/{namespace}/pods");
        match self.call(reqwest::Method::POST, &path, Some(&pod)).await? {
            (201 | 200, v) => Ok(v),
            (s, v) => bail!("create pod {namespace}/{name}: HTTP {s}: {v}"),
        }
    }

    /// Sets a pod's `status.podIP` and phase Running, as kubelet does once its
    /// sandbox is ready.
    pub async fn set_pod_running(
        &self,
        namespace: &str,
        name: &str,
        ip: Ipv4Addr,
    ) -> anyhow::Result<()> {
        let path = format!("/api/v1/namespaces/{namespace}/pods/{name}/status");
        let patch = json!({"status": {"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]}});
        match self
            .call(reqwest::Method::PATCH, &path, Some(&patch))
            .await?
        {
            (200, _) => Ok(()),
            (s, v) => bail!("patch {path}: HTTP {s}: {v}"),
        }
    }

    /// Deletes a pod (gone already is fine).
    pub async fn delete_pod(&self, namespace: &str, name: &str) -> anyhow::Result<()> {
        let path = format!("/api/v1/namespaces/{namespace}/pods/{name}");
        match self.call(reqwest::Method::DELETE, &path, None).await? {
            (200 | 202 | 404, _) => Ok(()),
            (s, v) => bail!("delete {path}: HTTP {s}: {v}"),
        }
    }

    /// Creates a namespace (with its name label) unless it exists.
    pub async fn ensure_namespace(&self, name: &str) -> anyhow::Result<()> {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}});
        match self
            .call(reqwest::Method::POST, "/api/v1/namespaces", Some(&ns))
            .await?
        {
            (200 | 201 | 409, _) => Ok(()),
            (s, v) => bail!("create namespace {name}: HTTP {s}: {v}"),
        }
    }
}
