//! [`HostnicNode`]: one object per node (cluster-scoped, named like the node) in
//! group `hostnic.io`, version `v1alpha1`. Its `spec` is the node's request,
//! written by the node's agent; its `status` is the answer, written by the
//! controller: the NICs attached for the node, jobs in flight, conditions.
//!
//! The spec's counts are signed on purpose: a negative or malformed request is
//! still read, and refused in the status with a clear condition, instead of
//! failing to decode (which would hide the object from the controller).
//! `deploy/crd.yaml` is generated from these types ([`crd_yaml`]).

use std::collections::BTreeSet;

use hostnic_core::fleet::{
    JobAction, JobRecord, NicPhase, NodeDemand, NodeName, NodeNic, NodeRecord, NodeView,
};
use hostnic_core::types::{InstanceId, JobId, NicId, VxnetId};
use kube::CustomResource;
use kube::CustomResourceExt as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The request of one node, written by its agent when its need changes.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "hostnic.io",
    version = "v1alpha1",
    kind = "HostnicNode",
    plural = "hostnicnodes",
    shortname = "hnn",
    status = "HostnicNodeStatus",
    doc = "The cloud NICs of one node: what its agent asks (spec) and what the hostnic controller got it (status).",
    printcolumn = r#"{"name":"Instance","type":"string","jsonPath":".spec.instanceId"}"#,
    printcolumn = r#"{"name":"Wanted","type":"integer","jsonPath":".spec.wantNics"}"#,
    printcolumn = r#"{"name":"Attached","type":"integer","jsonPath":".status.attached"}"#,
    printcolumn = r#"{"name":"Room","type":"integer","description":"NICs the node may still get under its maxNics","jsonPath":".status.room"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HostnicNodeSpec {
    /// The node's QingCloud instance id.
    pub instance_id: String,
    /// Vxnets of its pod NICs, most preferred first; empty: its primary NIC's vxnet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vxnets: Vec<String>,
    /// Pod NICs it wants attached in total (those it has included).
    pub want_nics: i64,
    /// The most pod NICs it may hold (1 to 62).
    pub max_nics: i64,
    /// NICs (ids, i.e. MACs) it gives back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub release: Vec<String>,
    /// NICs the status lists as attached that its host does not see.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// Pods waiting for a NIC right now (its calls go first).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub waiting_pods: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// The controller's answer. Every field is written (none skipped), so a merge
/// patch of the whole status replaces it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostnicNodeStatus {
    /// The spec generation this status answers.
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// NICs attached to the instance (usable), attaching, detaching, or reserved
    /// for it (about to be attached).
    #[serde(default)]
    pub nics: Vec<HostnicNic>,
    /// Jobs in flight on its NICs (recorded before they are waited on, so that
    /// another controller replica can follow them).
    #[serde(default)]
    pub jobs: Vec<HostnicJob>,
    /// NICs attached and not given back.
    #[serde(default)]
    pub attached: i64,
    /// NICs it may still get under its `maxNics`.
    #[serde(default)]
    pub room: i64,
    /// `Valid`, `Ready`, `QuotaExhausted`, `VxnetFull`, `InstanceFull`.
    #[serde(default)]
    pub conditions: Vec<HostnicCondition>,
}

/// One NIC of the node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostnicNic {
    /// Its id: the MAC address the host finds it by.
    pub id: String,
    /// Its one address.
    pub ip: String,
    /// Its vxnet.
    pub vxnet: String,
    /// The vxnet's network (CIDR), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// The vxnet's gateway, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// `Attached` (usable), `Attaching`, `Detaching` or `Reserved` (about to be
    /// attached: not usable yet).
    pub phase: String,
}

/// A job in flight.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostnicJob {
    /// The job id.
    pub id: String,
    /// `Attach` or `Detach`.
    pub action: String,
    /// Its NICs.
    pub nics: Vec<String>,
}

/// A condition, shaped like `metav1.Condition`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostnicCondition {
    /// The condition's type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Why, in CamelCase.
    pub reason: String,
    /// Why, in words.
    #[serde(default)]
    pub message: String,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
    /// The spec generation it was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The CustomResourceDefinition as YAML, as `deploy/crd.yaml` holds it.
pub fn crd_yaml() -> String {
    let crd = HostnicNode::crd();
    let body = serde_yaml::to_string(&crd).expect("a CRD serialises");
    format!(
        "# Generated from crates/hostnic-k8s/src/crd.rs: do not edit.\n\
         # Regenerate with: cargo run -p hostnic-k8s --example crd > deploy/crd.yaml\n{body}"
    )
}

fn phase_name(phase: NicPhase) -> &'static str {
    match phase {
        NicPhase::Reserved => "Reserved",
        NicPhase::Attached => "Attached",
        NicPhase::Attaching => "Attaching",
        NicPhase::Detaching => "Detaching",
    }
}

fn parse_phase(phase: &str) -> Option<NicPhase> {
    Some(match phase {
        "Reserved" => NicPhase::Reserved,
        "Attached" => NicPhase::Attached,
        "Attaching" => NicPhase::Attaching,
        "Detaching" => NicPhase::Detaching,
        _ => return None,
    })
}

/// The largest count a spec may hold before it is refused as absurd.
const COUNT_MAX: i64 = 1_000_000;

impl HostnicNode {
    /// The node's name (the object's).
    pub fn node_name(&self) -> NodeName {
        NodeName::new(self.metadata.name.clone().unwrap_or_default())
    }

    /// The request as the fleet planner takes it. A spec that cannot be read as a
    /// request (a negative or absurd count, a NIC id that is not a MAC) becomes a
    /// demand marked invalid: refused with the reason, its instance kept.
    pub fn demand(&self) -> NodeDemand {
        let s = &self.spec;
        let mut problems: Vec<String> = Vec::new();
        let mut count = |field: &str, v: i64| -> u32 {
            if !(0..=COUNT_MAX).contains(&v) {
                problems.push(format!("spec.{field} is {v}"));
                0
            } else {
                u32::try_from(v).unwrap_or(0)
            }
        };
        let want = count("wantNics", s.want_nics);
        let max_nics = count("maxNics", s.max_nics);
        let waiting = count("waitingPods", s.waiting_pods);
        let mut nics = |field: &str, ids: &[String]| -> BTreeSet<NicId> {
            ids.iter()
                .filter_map(|id| match NicId::new(id) {
                    Ok(n) => Some(n),
                    Err(_) => {
                        problems.push(format!("spec.{field} names {id:?}, not a NIC id (MAC)"));
                        None
                    }
                })
                .collect()
        };
        let release = nics("release", &s.release);
        let missing = nics("missing", &s.missing);
        if s.instance_id.trim().is_empty() {
            problems.push("spec.instanceId is empty".into());
        }
        NodeDemand {
            node: self.node_name(),
            instance: InstanceId::new(s.instance_id.trim()),
            vxnets: s.vxnets.iter().map(|v| VxnetId::new(v.trim())).collect(),
            want,
            max_nics,
            release,
            missing,
            waiting,
            invalid: (!problems.is_empty()).then(|| problems.join("; ")),
        }
    }

    /// What the status records for a controller replica taking over: the NICs
    /// and jobs in flight (none without a status).
    pub fn record(&self) -> Option<NodeRecord> {
        let status = self.status.as_ref()?;
        let nics = status
            .nics
            .iter()
            .filter_map(|n| {
                Some(NodeNic {
                    id: NicId::new(&n.id).ok()?,
                    ip: n.ip.parse().ok()?,
                    vxnet: VxnetId::new(&n.vxnet),
                    cidr: n.cidr.as_deref().and_then(|c| c.parse().ok()),
                    gateway: n.gateway.as_deref().and_then(|g| g.parse().ok()),
                    phase: parse_phase(&n.phase)?,
                })
            })
            .collect();
        let jobs = status
            .jobs
            .iter()
            .filter_map(|j| {
                Some(JobRecord {
                    id: JobId::new(&j.id),
                    action: match j.action.as_str() {
                        "Attach" => JobAction::Attach,
                        "Detach" => JobAction::Detach,
                        _ => return None,
                    },
                    nics: j.nics.iter().filter_map(|n| NicId::new(n).ok()).collect(),
                })
            })
            .collect();
        Some(NodeRecord {
            node: self.node_name(),
            instance: InstanceId::new(self.spec.instance_id.trim()),
            nics,
            jobs,
        })
    }
}

impl HostnicNodeStatus {
    /// The status for `view`, answering spec generation `generation`. Conditions
    /// keep their transition time from `previous` when their status did not
    /// change; `now` is the time of this answer (RFC 3339).
    pub fn from_view(
        view: &NodeView,
        max_nics: i64,
        generation: Option<i64>,
        previous: Option<&HostnicNodeStatus>,
        now: &str,
    ) -> Self {
        let nics = view
            .nics
            .iter()
            .map(|n| HostnicNic {
                id: n.id.to_string(),
                ip: n.ip.to_string(),
                vxnet: n.vxnet.to_string(),
                cidr: n.cidr.map(|c| c.to_string()),
                gateway: n.gateway.map(|g| g.to_string()),
                phase: phase_name(n.phase).to_string(),
            })
            .collect();
        let jobs = view
            .jobs
            .iter()
            .map(|j| HostnicJob {
                id: j.id.to_string(),
                action: match j.action {
                    JobAction::Attach => "Attach",
                    JobAction::Detach => "Detach",
                }
                .into(),
                nics: j.nics.iter().map(ToString::to_string).collect(),
            })
            .collect();
        let held = view
            .nics
            .iter()
            .filter(|n| n.phase != NicPhase::Detaching)
            .count() as i64;
        let condition = |type_: &str, ok: bool, reason: &str, message: String| {
            let status = if ok { "True" } else { "False" };
            let since = previous
                .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
                .filter(|c| c.status == status)
                .map_or_else(|| now.to_string(), |c| c.last_transition_time.clone());
            HostnicCondition {
                type_: type_.into(),
                status: status.into(),
                reason: reason.into(),
                message,
                last_transition_time: since,
                observed_generation: generation,
            }
        };
        let mut conditions = Vec::new();
        match &view.refusal {
            Some(r) => conditions.push(condition("Valid", false, r.reason(), r.to_string())),
            None if !view.verified => conditions.push(condition(
                "Valid",
                false,
                "Checking",
                "the instance and vxnets are being checked with the cloud".into(),
            )),
            None => conditions.push(condition(
                "Valid",
                true,
                "Accepted",
                "the request is accepted".into(),
            )),
        }
        let (ready_reason, ready_message) = if view.ready {
            ("NicsAttached", format!("{} NICs attached", view.attached))
        } else if let Some(r) = &view.refusal {
            (r.reason(), r.to_string())
        } else if view.quota_exhausted {
            (
                "QuotaExhausted",
                "waiting for the cloud's request budget".to_string(),
            )
        } else if view.vxnet_full {
            (
                "VxnetFull",
                "every vxnet the node may use is out of addresses".to_string(),
            )
        } else if view.instance_full {
            (
                "InstanceFull",
                "the instance takes no more NICs".to_string(),
            )
        } else {
            (
                "Attaching",
                format!("{} NICs attached, more on the way", view.attached),
            )
        };
        conditions.push(condition("Ready", view.ready, ready_reason, ready_message));
        let last_error = view.last_error.clone().unwrap_or_default();
        conditions.push(condition(
            "QuotaExhausted",
            view.quota_exhausted,
            if view.quota_exhausted {
                "RequestBudgetSpent"
            } else {
                "WithinBudget"
            },
            if view.quota_exhausted {
                "the node's calls are held back by the request budget or the breaker on the account's quota".into()
            } else {
                String::new()
            },
        ));
        conditions.push(condition(
            "VxnetFull",
            view.vxnet_full,
            if view.vxnet_full {
                "NoAddresses"
            } else {
                "HasRoom"
            },
            if view.vxnet_full {
                "every vxnet the node may use is out of addresses or NICs".into()
            } else {
                String::new()
            },
        ));
        conditions.push(condition(
            "InstanceFull",
            view.instance_full,
            if view.instance_full {
                "NicLimit"
            } else {
                "HasRoom"
            },
            if view.instance_full {
                last_error
            } else {
                String::new()
            },
        ));
        Self {
            observed_generation: generation,
            nics,
            jobs,
            attached: i64::from(view.attached),
            room: max_nics.max(0).saturating_sub(held).max(0),
            conditions,
        }
    }

    /// The condition of `type_`, if set.
    pub fn condition(&self, type_: &str) -> Option<&HostnicCondition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// The same status ignoring transition times (to tell whether a write is needed).
    pub fn same_as(&self, other: &HostnicNodeStatus) -> bool {
        let strip = |s: &HostnicNodeStatus| {
            let mut s = s.clone();
            for c in &mut s.conditions {
                c.last_transition_time.clear();
            }
            s
        };
        strip(self) == strip(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(spec: HostnicNodeSpec) -> HostnicNode {
        HostnicNode::new("node-1", spec)
    }

    #[test]
    fn a_sane_spec_is_a_demand() {
        let d = node(HostnicNodeSpec {
            instance_id: "i-abc".into(),
            vxnets: vec!["vxnet-1".into()],
            want_nics: 5,
            max_nics: 62,
            release: vec!["52:54:00:00:00:01".into()],
            waiting_pods: 2,
            ..Default::default()
        })
        .demand();
        assert_eq!(d.node.as_str(), "node-1");
        assert_eq!((d.want, d.max_nics, d.waiting), (5, 62, 2));
        assert_eq!(d.release.len(), 1);
        assert!(d.invalid.is_none());
    }

    #[test]
    fn negative_absurd_or_malformed_requests_are_marked_invalid_with_every_reason() {
        let d = node(HostnicNodeSpec {
            instance_id: "i-abc".into(),
            want_nics: -3,
            max_nics: 10_000_000,
            release: vec!["eth0".into()],
            ..Default::default()
        })
        .demand();
        let why = d.invalid.expect("invalid");
        assert!(why.contains("spec.wantNics is -3"), "{why}");
        assert!(why.contains("spec.maxNics is 10000000"), "{why}");
        assert!(why.contains("\"eth0\""), "{why}");
        assert_eq!(d.instance.as_str(), "i-abc", "the instance is kept");
    }

    #[test]
    fn the_crd_is_cluster_scoped_with_a_status_subresource_and_columns() {
        let crd = HostnicNode::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.group, "hostnic.io");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<&str> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "Instance", "Wanted", "Attached", "Room", "Ready", "Reason", "Age"
            ]
        );
    }
}
