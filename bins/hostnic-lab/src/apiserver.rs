//! The lab's control plane as seen by the commands: a client of the fake
//! Kubernetes API server that the lab daemon hosts, and the wait for
//! enforcement (every agent's `GET /v1/policy` reporting a
//! `synced_resource_version` at least the resourceVersion of a write).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::http;
use crate::labfile::{self, ContainerPort, LabFile};

/// How long one request to the API server or an agent may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The label every namespace carries (the API server sets it in real clusters).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A client of the lab's API server.
#[derive(Debug, Clone)]
pub struct ApiServer {
    authority: String,
}

/// An answer that is not a success.
fn api_error(method: &str, path: &str, status: u16, body: &Value) -> anyhow::Error {
    let message = body["message"]
        .as_str()
        .map_or_else(|| body.to_string(), str::to_owned);
    anyhow::anyhow!("API server: {method} {path}: HTTP {status}: {message}")
}

impl ApiServer {
    /// The API server of the lab in `dir`.
    pub fn of_lab(dir: &Path) -> anyhow::Result<Self> {
        let (_, state) = labfile::load(dir)?;
        let url = state.apiserver_url.context(
            "this lab has no API server (started with --no-agents, or by an older hostnic-lab)",
        )?;
        Ok(Self {
            authority: http::authority(&url)?.to_owned(),
        })
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        http::request(&self.authority, method, path, body, REQUEST_TIMEOUT)
            .await
            .context("the lab's API server")
    }

    /// GETs an object; `None` when it does not exist.
    pub async fn get(&self, path: &str) -> anyhow::Result<Option<Value>> {
        match self.call("GET", path, None).await? {
            (200, v) => Ok(Some(v)),
            (404, _) => Ok(None),
            (s, v) => Err(api_error("GET", path, s, &v)),
        }
    }

    /// Creates `obj` in the collection at `collection`, or replaces it when it
    /// exists. Returns the stored object.
    pub async fn apply(&self, collection: &str, obj: &Value) -> anyhow::Result<Value> {
        let name = obj["metadata"]["name"]
            .as_str()
            .context("object without metadata.name")?;
        match self.call("POST", collection, Some(obj)).await? {
            (200 | 201, v) => Ok(v),
            (409, _) => {
                let path = format!("{collection}/{name}");
                match self.call("PUT", &path, Some(obj)).await? {
                    (200 | 201, v) => Ok(v),
                    (s, v) => Err(api_error("PUT", &path, s, &v)),
                }
            }
            (s, v) => Err(api_error("POST", collection, s, &v)),
        }
    }

    /// Merge-patches the object at `path`.
    pub async fn patch(&self, path: &str, patch: &Value) -> anyhow::Result<Value> {
        match self.call("PATCH", path, Some(patch)).await? {
            (200 | 201, v) => Ok(v),
            (s, v) => Err(api_error("PATCH", path, s, &v)),
        }
    }

    /// Deletes the object at `path`; the deleted object (its resourceVersion is
    /// the deletion's), `None` when it did not exist.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Option<Value>> {
        match self.call("DELETE", path, None).await? {
            (200 | 202, v) => Ok(Some(v)),
            (404, _) => Ok(None),
            (s, v) => Err(api_error("DELETE", path, s, &v)),
        }
    }

    /// Lists a collection: its items.
    pub async fn list(&self, collection: &str) -> anyhow::Result<Vec<Value>> {
        match self.call("GET", collection, None).await? {
            (200, v) => Ok(v["items"].as_array().cloned().unwrap_or_default()),
            (s, v) => Err(api_error("GET", collection, s, &v)),
        }
    }

    /// Creates or relabels a namespace (with its `kubernetes.io/metadata.name`
    /// label); its resourceVersion.
    pub async fn put_namespace(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> anyhow::Result<u64> {
        let mut labels = labels.clone();
        labels.insert(NAMESPACE_NAME_LABEL.into(), name.into());
        let obj = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        });
        Ok(resource_version(
            &self.apply("/api/v1/namespaces", &obj).await?,
        ))
    }

    /// Creates the namespace with just its name label if it does not exist; the
    /// resourceVersion of the write, if one was made.
    pub async fn ensure_namespace(&self, name: &str) -> anyhow::Result<Option<u64>> {
        if self
            .get(&format!("/api/v1/namespaces/{name}"))
            .await?
            .is_some()
        {
            return Ok(None);
        }
        self.put_namespace(name, &BTreeMap::new()).await.map(Some)
    }

    /// Creates or replaces a NetworkPolicy; its resourceVersion.
    pub async fn put_policy(&self, policy: &Value) -> anyhow::Result<u64> {
        let ns = policy["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let mut policy = policy.clone();
        policy["metadata"]["namespace"] = json!(ns);
        policy["apiVersion"] = json!("networking.k8s.io/v1");
        policy["kind"] = json!("NetworkPolicy");
        Ok(resource_version(
            &self.apply(&policies_path(ns), &policy).await?,
        ))
    }

    /// Deletes a NetworkPolicy; the deletion's resourceVersion (`None`: there was none).
    pub async fn delete_policy(&self, namespace: &str, name: &str) -> anyhow::Result<Option<u64>> {
        Ok(self
            .delete(&format!("{}/{name}", policies_path(namespace)))
            .await?
            .map(|v| resource_version(&v)))
    }

    /// Every NetworkPolicy of the cluster.
    pub async fn policies(&self) -> anyhow::Result<Vec<Value>> {
        self.list("/apis/networking.k8s.io/v1/networkpolicies")
            .await
    }
}

/// `/apis/networking.k8s.io/v1/namespaces/NS/networkpolicies`.
pub fn policies_path(namespace: &str) -> String {
    format!("/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies")
}

/// `/api/v1/namespaces/NS/pods`.
pub fn pods_path(namespace: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/pods")
}

/// The Pod object a runtime's kubelet would have: bound to `node`, with
/// `labels` and one container declaring `ports`, not running yet.
pub fn pod_object(
    namespace: &str,
    name: &str,
    node: &str,
    labels: &BTreeMap<String, String>,
    ports: &[ContainerPort],
) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "serve", "image": "hostnic-lab/listener", "ports": ports}],
        },
        "status": {"phase": "Pending"},
    })
}

/// `metadata.resourceVersion` as a number (0 if missing).
pub fn resource_version(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// What waiting for enforcement found when an agent cannot tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// An agent without `/v1/policy` is an error.
    Strict,
    /// An agent without `/v1/policy` is skipped with a warning.
    Lenient,
}

/// Waits until every running agent of the lab reports `synced_resource_version
/// >= rv` on `GET /v1/policy` (agents with policy disabled are skipped).
/// Polls every 5 ms; fails after `timeout` naming the agents that lag.
pub async fn wait_enforced(
    lab: &LabFile,
    rv: u64,
    timeout: Duration,
    strictness: Strictness,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut pending: Vec<(&str, String)> = Vec::new();
    for node in &lab.nodes {
        if node.pid.is_some_and(crate::agents::alive) {
            let url = if node.introspection_url.is_empty() {
                &node.metrics_url
            } else {
                &node.introspection_url
            };
            pending.push((&node.name, http::authority(url)?.to_owned()));
        }
    }
    if pending.is_empty() && strictness == Strictness::Strict {
        bail!("no agent runs in this lab: nothing enforces policy (use --no-wait)");
    }
    let mut last: BTreeMap<&str, String> = BTreeMap::new();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for (name, authority) in pending {
            let answer =
                http::request(&authority, "GET", "/v1/policy", None, REQUEST_TIMEOUT).await;
            match answer {
                Ok((200, v)) => {
                    if v["enabled"] == json!(false) {
                        continue;
                    }
                    let synced = v["synced_resource_version"].as_u64();
                    if synced.is_some_and(|s| s >= rv) {
                        continue;
                    }
                    let error = v["last_error"]
                        .as_str()
                        .map(|e| format!(", last error: {e}"))
                        .unwrap_or_default();
                    last.insert(
                        name,
                        format!(
                            "synced_resource_version {}{error}",
                            synced.map_or("null".into(), |s| s.to_string())
                        ),
                    );
                }
                Ok((404, _)) if strictness == Strictness::Lenient => {
                    tracing::warn!(
                        "the agent of {name} serves no /v1/policy: not waiting for it to enforce policy"
                    );
                    continue;
                }
                Ok((404, _)) => bail!(
                    "the agent of {name} serves no /v1/policy: it enforces no NetworkPolicy (a hostnic-agent without policy support?)"
                ),
                Ok((status, v)) => {
                    last.insert(name, format!("HTTP {status}: {v}"));
                }
                Err(e) => {
                    last.insert(name, format!("{e:#}"));
                }
            }
            still.push((name, authority));
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if started.elapsed() > timeout {
            let lagging: Vec<String> = pending
                .iter()
                .map(|(n, _)| format!("{n} ({})", last.get(n).map_or("no answer", String::as_str)))
                .collect();
            bail!(
                "policy not enforced within {timeout:?}: waiting for resourceVersion {rv} on {}",
                lagging.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(started.elapsed())
}

/// Parses `k=v,k2=v2` (empty: no labels).
pub fn parse_labels(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("label {pair:?} is not key=value"))?;
        if k.is_empty() {
            bail!("label {pair:?} has an empty key");
        }
        labels.insert(k.to_owned(), v.to_owned());
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_from_key_value_pairs() {
        let l = parse_labels("pod=a, app=web").unwrap();
        assert_eq!(l.get("pod").map(String::as_str), Some("a"));
        assert_eq!(l.get("app").map(String::as_str), Some("web"));
        assert!(parse_labels("").unwrap().is_empty());
        assert!(parse_labels("novalue").is_err());
        assert!(parse_labels("=x").is_err());
    }

    #[test]
    fn pod_objects_declare_named_ports_and_the_node() {
        let labels = parse_labels("pod=a").unwrap();
        let p = pod_object("x", "a", "node1", &labels, &[ContainerPort::tcp(80)]);
        assert_eq!(p["spec"]["nodeName"], "node1");
        assert_eq!(p["metadata"]["labels"]["pod"], "a");
        let port = &p["spec"]["containers"][0]["ports"][0];
        assert_eq!(port["name"], "serve-80-tcp");
        assert_eq!(port["containerPort"], 80);
        assert_eq!(port["protocol"], "TCP");
    }

    #[test]
    fn resource_versions_are_numbers() {
        assert_eq!(
            resource_version(&json!({"metadata": {"resourceVersion": "42"}})),
            42
        );
        assert_eq!(resource_version(&json!({})), 0);
    }
}
