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

/// The host veth of a sandbox of `pod` whose [`host_veth_name`] another live
/// sandbox of the same pod holds: `<prefix><first 11 hex digits of
/// sha1(container id)>` (the core's `PodKey::sandbox_veth_name`).
pub fn sandbox_veth_name(prefix: &str, pod: &PodKey) -> String {
    let digest = Sha1::digest(pod.container_id.as_bytes());
    let hex = hex::encode(digest);
    format!("{prefix}{}", &hex[..VETH_HASH_LEN])
}

/// The MACs of `pod`'s veth pair, host end first: locally administered unicast
/// addresses from `sha1(container id, ifname)`. A sandbox always gets the same
/// pair, so they are known before the kernel is asked (the agent records them
/// while it plumbs), and a newer sandbox of the same pod gets other ones (DEL
/// tells its veth from an older one's by MAC).
pub fn pod_macs(pod: &PodKey) -> ([u8; 6], [u8; 6]) {
    let digest = Sha1::digest(format!("{}/{}", pod.container_id, pod.ifname).as_bytes());
    let mac = |bytes: &[u8]| {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(bytes);
        mac[0] = (mac[0] & 0xfe) | 0x02;
        mac
    };
    (mac(&digest[..6]), mac(&digest[6..12]))
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

    #[test]
    fn pod_macs_are_local_unicast_stable_and_differ_per_sandbox() {
        let (host, sandbox) = pod_macs(&pod("default", "web", "abc"));
        for mac in [host, sandbox] {
            assert_eq!(mac[0] & 0x01, 0, "unicast");
            assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
        }
        assert_ne!(host, sandbox);
        assert_eq!(pod_macs(&pod("default", "web", "abc")), (host, sandbox));
        assert_ne!(pod_macs(&pod("default", "web", "def")).0, host);
    }

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
    fn a_second_sandbox_name_is_the_cores() {
        let p = pod("default", "web", "abc");
        assert_eq!(sandbox_veth_name("nic", &p), p.sandbox_veth_name("nic"));
        assert_eq!(host_veth_name("nic", &p), p.host_veth_name("nic"));
        assert!(is_host_veth_name("nic", &sandbox_veth_name("nic", &p)));
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
