//! The JSON documents of the agent's introspection endpoints (`/v1/status`,
//! `/v1/nics`, `/v1/pods`, `/v1/policy`, `/v1/policy/pods/{namespace}/{name}`):
//! the agent serves them, `hostnicctl` reads them with these same types and
//! prints tables. Adding a field is compatible; renaming one is not.

use serde::{Deserialize, Serialize};

use crate::config::PoolConfig;
use crate::pool::{CloudLink, NodeState, Usage};
use crate::reconcile::UsageCounts;

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
    /// The agent's version and commit (empty from agents older than the field).
    #[serde(default)]
    pub build: Build,
    /// How pods get their addresses: `exclusive` (a NIC per pod).
    #[serde(default)]
    pub mode: String,
    /// Why `/readyz` says not ready although the pool could serve (another CNI
    /// configuration sorts before hostnic's, the checkpoint cannot be written…).
    #[serde(default)]
    pub not_ready: Vec<String>,
}

/// Which build of hostnic answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    /// The crate version, e.g. `0.1.0`.
    pub version: String,
    /// The git commit it was built from (`unknown` outside a git checkout).
    pub commit: String,
}

/// `/v1/status` (503) and `/readyz` while the agent is starting: where the start
/// is, and the last error that held it up, with its cause and what fixes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Startup {
    /// The step the start is at, e.g. `resolving the instance`.
    pub step: String,
    /// Attempts of this step so far.
    pub attempts: u32,
    /// The last failure, if any.
    pub error: Option<StartupError>,
    /// Seconds until the next attempt (`None`: not retried; see
    /// [`Startup::restart_would_help`]).
    pub next_attempt_in_secs: Option<u64>,
    /// Set when restarting the agent would help (a file it read at start changed
    /// since): `/healthz` then fails, so the kubelet restarts it.
    pub restart_would_help: Option<String>,
    /// The agent's build.
    pub build: Build,
}

/// A start-up failure, as the operator needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartupError {
    /// The step that failed.
    pub step: String,
    /// The error itself (endpoint and OS or API error included).
    pub message: String,
    /// What it means, in one line.
    pub cause: String,
    /// What to do about it.
    pub fix: String,
    /// Trying again without a change will not help: retried rarely.
    pub permanent: bool,
    /// When the step first failed (ms since the epoch).
    pub since_ms: u64,
}

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed: {}\n  cause: {}\n  fix: {}",
            self.step, self.message, self.cause, self.fix
        )
    }
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

impl Pool {
    /// The pool's numbers from its counts, its settings and the agent's demand.
    pub fn new(c: &UsageCounts, cfg: &PoolConfig, waiting_adds: u32, pending_pods: u32) -> Self {
        Self {
            free: c.free,
            assigned: c.assigned,
            cooling: c.cooling,
            preparing: c.preparing,
            retiring: c.retiring,
            creating: c.creating,
            min_free: cfg.min_free,
            max_free: cfg.max_free,
            max_nics: cfg.max_nics,
            waiting_adds,
            pending_pods,
        }
    }
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

/// `/v1/policy`: NetworkPolicy enforcement on this node.
///
/// **Contract** (the lab waits on it): `synced_resource_version` is the highest API
/// `resourceVersion` whose effect is programmed in the node's nftables; it only
/// grows, and only after a sync of a view that included that version committed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// Enforcement is on (`--network-policy` with `--pods kube`).
    pub enabled: bool,
    /// The source listed policies, namespaces and pods at least once.
    pub source_synced: bool,
    /// NetworkPolicies in the cluster.
    pub policies: usize,
    /// Namespaces in the cluster.
    pub namespaces: usize,
    /// Pods policies can refer to (cluster-wide).
    pub cluster_pods: usize,
    /// This node's pods under enforcement (known to the compiler) at the last sync.
    pub local_pods: usize,
    /// Of those, the pods isolated in at least one direction.
    pub isolated_local_pods: usize,
    /// Rules in the per pod chains.
    pub rules: usize,
    /// Elements in the peer sets.
    pub set_elements: usize,
    /// The `resourceVersion` the source's view is current up to (every watch has
    /// delivered every change up to it).
    pub source_resource_version: u64,
    /// The highest `resourceVersion` whose effect is programmed (see the type's docs).
    pub synced_resource_version: u64,
    /// Syncs run (successful or not).
    pub syncs: u64,
    /// Syncs that failed.
    pub sync_errors: u64,
    /// When the last sync ended (ms since the epoch).
    pub last_sync_at_ms: Option<u64>,
    /// How long the last sync's dataplane transaction took, in milliseconds.
    pub last_sync_duration_ms: Option<f64>,
    /// What the last successful sync changed.
    pub last_sync: Option<PolicySyncStats>,
    /// The last sync's error, if it failed.
    pub last_error: Option<String>,
}

/// What one sync changed in nftables (the dataplane's [`ProgramStats`](crate::policy::ProgramStats)).
pub type PolicySyncStats = crate::policy::ProgramStats;

/// `/v1/policy/pods/{namespace}/{name}`: a pod's effective policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPolicy {
    /// `namespace/name`.
    pub pod: String,
    /// Its address, if known.
    pub ip: Option<String>,
    /// Policies selecting it (`namespace/name`).
    pub policies: Vec<String>,
    /// Traffic into the pod.
    pub ingress: DirectionPolicy,
    /// Traffic out of the pod.
    pub egress: DirectionPolicy,
}

/// A pod's policy in one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionPolicy {
    /// Only what `allow` lists (and replies) passes; false: everything passes.
    pub isolated: bool,
    /// What is allowed.
    pub allow: Vec<AllowedPeers>,
}

/// One allowed class of connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedPeers {
    /// `any`, `pods`, `cidr A except B,C` or `named ports`.
    pub peer: String,
    /// The peer addresses (pods with their names; `ip proto/port` for named ports).
    pub addresses: Vec<String>,
    /// Destination ports such as `TCP/80` or `UDP/1000-2000`; empty: every port.
    pub ports: Vec<String>,
}

/// The effective policy of `pod` in `compiled`, if it knows the pod.
pub fn pod_policy(
    compiled: &crate::policy::CompiledPolicy,
    pod: &crate::policy::PodRef,
) -> Option<PodPolicy> {
    use crate::policy::{Allow, DirectionRules, PeerMatch};
    let rules = compiled.pods.get(pod)?;
    let name_of = |ip: &std::net::Ipv4Addr| match compiled.by_ip.get(ip) {
        Some(p) => format!("{ip} ({p})"),
        None => ip.to_string(),
    };
    let allowed = |a: &Allow| {
        let (peer, addresses) = match &a.peer {
            PeerMatch::Any => ("any".to_string(), Vec::new()),
            PeerMatch::Pods(id) => (
                "pods".to_string(),
                compiled
                    .pod_sets
                    .get(id)
                    .map(|s| s.iter().map(name_of).collect())
                    .unwrap_or_default(),
            ),
            PeerMatch::Block { cidr, except } => {
                let mut s = format!("cidr {cidr}");
                if !except.is_empty() {
                    let ex: Vec<String> = except.iter().map(|e| e.to_string()).collect();
                    s.push_str(&format!(" except {}", ex.join(",")));
                }
                (s, Vec::new())
            }
            PeerMatch::Endpoints(id) => (
                "named ports".to_string(),
                compiled
                    .endpoint_sets
                    .get(id)
                    .map(|s| {
                        s.iter()
                            .map(|e| {
                                format!("{} {}/{}", name_of(&e.ip), e.protocol.as_str(), e.port)
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
        };
        let ports = a
            .ports
            .iter()
            .flatten()
            .map(|r| {
                if r.is_all() {
                    r.protocol.as_str().to_string()
                } else if r.first == r.last {
                    format!("{}/{}", r.protocol.as_str(), r.first)
                } else {
                    format!("{}/{}-{}", r.protocol.as_str(), r.first, r.last)
                }
            })
            .collect();
        AllowedPeers {
            peer,
            addresses,
            ports,
        }
    };
    let direction = |d: &DirectionRules| DirectionPolicy {
        isolated: d.isolated,
        allow: d.allow.iter().map(allowed).collect(),
    };
    Some(PodPolicy {
        pod: pod.to_string(),
        ip: rules.ip.map(|ip| ip.to_string()),
        policies: rules.policies.clone(),
        ingress: direction(&rules.ingress),
        egress: direction(&rules.egress),
    })
}

fn link_name(link: CloudLink) -> &'static str {
    match link {
        CloudLink::Unattached => "unattached",
        CloudLink::Attaching => "attaching",
        CloudLink::Attached => "attached",
        CloudLink::Detaching => "detaching",
        CloudLink::Deleting => "deleting",
        CloudLink::Uncertain { .. } => "uncertain",
    }
}

/// The `/v1/nics` document of `state`.
pub fn nics(state: &NodeState) -> Vec<Nic> {
    state
        .nics()
        .values()
        .map(|n| {
            let (usage, pod) = match &n.usage {
                Usage::Free { .. } => ("free", None),
                Usage::Cooling { .. } => ("cooling", None),
                Usage::Retiring => ("retiring", None),
                Usage::Assigned { to } => (
                    "assigned",
                    Some(
                        state
                            .attachment(to)
                            .map(|a| a.pod.display_name())
                            .unwrap_or_else(|| to.to_string()),
                    ),
                ),
            };
            Nic {
                id: n.id.to_string(),
                ip: n.ip.to_string(),
                vxnet: n.vxnet.to_string(),
                table: n.table,
                link: link_name(n.link).into(),
                host_ready: n.host_ready,
                usage: usage.into(),
                pod,
            }
        })
        .collect()
}

/// The `/v1/pods` document of `state`.
pub fn pods(state: &NodeState) -> Vec<Pod> {
    state
        .attachments()
        .values()
        .map(|a| Pod {
            namespace: a.pod.namespace.clone(),
            name: a.pod.name.clone(),
            container_id: a.pod.container_id.clone(),
            ifname: a.pod.ifname.clone(),
            ip: a.ip.to_string(),
            nic: a.nic.to_string(),
            table: a.table,
            host_veth: a.plumbed.as_ref().map(|p| p.host_veth.clone()),
            netns: a.netns.clone(),
            assigned_at_ms: a.assigned_at.0,
        })
        .collect()
}
