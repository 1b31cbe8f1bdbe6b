//! The JSON documents of the introspection endpoints (`/v1/status`, `/v1/nics`,
//! `/v1/pods`), which `hostnicctl status|pool|nics|pods` prints as tables.

use serde::{Deserialize, Serialize};

/// `/v1/status`: the node and its pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The instance id.
    pub instance: String,
    /// The primary NIC (MAC).
    pub primary_nic: String,
    /// The primary address.
    pub primary_ip: String,
    /// Pod vxnets in order of preference.
    pub vxnets: Vec<String>,
    /// The agent can serve an ADD.
    pub ready: bool,
    /// The last pool round had no failure.
    pub cloud_ok: bool,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
    /// The pool.
    pub pool: Pool,
    /// Pod attachments.
    pub pods: u32,
    /// Failures of the last pool round.
    pub last_round_failures: Vec<String>,
    /// When the last reconcile finished (ms since the epoch), if any.
    pub last_reconcile_at_ms: Option<u64>,
}

/// The pool's numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// Ready for a pod.
    pub free: u32,
    /// Holding a pod.
    pub assigned: u32,
    /// In the IP cooldown.
    pub cooling: u32,
    /// Being attached or prepared.
    pub preparing: u32,
    /// Being detached or deleted.
    pub retiring: u32,
    /// Being created.
    pub creating: u32,
    /// Setting `min_free`.
    pub min_free: u32,
    /// Setting `max_free`.
    pub max_free: u32,
    /// Setting `max_nics`.
    pub max_nics: u32,
    /// ADDs waiting for a NIC.
    pub waiting_adds: u32,
    /// Pods pending on the node.
    pub pending_pods: u32,
}

/// One NIC in `/v1/nics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// The NIC id (MAC).
    pub id: String,
    /// Its address.
    pub ip: String,
    /// Its vxnet.
    pub vxnet: String,
    /// Its route table.
    pub table: u32,
    /// Cloud lifecycle (`attached`, `attaching`, …).
    pub link: String,
    /// Prepared on the host.
    pub host_ready: bool,
    /// `free`, `cooling`, `assigned` or `retiring`.
    pub usage: String,
    /// The pod holding it, as `namespace/name` or the container id.
    pub pod: Option<String>,
}

/// One pod attachment in `/v1/pods`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    /// Kubernetes namespace (may be empty).
    pub namespace: String,
    /// Pod name (may be empty).
    pub name: String,
    /// Container id.
    pub container_id: String,
    /// Interface in the sandbox.
    pub ifname: String,
    /// The pod's address.
    pub ip: String,
    /// The NIC holding it.
    pub nic: String,
    /// The NIC's table.
    pub table: u32,
    /// The host veth, once plumbed.
    pub host_veth: Option<String>,
    /// The sandbox netns.
    pub netns: String,
    /// When the NIC was assigned (ms since the epoch).
    pub assigned_at_ms: u64,
}
