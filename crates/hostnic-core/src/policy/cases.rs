//! The truth-table case format of the upstream Kubernetes NetworkPolicy e2e
//! suite, as transcribed in `tests/data/netpol-cases.json`: namespaces and
//! labelled pods, the policies (with symbolic `ipBlockOfPod` entries), the
//! probes and the expected connectivity matrices.
//!
//! The compiler's tests, the datapath's tests and `hostnic-lab netpol` read the
//! same format through these types, so there is one parser and one resolver of
//! the symbolic IP blocks.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cluster::{ContainerPort, PodRef, PolicyNamespace};
use super::model::{NetworkPolicy, Protocol};

/// An expected or observed matrix: `from` pod (`ns/pod`) → `to` pod → connected.
pub type Matrix = BTreeMap<String, BTreeMap<String, bool>>;

/// One case: a cluster state and what connects in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TruthCase {
    /// Unique id of the case (a multi-step upstream test has one case per step).
    pub id: String,
    /// Upstream test name, if transcribed.
    #[serde(default)]
    pub name: String,
    /// Namespace name → labels.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// `ns/pod` → labels.
    pub pods: BTreeMap<String, BTreeMap<String, String>>,
    /// Every pod serves all of these; policies' named ports resolve against them.
    pub container_ports: Vec<ContainerPort>,
    /// NetworkPolicy objects as JSON, possibly with symbolic `ipBlockOfPod` entries.
    pub policies: Vec<Value>,
    /// The probes to run.
    pub probes: Vec<Probe>,
    /// `"<port>/<PROTO>"` → expected matrix.
    pub expected: BTreeMap<String, Matrix>,
}

/// A probe: connect to this port with this protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Destination port.
    pub port: u16,
    /// Protocol of the connection.
    pub protocol: Protocol,
}

impl Probe {
    /// The key of the probe's matrix, `80/TCP`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.port, self.protocol)
    }
}

/// A case whose policies could not be turned into [`NetworkPolicy`] objects.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// The file is not a list of cases.
    #[error("truth-table cases do not parse: {0}")]
    Parse(#[source] serde_json::Error),
    /// `ipBlockOfPod` names a pod without an address, or its prefix is bad.
    #[error("case {case}: ipBlockOfPod {pod:?}: {reason}")]
    Symbol {
        /// The case id.
        case: String,
        /// The pod named by the symbol.
        pod: String,
        /// What is wrong.
        reason: String,
    },
    /// A policy is not a NetworkPolicy.
    #[error("case {case}: policy {index} is not a NetworkPolicy: {source}")]
    Policy {
        /// The case id.
        case: String,
        /// Index in the case's `policies`.
        index: usize,
        /// The deserializer's complaint.
        #[source]
        source: serde_json::Error,
    },
}

/// Parses a cases file (a JSON array of [`TruthCase`]).
pub fn parse_cases(text: &str) -> Result<Vec<TruthCase>, CaseError> {
    serde_json::from_str(text).map_err(CaseError::Parse)
}

impl TruthCase {
    /// The case's namespaces as the compiler sees them.
    pub fn policy_namespaces(&self) -> Vec<PolicyNamespace> {
        self.namespaces
            .iter()
            .map(|(name, labels)| PolicyNamespace {
                name: name.clone(),
                labels: labels.clone(),
            })
            .collect()
    }

    /// The case's pods as references (keys that are not `ns/pod` are skipped).
    pub fn pod_refs(&self) -> Vec<PodRef> {
        self.pods.keys().filter_map(|k| k.parse().ok()).collect()
    }

    /// The policies with every `{"ipBlockOfPod": "ns/pod", "prefix": N}` replaced by
    /// that pod's address (from `ips`, keyed `ns/pod`) masked to `/N`.
    pub fn policies(
        &self,
        ips: &BTreeMap<String, Ipv4Addr>,
    ) -> Result<Vec<NetworkPolicy>, CaseError> {
        self.policies
            .iter()
            .enumerate()
            .map(|(index, p)| {
                let mut p = p.clone();
                self.resolve_symbols(&mut p, ips)?;
                serde_json::from_value(p).map_err(|source| CaseError::Policy {
                    case: self.id.clone(),
                    index,
                    source,
                })
            })
            .collect()
    }

    fn resolve_symbols(
        &self,
        v: &mut Value,
        ips: &BTreeMap<String, Ipv4Addr>,
    ) -> Result<(), CaseError> {
        match v {
            Value::Object(map) => {
                if let Some(pod) = map.get("ipBlockOfPod").and_then(Value::as_str) {
                    let symbol = |reason: &str| CaseError::Symbol {
                        case: self.id.clone(),
                        pod: pod.to_string(),
                        reason: reason.to_string(),
                    };
                    let ip = *ips.get(pod).ok_or_else(|| symbol("no address known"))?;
                    let prefix = map
                        .get("prefix")
                        .and_then(Value::as_u64)
                        .and_then(|p| u8::try_from(p).ok())
                        .ok_or_else(|| symbol("missing or bad prefix"))?;
                    let net = Ipv4Net::new(ip, prefix)
                        .map_err(|_| symbol("prefix longer than 32"))?
                        .trunc();
                    *v = Value::String(net.to_string());
                    return Ok(());
                }
                map.values_mut()
                    .try_for_each(|x| self.resolve_symbols(x, ips))
            }
            Value::Array(items) => items
                .iter_mut()
                .try_for_each(|x| self.resolve_symbols(x, ips)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(policies: Value) -> TruthCase {
        serde_json::from_value(serde_json::json!({
            "id": "c1",
            "namespaces": {"x": {"kubernetes.io/metadata.name": "x"}},
            "pods": {"x/a": {"pod": "a"}, "x/b": {"pod": "b"}},
            "containerPorts": [{"name": "serve-80-tcp", "containerPort": 80}],
            "policies": policies,
            "probes": [{"port": 80, "protocol": "TCP"}],
            "expected": {"80/TCP": {"x/a": {"x/b": true}}}
        }))
        .unwrap()
    }

    fn policy_with_block() -> Value {
        serde_json::json!([{
            "metadata": {"namespace": "x", "name": "p"},
            "spec": {
                "podSelector": {},
                "ingress": [{"from": [{"ipBlock": {
                    "cidr": {"ipBlockOfPod": "x/b", "prefix": 24},
                    "except": [{"ipBlockOfPod": "x/b", "prefix": 32}]
                }}]}]
            }
        }])
    }

    #[test]
    fn symbols_resolve_to_masked_cidrs() {
        let c = case(policy_with_block());
        let ips = BTreeMap::from([("x/b".to_string(), Ipv4Addr::new(10, 1, 2, 3))]);
        let policies = c.policies(&ips).unwrap();
        let json = serde_json::to_value(&policies[0]).unwrap();
        let block = &json["spec"]["ingress"][0]["from"][0]["ipBlock"];
        assert_eq!(block["cidr"], "10.1.2.0/24");
        assert_eq!(block["except"][0], "10.1.2.3/32");
        assert_eq!(c.probes[0].key(), "80/TCP");
        assert_eq!(
            c.pod_refs(),
            vec![PodRef::new("x", "a"), PodRef::new("x", "b")]
        );
    }

    #[test]
    fn an_unknown_pod_in_a_symbol_is_an_error() {
        let err = case(policy_with_block())
            .policies(&BTreeMap::new())
            .unwrap_err();
        assert!(
            matches!(err, CaseError::Symbol { ref pod, .. } if pod == "x/b"),
            "{err}"
        );
    }

    #[test]
    fn a_policy_that_is_not_one_is_an_error() {
        let err = case(serde_json::json!([{"spec": 3}]))
            .policies(&BTreeMap::new())
            .unwrap_err();
        assert!(matches!(err, CaseError::Policy { index: 0, .. }), "{err}");
    }
}
