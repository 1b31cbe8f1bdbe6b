//! The pending-DEL record: a DEL the plugin could not hand to the agent.
//!
//! A runtime retries DEL until it succeeds, so a DEL that fails while the agent
//! is down would wedge pod deletion. Instead the plugin writes one
//! [`PendingDel`] as `<stateDir>/pending-del/<pending_del_file_name()>`
//! (temporary file, `fsync`, `rename`, `fsync` of the directory) and succeeds.
//! When the agent starts it performs every pending DEL, then removes the file.
//! Files whose names start with `.` are temporaries and are ignored.

use serde::{Deserialize, Serialize};

use crate::types::{AttachmentId, PodKey, Timestamp};

/// The directory under the state directory that holds pending DELs.
pub const PENDING_DEL_DIR: &str = "pending-del";

/// The longest file name [`pending_del_file_name`] produces; well under the
/// usual 255-byte limit of Linux file systems.
const MAX_NAME_LEN: usize = 200;

/// A DEL the agent must complete when it comes back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingDel {
    /// The protocol version of the record ([`super::PROTOCOL_VERSION`]).
    pub version: u32,
    /// The pod and its attachment.
    pub pod: PodKey,
    /// `CNI_NETNS`, if the runtime sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The network configuration's `name`.
    pub network: String,
    /// When the plugin wrote the record, in milliseconds since the Unix epoch.
    pub requested_at_ms: Timestamp,
    /// Why the agent could not be reached, for the agent's log.
    pub reason: String,
    /// The `prevResult` the runtime sent with the DEL, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<serde_json::Value>,
}

/// The file name of the pending DEL of `attachment`: `<container>_<ifname>.json`.
///
/// Deterministic, so repeated DELs of one attachment overwrite one file.
/// Characters other than ASCII letters, digits, `-` and `.` are written
/// `%XX`, so `_` separates the two parts unambiguously and no name contains
/// `/`, starts with `.` or is empty. Over-long names are cut and end in a hash
/// of the full name to stay unique.
pub fn pending_del_file_name(attachment: &AttachmentId) -> String {
    let mut name = escape(&attachment.container_id);
    name.push('_');
    name.push_str(&escape(&attachment.ifname));
    if name.len() > MAX_NAME_LEN {
        let hash = fnv1a64(name.as_bytes());
        // Every character of an escaped name is ASCII, so any cut is on a char boundary.
        name.truncate(MAX_NAME_LEN - 17);
        name.push_str(&format!("~{hash:016x}"));
    }
    name.push_str(".json");
    name
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'-' || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// FNV-1a, 64 bit: stable across Rust versions, unlike `DefaultHasher`.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn att(c: &str, i: &str) -> AttachmentId {
        AttachmentId {
            container_id: c.into(),
            ifname: i.into(),
        }
    }

    #[test]
    fn ordinary_ids_stay_readable() {
        assert_eq!(
            pending_del_file_name(&att("k8s.io-3f2a9c", "eth0")),
            "k8s.io-3f2a9c_eth0.json"
        );
    }

    #[test]
    fn separators_and_dots_are_escaped() {
        assert_eq!(pending_del_file_name(&att("a_b", "c")), "a%5Fb_c.json");
        assert_eq!(pending_del_file_name(&att("..", "/")), "%2E._%2F.json");
        assert_eq!(pending_del_file_name(&att("", "")), "_.json");
    }

    #[test]
    fn record_round_trips() {
        let rec = PendingDel {
            version: 1,
            pod: PodKey {
                namespace: String::new(),
                name: String::new(),
                container_id: "c".into(),
                ifname: "eth0".into(),
            },
            netns: None,
            network: "hostnic".into(),
            requested_at_ms: Timestamp(42),
            reason: "connection refused".into(),
            prev_result: None,
        };
        let s = serde_json::to_string(&rec).unwrap();
        assert!(!s.contains("netns"));
        assert_eq!(serde_json::from_str::<PendingDel>(&s).unwrap(), rec);
    }

    proptest! {
        /// Invariant: every attachment maps to a safe file name (no `/`, no
        /// leading `.`, bounded length) and distinct attachments never share one.
        #[test]
        fn names_are_safe_and_injective(c1 in ".{0,300}", i1 in ".{0,20}", c2 in ".{0,300}", i2 in ".{0,20}") {
            let n1 = pending_del_file_name(&att(&c1, &i1));
            let n2 = pending_del_file_name(&att(&c2, &i2));
            prop_assert!(!n1.contains('/') && !n1.starts_with('.'));
            prop_assert!(n1.len() <= MAX_NAME_LEN + 5);
            if (c1.as_str(), i1.as_str()) != (c2.as_str(), i2.as_str()) {
                prop_assert_ne!(n1, n2);
            }
        }
    }
}
