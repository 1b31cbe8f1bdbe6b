//! The pod sources the binary can choose: [`PodSourceKind`] is the choice on
//! the command line; both sources live in `hostnic-k8s` ([`StaticPods`] for a
//! node without an API server).

use std::path::PathBuf;
use std::str::FromStr;

pub use hostnic_k8s::StaticPods;

/// Where the agent learns which pods should exist on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodSourceKind {
    /// Nothing: reconcile works from the checkpoint, cloud and host only, and
    /// never releases an attachment because its pod is unknown.
    None,
    /// A JSON or YAML list of `{namespace, name, pending}`, re-read on every use.
    Static(PathBuf),
    /// The Kubernetes API server: the pods bound to this node (`hostnic-k8s`).
    Kube,
}

impl FromStr for PodSourceKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(PodSourceKind::None),
            "kube" => Ok(PodSourceKind::Kube),
            _ => match s.strip_prefix("static:") {
                Some(path) if !path.is_empty() => Ok(PodSourceKind::Static(path.into())),
                _ => Err(format!(
                    "unknown pod source {s:?}: expected none, kube or static:FILE"
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_source_choice_parses() {
        assert_eq!(
            "none".parse::<PodSourceKind>().unwrap(),
            PodSourceKind::None
        );
        assert_eq!(
            "static:/tmp/p.yaml".parse::<PodSourceKind>().unwrap(),
            PodSourceKind::Static("/tmp/p.yaml".into())
        );
        assert!("static:".parse::<PodSourceKind>().is_err());
        assert_eq!(
            "kube".parse::<PodSourceKind>().unwrap(),
            PodSourceKind::Kube
        );
    }
}
