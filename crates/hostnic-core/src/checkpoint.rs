//! The node's durable state: what the agent writes after every change and reads
//! back after a crash or a reboot.
//!
//! The format is versioned (`"version": "hostnic/1"`), JSON, and holds only what
//! cannot be re-discovered: which pod holds which NIC, the NICs' tables, their
//! lifecycle as last known. Anything uncertain (a job that was running) is settled
//! by the startup reconcile against the cloud and the host.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::PoolConfig;
use crate::pool::{NicEntry, NodeState, PodAttachment};
use crate::types::{InstanceId, Timestamp, Vxnet};

/// The format version this build reads and writes.
pub const CHECKPOINT_VERSION: &str = "hostnic/1";

/// A snapshot of the node's NICs and attachments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Always [`CHECKPOINT_VERSION`].
    pub version: String,
    /// Increases with every write; a store may ignore an older one arriving late.
    pub generation: u64,
    /// The instance the NICs belong to: a checkpoint of another instance is not used.
    pub instance: InstanceId,
    /// When it was written.
    pub written_at: Timestamp,
    /// Every NIC of the node (shared with the state it was taken from).
    pub nics: Vec<Arc<NicEntry>>,
    /// Every pod attachment (shared with the state it was taken from).
    pub attachments: Vec<Arc<PodAttachment>>,
}

/// Why a checkpoint cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Written by an incompatible version of hostnic.
    #[error("checkpoint version {found:?} is not supported (expected {CHECKPOINT_VERSION:?})")]
    Version {
        /// The version found.
        found: String,
    },
    /// Written on another instance (the state dir was copied, or the node was re-imaged).
    #[error("checkpoint belongs to instance {found}, this node is {expected}")]
    Instance {
        /// The checkpoint's instance.
        found: InstanceId,
        /// This node's instance.
        expected: InstanceId,
    },
    /// Not valid JSON of the expected shape.
    #[error("checkpoint is malformed: {0}")]
    Malformed(String),
    /// Self-contradictory (a NIC held twice, a table used twice…).
    #[error("checkpoint is inconsistent: {0}")]
    Inconsistent(String),
}

impl Checkpoint {
    /// Parses a checkpoint from JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, CheckpointError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: String,
        }
        let v: VersionOnly =
            serde_json::from_slice(bytes).map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        if v.version != CHECKPOINT_VERSION {
            return Err(CheckpointError::Version { found: v.version });
        }
        serde_json::from_slice(bytes).map_err(|e| CheckpointError::Malformed(e.to_string()))
    }

    /// Serialises the checkpoint as pretty JSON (it is meant to be read by operators too).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

impl NodeState {
    /// A checkpoint of this state.
    pub fn checkpoint(&self, generation: u64, now: Timestamp) -> Checkpoint {
        Checkpoint {
            version: CHECKPOINT_VERSION.to_string(),
            generation,
            instance: self.instance.clone(),
            written_at: now,
            nics: self.nics.shared_values().cloned().collect(),
            attachments: self.attachments.shared_values().cloned().collect(),
        }
    }

    /// Rebuilds the state from a checkpoint. Operations that were in flight are kept
    /// as they were: the startup reconcile settles them against the cloud.
    pub fn restore(
        config: PoolConfig,
        instance: InstanceId,
        vxnets: Vec<Vxnet>,
        checkpoint: Checkpoint,
    ) -> Result<Self, CheckpointError> {
        if checkpoint.version != CHECKPOINT_VERSION {
            return Err(CheckpointError::Version {
                found: checkpoint.version,
            });
        }
        if checkpoint.instance != instance {
            return Err(CheckpointError::Instance {
                found: checkpoint.instance,
                expected: instance,
            });
        }
        let mut state = NodeState::new(config, instance, vxnets);
        for nic in checkpoint.nics {
            state.nics.insert_shared(nic.id.clone(), nic);
        }
        for att in checkpoint.attachments {
            state.attachments.insert_shared(att.pod.attachment(), att);
        }
        state
            .check_invariants()
            .map_err(CheckpointError::Inconsistent)?;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::pool::CloudLink;
    use crate::types::{CloudNic, CloudNicStatus, NicId, PodKey, VxnetId};

    fn state_with_one_pod() -> NodeState {
        let mut s = NodeState::new(PoolConfig::default(), InstanceId::new("i-1"), vec![]);
        let nic = CloudNic {
            id: NicId::from_mac([0x52, 0x54, 0, 0, 0, 1]),
            name: "hostnic_i-1".into(),
            vxnet: VxnetId::new("vxnet-1"),
            ip: Ipv4Addr::new(172, 16, 1, 5),
            instance: Some(InstanceId::new("i-1")),
            status: CloudNicStatus::InUse,
            primary: false,
        };
        s.insert_cloud_nic(&nic, CloudLink::Attached, Timestamp(0));
        s.nics.get_mut(&nic.id).unwrap().host_ready = true;
        let pod = PodKey {
            namespace: "default".into(),
            name: "web".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
        };
        s.assign(&pod, "/run/netns/x", Timestamp(1)).unwrap();
        s
    }

    #[test]
    fn checkpoint_round_trips_through_json() {
        let s = state_with_one_pod();
        let cp = s.checkpoint(7, Timestamp(2));
        let json = cp.to_json();
        assert!(String::from_utf8_lossy(&json).contains("\"version\": \"hostnic/1\""));
        let back = Checkpoint::from_json(&json).unwrap();
        assert_eq!(back, cp);
        let restored =
            NodeState::restore(PoolConfig::default(), InstanceId::new("i-1"), vec![], back)
                .unwrap();
        assert_eq!(restored.nics, s.nics);
        assert_eq!(restored.attachments, s.attachments);
    }

    #[test]
    fn foreign_or_future_checkpoints_are_refused() {
        let cp = state_with_one_pod().checkpoint(1, Timestamp(0));
        let err = NodeState::restore(
            PoolConfig::default(),
            InstanceId::new("i-2"),
            vec![],
            cp.clone(),
        )
        .unwrap_err();
        assert!(matches!(err, CheckpointError::Instance { .. }));
        let mut json: serde_json::Value = serde_json::from_slice(&cp.to_json()).unwrap();
        json["version"] = "hostnic/2".into();
        let err = Checkpoint::from_json(json.to_string().as_bytes()).unwrap_err();
        assert_eq!(
            err,
            CheckpointError::Version {
                found: "hostnic/2".into()
            }
        );
        assert!(matches!(
            Checkpoint::from_json(b"{"),
            Err(CheckpointError::Malformed(_))
        ));
    }

    #[test]
    fn inconsistent_checkpoint_is_refused() {
        let mut cp = state_with_one_pod().checkpoint(1, Timestamp(0));
        let mut twin = (*cp.attachments[0]).clone();
        twin.pod.container_id = "c2".into();
        cp.attachments.push(twin.into());
        let err = NodeState::restore(PoolConfig::default(), InstanceId::new("i-1"), vec![], cp)
            .unwrap_err();
        assert!(matches!(err, CheckpointError::Inconsistent(_)), "{err}");
    }
}
