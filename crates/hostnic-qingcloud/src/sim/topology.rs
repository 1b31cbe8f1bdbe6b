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
    /// NICs an instance may have, primary included (the real cloud: 64).
    #[serde(default = "default_max_nics")]
    pub max_nics_per_instance: usize,
    /// NICs a vxnet may have (the real cloud: 252).
    #[serde(default = "default_max_nics_per_vxnet")]
    pub max_nics_per_vxnet: usize,
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
    64
}

fn default_max_nics_per_vxnet() -> usize {
    252
}

/// The most vxnets a generated VPC has: the /24s of 172.16.0.0/12 after the first.
pub const MAX_GENERATED_VXNETS: usize = 4095;

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
            max_nics_per_vxnet: default_max_nics_per_vxnet(),
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
    /// A generated VPC: router `rtr-sim1` with 172.16.0.0/12, vxnets `vxnet-sim1` to
    /// `vxnet-simM` of /24 (`vxnet-simK` is the K-th /24 of the VPC, so `vxnet-sim1`
    /// is 172.16.1.0/24 as in the default topology), and instances `i-sim00001` to
    /// `i-simN` whose primary NICs are spread round-robin over the vxnets.
    pub fn generated(instances: usize, vxnets: usize) -> Result<Self, String> {
        if vxnets == 0 || vxnets > MAX_GENERATED_VXNETS {
            return Err(format!(
                "a generated VPC has 1 to {MAX_GENERATED_VXNETS} vxnets, not {vxnets}"
            ));
        }
        let per_vxnet = default_max_nics_per_vxnet();
        if instances > vxnets * per_vxnet {
            return Err(format!(
                "{instances} instances do not fit in {vxnets} vxnets of /24 ({per_vxnet} NICs each): use at least {} vxnets",
                instances.div_ceil(per_vxnet)
            ));
        }
        let vpc: Ipv4Net = "172.16.0.0/12".parse().expect("valid VPC network");
        let base = u32::from(vpc.network());
        Ok(Self {
            zone: default_zone(),
            max_nics_per_instance: default_max_nics(),
            max_nics_per_vxnet: per_vxnet,
            routers: vec![RouterSpec {
                id: "rtr-sim1".into(),
                vpc_network: vpc,
            }],
            vxnets: (1..=vxnets)
                .map(|k| VxnetSpec {
                    id: format!("vxnet-sim{k}"),
                    cidr: Ipv4Net::new(std::net::Ipv4Addr::from(base + ((k as u32) << 8)), 24)
                        .expect("a /24"),
                    router: Some("rtr-sim1".into()),
                })
                .collect(),
            instances: (1..=instances)
                .map(|i| InstanceSpec {
                    id: format!("i-sim{i:05}"),
                    vxnet: format!("vxnet-sim{}", (i - 1) % vxnets + 1),
                })
                .collect(),
        })
    }

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
        if self.max_nics_per_vxnet == 0 {
            return Err("max_nics_per_vxnet must be at least 1".into());
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
        assert_eq!(t.max_nics_per_instance, 64);
        assert_eq!(t.max_nics_per_vxnet, 252);
        assert_eq!(t.vxnets[0].cidr.to_string(), "10.0.5.0/24");
    }

    #[test]
    fn a_generated_vpc_has_the_asked_size_and_matches_the_default_naming() {
        let t = Topology::generated(1000, 8).unwrap();
        t.validate().unwrap();
        assert_eq!(t.instances.len(), 1000);
        assert_eq!(t.vxnets.len(), 8);
        assert_eq!(t.vxnets[0].id, "vxnet-sim1");
        assert_eq!(t.vxnets[0].cidr.to_string(), "172.16.1.0/24");
        assert_eq!(t.vxnets[7].cidr.to_string(), "172.16.8.0/24");
        assert_eq!(t.instances[0].id, "i-sim00001");
        assert_eq!(t.instances[9].vxnet, "vxnet-sim2");
        let big = Topology::generated(10, MAX_GENERATED_VXNETS).unwrap();
        assert_eq!(
            big.vxnets.last().unwrap().cidr.to_string(),
            "172.31.255.0/24"
        );
        assert!(Topology::generated(10, 0).is_err());
        assert!(Topology::generated(10, MAX_GENERATED_VXNETS + 1).is_err());
        let err = Topology::generated(253, 1).unwrap_err();
        assert!(err.contains("at least 2 vxnets"), "{err}");
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
