//! `DIR/lab.json` (the contract other tools read), the lab's private state
//! `DIR/lab-state.json`, and the per-pod records `DIR/pods/*.json`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// `DIR/lab.json`. Its shape is a stable contract: add nothing without telling
/// the tools that read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabFile {
    /// `http://127.0.0.1:PORT/iaas/`.
    pub sim_url: String,
    /// A `config.yaml` in the `qcsecret` format pointing at the simulator.
    pub credentials: PathBuf,
    /// One entry per node.
    pub nodes: Vec<NodeEntry>,
    /// A VPC host in `vxnet-sim2`, outside the cluster.
    pub client: HostEntry,
    /// A host outside the VPC.
    pub internet: HostEntry,
    /// A kubeconfig for the lab's Kubernetes API server (the agents run with
    /// `--pods kube` against it); none in a lab started with `--no-agents`.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
}

/// A node of the lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeEntry {
    /// `node1`, `node2`, …
    pub name: String,
    /// The simulator's instance id.
    pub instance_id: String,
    /// Path of the node's network namespace.
    pub netns: PathBuf,
    /// Address of its primary NIC `eth0`.
    pub primary_ip: Ipv4Addr,
    /// The agent's socket.
    pub socket: PathBuf,
    /// The conflist the node's runtime uses.
    pub conflist: PathBuf,
    /// Where the CNI binaries of the node are.
    pub cni_bin_dir: PathBuf,
    /// The agent's state directory.
    pub state_dir: PathBuf,
    /// The agent's metrics URL.
    pub metrics_url: String,
    /// The agent's introspection endpoint (`/v1/*`), e.g. for `hostnicctl --url`.
    #[serde(default)]
    pub introspection_url: String,
    /// The agent's process id, only while it runs (none before it served, after it
    /// was stopped, or when it exited while starting).
    pub pid: Option<u32>,
}

/// A host of the lab that is not a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostEntry {
    /// Path of its network namespace.
    pub netns: PathBuf,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// What only the lab itself needs: `DIR/lab-state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    /// Prefix of every namespace of this lab.
    pub prefix: String,
    /// The lab daemon (simulator + fabric hook).
    pub daemon_pid: u32,
    /// The internet network.
    pub internet_cidr: ipnet::Ipv4Net,
    /// `http://127.0.0.1:PORT` of the fake Kubernetes API server in the daemon.
    #[serde(default)]
    pub apiserver_url: Option<String>,
}

/// A pod created by `hostnic-lab pod add`: `DIR/pods/<node>_<ns>_<name>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    /// The node.
    pub node: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// The container id given to the CNI plugin.
    pub container_id: String,
    /// Path of the pod's network namespace.
    pub netns: PathBuf,
    /// Its address, from the CNI result.
    pub ip: Ipv4Addr,
    /// Its name in the API server when it differs from `name` (a pod of the
    /// same `NS/NAME` exists on another node: Kubernetes names are unique).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_name: Option<String>,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its container ports (TCP ones have a listener).
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
    /// The listener process serving the TCP ports inside the pod's namespace.
    #[serde(default)]
    pub listener_pid: Option<u32>,
}

impl PodRecord {
    /// The pod's name in the API server.
    pub fn api_name(&self) -> &str {
        self.k8s_name.as_deref().unwrap_or(&self.name)
    }
}

/// A container port of a lab pod, as in the Pod object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContainerPort {
    /// `serve-<port>-<proto>` by convention.
    pub name: String,
    /// The port.
    #[serde(rename = "containerPort")]
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    #[serde(default = "tcp")]
    pub protocol: String,
}

impl ContainerPort {
    /// A TCP port named `serve-<port>-tcp`.
    pub fn tcp(port: u16) -> Self {
        Self {
            name: format!("serve-{port}-tcp"),
            port,
            protocol: "TCP".into(),
        }
    }
}

fn tcp() -> String {
    "TCP".into()
}

/// Namespace prefix of the lab in `dir`: `hl-` and 4 hex digits of a hash of the
/// directory's path, so a crashed run's leftovers are found again by the next `up`.
pub fn prefix_for(dir: &Path) -> String {
    // FNV-1a: stable across Rust versions, unlike DefaultHasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in dir.as_os_str().as_encoded_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("hl-{:04x}-", (h ^ (h >> 16)) & 0xffff)
}

/// The absolute form of `dir`, created if missing.
pub fn lab_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::canonicalize(dir).with_context(|| format!("resolve {}", dir.display()))
}

/// `DIR/lab.json`.
pub fn lab_json(dir: &Path) -> PathBuf {
    dir.join("lab.json")
}

/// `DIR/lab-state.json`.
pub fn state_json(dir: &Path) -> PathBuf {
    dir.join("lab-state.json")
}

/// `DIR/pods`.
pub fn pods_dir(dir: &Path) -> PathBuf {
    dir.join("pods")
}

/// Reads a JSON file.
pub fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

/// Writes a JSON file atomically (temp file + rename), so readers never see half of it.
pub fn write<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(&tmp, text + "\n").with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
}

/// The running lab in `dir`: its `lab.json` and state.
pub fn load(dir: &Path) -> anyhow::Result<(LabFile, LabState)> {
    let lab =
        read(&lab_json(dir)).context("no lab is up in this directory (run `hostnic-lab up`)")?;
    let state = read(&state_json(dir))?;
    Ok((lab, state))
}

/// Every pod record of the lab, sorted by node then name.
pub fn pods(dir: &Path) -> anyhow::Result<Vec<PodRecord>> {
    let mut pods = Vec::new();
    let Ok(entries) = std::fs::read_dir(pods_dir(dir)) else {
        return Ok(pods);
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            pods.push(read::<PodRecord>(&path)?);
        }
    }
    pods.sort_by(|a, b| (&a.node, &a.namespace, &a.name).cmp(&(&b.node, &b.namespace, &b.name)));
    Ok(pods)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_a_lab_prefix_and_depends_on_the_directory() {
        let a = prefix_for(Path::new("/tmp/lab-a"));
        let b = prefix_for(Path::new("/tmp/lab-b"));
        assert_eq!(a, prefix_for(Path::new("/tmp/lab-a")));
        assert_ne!(a, b);
        assert!(a.starts_with("hl-") && a.ends_with('-') && a.len() == 8);
    }

    #[test]
    fn lab_json_has_the_documented_keys() {
        let lab = LabFile {
            sim_url: "http://127.0.0.1:1/iaas/".into(),
            credentials: "/d/credentials.yaml".into(),
            nodes: vec![NodeEntry {
                name: "node1".into(),
                instance_id: "i-sim00001".into(),
                netns: "/run/netns/hl-0000-node1".into(),
                primary_ip: Ipv4Addr::new(172, 16, 1, 2),
                socket: "/d/node1/agent.sock".into(),
                conflist: "/d/node1/net.d/10-hostnic.conflist".into(),
                cni_bin_dir: "/d/node1/bin".into(),
                state_dir: "/d/node1/state".into(),
                metrics_url: "http://127.0.0.1:2/metrics".into(),
                introspection_url: "http://127.0.0.1:2".into(),
                pid: Some(7),
            }],
            client: HostEntry {
                netns: "/run/netns/hl-0000-client".into(),
                ip: Ipv4Addr::new(172, 16, 2, 2),
            },
            internet: HostEntry {
                netns: "/run/netns/hl-0000-internet".into(),
                ip: Ipv4Addr::new(198, 51, 100, 2),
            },
            kubeconfig: Some("/d/kubeconfig".into()),
        };
        let v = serde_json::to_value(&lab).unwrap();
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(
            keys(&v),
            [
                "client",
                "credentials",
                "internet",
                "kubeconfig",
                "nodes",
                "sim_url"
            ]
        );
        assert_eq!(
            keys(&v["nodes"][0]),
            [
                "cni_bin_dir",
                "conflist",
                "instance_id",
                "introspection_url",
                "metrics_url",
                "name",
                "netns",
                "pid",
                "primary_ip",
                "socket",
                "state_dir"
            ]
        );
        assert_eq!(keys(&v["client"]), ["ip", "netns"]);
    }
}
