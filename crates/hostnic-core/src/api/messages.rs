//! The messages of the plugin ↔ agent protocol.
//!
//! One connection carries one exchange: the plugin writes one framed
//! [`Request`], the agent writes one framed [`Response`] and closes. Field names
//! on the wire are the Rust names (`snake_case`); enums are tagged by `verb`.
//! Unknown fields are ignored by both sides so either may add optional fields
//! without bumping [`PROTOCOL_VERSION`].

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::types::{AttachmentId, InvalidId, NicId, PodKey};

/// The protocol version this crate speaks. The agent answers a request of any
/// other version with [`codes::INCOMPATIBLE_VERSION`].
pub const PROTOCOL_VERSION: u32 = 1;

/// The pod's default gateway: a link-local address answered by the host end of
/// the pod's veth (proxy ARP), the same for every pod.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// CNI error codes the agent and the plugin use (CNI spec, "Error").
///
/// Codes below 100 are the specification's; 100 and above are hostnic's own.
pub mod codes {
    /// Incompatible CNI version (also: incompatible protocol version).
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure (also: the agent broke the protocol).
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE_FAILED: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later: the agent is unreachable or has no NIC to give right now.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin is not available (agent down, or no NIC it could give).
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// STATUS: limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// CHECK: the pod's plumbing differs from what `prevResult` says.
    pub const CHECK_MISMATCH: u32 = 100;
    /// An internal error of the plugin or the agent (a bug).
    pub const INTERNAL: u32 = 999;
}

/// A CNI verb carried by the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verb {
    /// Attach a pod (CNI ADD).
    Add,
    /// Detach a pod, idempotently (CNI DEL).
    Del,
    /// Verify a pod's plumbing (CNI CHECK).
    Check,
    /// Release every attachment not in a list (CNI GC).
    Gc,
    /// Is the agent ready to serve ADDs (CNI STATUS)?
    Status,
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verb::Add => "ADD",
            Verb::Del => "DEL",
            Verb::Check => "CHECK",
            Verb::Gc => "GC",
            Verb::Status => "STATUS",
        })
    }
}

/// A MAC address of a veth end, written `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Same syntax as a NIC id, which is a MAC too.
        NicId::new(s).map(|id| MacAddr(id.mac()))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<MacAddr> for String {
    fn from(value: MacAddr) -> Self {
        value.to_string()
    }
}

/// One request from the plugin to the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The protocol version the plugin speaks ([`PROTOCOL_VERSION`]).
    pub version: u32,
    /// The verb and its arguments.
    #[serde(flatten)]
    pub body: RequestBody,
}

impl Request {
    /// A request of the current protocol version.
    pub fn new(body: RequestBody) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            body,
        }
    }
}

/// The verb of a request and its arguments, tagged `"verb"` on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "UPPERCASE")]
pub enum RequestBody {
    /// Attach a pod.
    Add(AddRequest),
    /// Detach a pod.
    Del(DelRequest),
    /// Verify a pod.
    Check(CheckRequest),
    /// Release stale attachments.
    Gc(GcRequest),
    /// Report readiness.
    Status(StatusRequest),
}

impl RequestBody {
    /// Which verb this is.
    pub fn verb(&self) -> Verb {
        match self {
            RequestBody::Add(_) => Verb::Add,
            RequestBody::Del(_) => Verb::Del,
            RequestBody::Check(_) => Verb::Check,
            RequestBody::Gc(_) => Verb::Gc,
            RequestBody::Status(_) => Verb::Status,
        }
    }

    /// How long the agent may take to answer, in milliseconds.
    pub fn timeout_ms(&self) -> u64 {
        match self {
            RequestBody::Add(r) => r.timeout_ms,
            RequestBody::Del(r) => r.timeout_ms,
            RequestBody::Check(r) => r.timeout_ms,
            RequestBody::Gc(r) => r.timeout_ms,
            RequestBody::Status(r) => r.timeout_ms,
        }
    }
}

/// ADD: give the pod a NIC and plumb it into the sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddRequest {
    /// The pod and its attachment (`CNI_CONTAINERID`, `CNI_IFNAME`, `CNI_ARGS`).
    pub pod: PodKey,
    /// `K8S_POD_UID` from `CNI_ARGS`, when the runtime sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// `CNI_NETNS`: the sandbox's network namespace path.
    pub netns: String,
    /// The network configuration's `name`.
    pub network: String,
    /// The configuration's `cniVersion` (informational: the plugin renders the result).
    pub cni_version: String,
    /// `vethPrefix` of the configuration, if set (the agent's own default otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub veth_prefix: Option<String>,
    /// `mtu` of the configuration, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The configuration's `runtimeConfig`, passed through untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_config: Option<serde_json::Value>,
    /// The agent must answer within this many milliseconds; if it has no NIC
    /// by then it answers [`codes::TRY_AGAIN_LATER`] and keeps nothing half-done.
    pub timeout_ms: u64,
}

/// DEL: release whatever the attachment holds; succeeds if it holds nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DelRequest {
    /// The pod and its attachment.
    pub pod: PodKey,
    /// `CNI_NETNS`, absent when the runtime sent none (containerd does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The network configuration's `name`.
    pub network: String,
    /// The configuration's `cniVersion`.
    pub cni_version: String,
    /// The configuration's `prevResult`, if any, as the runtime sent it: lets
    /// the agent clean up an attachment its state has lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<serde_json::Value>,
    /// Answer within this many milliseconds.
    pub timeout_ms: u64,
}

/// CHECK: verify the pod's plumbing against what ADD returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRequest {
    /// The pod and its attachment.
    pub pod: PodKey,
    /// `CNI_NETNS`.
    pub netns: String,
    /// The network configuration's `name`.
    pub network: String,
    /// The configuration's `cniVersion`.
    pub cni_version: String,
    /// What `prevResult` says, normalised by the plugin (any CNI version).
    pub expected: ExpectedAttachment,
    /// The raw `prevResult`, for logs and for checks beyond `expected`.
    pub prev_result: serde_json::Value,
    /// Answer within this many milliseconds.
    pub timeout_ms: u64,
}

/// The plumbing a `prevResult` describes, independent of its CNI version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedAttachment {
    /// The host end of the veth (the interface without `sandbox`), if listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<ExpectedInterface>,
    /// The sandbox interface named `CNI_IFNAME`, if listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<ExpectedInterface>,
    /// Every IPv4 address of the result.
    #[serde(default)]
    pub ips: Vec<Ipv4Net>,
    /// The gateway of the first address, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
}

/// One interface of a `prevResult`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedInterface {
    /// Interface name.
    pub name: String,
    /// Its MAC, if the result gave a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// The sandbox (netns path) it lives in, for sandbox interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// GC: release every attachment of `network` not in `valid_attachments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GcRequest {
    /// The network configuration's `name`.
    pub network: String,
    /// The configuration's `cniVersion` (1.1.0 or later).
    pub cni_version: String,
    /// `cni.dev/valid-attachments`: the attachments that must be kept.
    pub valid_attachments: Vec<AttachmentId>,
    /// Answer within this many milliseconds.
    pub timeout_ms: u64,
}

/// STATUS: can the agent serve an ADD now?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRequest {
    /// The network configuration's `name`.
    pub network: String,
    /// The configuration's `cniVersion` (1.1.0 or later).
    pub cni_version: String,
    /// Answer within this many milliseconds.
    pub timeout_ms: u64,
}

/// One answer from the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The protocol version the agent speaks.
    pub version: u32,
    /// `{"ok": {...}}` or `{"error": {...}}`.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Response {
    /// A successful answer of the current protocol version.
    pub fn ok(reply: Reply) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            outcome: Outcome::Ok(reply),
        }
    }

    /// A failed answer of the current protocol version.
    pub fn error(error: AgentError) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            outcome: Outcome::Error(error),
        }
    }
}

/// Success or failure of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The verb succeeded.
    Ok(Reply),
    /// The verb failed; the plugin prints this as the CNI error.
    Error(AgentError),
}

/// The successful answer to each verb, tagged `"verb"` like the request.
// One reply exists per connection; boxing the large ADD variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "UPPERCASE")]
pub enum Reply {
    /// The pod is attached.
    Add(AddReply),
    /// The attachment is gone (or never existed).
    Del(DelReply),
    /// The pod's plumbing matches.
    Check(CheckReply),
    /// Stale attachments were released.
    Gc(GcReply),
    /// The agent can serve ADDs.
    Status(StatusReply),
}

impl Reply {
    /// Which verb this answers.
    pub fn verb(&self) -> Verb {
        match self {
            Reply::Add(_) => Verb::Add,
            Reply::Del(_) => Verb::Del,
            Reply::Check(_) => Verb::Check,
            Reply::Gc(_) => Verb::Gc,
            Reply::Status(_) => Verb::Status,
        }
    }
}

/// What ADD did: everything the CNI result needs, and what CHECK will verify.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddReply {
    /// The host end of the pod's veth.
    pub host: HostInterface,
    /// The pod's interface inside the sandbox.
    pub sandbox: SandboxInterface,
    /// The pod's address: its NIC's IP, as a /32.
    pub ip: Ipv4Net,
    /// The pod's gateway, [`POD_GATEWAY`].
    pub gateway: Ipv4Addr,
    /// Routes installed in the sandbox (normally `0.0.0.0/0` via [`POD_GATEWAY`]).
    pub routes: Vec<Route>,
    /// MTU of the sandbox interface, if the agent set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// DNS settings, if the agent has any; the plugin falls back to the config's `dns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// The NIC that carries the pod's traffic.
    pub nic: NicId,
    /// The policy-routing table of that NIC.
    pub table: u32,
}

/// The host end of a pod's veth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInterface {
    /// Its name, `<vethPrefix><hash>`.
    pub name: String,
    /// Its MAC.
    pub mac: MacAddr,
}

/// The pod's end of the veth, inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxInterface {
    /// Its name, `CNI_IFNAME`.
    pub name: String,
    /// Its MAC.
    pub mac: MacAddr,
    /// The sandbox's netns path, `CNI_NETNS`.
    pub netns: String,
}

/// A route in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination.
    pub dst: Ipv4Net,
    /// Next hop, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<Ipv4Addr>,
}

/// DNS settings in the CNI result's shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers, in priority order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// What DEL did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelReply {
    /// False when the attachment held nothing (an idempotent repeat).
    pub released: bool,
}

/// CHECK found everything as expected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReply {}

/// What GC released.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReply {
    /// The attachments released.
    pub released: Vec<AttachmentId>,
}

/// The agent is ready to serve ADDs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    /// Attached NICs waiting for a pod.
    pub free_nics: u32,
    /// Pods currently attached.
    pub attached_pods: u32,
}

/// A failure, in the CNI error's terms: the plugin prints it as-is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg} (code {code}){}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct AgentError {
    /// A CNI error code (see [`codes`]).
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// Longer explanation, may be empty.
    #[serde(default)]
    pub details: String,
}

impl AgentError {
    /// An error with `code`, `msg` and `details`.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The answer to a request whose protocol version the agent does not speak.
    pub fn incompatible_protocol(got: u32) -> Self {
        Self::new(
            codes::INCOMPATIBLE_VERSION,
            "incompatible hostnic protocol version",
            format!("the agent speaks version {PROTOCOL_VERSION}, the plugin sent {got}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> PodKey {
        PodKey {
            namespace: "default".into(),
            name: "web".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn request_is_flat_and_tagged_by_verb() {
        let req = Request::new(RequestBody::Status(StatusRequest {
            network: "hostnic".into(),
            cni_version: "1.1.0".into(),
            timeout_ms: 2000,
        }));
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(
            v,
            json!({"version": 1, "verb": "STATUS", "network": "hostnic",
                   "cni_version": "1.1.0", "timeout_ms": 2000})
        );
        assert_eq!(serde_json::from_value::<Request>(v).unwrap(), req);
    }

    #[test]
    fn add_round_trips_and_omits_absent_options() {
        let req = Request::new(RequestBody::Add(AddRequest {
            pod: pod(),
            pod_uid: None,
            netns: "/run/netns/x".into(),
            network: "hostnic".into(),
            cni_version: "1.0.0".into(),
            veth_prefix: None,
            mtu: Some(1500),
            runtime_config: None,
            timeout_ms: 30_000,
        }));
        let v = serde_json::to_value(&req).unwrap();
        assert!(v.get("veth_prefix").is_none());
        assert!(v.get("runtime_config").is_none());
        assert_eq!(v["pod"]["container_id"], "c1");
        assert_eq!(serde_json::from_value::<Request>(v).unwrap(), req);
    }

    #[test]
    fn response_is_ok_or_error() {
        let ok = Response::ok(Reply::Add(AddReply {
            host: HostInterface {
                name: "hnic0123456789a".into(),
                mac: "ee:ee:ee:ee:ee:ee".parse().unwrap(),
            },
            sandbox: SandboxInterface {
                name: "eth0".into(),
                mac: "02:00:00:00:00:01".parse().unwrap(),
                netns: "/run/netns/x".into(),
            },
            ip: "172.16.1.5/32".parse().unwrap(),
            gateway: POD_GATEWAY,
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some(POD_GATEWAY),
            }],
            mtu: None,
            dns: None,
            nic: NicId::new("52:54:00:00:00:01").unwrap(),
            table: 260,
        }));
        let v = serde_json::to_value(&ok).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["ok"]["verb"], "ADD");
        assert_eq!(v["ok"]["ip"], "172.16.1.5/32");
        assert_eq!(v["ok"]["gateway"], "169.254.1.1");
        assert_eq!(serde_json::from_value::<Response>(v).unwrap(), ok);

        let err = Response::error(AgentError::new(codes::TRY_AGAIN_LATER, "pool empty", ""));
        let v = serde_json::to_value(&err).unwrap();
        assert_eq!(
            v,
            json!({"version": 1, "error": {"code": 11, "msg": "pool empty", "details": ""}})
        );
        assert_eq!(serde_json::from_value::<Response>(v).unwrap(), err);
    }

    #[test]
    fn empty_replies_still_carry_their_verb() {
        let v = serde_json::to_value(Response::ok(Reply::Check(CheckReply {}))).unwrap();
        assert_eq!(v, json!({"version": 1, "ok": {"verb": "CHECK"}}));
        let back: Response = serde_json::from_value(v).unwrap();
        assert!(matches!(back.outcome, Outcome::Ok(Reply::Check(_))));
    }

    #[test]
    fn mac_addr_is_validated_and_lower_case() {
        let mac: MacAddr = serde_json::from_str("\"AA-BB-CC-00-11-22\"").unwrap();
        assert_eq!(mac.to_string(), "aa:bb:cc:00:11:22");
        assert!(serde_json::from_str::<MacAddr>("\"aa:bb\"").is_err());
    }

    #[test]
    fn agent_error_display_includes_code_and_details() {
        let e = AgentError::incompatible_protocol(7);
        assert_eq!(e.code, codes::INCOMPATIBLE_VERSION);
        assert!(e.to_string().contains("plugin sent 7"));
    }
}
