//! What exists in the simulated zone at start: routers, vxnets, instances.

use std::path::Path;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// A VPC router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterSpec {
    /// Router id, e.g. `rtr-sim1`.
    pub id: String,
    /// The VPC network, e.g. `172.16.0.0/16`.
    pub vpc_network: Ipv4Net,
}

/// A vxnet joined to a router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxnetSpec {
    /// Vxnet id, e.g. `vxnet-sim1`.
    pub id: String,
    /// Its network; the gateway is `.1`, usable addresses `.2` to broadcast-2.
    pub cidr: Ipv4Net,
    /// The router it is joined to (none: a vxnet outside any VPC).
    #[serde(default)]
    pub router: Option<String>,
}

/// An instance with its primary NIC in `vxnet`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// Instance id, e.g. `i-sim00001`.
    pub id: String,
    /// The vxnet of its primary NIC.
    pub vxnet: String,
}

/// The simulated zone. Loaded from YAML (or JSON) with `--topology`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// The zone, e.g. `pek3a`.
    #[serde(default = "default_zone")]
    pub zone: String,
    /// NICs an instance may have, primary included.
    #[serde(default = "default_max_nics")]
    pub max_nics_per_instance: usize,
    /// VPC routers.
    #[serde(default)]
    pub routers: Vec<RouterSpec>,
    /// Vxnets.
    #[serde(default)]
    pub vxnets: Vec<VxnetSpec>,
    /// Instances.
    #[serde(default)]
    pub instances: Vec<InstanceSpec>,
}

fn default_zone() -> String {
    "pek3a".into()
}

fn default_max_nics() -> usize {
    63
}

/// A topology file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// Unreadable file.
    #[error("cannot read topology {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not a topology.
    #[error("invalid topology {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl Default for Topology {
    /// Zone `pek3a`, router `rtr-sim1` with 172.16.0.0/16, `vxnet-sim1` 172.16.1.0/24 and
    /// `vxnet-sim2` 172.16.2.0/24, instances `i-sim00001..3` with primary NICs in `vxnet-sim1`.
    fn default() -> Self {
        let net = |s: &str| s.parse::<Ipv4Net>().expect("valid default CIDR");
        Self {
            zone: default_zone(),
            max_nics_per_instance: default_max_nics(),
            routers: vec![RouterSpec {
                id: "rtr-sim1".into(),
                vpc_network: net("172.16.0.0/16"),
            }],
            vxnets: ["vxnet-sim1", "vxnet-sim2"]
                .iter()
                .enumerate()
                .map(|(i, id)| VxnetSpec {
                    id: id.to_string(),
                    cidr: net(&format!("172.16.{}.0/24", i + 1)),
                    router: Some("rtr-sim1".into()),
                })
                .collect(),
            instances: (1..=3)
                .map(|i| InstanceSpec {
                    id: format!("i-sim{i:05}"),
                    vxnet: "vxnet-sim1".into(),
                })
                .collect(),
        }
    }
}

impl Topology {
    /// Reads a YAML/JSON topology file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, TopologyError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: shown.clone(),
            source,
        })?;
        let topo: Topology = serde_yaml::from_str(&text).map_err(|e| TopologyError::Invalid {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        topo.validate().map_err(|reason| TopologyError::Invalid {
            path: shown,
            reason,
        })?;
        Ok(topo)
    }

    /// Checks references between routers, vxnets and instances.
    pub fn validate(&self) -> Result<(), String> {
        for v in &self.vxnets {
            if let Some(r) = &v.router
                && !self.routers.iter().any(|x| &x.id == r)
            {
                return Err(format!("vxnet {} refers to unknown router {r}", v.id));
            }
            if v.cidr.prefix_len() > 29 {
                return Err(format!("vxnet {} is too small", v.id));
            }
        }
        for i in &self.instances {
            if !self.vxnets.iter().any(|v| v.id == i.vxnet) {
                return Err(format!(
                    "instance {} refers to unknown vxnet {}",
                    i.id, i.vxnet
                ));
            }
        }
        if self.max_nics_per_instance == 0 {
            return Err("max_nics_per_instance must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_yaml_topology_file_loads_with_defaults_for_missing_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topo.yaml");
        std::fs::write(
            &path,
            "routers:\n  - {id: rtr-a, vpc_network: 10.0.0.0/16}\nvxnets:\n  - {id: vxnet-a, cidr: 10.0.5.0/24, router: rtr-a}\ninstances:\n  - {id: i-a, vxnet: vxnet-a}\n",
        )
        .unwrap();
        let t = Topology::load(&path).unwrap();
        assert_eq!(t.zone, "pek3a");
        assert_eq!(t.max_nics_per_instance, 63);
        assert_eq!(t.vxnets[0].cidr.to_string(), "10.0.5.0/24");
    }

    #[test]
    fn dangling_references_are_rejected() {
        let mut t = Topology::default();
        t.instances[0].vxnet = "vxnet-nope".into();
        assert!(t.validate().unwrap_err().contains("vxnet-nope"));
        let mut t = Topology::default();
        t.vxnets[0].router = Some("rtr-nope".into());
        assert!(t.validate().unwrap_err().contains("rtr-nope"));
    }
}
