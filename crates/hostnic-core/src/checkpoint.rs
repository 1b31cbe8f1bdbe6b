//! The node's durable state: what the agent writes after every change and reads
//! back after a crash or a reboot.
//!
//! The format is versioned (`"version": "hostnic/1"`), JSON, and holds only what
//! cannot be re-discovered: which pod holds which NIC, the NICs' tables, their
//! lifecycle as last known. Anything uncertain (a job that was running) is settled
//! by the startup reconcile against the cloud and the host.
//!
//! [`Checkpoint::to_json`] ends the document with a `"crc32"` field: the CRC-32 of
//! the document as it reads without that field. A byte changed anywhere is found by
//! [`Checkpoint::from_json`] (a wrong checksum, a wrong field, or JSON that does not
//! parse); a document cut short reads as [`CheckpointError::Truncated`]. A document
//! without the field (written before it existed) is read when its fields are exactly
//! the format's. A checkpoint that cannot be used is not the end of the node: the
//! startup reconcile rebuilds from the witnesses ([`crate::recovery`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::PoolConfig;
use crate::pool::{NicEntry, NodeState, PodAttachment};
use crate::types::{InstanceId, Timestamp, Vxnet};

/// The format version this build reads and writes.
pub const CHECKPOINT_VERSION: &str = "hostnic/1";

/// What ends a checkpoint document, before the checksum's 8 hex digits.
const CRC_FIELD: &[u8] = b",\n  \"crc32\": \"";
/// What follows the checksum's digits.
const CRC_END: &[u8] = b"\"\n}";
/// The fields of the format, for documents written without a checksum.
const FIELDS: [&str; 6] = [
    "version",
    "generation",
    "instance",
    "written_at",
    "nics",
    "attachments",
];

/// Why a checkpoint could not be trusted at start-up: the label of
/// `hostnic_checkpoint_recovered_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryReason {
    /// There was none, yet the cloud or the host shows NICs or pods of this node (the
    /// state directory was deleted or replaced).
    Missing,
    /// A write was cut short: the snapshot ends early.
    Torn,
    /// Its bytes changed: a checksum, a field or a record of the journal is wrong.
    Corrupt,
    /// It could not be read (an I/O error).
    Unreadable,
    /// It belongs to another instance or to an unknown version of hostnic.
    Foreign,
    /// It read cleanly but is older than the host: pods alive on the node are not in
    /// it (rolled back, or the agent died before an ADD's record landed).
    Stale,
}

impl RecoveryReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryReason::Missing => "missing",
            RecoveryReason::Torn => "torn",
            RecoveryReason::Corrupt => "corrupt",
            RecoveryReason::Unreadable => "unreadable",
            RecoveryReason::Foreign => "foreign",
            RecoveryReason::Stale => "stale",
        }
    }

    /// In words, after "checkpoint".
    pub fn describe(self) -> &'static str {
        match self {
            RecoveryReason::Missing => "missing",
            RecoveryReason::Torn => "torn (a write was cut short)",
            RecoveryReason::Corrupt => "corrupt",
            RecoveryReason::Unreadable => "unreadable",
            RecoveryReason::Foreign => "of another instance or version",
            RecoveryReason::Stale => "older than the host",
        }
    }
}

/// What a store found wrong with the checkpoint it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointDamage {
    /// Why it cannot be trusted.
    pub reason: RecoveryReason,
    /// What exactly, and where the damaged files were kept for inspection.
    pub detail: String,
}

/// What a [`CheckpointStore`](crate::ports::CheckpointStore) found when loading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The newest checkpoint that could be read; after damage, the best intact one.
    pub checkpoint: Option<Checkpoint>,
    /// What was wrong, if anything.
    pub damage: Option<CheckpointDamage>,
    /// The highest generation the store saw, damaged parts included: the engine counts
    /// on from it, so that what it writes next is newer than anything left behind.
    pub generation: u64,
}

impl Loaded {
    /// A load that found `checkpoint` (or none) and nothing wrong.
    pub fn clean(checkpoint: Option<Checkpoint>) -> Self {
        Loaded {
            generation: checkpoint.as_ref().map_or(0, |c| c.generation),
            checkpoint,
            damage: None,
        }
    }
}

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
    /// The document ends early: a write was cut short.
    #[error("checkpoint is truncated: {0}")]
    Truncated(String),
    /// The checksum does not match the document: its bytes changed.
    #[error("checkpoint fails its checksum (stored {stored:08x}, computed {computed:08x})")]
    Checksum {
        /// The checksum the document carries.
        stored: u32,
        /// The checksum of the document as read.
        computed: u32,
    },
    /// Self-contradictory (a NIC held twice, a table used twice…).
    #[error("checkpoint is inconsistent: {0}")]
    Inconsistent(String),
}

impl CheckpointError {
    /// Why a checkpoint failing with this error cannot be trusted.
    pub fn reason(&self) -> RecoveryReason {
        match self {
            CheckpointError::Version { .. } | CheckpointError::Instance { .. } => {
                RecoveryReason::Foreign
            }
            CheckpointError::Truncated(_) => RecoveryReason::Torn,
            CheckpointError::Malformed(_)
            | CheckpointError::Checksum { .. }
            | CheckpointError::Inconsistent(_) => RecoveryReason::Corrupt,
        }
    }
}

impl Checkpoint {
    /// Parses a checkpoint written by [`Checkpoint::to_json`], checksum verified (see
    /// the module documentation).
    pub fn from_json(bytes: &[u8]) -> Result<Self, CheckpointError> {
        let bytes = bytes.trim_ascii_end();
        let body = match find_last(bytes, CRC_FIELD) {
            Some(at) => {
                let rest = &bytes[at + CRC_FIELD.len()..];
                if rest.len() < 8 + CRC_END.len()
                    && CRC_END.starts_with(rest.get(8..).unwrap_or(b""))
                {
                    return Err(CheckpointError::Truncated(
                        "the document ends inside its checksum".into(),
                    ));
                }
                // Exactly as written: eight lower-case hex digits (so that no changed
                // byte reads as the same checksum).
                let stored = std::str::from_utf8(&rest[..8.min(rest.len())])
                    .ok()
                    .filter(|hex| hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                    .filter(|_| rest.len() == 8 + CRC_END.len() && &rest[8..] == CRC_END)
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| {
                        CheckpointError::Malformed("the checksum field is damaged".into())
                    })?;
                let mut body = Vec::with_capacity(at + 2);
                body.extend_from_slice(&bytes[..at]);
                body.extend_from_slice(b"\n}");
                let computed = crc32fast::hash(&body);
                if stored != computed {
                    return Err(CheckpointError::Checksum { stored, computed });
                }
                std::borrow::Cow::Owned(body)
            }
            None => {
                // Written before the checksum: only a document of exactly this format's
                // fields (a damaged checksum field is not taken for a missing one).
                let fields: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(bytes).map_err(json_error)?;
                if let Some(found) = fields.get("version").and_then(|v| v.as_str())
                    && found != CHECKPOINT_VERSION
                {
                    return Err(CheckpointError::Version {
                        found: found.to_string(),
                    });
                }
                if let Some(odd) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
                    return Err(CheckpointError::Malformed(format!("unknown field {odd:?}")));
                }
                std::borrow::Cow::Borrowed(bytes)
            }
        };
        #[derive(Deserialize)]
        struct VersionOnly {
            version: String,
        }
        let v: VersionOnly = serde_json::from_slice(&body).map_err(json_error)?;
        if v.version != CHECKPOINT_VERSION {
            return Err(CheckpointError::Version { found: v.version });
        }
        serde_json::from_slice(&body).map_err(json_error)
    }

    /// Serialises the checkpoint as pretty JSON (it is meant to be read by operators
    /// too), ending with its checksum.
    pub fn to_json(&self) -> Vec<u8> {
        let mut doc = serde_json::to_vec_pretty(self).unwrap_or_default();
        let crc = crc32fast::hash(&doc);
        if doc.ends_with(b"\n}") {
            doc.truncate(doc.len() - 2);
            doc.extend_from_slice(CRC_FIELD);
            doc.extend_from_slice(format!("{crc:08x}").as_bytes());
            doc.extend_from_slice(CRC_END);
            doc.push(b'\n');
        }
        doc
    }
}

/// A JSON error as a checkpoint error: a document that ends early is truncated.
fn json_error(e: serde_json::Error) -> CheckpointError {
    if e.is_eof() {
        CheckpointError::Truncated(e.to_string())
    } else {
        CheckpointError::Malformed(e.to_string())
    }
}

/// Where `needle` occurs last in `hay`.
fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
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
            Err(CheckpointError::Truncated(_))
        ));
        assert!(matches!(
            Checkpoint::from_json(b"{not json}"),
            Err(CheckpointError::Malformed(_))
        ));
    }

    /// Every byte of a checkpoint document is covered: changing any one of them, in
    /// any bit, is refused (never read as another checkpoint), and every cut is
    /// refused too.
    #[test]
    fn a_change_to_any_byte_or_a_cut_anywhere_is_refused() {
        let json = state_with_one_pod().checkpoint(3, Timestamp(9)).to_json();
        assert!(String::from_utf8_lossy(&json).contains("\"crc32\": \""));
        for at in 0..json.len() {
            for bit in 0..8 {
                let mut bad = json.clone();
                bad[at] ^= 1 << bit;
                if bad[..].trim_ascii_end() == json[..].trim_ascii_end() {
                    continue; // a flip inside the trailing whitespace changes nothing read
                }
                assert!(
                    Checkpoint::from_json(&bad).is_err(),
                    "byte {at} bit {bit} flipped was accepted"
                );
            }
        }
        for cut in 0..json.trim_ascii_end().len() {
            let err = Checkpoint::from_json(&json[..cut]).unwrap_err();
            assert!(
                matches!(
                    err,
                    CheckpointError::Truncated(_) | CheckpointError::Malformed(_)
                ),
                "cut at {cut}: {err}"
            );
        }
        // The usual cut (the file ends inside the document) reads as torn.
        assert_eq!(
            Checkpoint::from_json(&json[..json.len() / 2])
                .unwrap_err()
                .reason(),
            RecoveryReason::Torn
        );
    }

    #[test]
    fn a_checkpoint_written_before_the_checksum_is_still_read() {
        let cp = state_with_one_pod().checkpoint(3, Timestamp(9));
        let legacy = serde_json::to_vec_pretty(&cp).unwrap();
        assert_eq!(Checkpoint::from_json(&legacy).unwrap(), cp);
        let mut odd: serde_json::Value = serde_json::from_slice(&legacy).unwrap();
        odd["crc33"] = "0".into();
        assert!(Checkpoint::from_json(odd.to_string().as_bytes()).is_err());
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
