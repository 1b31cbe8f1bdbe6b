//! The NetworkPolicy object model (`networking.k8s.io/v1`), as serde types of
//! our own so the core does not depend on `k8s-openapi`. Field names follow the
//! API's JSON; unknown fields (status, managedFields, …) are ignored, so the JSON
//! of real objects deserializes as is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A `NetworkPolicy` object. Only `metadata.name`, `metadata.namespace` and
/// `spec` matter to enforcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// What the policy selects and allows.
    #[serde(default)]
    pub spec: NetworkPolicySpec,
}

/// The part of `metadata` the policy engine reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Object name.
    #[serde(default)]
    pub name: String,
    /// Namespace; a policy only selects pods of its own namespace.
    #[serde(default)]
    pub namespace: String,
}

/// `spec` of a NetworkPolicy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Pods of the policy's namespace the policy applies to; `{}` selects all.
    #[serde(default)]
    pub pod_selector: LabelSelector,
    /// Ingress rules; `None` and `[]` both mean "no ingress allowed" when the
    /// policy has type Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<IngressRule>>,
    /// Egress rules, like `ingress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<EgressRule>>,
    /// The directions the policy isolates; see [`NetworkPolicySpec::effective_types`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<PolicyType>>,
}

impl NetworkPolicySpec {
    /// The directions this policy isolates. When `policyTypes` is omitted (or
    /// empty) the API server's defaulting applies: Ingress always, Egress only
    /// when the policy has at least one egress rule.
    pub fn effective_types(&self) -> (bool, bool) {
        match &self.policy_types {
            Some(types) if !types.is_empty() => (
                types.contains(&PolicyType::Ingress),
                types.contains(&PolicyType::Egress),
            ),
            _ => (true, self.egress.as_ref().is_some_and(|e| !e.is_empty())),
        }
    }
}

/// A direction a policy isolates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PolicyType {
    /// Traffic into the selected pods.
    Ingress,
    /// Traffic out of the selected pods.
    Egress,
}

/// One ingress rule: traffic from any of `from` to any of `ports`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressRule {
    /// Allowed sources; empty or absent means every source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<Peer>>,
    /// Allowed destination ports on the selected pod; empty or absent means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PolicyPort>>,
}

/// One egress rule: traffic to any of `to` on any of `ports`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRule {
    /// Allowed destinations; empty or absent means every destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<Peer>>,
    /// Allowed destination ports; empty or absent means all. Named ports are
    /// resolved on each destination pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PolicyPort>>,
}

/// `NetworkPolicyPeer`: pods (by pod and/or namespace selector) or an IP block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    /// Pods matching this selector; in the policy's namespace unless
    /// `namespace_selector` is also given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Namespaces whose pods (all, or those matching `pod_selector`) are peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// A CIDR with exceptions; exclusive with the selectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

/// `IPBlock`: `cidr` minus every `except` range. Kept as strings so an IPv6
/// block in a real object parses; IPv4-only enforcement ignores what it cannot use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpBlock {
    /// The allowed range, e.g. `10.0.0.0/8`.
    pub cidr: String,
    /// Ranges inside `cidr` that are not allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

/// `NetworkPolicyPort`: protocol (TCP by default), a port number or name, and
/// an optional `endPort` making a range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPort {
    /// TCP when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// A number or a container port name; absent means every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortRef>,
    /// Last port of a range starting at the numeric `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
}

/// `IntOrString` for ports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    /// A port number.
    Number(u16),
    /// A container port name, resolved on the destination pod.
    Name(String),
}

/// A transport protocol NetworkPolicy can name.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Protocol {
    /// TCP, the default.
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// SCTP.
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    /// The upper-case API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            other => Err(format!("unknown protocol {other:?}")),
        }
    }
}

/// A Kubernetes label selector: every `matchLabels` pair and every expression
/// must hold. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Required `key=value` pairs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// How the key's value is tested.
    pub operator: SelectorOperator,
    /// Values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A `matchExpressions` operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectorOperator {
    /// The label is present with one of the values.
    In,
    /// The label is absent or has none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// True when `labels` satisfy every requirement of the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

impl LabelSelectorRequirement {
    /// True when `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => !value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn omitted_policy_types_default_to_ingress_plus_egress_when_egress_rules_exist() {
        let spec =
            |v: serde_json::Value| -> NetworkPolicySpec { serde_json::from_value(v).unwrap() };
        assert_eq!(
            spec(json!({"podSelector": {}})).effective_types(),
            (true, false)
        );
        assert_eq!(
            spec(json!({"podSelector": {}, "egress": [{}]})).effective_types(),
            (true, true)
        );
        assert_eq!(
            spec(json!({"podSelector": {}, "egress": []})).effective_types(),
            (true, false)
        );
        assert_eq!(
            spec(json!({"policyTypes": ["Egress"]})).effective_types(),
            (false, true)
        );
    }

    #[test]
    fn expressions_follow_kubernetes_operators() {
        let req = |op, values: &[&str]| LabelSelectorRequirement {
            key: "tier".into(),
            operator: op,
            values: values.iter().map(|s| s.to_string()).collect(),
        };
        let web = labels(&[("tier", "web")]);
        let none = labels(&[]);
        assert!(req(SelectorOperator::In, &["web", "db"]).matches(&web));
        assert!(!req(SelectorOperator::In, &["db"]).matches(&web));
        assert!(!req(SelectorOperator::In, &["web"]).matches(&none));
        assert!(req(SelectorOperator::NotIn, &["db"]).matches(&web));
        assert!(req(SelectorOperator::NotIn, &["web"]).matches(&none));
        assert!(!req(SelectorOperator::NotIn, &["web"]).matches(&web));
        assert!(req(SelectorOperator::Exists, &[]).matches(&web));
        assert!(!req(SelectorOperator::Exists, &[]).matches(&none));
        assert!(req(SelectorOperator::DoesNotExist, &[]).matches(&none));
        assert!(!req(SelectorOperator::DoesNotExist, &[]).matches(&web));
    }

    #[test]
    fn empty_selector_matches_everything_and_labels_are_anded() {
        assert!(LabelSelector::default().matches(&labels(&[])));
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]
        }))
        .unwrap();
        assert!(sel.matches(&labels(&[("app", "web"), ("env", "dev")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("env", "prod")])));
        assert!(!sel.matches(&labels(&[("app", "db")])));
    }

    #[test]
    fn ports_parse_numbers_names_protocols_and_ranges() {
        let p: PolicyPort =
            serde_json::from_value(json!({"port": 8000, "endPort": 8080, "protocol": "UDP"}))
                .unwrap();
        assert_eq!(p.port, Some(PortRef::Number(8000)));
        assert_eq!(p.end_port, Some(8080));
        assert_eq!(p.protocol, Some(Protocol::Udp));
        let p: PolicyPort = serde_json::from_value(json!({"port": "serve-80-tcp"})).unwrap();
        assert_eq!(p.port, Some(PortRef::Name("serve-80-tcp".into())));
        assert_eq!(p.protocol, None);
    }
}
