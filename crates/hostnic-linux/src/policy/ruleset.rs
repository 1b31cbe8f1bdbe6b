//! The desired policy objects of the `hostnic` table, computed purely from a
//! [`CompiledPolicy`] and the pods local to this node, and their nftables JSON.
//!
//! Objects (all in `inet hostnic`, all named with the `policy`/`pol`/`pin`/`pout`
//! prefixes so they never collide with the SNAT objects of [`crate::node`]):
//! - base chain `policy-forward` (hook forward, priority filter, policy accept):
//!   `ct state established,related accept`, then `iifname vmap @policy-egress`,
//!   then `oifname vmap @policy-ingress`;
//! - maps `policy-ingress` / `policy-egress`: host veth → `jump` to the pod's chain,
//!   only for pods isolated in that direction;
//! - per pod chains `pin-<h>` (traffic forwarded out of the host veth, into the
//!   pod) and `pout-<h>` (traffic coming in from the host veth): one rule per
//!   allowed peer × port range ending in `return` (so a same-node flow also meets
//!   the peer's ingress chain), then `drop`;
//! - named sets `pol-<h>` (pod IPs, `ipv4_addr`) and `pole-<h>` (named-port
//!   endpoints, `ipv4_addr . inet_proto . inet_service`) shared by every pod a
//!   policy selects: a pod joining a selected namespace is one element.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use hostnic_core::policy::{
    Allow, CompiledPolicy, Direction, Endpoint, LocalPod, PeerMatch, PodRef, PortRange, Protocol,
    SetId,
};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use crate::node::NFT_TABLE;

/// The base chain hooked on forward.
pub const POLICY_CHAIN: &str = "policy-forward";
/// Verdict map: host veth (as output interface) → the pod's ingress chain.
pub const INGRESS_MAP: &str = "policy-ingress";
/// Verdict map: host veth (as input interface) → the pod's egress chain.
pub const EGRESS_MAP: &str = "policy-egress";
/// Priority of [`POLICY_CHAIN`]: `filter`.
pub const POLICY_PRIORITY: i32 = 0;

/// The elements of one named set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetElements {
    /// Pod IPs.
    Addrs(BTreeSet<Ipv4Addr>),
    /// `ip . protocol . port` endpoints.
    Endpoints(BTreeSet<Endpoint>),
}

impl SetElements {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            SetElements::Addrs(s) => s.len(),
            SetElements::Endpoints(s) => s.len(),
        }
    }

    /// True when the set has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The nftables `type` of such a set.
    pub(crate) fn nft_type(&self) -> Value {
        match self {
            SetElements::Addrs(_) => json!("ipv4_addr"),
            SetElements::Endpoints(_) => json!(["ipv4_addr", "inet_proto", "inet_service"]),
        }
    }

    /// Elements of `self` missing from `other`, as nftables JSON.
    pub(crate) fn minus(&self, other: Option<&SetElements>) -> Vec<Value> {
        match (self, other) {
            (SetElements::Addrs(a), Some(SetElements::Addrs(b))) => {
                a.difference(b).map(addr_elem).collect()
            }
            (SetElements::Endpoints(a), Some(SetElements::Endpoints(b))) => {
                a.difference(b).map(endpoint_elem).collect()
            }
            (SetElements::Addrs(a), _) => a.iter().map(addr_elem).collect(),
            (SetElements::Endpoints(a), _) => a.iter().map(endpoint_elem).collect(),
        }
    }
}

fn addr_elem(ip: &Ipv4Addr) -> Value {
    json!(ip.to_string())
}

fn endpoint_elem(e: &Endpoint) -> Value {
    json!({"concat": [e.ip.to_string(), l4proto(e.protocol), e.port]})
}

fn l4proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// Everything the policy part of the table should contain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRuleset {
    /// Named sets by nftables name.
    pub sets: BTreeMap<String, SetElements>,
    /// Per pod chains by name, each a list of rules (nftables JSON `expr` arrays).
    pub chains: BTreeMap<String, Vec<Value>>,
    /// Host veth → ingress chain.
    pub ingress: BTreeMap<String, String>,
    /// Host veth → egress chain.
    pub egress: BTreeMap<String, String>,
}

fn short_hash(s: &str) -> String {
    hex::encode(&Sha1::digest(s.as_bytes())[..8])
}

/// The nftables name of a pod-IP set (`pol-<16 hex>`) or endpoint set (`pole-…`).
pub fn set_name(id: &SetId) -> String {
    let prefix = if id.peer.is_some() { "pol" } else { "pole" };
    format!("{prefix}-{}", short_hash(&id.to_string()))
}

/// The nftables name of a pod's chain for `direction`.
pub fn chain_name(pod: &PodRef, direction: Direction) -> String {
    let prefix = match direction {
        Direction::Ingress => "pin",
        Direction::Egress => "pout",
    };
    format!("{prefix}-{}", short_hash(&pod.to_string()))
}

impl PolicyRuleset {
    /// The objects enforcing `compiled` for the pods of this node. Pods in
    /// `local` but unknown to `compiled` (no pod information yet) are left
    /// unisolated; only sets referenced by some local chain are programmed.
    pub fn build(compiled: &CompiledPolicy, local: &[LocalPod]) -> Self {
        let mut out = PolicyRuleset::default();
        for lp in local {
            let Some(rules) = compiled.pods.get(&lp.pod) else {
                continue;
            };
            for direction in [Direction::Ingress, Direction::Egress] {
                let dir = rules.direction(direction);
                if !dir.isolated {
                    continue;
                }
                let chain = chain_name(&lp.pod, direction);
                let mut body = Vec::new();
                for allow in &dir.allow {
                    body.extend(allow_rules(allow, direction));
                    let Some(id) = referenced_set(allow) else {
                        continue;
                    };
                    let name = set_name(id);
                    if out.sets.contains_key(&name) {
                        continue;
                    }
                    let elements = match &allow.peer {
                        PeerMatch::Endpoints(_) => SetElements::Endpoints(
                            compiled.endpoint_sets.get(id).cloned().unwrap_or_default(),
                        ),
                        _ => SetElements::Addrs(
                            compiled.pod_sets.get(id).cloned().unwrap_or_default(),
                        ),
                    };
                    out.sets.insert(name, elements);
                }
                body.push(json!([{"drop": null}]));
                out.chains.insert(chain.clone(), body);
                let map = match direction {
                    Direction::Ingress => &mut out.ingress,
                    Direction::Egress => &mut out.egress,
                };
                map.insert(lp.veth.clone(), chain);
            }
        }
        out
    }

    /// Number of set elements in all sets.
    pub fn element_count(&self) -> usize {
        self.sets.values().map(SetElements::len).sum()
    }

    /// Number of rules in all per pod chains.
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(Vec::len).sum()
    }
}

fn referenced_set(allow: &Allow) -> Option<&SetId> {
    match &allow.peer {
        PeerMatch::Pods(id) | PeerMatch::Endpoints(id) => Some(id),
        PeerMatch::Any | PeerMatch::Block { .. } => None,
    }
}

/// The rules (one per port range) implementing one allow in a pod's chain.
fn allow_rules(allow: &Allow, direction: Direction) -> Vec<Value> {
    // Ingress chains see the peer as the source, egress chains as the destination.
    let field = match direction {
        Direction::Ingress => "saddr",
        Direction::Egress => "daddr",
    };
    let addr = json!({"payload": {"protocol": "ip", "field": field}});
    let mut peer = Vec::new();
    match &allow.peer {
        PeerMatch::Any => {}
        PeerMatch::Pods(id) => peer.push(
            json!({"match": {"op": "==", "left": addr, "right": format!("@{}", set_name(id))}}),
        ),
        PeerMatch::Block { cidr, except } => {
            if cidr.prefix_len() > 0 {
                peer.push(json!({"match": {"op": "==", "left": addr, "right": prefix(cidr)}}));
            } else {
                peer.push(json!({"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}}));
            }
            if !except.is_empty() {
                let set: Vec<Value> = except.iter().map(prefix).collect();
                peer.push(json!({"match": {"op": "!=", "left": addr, "right": {"set": set}}}));
            }
        }
        PeerMatch::Endpoints(id) => peer.push(json!({"match": {"op": "==", "left": {"concat": [
            {"payload": {"protocol": "ip", "field": "daddr"}},
            {"meta": {"key": "l4proto"}},
            {"payload": {"protocol": "th", "field": "dport"}}
        ]}, "right": format!("@{}", set_name(id))}})),
    }
    let ret = json!({"return": null});
    match &allow.ports {
        None => {
            let mut expr = peer;
            expr.push(ret);
            vec![Value::Array(expr)]
        }
        Some(ranges) => ranges
            .iter()
            .map(|r| {
                let mut expr = peer.clone();
                expr.extend(port_match(r));
                expr.push(ret.clone());
                Value::Array(expr)
            })
            .collect(),
    }
}

fn prefix(net: &ipnet::Ipv4Net) -> Value {
    if net.prefix_len() == 32 {
        json!(net.addr().to_string())
    } else {
        json!({"prefix": {"addr": net.network().to_string(), "len": net.prefix_len()}})
    }
}

fn port_match(r: &PortRange) -> Vec<Value> {
    let mut out = vec![
        json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": l4proto(r.protocol)}}),
    ];
    if !r.is_all() {
        let right = if r.first == r.last {
            json!(r.first)
        } else {
            json!({"range": [r.first, r.last]})
        };
        out.push(json!({"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": right}}));
    }
    out
}

/// `{"family": "inet", "table": "hostnic", "name": name}`.
pub(crate) fn obj(name: &str) -> Value {
    json!({"family": "inet", "table": NFT_TABLE, "name": name})
}

/// Commands creating the base chain and maps (idempotent `add`s) and
/// rewriting the base chain's three rules.
pub(crate) fn base_commands() -> Vec<Value> {
    let map = |name: &str| json!({"family": "inet", "table": NFT_TABLE, "name": name, "type": "ifname", "map": "verdict"});
    let rule = |expr: Value| json!({"add": {"rule": {"family": "inet", "table": NFT_TABLE, "chain": POLICY_CHAIN, "expr": expr}}});
    vec![
        json!({"add": {"table": {"family": "inet", "name": NFT_TABLE}}}),
        json!({"add": {"map": map(INGRESS_MAP)}}),
        json!({"add": {"map": map(EGRESS_MAP)}}),
        json!({"add": {"chain": {"family": "inet", "table": NFT_TABLE, "name": POLICY_CHAIN,
            "type": "filter", "hook": "forward", "prio": POLICY_PRIORITY, "policy": "accept"}}}),
        json!({"flush": {"chain": obj(POLICY_CHAIN)}}),
        // Replies and related ICMP of allowed connections, and connections that
        // existed before a policy changed, pass first.
        rule(json!([
            {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
            {"accept": null}
        ])),
        rule(
            json!([{"vmap": {"key": {"meta": {"key": "iifname"}}, "data": format!("@{EGRESS_MAP}")}}]),
        ),
        rule(
            json!([{"vmap": {"key": {"meta": {"key": "oifname"}}, "data": format!("@{INGRESS_MAP}")}}]),
        ),
    ]
}

/// True for the names of chains, sets and maps the policy renderer owns.
pub fn is_policy_object(name: &str) -> bool {
    name == POLICY_CHAIN
        || name == INGRESS_MAP
        || name == EGRESS_MAP
        || ["pin-", "pout-", "pol-", "pole-"]
            .iter()
            .any(|p| name.starts_with(p))
}
