//! Property tests of the NetworkPolicy compiler, over random clusters (pods in
//! three namespaces with random labels and named ports) and random policies
//! (selectors with every operator, peers of every form, numeric, named and
//! ranged ports of all protocols, both directions, omitted policy types).
//!
//! Cases per property: 256 by default, `PROPTEST_CASES` to change.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use hostnic_core::policy::{
    CompiledPolicy, ContainerPort, EgressRule, IngressRule, IpBlock, LabelSelector,
    LabelSelectorRequirement, NetworkPolicy, NetworkPolicySpec, ObjectMeta, Peer, PodRef,
    PolicyNamespace, PolicyPod, PolicyPort, PolicyType, PortRef, Protocol, SelectorOperator,
    compile,
};
use proptest::prelude::*;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const KEYS: [&str; 2] = ["app", "tier"];
const VALUES: [&str; 3] = ["a", "b", "c"];
const PROBE_PORTS: [u16; 4] = [80, 81, 443, 8080];
const PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];
/// An address outside every pod, to probe ip blocks and "any" peers.
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 7);

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(&KEYS[..]).prop_map(String::from),
        prop::sample::select(&VALUES[..]).prop_map(String::from),
        0..=2,
    )
}

fn selector() -> impl Strategy<Value = LabelSelector> {
    let requirement = (
        prop::sample::select(&KEYS[..]),
        prop::sample::select(vec![
            SelectorOperator::In,
            SelectorOperator::NotIn,
            SelectorOperator::Exists,
            SelectorOperator::DoesNotExist,
        ]),
        prop::collection::vec(prop::sample::select(&VALUES[..]), 1..=2),
    )
        .prop_map(|(key, operator, values)| LabelSelectorRequirement {
            key: key.into(),
            values: match operator {
                SelectorOperator::In | SelectorOperator::NotIn => {
                    values.into_iter().map(String::from).collect()
                }
                _ => Vec::new(),
            },
            operator,
        });
    (labels(), prop::collection::vec(requirement, 0..=1)).prop_map(
        |(match_labels, match_expressions)| LabelSelector {
            match_labels,
            match_expressions,
        },
    )
}

fn peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        selector().prop_map(|s| Peer {
            pod_selector: Some(s),
            ..Peer::default()
        }),
        selector().prop_map(|s| Peer {
            namespace_selector: Some(s),
            ..Peer::default()
        }),
        (selector(), selector()).prop_map(|(p, n)| Peer {
            pod_selector: Some(p),
            namespace_selector: Some(n),
            ..Peer::default()
        }),
        (0u8..=3, 8u8..=32, prop::option::of(24u8..=32)).prop_map(|(second, len, except)| {
            let cidr = format!("10.{second}.0.0/{len}");
            Peer {
                ip_block: Some(IpBlock {
                    except: except
                        .filter(|e| *e >= len)
                        .map(|e| vec![format!("10.{second}.0.2/{e}")])
                        .unwrap_or_default(),
                    cidr,
                }),
                ..Peer::default()
            }
        }),
    ]
}

fn port() -> impl Strategy<Value = PolicyPort> {
    let protocol = prop::option::of(prop::sample::select(&PROTOCOLS[..]));
    let port = prop_oneof![
        prop::sample::select(&PROBE_PORTS[..]).prop_map(PortRef::Number),
        prop::sample::select(vec!["http", "alt", "none"]).prop_map(|n| PortRef::Name(n.into())),
    ];
    (
        protocol,
        prop::option::of(port),
        prop::option::of(80u16..=90),
    )
        .prop_map(|(protocol, port, end)| PolicyPort {
            protocol,
            end_port: match port {
                Some(PortRef::Number(_)) => end,
                _ => None,
            },
            port,
        })
}

fn peers() -> impl Strategy<Value = Option<Vec<Peer>>> {
    prop::option::of(prop::collection::vec(peer(), 0..=2))
}

fn ports() -> impl Strategy<Value = Option<Vec<PolicyPort>>> {
    prop::option::of(prop::collection::vec(port(), 0..=2))
}

fn policy(index: usize) -> impl Strategy<Value = NetworkPolicy> {
    let types = prop::option::of(prop::sample::subsequence(
        vec![PolicyType::Ingress, PolicyType::Egress],
        0..=2,
    ));
    (
        prop::sample::select(&NAMESPACES[..]),
        selector(),
        prop::option::of(prop::collection::vec(
            (peers(), ports()).prop_map(|(from, ports)| IngressRule { from, ports }),
            0..=2,
        )),
        prop::option::of(prop::collection::vec(
            (peers(), ports()).prop_map(|(to, ports)| EgressRule { to, ports }),
            0..=2,
        )),
        types,
    )
        .prop_map(
            move |(ns, pod_selector, ingress, egress, policy_types)| NetworkPolicy {
                metadata: ObjectMeta {
                    name: format!("p{index}"),
                    namespace: ns.into(),
                },
                spec: NetworkPolicySpec {
                    pod_selector,
                    ingress,
                    egress,
                    policy_types,
                },
            },
        )
}

fn policies(max: usize) -> impl Strategy<Value = Vec<NetworkPolicy>> {
    (0..=max).prop_flat_map(|n| (0..n).map(policy).collect::<Vec<_>>())
}

fn container_ports() -> impl Strategy<Value = Vec<ContainerPort>> {
    let one = (
        prop::sample::select(vec!["http", "alt"]),
        prop::sample::select(&PROBE_PORTS[..]),
        prop::sample::select(&PROTOCOLS[..]),
    )
        .prop_map(|(name, port, protocol)| ContainerPort {
            name: Some(name.into()),
            container_port: port,
            protocol,
        });
    prop::collection::vec(one, 0..=2)
}

fn cluster() -> impl Strategy<Value = (Vec<PolicyPod>, Vec<PolicyNamespace>)> {
    let pods = prop::collection::vec(
        (
            prop::sample::select(&NAMESPACES[..]),
            labels(),
            container_ports(),
            any::<bool>(),
        ),
        1..=6,
    )
    .prop_map(|pods| {
        pods.into_iter()
            .enumerate()
            .map(|(i, (ns, labels, ports, has_ip))| PolicyPod {
                pod: PodRef::new(ns, format!("pod{i}")),
                labels,
                // Pods in 10.<ns>.0.<i + 2>; a few have no IP yet.
                ip: (has_ip || i % 3 != 0).then(|| {
                    let n = NAMESPACES.iter().position(|x| *x == ns).unwrap() as u8;
                    Ipv4Addr::new(10, n, 0, i as u8 + 2)
                }),
                ports,
            })
            .collect::<Vec<_>>()
    });
    let namespaces = prop::collection::vec(labels(), 3).prop_map(|labels| {
        NAMESPACES
            .iter()
            .zip(labels)
            .map(|(name, mut labels)| {
                labels.insert("kubernetes.io/metadata.name".into(), name.to_string());
                PolicyNamespace {
                    name: name.to_string(),
                    labels,
                }
            })
            .collect::<Vec<_>>()
    });
    (pods, namespaces)
}

/// Every probed flow: (from, to, port, protocol) among pod IPs and one outside address.
fn flows(pods: &[PolicyPod]) -> Vec<(Ipv4Addr, Ipv4Addr, u16, Protocol)> {
    let mut addrs: Vec<Ipv4Addr> = pods.iter().filter_map(|p| p.ip).collect();
    addrs.push(OUTSIDE);
    let mut out = Vec::new();
    for &from in &addrs {
        for &to in &addrs {
            for port in PROBE_PORTS {
                for protocol in PROTOCOLS {
                    out.push((from, to, port, protocol));
                }
            }
        }
    }
    out
}

fn allowed(c: &CompiledPolicy, flows: &[(Ipv4Addr, Ipv4Addr, u16, Protocol)]) -> Vec<bool> {
    flows
        .iter()
        .map(|&(f, t, p, proto)| c.evaluate(f, t, p, proto))
        .collect()
}

proptest! {
    /// Compiling is deterministic and does not depend on the order of pods,
    /// namespaces or policies.
    #[test]
    fn compiling_is_deterministic_and_order_independent(
        (pods, namespaces) in cluster(),
        policies in policies(4),
        seed in any::<u64>(),
    ) {
        let first = compile(&pods, &namespaces, &policies);
        prop_assert_eq!(&first, &compile(&pods, &namespaces, &policies));
        let mut rotated_pods = pods.clone();
        let mut rotated_policies = policies.clone();
        let mut reversed_ns = namespaces.clone();
        rotated_pods.rotate_left((seed as usize) % pods.len());
        rotated_pods.reverse();
        if !policies.is_empty() {
            rotated_policies.rotate_left((seed as usize >> 8) % policies.len());
        }
        rotated_policies.reverse();
        reversed_ns.reverse();
        prop_assert_eq!(&first, &compile(&rotated_pods, &reversed_ns, &rotated_policies));
    }

    /// Adding a policy never removes an allowed flow between pods it does not
    /// select, and leaves the rules of every pod it does not select unchanged.
    #[test]
    fn adding_a_policy_never_restricts_pods_it_does_not_select(
        (pods, namespaces) in cluster(),
        policies in policies(3),
        extra in policy(99),
    ) {
        let before = compile(&pods, &namespaces, &policies);
        let mut with_extra = policies.clone();
        with_extra.push(extra.clone());
        let after = compile(&pods, &namespaces, &with_extra);
        let selected = |p: &PolicyPod| {
            p.pod.namespace == extra.metadata.namespace
                && extra.spec.pod_selector.matches(&p.labels)
        };
        for pod in pods.iter().filter(|p| !selected(p)) {
            prop_assert_eq!(&before.pods[&pod.pod], &after.pods[&pod.pod], "{}", pod.pod);
        }
        let unselected: Vec<PolicyPod> = pods.iter().filter(|p| !selected(p)).cloned().collect();
        for flow in flows(&unselected) {
            let (f, t, p, proto) = flow;
            if before.evaluate(f, t, p, proto) {
                prop_assert!(after.evaluate(f, t, p, proto), "{:?} lost by {:?}", flow, extra);
            }
        }
    }

    /// Without policies nothing is isolated and every flow is allowed.
    #[test]
    fn an_empty_policy_set_allows_everything((pods, namespaces) in cluster()) {
        let compiled = compile(&pods, &namespaces, &[]);
        prop_assert!(compiled.pods.values().all(|r| !r.ingress.isolated && !r.egress.isolated));
        prop_assert!(allowed(&compiled, &flows(&pods)).into_iter().all(|a| a));
    }

    /// Policies are a union: a flow into (out of) a pod is allowed by the set
    /// exactly when it is allowed by the set's isolating policies taken one at a
    /// time (or no policy isolates the pod in that direction).
    #[test]
    fn allowed_traffic_is_the_union_over_selecting_policies(
        (pods, namespaces) in cluster(),
        policies in policies(3),
    ) {
        let all = compile(&pods, &namespaces, &policies);
        let singles: Vec<CompiledPolicy> = policies
            .iter()
            .map(|p| compile(&pods, &namespaces, std::slice::from_ref(p)))
            .collect();
        // Ingress only: the source is an outside address, so no egress rule interferes.
        for (_, t, p, proto) in flows(&pods).into_iter().filter(|f| f.0 == OUTSIDE) {
            let Some(dst) = all.by_ip.get(&t) else { continue };
            let isolating: Vec<&CompiledPolicy> = singles
                .iter()
                .filter(|c| c.pods[dst].ingress.isolated)
                .collect();
            let expected = isolating.is_empty()
                || isolating.iter().any(|c| c.evaluate(OUTSIDE, t, p, proto));
            prop_assert_eq!(all.evaluate(OUTSIDE, t, p, proto), expected);
        }
    }
}
