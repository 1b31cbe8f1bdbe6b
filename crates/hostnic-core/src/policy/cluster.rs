//! What the compiler needs to know about the cluster: pods (namespace, name,
//! labels, IP, container ports) and namespaces (labels).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::model::Protocol;

/// A pod by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodRef {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
}

impl PodRef {
    /// A reference from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl std::str::FromStr for PodRef {
    type Err = String;
    /// Parses `namespace/name`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self::new(ns, name))
            }
            _ => Err(format!("expected namespace/name, got {s:?}")),
        }
    }
}

/// A container port a pod declares; named ports in policies resolve against these.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// The port's name (`serve-80-tcp`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The port number.
    pub container_port: u16,
    /// TCP when absent.
    #[serde(default)]
    pub protocol: Protocol,
}

/// A pod as the policy compiler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPod {
    /// Namespace and name.
    pub pod: PodRef,
    /// The pod's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The pod's IP; a pod without one is selected by policies but is nobody's peer.
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// Container ports of all its containers.
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

/// A namespace and its labels (`kubernetes.io/metadata.name` included, as the
/// API server sets it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyNamespace {
    /// Namespace name.
    pub name: String,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl PolicyNamespace {
    /// A namespace with only the `kubernetes.io/metadata.name` label.
    pub fn named(name: impl Into<String>) -> Self {
        let name = name.into();
        let labels = BTreeMap::from([("kubernetes.io/metadata.name".to_string(), name.clone())]);
        Self { name, labels }
    }
}

/// Everything the compiler reads about the cluster, as one consistent value: what
/// a policy source (the Kubernetes watches) hands the agent on each change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// Every NetworkPolicy of the cluster.
    pub policies: Vec<super::model::NetworkPolicy>,
    /// Every namespace with its labels.
    pub namespaces: Vec<PolicyNamespace>,
    /// The pods policies can select or name as peers (all namespaces).
    pub pods: Vec<PolicyPod>,
    /// The API `resourceVersion` this view is current up to (0 when unknown): it
    /// includes the effect of every write with a version up to this one.
    pub resource_version: u64,
}
