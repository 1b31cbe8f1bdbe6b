//! Names of the host ends of pod veths.

use hostnic_core::types::PodKey;
use sha1::{Digest, Sha1};

/// How many hex digits of the hash follow the prefix.
pub const VETH_HASH_LEN: usize = 11;

/// The host veth of `pod`: `<prefix><first 11 hex digits of sha1(veth_seed)>`,
/// the scheme Calico and the AWS VPC CNI use, so policy tools find the interface.
pub fn host_veth_name(prefix: &str, pod: &PodKey) -> String {
    let digest = Sha1::digest(pod.veth_seed().as_bytes());
    let hex = hex::encode(digest);
    format!("{prefix}{}", &hex[..VETH_HASH_LEN])
}

/// True when `name` has the shape of a hostnic host veth with this prefix.
pub fn is_host_veth_name(prefix: &str, name: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == VETH_HASH_LEN && rest.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, cid: &str) -> PodKey {
        PodKey {
            namespace: ns.into(),
            name: name.into(),
            container_id: cid.into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn name_is_prefix_plus_eleven_hex_of_sha1_of_namespace_dot_pod() {
        // sha1("default.web") = 68caf03a5f4a… (computed independently with `sha1sum`).
        let name = host_veth_name("nic", &pod("default", "web", "abc"));
        assert_eq!(name, "nic68caf03a5f4");
        assert!(name.len() <= 15);
        assert!(is_host_veth_name("nic", &name));
    }

    #[test]
    fn container_id_is_hashed_when_pod_is_unknown() {
        let a = host_veth_name("nic", &pod("", "", "c1"));
        let b = host_veth_name("nic", &pod("", "", "c2"));
        assert_ne!(a, b);
    }

    #[test]
    fn other_names_are_not_host_veths() {
        assert!(!is_host_veth_name("nic", "eth0"));
        assert!(!is_host_veth_name("nic", "nic123"));
        assert!(!is_host_veth_name("nic", "nic68caf03a5f4z"));
    }
}
