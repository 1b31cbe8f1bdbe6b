//! The compiler's output: for every pod, whether it is isolated in each
//! direction and what is allowed, with peers as shared, named sets so a pod
//! joining a selected namespace changes set elements, not any pod's rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::cluster::PodRef;
use super::model::Protocol;

/// Ingress (traffic into the pod) or egress (traffic out of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Into the pod.
    Ingress,
    /// Out of the pod.
    Egress,
}

impl Direction {
    /// `ingress` or `egress`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// Names a set of peers: the policy, the direction, the rule's index and either
/// the peer's index (a set of pod IPs) or `None` (the rule's named-port
/// endpoints, `ip . protocol . port`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SetId {
    /// Namespace of the policy.
    pub namespace: String,
    /// Name of the policy.
    pub policy: String,
    /// The rule list the set comes from.
    pub direction: Direction,
    /// Index of the rule in that list.
    pub rule: usize,
    /// Index of the peer in the rule, `None` for the rule's endpoint set.
    pub peer: Option<usize>,
}

impl fmt::Display for SetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}/",
            self.namespace,
            self.policy,
            self.direction.as_str(),
            self.rule
        )?;
        match self.peer {
            Some(p) => write!(f, "peer{p}"),
            None => f.write_str("named-ports"),
        }
    }
}

/// A destination port range of one protocol; `0..=65535` means every port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    /// The transport protocol.
    pub protocol: Protocol,
    /// First port, inclusive.
    pub first: u16,
    /// Last port, inclusive.
    pub last: u16,
}

impl PortRange {
    /// Every port of `protocol`.
    pub fn all(protocol: Protocol) -> Self {
        Self {
            protocol,
            first: 0,
            last: u16::MAX,
        }
    }

    /// One port.
    pub fn single(protocol: Protocol, port: u16) -> Self {
        Self {
            protocol,
            first: port,
            last: port,
        }
    }

    /// True for the whole port space of the protocol.
    pub fn is_all(&self) -> bool {
        self.first == 0 && self.last == u16::MAX
    }

    /// True when `protocol`/`port` falls in the range.
    pub fn contains(&self, protocol: Protocol, port: u16) -> bool {
        self.protocol == protocol && (self.first..=self.last).contains(&port)
    }
}

/// A pod endpoint a named port resolved to on a destination pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// The destination pod's IP.
    pub ip: Ipv4Addr,
    /// The container port's protocol.
    pub protocol: Protocol,
    /// The container port's number.
    pub port: u16,
}

/// Who is on the other side of an allowed connection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerMatch {
    /// Any address.
    Any,
    /// The pod IPs of a set in [`CompiledPolicy::pod_sets`].
    Pods(SetId),
    /// `cidr` minus the `except` ranges.
    Block {
        /// Allowed range.
        cidr: Ipv4Net,
        /// Carved-out ranges.
        except: Vec<Ipv4Net>,
    },
    /// Egress only: exact `ip . protocol . port` endpoints of a set in
    /// [`CompiledPolicy::endpoint_sets`] (named ports resolved on the destination);
    /// the allow's `ports` is then `None`.
    Endpoints(SetId),
}

/// One allowed class of connections: a peer and, unless `None`, destination ports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Allow {
    /// The other side.
    pub peer: PeerMatch,
    /// Allowed destination ports; `None` allows every port and protocol.
    pub ports: Option<Vec<PortRange>>,
}

/// A pod's policy in one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionRules {
    /// True when some policy selecting the pod has this policy type: only what
    /// `allow` lists (and replies) may pass. False: everything passes.
    pub isolated: bool,
    /// The union of all selecting policies' rules, sorted and deduplicated.
    pub allow: Vec<Allow>,
}

/// The effective policy of one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRules {
    /// The pod's IP, if known.
    pub ip: Option<Ipv4Addr>,
    /// Traffic into the pod.
    pub ingress: DirectionRules,
    /// Traffic out of the pod.
    pub egress: DirectionRules,
    /// Policies selecting the pod, as `namespace/name`, sorted.
    pub policies: Vec<String>,
}

impl PodRules {
    /// The rules of one direction.
    pub fn direction(&self, direction: Direction) -> &DirectionRules {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// The result of [`compile`](super::compile()): per-pod rules plus the peer sets
/// they reference. Deterministic: equal inputs give equal values, whatever the
/// order of pods and policies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompiledPolicy {
    /// Every known pod's rules.
    pub pods: BTreeMap<PodRef, PodRules>,
    /// Pod IP sets referenced by [`PeerMatch::Pods`].
    pub pod_sets: BTreeMap<SetId, BTreeSet<Ipv4Addr>>,
    /// Endpoint sets referenced by [`PeerMatch::Endpoints`].
    pub endpoint_sets: BTreeMap<SetId, BTreeSet<Endpoint>>,
    /// Pods by IP, for evaluating flows between addresses.
    pub by_ip: BTreeMap<Ipv4Addr, PodRef>,
}

impl CompiledPolicy {
    /// True when `allow` admits a connection whose other side is `peer` and whose
    /// destination is `protocol`/`port` (on `dst`, the destination address).
    pub fn allow_matches(
        &self,
        allow: &Allow,
        peer: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: Protocol,
        port: u16,
    ) -> bool {
        let peer_ok = match &allow.peer {
            PeerMatch::Any => true,
            PeerMatch::Pods(id) => self.pod_sets.get(id).is_some_and(|s| s.contains(&peer)),
            PeerMatch::Block { cidr, except } => {
                cidr.contains(&peer) && !except.iter().any(|e| e.contains(&peer))
            }
            PeerMatch::Endpoints(id) => self.endpoint_sets.get(id).is_some_and(|s| {
                s.contains(&Endpoint {
                    ip: dst,
                    protocol,
                    port,
                })
            }),
        };
        peer_ok
            && allow
                .ports
                .as_ref()
                .is_none_or(|ports| ports.iter().any(|r| r.contains(protocol, port)))
    }

    /// True when the pod at `pod_ip` (if it is a known pod) lets the connection
    /// pass in `direction`: not isolated, or one of its allows matches.
    fn direction_allows(
        &self,
        direction: Direction,
        from: Ipv4Addr,
        to: Ipv4Addr,
        protocol: Protocol,
        port: u16,
    ) -> bool {
        let (pod_ip, peer) = match direction {
            Direction::Ingress => (to, from),
            Direction::Egress => (from, to),
        };
        let Some(rules) = self.by_ip.get(&pod_ip).and_then(|p| self.pods.get(p)) else {
            return true;
        };
        let rules = rules.direction(direction);
        !rules.isolated
            || rules
                .allow
                .iter()
                .any(|a| self.allow_matches(a, peer, to, protocol, port))
    }

    /// True when a new connection from `from` to `to:port/protocol` is allowed:
    /// egress allowed at the source (if it is a pod) and ingress allowed at the
    /// destination (if it is a pod). Replies of allowed connections are always
    /// allowed and are not asked about here.
    pub fn evaluate(&self, from: Ipv4Addr, to: Ipv4Addr, port: u16, protocol: Protocol) -> bool {
        self.direction_allows(Direction::Egress, from, to, protocol, port)
            && self.direction_allows(Direction::Ingress, from, to, protocol, port)
    }
}

/// Free-function form of [`CompiledPolicy::evaluate`].
pub fn evaluate(
    compiled: &CompiledPolicy,
    from: Ipv4Addr,
    to: Ipv4Addr,
    port: u16,
    protocol: Protocol,
) -> bool {
    compiled.evaluate(from, to, port, protocol)
}
