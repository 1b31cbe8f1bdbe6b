//! Domain types: identifiers of cloud objects, pods and the NICs hostnic manages.
//!
//! Identifiers are newtypes over `String` so that a vxnet id can never be passed
//! where an instance id is expected. `NicId` is validated: on QingCloud the id of a
//! NIC *is* its MAC address, and the host finds the hot-plugged link by that MAC.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// An identifier that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct InvalidId {
    /// Which kind of identifier was being parsed.
    pub what: &'static str,
    /// The rejected input.
    pub value: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

/// The id of a QingCloud NIC, which is its MAC address, kept lower-case `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NicId(Arc<str>);

impl NicId {
    /// Parses a MAC address (`52:54:AB:..`, any case, `:` or `-` separators) into a NIC id.
    pub fn new(mac: &str) -> Result<Self, InvalidId> {
        Ok(Self::from_mac(parse_mac(mac)?))
    }

    /// Builds the id of the NIC whose MAC address is `mac`.
    pub fn from_mac(mac: [u8; 6]) -> Self {
        let mut s = String::with_capacity(17);
        for (i, b) in mac.iter().enumerate() {
            if i > 0 {
                s.push(':');
            }
            push_hex(&mut s, *b);
        }
        NicId(s.into())
    }

    /// The MAC address of this NIC.
    pub fn mac(&self) -> [u8; 6] {
        // The string was validated at construction, so it always parses.
        parse_mac(&self.0).unwrap_or([0; 6])
    }

    /// The id as the API writes it (lower-case MAC).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn parse_mac(s: &str) -> Result<[u8; 6], InvalidId> {
    let invalid = |reason| InvalidId {
        what: "NIC id (MAC address)",
        value: s.to_string(),
        reason,
    };
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(invalid("expected six hex octets"));
    }
    let mut mac = [0u8; 6];
    for (slot, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return Err(invalid("every octet must be two hex digits"));
        }
        *slot = u8::from_str_radix(part, 16).map_err(|_| invalid("not a hex digit"))?;
    }
    Ok(mac)
}

impl TryFrom<String> for NicId {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        NicId::new(&value)
    }
}

impl From<NicId> for String {
    fn from(value: NicId) -> Self {
        value.0.to_string()
    }
}

/// `<prefix>` + the first 11 hex digits of SHA-1 of `seed`.
fn veth_name(prefix: &str, seed: &str) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(seed.as_bytes());
    let mut name = String::with_capacity(prefix.len() + 12);
    name.push_str(prefix);
    for b in &digest[..6] {
        push_hex(&mut name, *b);
    }
    name.truncate(prefix.len() + 11);
    name
}

fn push_hex(s: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    s.push(HEX[usize::from(b >> 4)] as char);
    s.push(HEX[usize::from(b & 0xf)] as char);
}

impl FromStr for NicId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NicId::new(s)
    }
}

impl fmt::Display for NicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps an identifier as the API writes it.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into().into())
            }

            /// The identifier as the API writes it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.into())
            }
        }
    };
}

string_id!(
    /// The id of a QingCloud vxnet (a subnet of the VPC), e.g. `vxnet-abc123`.
    VxnetId
);
string_id!(
    /// The id of a QingCloud instance (the node's VM), e.g. `i-abc123`.
    InstanceId
);
string_id!(
    /// The id of an asynchronous QingCloud job, e.g. `j-abc123`.
    JobId
);
string_id!(
    /// The id of a QingCloud VPC router, e.g. `rtr-abc123`.
    RouterId
);

/// The name hostnic gives every NIC it creates for `instance`, as the original
/// hostnic did: `hostnic_<instance-id>`. Only NICs with this name are ever
/// deleted by this node's agent.
pub fn managed_nic_name(instance: &InstanceId) -> String {
    format!("hostnic_{}", instance.as_str())
}

/// A pod sandbox's network attachment, as the runtime names it.
///
/// The runtime identifies an attachment by `(container_id, ifname)`; namespace
/// and name come from `CNI_ARGS` and are empty when the runtime does not send
/// them (podman, `ctr`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodKey {
    /// Kubernetes namespace, empty if unknown.
    pub namespace: String,
    /// Pod name, empty if unknown.
    pub name: String,
    /// `CNI_CONTAINERID`: the sandbox's id.
    pub container_id: String,
    /// `CNI_IFNAME`: the interface name inside the sandbox, usually `eth0`.
    pub ifname: String,
}

impl PodKey {
    /// The key that makes ADD/DEL idempotent: container id + ifname.
    pub fn attachment(&self) -> AttachmentId {
        AttachmentId {
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }

    /// `namespace/name`, or the container id when the runtime gave no pod name.
    pub fn display_name(&self) -> String {
        if self.name.is_empty() {
            self.container_id.clone()
        } else if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }

    /// The host end of the pod's veth pair: `<prefix>` + the first 11 hex digits of
    /// SHA-1 of [`PodKey::veth_seed`] (at most 15 characters, the kernel's limit).
    pub fn host_veth_name(&self, prefix: &str) -> String {
        veth_name(prefix, &self.veth_seed())
    }

    /// The host end of the veth of a sandbox whose [`PodKey::host_veth_name`] another
    /// live sandbox of the same pod holds: `<prefix>` + 11 hex digits of SHA-1 of the
    /// container id (the name of a pod whose namespace and name are unknown). CNI
    /// attachments of different container ids are independent, so a second sandbox
    /// gets its own veth and the first keeps its network until its own DEL.
    pub fn sandbox_veth_name(&self, prefix: &str) -> String {
        veth_name(prefix, &self.container_id)
    }

    /// The string hashed into the host veth name: `<namespace>.<pod>` when the
    /// pod is known, the container id otherwise (the same scheme Calico and the
    /// AWS VPC CNI use, so policy tools find the interface).
    pub fn veth_seed(&self) -> String {
        if self.namespace.is_empty() || self.name.is_empty() {
            self.container_id.clone()
        } else {
            format!("{}.{}", self.namespace, self.name)
        }
    }
}

/// The identity of one CNI attachment: `(CNI_CONTAINERID, CNI_IFNAME)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttachmentId {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

impl AttachmentId {
    /// The key of a pod adopted from the witnesses (see [`crate::recovery`]): the
    /// runtime's container id is not known, the pod's address is, and is unique.
    pub fn recovered(ip: Ipv4Addr) -> Self {
        AttachmentId {
            container_id: format!("{RECOVERED_PREFIX}{ip}"),
            ifname: "eth0".to_string(),
        }
    }

    /// True for the key of a pod adopted from the witnesses.
    pub fn is_recovered(&self) -> bool {
        self.container_id.starts_with(RECOVERED_PREFIX)
    }

    /// The lowest key a recovered pod can have (keys sort by container id first).
    pub(crate) fn recovered_start() -> Self {
        AttachmentId {
            container_id: RECOVERED_PREFIX.to_string(),
            ifname: String::new(),
        }
    }
}

/// The container id given to pods adopted from the witnesses, before their address.
const RECOVERED_PREFIX: &str = "hostnic-recovered-";

impl fmt::Display for AttachmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.container_id, self.ifname)
    }
}

/// A vxnet: its CIDR and the gateway (the VPC router's address in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vxnet {
    /// The vxnet id.
    pub id: VxnetId,
    /// The vxnet's network, e.g. `172.16.1.0/24`.
    pub cidr: Ipv4Net,
    /// The gateway, the router's address in the vxnet (`.1`).
    pub gateway: Ipv4Addr,
    /// The VPC router the vxnet is joined to, if any.
    pub router: Option<RouterId>,
}

/// Whether the cloud says a NIC is attached to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloudNicStatus {
    /// Not attached to any instance.
    Available,
    /// Attached to `instance`.
    InUse,
}

/// A NIC as the cloud describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudNic {
    /// The NIC id (its MAC).
    pub id: NicId,
    /// The NIC's name (`hostnic_<instance>` for the NICs hostnic created).
    pub name: String,
    /// The vxnet the NIC's address belongs to.
    pub vxnet: VxnetId,
    /// The NIC's one private address.
    pub ip: Ipv4Addr,
    /// The instance the NIC is attached to, if any.
    pub instance: Option<InstanceId>,
    /// Attached or not.
    pub status: CloudNicStatus,
    /// True for an instance's primary NIC (`role` 1), which hostnic never touches.
    pub primary: bool,
}

/// What the cloud says about the node's instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The instance id.
    pub id: InstanceId,
    /// The primary NIC (role 1): the node's own address, never used for pods.
    pub primary_nic: NicId,
    /// The primary NIC's address (the SNAT source for traffic leaving the VPC).
    pub primary_ip: Ipv4Addr,
    /// The primary NIC's vxnet.
    pub primary_vxnet: VxnetId,
}

/// The outcome of an asynchronous job once it stopped running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobOutcome {
    /// The job finished its work.
    Successful,
    /// The job failed; the resources are in their previous state or unknown.
    Failed,
}

/// Where an asynchronous job is, as `DescribeJobs` tells
/// ([`CloudNics::job_statuses`](crate::ports::CloudNics::job_statuses)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobStatus {
    /// Pending or working: its effect may still come.
    Running,
    /// It stopped running.
    Done(JobOutcome),
    /// The cloud does not know it (expired from its history, or never started).
    Unknown,
}

/// A point in time in milliseconds since an arbitrary epoch of the clock that
/// produced it. The agent uses wall-clock milliseconds since the Unix epoch so
/// checkpoints stay meaningful across restarts; tests use a manual clock.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// `self + d`, saturating.
    pub fn plus(self, d: std::time::Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.as_millis() as u64))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// Everything the host needs to prepare an attached NIC for pod traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicPlumbing {
    /// The NIC id, i.e. the MAC the host finds the link by.
    pub nic: NicId,
    /// The NIC's address (never configured on the host: it belongs to the pod).
    pub ip: Ipv4Addr,
    /// The NIC's vxnet network.
    pub cidr: Ipv4Net,
    /// The vxnet gateway, next hop of the NIC's route table.
    pub gateway: Ipv4Addr,
    /// The policy-routing table that sends pod traffic out through this NIC.
    pub table: u32,
}

/// Everything the host needs to plumb one pod onto its NIC (CNI ADD).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPlumbing {
    /// The pod.
    pub pod: PodKey,
    /// `CNI_NETNS`: the path of the sandbox's network namespace.
    pub netns: String,
    /// The pod's NIC.
    pub nic: NicPlumbing,
}

/// What plumbing a pod created on the host, as reported back to the runtime and
/// recorded so the pod can be unplumbed and verified later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlumbedPod {
    /// The host end of the veth pair.
    pub host_veth: String,
    /// MAC of the host end (the pod's gateway neighbour).
    pub host_mac: Option<[u8; 6]>,
    /// MAC of the sandbox end, if it was read.
    pub sandbox_mac: Option<[u8; 6]>,
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// The NIC route table the pod's source rule points at.
    pub table: u32,
}

/// What the host currently has of hostnic's plumbing, for reconcile and GC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInventory {
    /// NIC links present on the host, by MAC (attached NICs that the kernel sees).
    pub nic_links: Vec<NicId>,
    /// Pods plumbed on the host (veth + /32 route + rules), found by veth prefix and rules.
    pub pods: Vec<PlumbedPod>,
    /// NIC route tables hostnic programmed.
    pub tables: Vec<u32>,
}

/// Node-wide datapath settings the host applies once and keeps applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlumbing {
    /// The node's primary NIC, which must keep the default route.
    pub primary_nic: NicId,
    /// The node's primary address: the SNAT source for traffic leaving the VPC.
    pub primary_ip: Ipv4Addr,
    /// The VPC's networks; pod traffic to them is never SNATed.
    pub vpc_cidrs: Vec<Ipv4Net>,
    /// Extra destinations that must not be SNATed.
    pub snat_exclusions: Vec<Ipv4Net>,
    /// When true the VPC does NAT itself and the node applies no SNAT.
    pub external_snat: bool,
}

/// What `ensure_node` found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The main default route had moved off the primary NIC and was restored.
    pub default_route_restored: bool,
}

/// A pod that should exist on this node, according to the pod source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInfo {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// The pod is scheduled here but has no sandbox network yet: a NIC will be needed soon.
    pub pending: bool,
    /// The pod's address as the pod source reports it (`status.podIP`), once it has one.
    /// A witness for recovery: an address a pod of this node holds is never given to
    /// another pod (see [`crate::recovery`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
}

/// A change reported by a pod source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodEvent {
    /// A pod appeared or changed.
    Upserted(PodInfo),
    /// A pod is gone from this node.
    Deleted {
        /// Kubernetes namespace.
        namespace: String,
        /// Pod name.
        name: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nic_id_normalises_mac_case_and_separator() {
        let id = NicId::new("52-54-AB-00-0F-1e").unwrap();
        assert_eq!(id.as_str(), "52:54:ab:00:0f:1e");
        assert_eq!(id.mac(), [0x52, 0x54, 0xab, 0x00, 0x0f, 0x1e]);
        assert_eq!(NicId::from_mac(id.mac()), id);
    }

    #[test]
    fn nic_id_rejects_what_is_not_a_mac() {
        for bad in [
            "",
            "52:54",
            "52:54:ab:00:0f:1e:00",
            "zz:54:ab:00:0f:1e",
            "5:54:ab:00:0f:1e1",
        ] {
            assert!(NicId::new(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn nic_id_deserialises_through_validation() {
        let ok: NicId = serde_json::from_str("\"52:54:00:00:00:01\"").unwrap();
        assert_eq!(ok.as_str(), "52:54:00:00:00:01");
        assert!(serde_json::from_str::<NicId>("\"nope\"").is_err());
    }

    #[test]
    fn veth_seed_falls_back_to_container_id_without_pod_name() {
        let mut key = PodKey {
            namespace: "default".into(),
            name: "web".into(),
            container_id: "abc".into(),
            ifname: "eth0".into(),
        };
        assert_eq!(key.veth_seed(), "default.web");
        key.namespace.clear();
        assert_eq!(key.veth_seed(), "abc");
    }

    #[test]
    fn host_veth_name_is_prefix_plus_11_hex_of_sha1() {
        let key = PodKey {
            namespace: "default".into(),
            name: "web".into(),
            container_id: "abc".into(),
            ifname: "eth0".into(),
        };
        // The expected digest was produced by `printf default.web | sha1sum`.
        let name = key.host_veth_name("nic");
        assert_eq!(name.len(), 14);
        assert!(name.starts_with("nic"));
        assert_eq!(name, format!("nic{}", &SHA1_DEFAULT_WEB[..11]));
    }

    #[test]
    fn a_second_sandbox_name_hashes_the_container_id() {
        let key = PodKey {
            namespace: "default".into(),
            name: "web".into(),
            container_id: "abc".into(),
            ifname: "eth0".into(),
        };
        let second = key.sandbox_veth_name("nic");
        assert_ne!(second, key.host_veth_name("nic"));
        let unnamed = PodKey {
            namespace: String::new(),
            name: String::new(),
            ..key.clone()
        };
        // What a pod without a name gets: one scheme, two seeds.
        assert_eq!(second, unnamed.host_veth_name("nic"));
        assert_eq!(unnamed.sandbox_veth_name("nic"), second);
    }

    const SHA1_DEFAULT_WEB: &str = include_str!("../tests/data/sha1-default.web.txt");

    #[test]
    fn managed_name_matches_the_original_hostnic() {
        assert_eq!(managed_nic_name(&InstanceId::new("i-abc")), "hostnic_i-abc");
    }
}
