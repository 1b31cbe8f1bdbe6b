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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use serde_json::json;

    use super::*;
    use crate::policy::{ContainerPort, Protocol};

    fn pod(
        key: &str,
        labels: &[(&str, &str)],
        ip: Option<[u8; 4]>,
        ports: &[(&str, u16, Protocol)],
    ) -> PolicyPod {
        PolicyPod {
            pod: key.parse().unwrap(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ip: ip.map(Ipv4Addr::from),
            ports: ports
                .iter()
                .map(|(name, port, protocol)| ContainerPort {
                    name: Some(name.to_string()),
                    container_port: *port,
                    protocol: *protocol,
                })
                .collect(),
        }
    }

    fn policy(v: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(v).unwrap()
    }

    fn namespaces() -> Vec<PolicyNamespace> {
        ["x", "y"].into_iter().map(PolicyNamespace::named).collect()
    }

    const XA: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
    const XB: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 3);
    const YA: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
    const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    #[test]
    fn end_port_makes_an_inclusive_range_of_the_given_protocol() {
        let pods = [pod("x/a", &[], Some([10, 1, 0, 2]), &[])];
        let p = policy(
            json!({"metadata": {"name": "r", "namespace": "x"}, "spec": {
            "podSelector": {}, "ingress": [{"ports": [{"port": 8000, "endPort": 8010, "protocol": "UDP"}]}]}}),
        );
        let c = compile(&pods, &namespaces(), &[p]);
        for (port, proto, want) in [
            (7999, Protocol::Udp, false),
            (8000, Protocol::Udp, true),
            (8010, Protocol::Udp, true),
            (8011, Protocol::Udp, false),
            (8005, Protocol::Tcp, false),
        ] {
            assert_eq!(c.evaluate(OUTSIDE, XA, port, proto), want, "{port}/{proto}");
        }
    }

    #[test]
    fn egress_named_ports_resolve_on_each_destination_pod() {
        // "http" is 80 on x/b and 8080 on y/a; x/a may only reach those.
        let pods = [
            pod("x/a", &[("app", "client")], Some([10, 1, 0, 2]), &[]),
            pod(
                "x/b",
                &[],
                Some([10, 1, 0, 3]),
                &[("http", 80, Protocol::Tcp)],
            ),
            pod(
                "y/a",
                &[],
                Some([10, 2, 0, 2]),
                &[("http", 8080, Protocol::Tcp), ("dns", 53, Protocol::Udp)],
            ),
        ];
        let p = policy(
            json!({"metadata": {"name": "e", "namespace": "x"}, "spec": {
            "podSelector": {"matchLabels": {"app": "client"}},
            "egress": [{"ports": [{"port": "http"}, {"port": "dns", "protocol": "UDP"}]}]}}),
        );
        let c = compile(&pods, &namespaces(), &[p]);
        assert!(c.evaluate(XA, XB, 80, Protocol::Tcp));
        assert!(!c.evaluate(XA, XB, 8080, Protocol::Tcp));
        assert!(c.evaluate(XA, YA, 8080, Protocol::Tcp));
        assert!(!c.evaluate(XA, YA, 80, Protocol::Tcp));
        assert!(c.evaluate(XA, YA, 53, Protocol::Udp));
        assert!(
            !c.evaluate(XA, YA, 53, Protocol::Tcp),
            "the protocol is part of the name's match"
        );
        assert!(
            !c.evaluate(XA, OUTSIDE, 80, Protocol::Tcp),
            "no pod, no named port"
        );
    }

    #[test]
    fn a_named_port_that_resolves_nowhere_allows_nothing_but_still_isolates() {
        let pods = [pod(
            "x/a",
            &[],
            Some([10, 1, 0, 2]),
            &[("http", 80, Protocol::Tcp)],
        )];
        let p = policy(
            json!({"metadata": {"name": "n", "namespace": "x"}, "spec": {
            "podSelector": {}, "ingress": [{"ports": [{"port": "metrics"}]}]}}),
        );
        let c = compile(&pods, &namespaces(), &[p]);
        assert!(c.pods[&"x/a".parse::<PodRef>().unwrap()].ingress.isolated);
        assert!(!c.evaluate(OUTSIDE, XA, 80, Protocol::Tcp));
    }

    #[test]
    fn policies_select_only_pods_of_their_own_namespace_and_pods_without_ip_are_nobodys_peer() {
        let pods = [
            pod("x/a", &[("pod", "a")], Some([10, 1, 0, 2]), &[]),
            pod("x/b", &[("pod", "b")], None, &[]),
            pod("y/a", &[("pod", "a")], Some([10, 2, 0, 2]), &[]),
        ];
        let p = policy(
            json!({"metadata": {"name": "d", "namespace": "x"}, "spec": {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"podSelector": {}}]}]}}),
        );
        let c = compile(&pods, &namespaces(), &[p]);
        assert!(!c.pods[&"y/a".parse::<PodRef>().unwrap()].ingress.isolated);
        assert!(c.evaluate(XA, YA, 80, Protocol::Tcp));
        assert!(!c.evaluate(YA, XA, 80, Protocol::Tcp));
        let set = c.pod_sets.values().next().unwrap();
        assert_eq!(
            set.iter().copied().collect::<Vec<_>>(),
            vec![XA],
            "x/b has no IP yet"
        );
    }

    #[test]
    fn ipv6_blocks_match_no_ipv4_flow_and_policy_types_default_to_egress_when_rules_exist() {
        let pods = [pod("x/a", &[], Some([10, 1, 0, 2]), &[])];
        let p = policy(
            json!({"metadata": {"name": "v6", "namespace": "x"}, "spec": {
            "podSelector": {},
            "egress": [{"to": [{"ipBlock": {"cidr": "::/0"}}, {"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.1/32"]}}]}]}}),
        );
        let c = compile(&pods, &namespaces(), &[p]);
        let rules = &c.pods[&"x/a".parse::<PodRef>().unwrap()];
        assert!(
            rules.ingress.isolated && rules.egress.isolated,
            "omitted policyTypes with egress rules: both"
        );
        assert!(
            !c.evaluate(XA, OUTSIDE, 80, Protocol::Tcp),
            "192.0.2.1 is excepted"
        );
        assert!(c.evaluate(XA, Ipv4Addr::new(192, 0, 2, 9), 80, Protocol::Tcp));
        assert!(!c.evaluate(XA, YA, 80, Protocol::Tcp));
    }
}
