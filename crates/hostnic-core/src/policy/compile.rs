//! The pure compiler: (pods, namespaces, policies) → [`CompiledPolicy`].
//!
//! Kubernetes semantics, in the order the code applies them:
//! - a policy selects the pods of its own namespace matching `podSelector`;
//! - a pod is isolated for ingress (egress) only if some policy selecting it has
//!   that type (see [`NetworkPolicySpec::effective_types`](super::model::NetworkPolicySpec::effective_types)); what is allowed is the
//!   union of those policies' rules, so policies never conflict;
//! - a rule allows when a peer and a port match; empty or absent `from`/`to`
//!   means every peer, empty or absent `ports` every port;
//! - a peer is `podSelector` alone (pods of the policy's namespace),
//!   `namespaceSelector` alone (all pods of the matching namespaces), both (the
//!   matching pods of the matching namespaces), or `ipBlock` (addresses);
//! - named ports resolve on the destination: the selected pod itself for ingress,
//!   each peer pod for egress (the rule then allows exact `ip . proto . port`
//!   endpoints). A name that resolves nowhere allows nothing.
//!
//! Only IPv4 is enforced: IPv6 ip blocks are ignored (they can match no IPv4 flow).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use ipnet::Ipv4Net;
use serde::Serialize;

use super::cluster::{PodRef, PolicyNamespace, PolicyPod};
use super::compiled::{
    Allow, CompiledPolicy, Direction, DirectionRules, Endpoint, PeerMatch, PodRules, PortRange,
    SetId,
};
use super::model::{IpBlock, NetworkPolicy, Peer, PolicyPort, PortRef};

/// Compiles the effective policy of every pod. Pure and deterministic: the
/// order of `pods`, `namespaces` and `policies` does not matter. Duplicate
/// pods, namespaces or policies (same namespace/name) are resolved by keeping
/// the greatest value, so even malformed input compiles order-independently.
pub fn compile(
    pods: &[PolicyPod],
    namespaces: &[PolicyNamespace],
    policies: &[NetworkPolicy],
) -> CompiledPolicy {
    let pods = dedup(pods, |p| p.pod.clone());
    let namespaces = dedup(namespaces, |n| n.name.clone());
    let policies = dedup(policies, |p| {
        (p.metadata.namespace.clone(), p.metadata.name.clone())
    });
    let ns_labels: BTreeMap<&str, &BTreeMap<String, String>> = namespaces
        .values()
        .map(|n| (n.name.as_str(), &n.labels))
        .collect();
    let empty = BTreeMap::new();
    let cx = Context {
        pods: &pods,
        ns_labels: &ns_labels,
        empty: &empty,
    };

    let mut out = CompiledPolicy::default();
    for pod in pods.values() {
        out.pods.insert(
            pod.pod.clone(),
            PodRules {
                ip: pod.ip,
                ingress: DirectionRules::default(),
                egress: DirectionRules::default(),
                policies: Vec::new(),
            },
        );
        if let Some(ip) = pod.ip {
            // Two pods claiming one IP: the greatest reference wins, deterministically.
            out.by_ip
                .entry(ip)
                .and_modify(|p| {
                    if pod.pod > *p {
                        *p = pod.pod.clone()
                    }
                })
                .or_insert_with(|| pod.pod.clone());
        }
    }

    for policy in policies.values() {
        cx.apply_policy(policy, &mut out);
    }
    for rules in out.pods.values_mut() {
        for dir in [&mut rules.ingress, &mut rules.egress] {
            dir.allow.sort();
            dir.allow.dedup();
        }
        rules.policies.sort();
    }
    out
}

/// Keys `items`; among duplicates the one with the greatest JSON form wins, so
/// the result does not depend on the input order.
fn dedup<T: Clone + Serialize, K: Ord>(items: &[T], key: impl Fn(&T) -> K) -> BTreeMap<K, T> {
    let mut map: BTreeMap<K, (String, T)> = BTreeMap::new();
    for item in items {
        let json = serde_json::to_string(item).unwrap_or_default();
        match map.entry(key(item)) {
            Entry::Occupied(mut e) => {
                if json > e.get().0 {
                    e.insert((json, item.clone()));
                }
            }
            Entry::Vacant(e) => {
                e.insert((json, item.clone()));
            }
        }
    }
    map.into_iter().map(|(k, (_, v))| (k, v)).collect()
}

struct Context<'a> {
    pods: &'a BTreeMap<PodRef, PolicyPod>,
    ns_labels: &'a BTreeMap<&'a str, &'a BTreeMap<String, String>>,
    empty: &'a BTreeMap<String, String>,
}

impl Context<'_> {
    fn namespace_labels(&self, ns: &str) -> &BTreeMap<String, String> {
        self.ns_labels.get(ns).copied().unwrap_or(self.empty)
    }

    fn apply_policy(&self, policy: &NetworkPolicy, out: &mut CompiledPolicy) {
        let ns = policy.metadata.namespace.as_str();
        let spec = &policy.spec;
        let (ingress, egress) = spec.effective_types();
        let selected: Vec<&PolicyPod> = self
            .pods
            .values()
            .filter(|p| p.pod.namespace == ns && spec.pod_selector.matches(&p.labels))
            .collect();
        if selected.is_empty() {
            return;
        }
        let name = format!("{ns}/{}", policy.metadata.name);
        let set_id = |direction, rule, peer| SetId {
            namespace: ns.to_string(),
            policy: policy.metadata.name.clone(),
            direction,
            rule,
            peer,
        };

        for pod in &selected {
            let rules = out.pods.get_mut(&pod.pod).expect("every pod has rules");
            rules.policies.push(name.clone());
        }

        if ingress {
            for (index, rule) in spec.ingress.iter().flatten().enumerate() {
                let peers = self.peers(
                    ns,
                    rule.from.as_deref(),
                    |p| set_id(Direction::Ingress, index, Some(p)),
                    out,
                );
                let ports = rule.ports.as_deref().unwrap_or_default();
                for pod in &selected {
                    // Named ports resolve on the destination: the selected pod.
                    let resolved = resolve_on(pod, ports);
                    let rules = out.pods.get_mut(&pod.pod).expect("every pod has rules");
                    push_allows(&mut rules.ingress.allow, &peers, resolved);
                }
            }
            for pod in &selected {
                out.pods
                    .get_mut(&pod.pod)
                    .expect("every pod has rules")
                    .ingress
                    .isolated = true;
            }
        }

        if egress {
            for (index, rule) in spec.egress.iter().flatten().enumerate() {
                let peers = self.peers(
                    ns,
                    rule.to.as_deref(),
                    |p| set_id(Direction::Egress, index, Some(p)),
                    out,
                );
                let ports = rule.ports.as_deref().unwrap_or_default();
                let (numeric, named): (Vec<&PolicyPort>, Vec<&PolicyPort>) = ports
                    .iter()
                    .partition(|p| !matches!(p.port, Some(PortRef::Name(_))));
                let mut allows = Vec::new();
                if ports.is_empty() {
                    push_allows(&mut allows, &peers, None);
                } else if !numeric.is_empty() {
                    let ranges = numeric.iter().filter_map(|p| numeric_range(p)).collect();
                    push_allows(&mut allows, &peers, Some(ranges));
                }
                if !named.is_empty() {
                    let id = set_id(Direction::Egress, index, None);
                    let endpoints = self.named_endpoints(ns, rule.to.as_deref(), &named);
                    out.endpoint_sets.insert(id.clone(), endpoints);
                    allows.push(Allow {
                        peer: PeerMatch::Endpoints(id),
                        ports: None,
                    });
                }
                for pod in &selected {
                    let rules = out.pods.get_mut(&pod.pod).expect("every pod has rules");
                    rules.egress.allow.extend(allows.iter().cloned());
                }
            }
            for pod in &selected {
                out.pods
                    .get_mut(&pod.pod)
                    .expect("every pod has rules")
                    .egress
                    .isolated = true;
            }
        }
    }

    /// The peer matches of a rule's `from`/`to`; registers pod sets in `out`.
    /// `None` or `[]` means every peer.
    fn peers(
        &self,
        ns: &str,
        peers: Option<&[Peer]>,
        id: impl Fn(usize) -> SetId,
        out: &mut CompiledPolicy,
    ) -> Vec<PeerMatch> {
        let peers = peers.unwrap_or_default();
        if peers.is_empty() {
            return vec![PeerMatch::Any];
        }
        let mut matches = Vec::new();
        for (index, peer) in peers.iter().enumerate() {
            if let Some(block) = &peer.ip_block {
                matches.extend(parse_block(block));
            } else if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
                let ips = self
                    .pods
                    .values()
                    .filter(|p| self.peer_selects(ns, peer, p))
                    .filter_map(|p| p.ip)
                    .collect();
                let id = id(index);
                out.pod_sets.insert(id.clone(), ips);
                matches.push(PeerMatch::Pods(id));
            }
            // A peer with nothing set is invalid (the API server rejects it): it matches nothing.
        }
        matches
    }

    /// True when `pod` is selected by the selector part of `peer`, written in a
    /// policy of namespace `ns`.
    fn peer_selects(&self, ns: &str, peer: &Peer, pod: &PolicyPod) -> bool {
        let ns_ok = match &peer.namespace_selector {
            Some(sel) => sel.matches(self.namespace_labels(&pod.pod.namespace)),
            None => pod.pod.namespace == ns,
        };
        ns_ok
            && peer
                .pod_selector
                .as_ref()
                .is_none_or(|sel| sel.matches(&pod.labels))
    }

    /// Endpoints of an egress rule's named ports: every peer pod's container
    /// ports with a matching name and protocol.
    fn named_endpoints(
        &self,
        ns: &str,
        peers: Option<&[Peer]>,
        named: &[&PolicyPort],
    ) -> BTreeSet<Endpoint> {
        let peers = peers.unwrap_or_default();
        let blocks: Vec<Vec<PeerMatch>> = peers
            .iter()
            .filter_map(|p| p.ip_block.as_ref().map(parse_block))
            .collect();
        let mut out = BTreeSet::new();
        for pod in self.pods.values() {
            let Some(ip) = pod.ip else { continue };
            let is_peer = peers.is_empty()
                || peers.iter().any(|peer| {
                    peer.ip_block.is_none()
                        && (peer.pod_selector.is_some() || peer.namespace_selector.is_some())
                        && self.peer_selects(ns, peer, pod)
                })
                || blocks.iter().flatten().any(|b| match b {
                    PeerMatch::Block { cidr, except } => {
                        cidr.contains(&ip) && !except.iter().any(|e| e.contains(&ip))
                    }
                    _ => false,
                });
            if !is_peer {
                continue;
            }
            for port in named {
                let (Some(PortRef::Name(name)), protocol) =
                    (&port.port, port.protocol.unwrap_or_default())
                else {
                    continue;
                };
                for cp in &pod.ports {
                    if cp.name.as_deref() == Some(name.as_str()) && cp.protocol == protocol {
                        out.insert(Endpoint {
                            ip,
                            protocol,
                            port: cp.container_port,
                        });
                    }
                }
            }
        }
        out
    }
}

/// Adds one allow per peer. `ports` `None`: every port; `Some(empty)`: the
/// rule's ports resolved to nothing, so the rule allows nothing.
fn push_allows(allows: &mut Vec<Allow>, peers: &[PeerMatch], ports: Option<Vec<PortRange>>) {
    if let Some(p) = &ports
        && p.is_empty()
    {
        return;
    }
    let ports = ports.map(|mut p| {
        p.sort();
        p.dedup();
        p
    });
    for peer in peers {
        allows.push(Allow {
            peer: peer.clone(),
            ports: ports.clone(),
        });
    }
}

/// A rule's ports resolved on `pod` (ingress: the destination is the selected
/// pod). `None` when the rule lists no ports.
fn resolve_on(pod: &PolicyPod, ports: &[PolicyPort]) -> Option<Vec<PortRange>> {
    if ports.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for port in ports {
        let protocol = port.protocol.unwrap_or_default();
        match &port.port {
            Some(PortRef::Name(name)) => out.extend(
                pod.ports
                    .iter()
                    .filter(|cp| {
                        cp.name.as_deref() == Some(name.as_str()) && cp.protocol == protocol
                    })
                    .map(|cp| PortRange::single(protocol, cp.container_port)),
            ),
            _ => out.extend(numeric_range(port)),
        }
    }
    Some(out)
}

/// A numeric (or absent) policy port as a range. An `endPort` below `port` is
/// rejected by the API server; here it degrades to the single port.
fn numeric_range(port: &PolicyPort) -> Option<PortRange> {
    let protocol = port.protocol.unwrap_or_default();
    match port.port {
        None => Some(PortRange::all(protocol)),
        Some(PortRef::Number(first)) => Some(PortRange {
            protocol,
            first,
            last: port.end_port.filter(|e| *e >= first).unwrap_or(first),
        }),
        Some(PortRef::Name(_)) => None,
    }
}

/// An IPv4 ip block as a peer match; IPv6 or unparsable blocks give nothing.
/// Except entries that are not IPv4 are dropped (they cannot carve an IPv4 range).
fn parse_block(block: &IpBlock) -> Vec<PeerMatch> {
    let Ok(cidr) = block.cidr.parse::<Ipv4Net>() else {
        return Vec::new();
    };
    let cidr = cidr.trunc();
    let mut except: Vec<Ipv4Net> = block
        .except
        .iter()
        .filter_map(|e| e.parse::<Ipv4Net>().ok())
        .map(|e| e.trunc())
        .collect();
    except.sort();
    except.dedup();
    vec![PeerMatch::Block { cidr, except }]
}
