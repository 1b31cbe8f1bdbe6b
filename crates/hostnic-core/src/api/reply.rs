//! The pure half of the agent's answers: how a request body is decoded, how an
//! engine failure becomes a CNI error code, and how the ADD, CHECK and STATUS
//! replies are assembled. The agent's server only sequences the calls (locks,
//! waits, policy) around these, so every code the plugin can receive is chosen
//! here, next to the message types.

use ipnet::Ipv4Net;

use super::messages::{
    AddReply, AddRequest, AgentError, CheckReply, ExpectedAttachment, HostInterface, MacAddr,
    POD_GATEWAY, PROTOCOL_VERSION, Request, Route, SandboxInterface, StatusReply, codes,
};
use crate::engine::{Added, EngineError};
use crate::pool::{AllocError, PodAttachment, Readiness, Shortage, ShortageCause};
use crate::ports::{CloudErrorKind, HostErrorKind};
use crate::reconcile::UsageCounts;

/// Decodes one request body: a request of another protocol version is refused
/// with [`codes::INCOMPATIBLE_VERSION`] before its body is looked at, an
/// undecodable one with [`codes::DECODE_FAILED`].
pub fn decode_request(body: &[u8]) -> Result<Request, AgentError> {
    #[derive(serde::Deserialize)]
    struct VersionOnly {
        version: u32,
    }
    match serde_json::from_slice::<VersionOnly>(body) {
        Ok(v) if v.version != PROTOCOL_VERSION => {
            return Err(AgentError::incompatible_protocol(v.version));
        }
        _ => {}
    }
    serde_json::from_slice::<Request>(body)
        .map_err(|e| AgentError::new(codes::DECODE_FAILED, "undecodable request", e.to_string()))
}

/// An engine failure as the plugin's error: a full node and every retryable
/// failure are "try again later" (11), an unknown container 3, plumbing that
/// differs 100, anything else an internal error (999).
pub fn engine_error(e: &EngineError) -> AgentError {
    match e {
        EngineError::Alloc(a @ AllocError::NodeFull { .. }) => AgentError::new(
            codes::TRY_AGAIN_LATER,
            "node is full",
            format!("{a}; a NIC is freed when a pod on this node is deleted"),
        ),
        EngineError::UnknownAttachment(id) => AgentError::new(
            codes::UNKNOWN_CONTAINER,
            "unknown container",
            id.to_string(),
        ),
        EngineError::Host(h) if h.kind == HostErrorKind::Mismatch => {
            AgentError::new(codes::CHECK_MISMATCH, "plumbing differs", h.message.clone())
        }
        EngineError::Cloud(c) if c.kind == CloudErrorKind::Throttled => AgentError::new(
            codes::TRY_AGAIN_LATER,
            REQUEST_QUOTA,
            format!("{c}; cloud calls resume once the account's request quota frees"),
        ),
        EngineError::Cloud(c) if c.kind == CloudErrorKind::QuotaExceeded => {
            AgentError::new(codes::TRY_AGAIN_LATER, "QuotaExceeded", c.to_string())
        }
        e if e.is_retryable() => {
            AgentError::new(codes::TRY_AGAIN_LATER, "try again later", e.to_string())
        }
        e => AgentError::new(codes::INTERNAL, "hostnic agent failed", e.to_string()),
    }
}

/// The words of every error caused by the account's API request quota.
pub const REQUEST_QUOTA: &str = "the account's API request quota is exhausted";

/// True when the node or the cloud refuses more NICs (a full node, a NIC or
/// address quota): a shortage worth an event on the pod.
pub fn is_quota(e: &EngineError) -> bool {
    matches!(e, EngineError::Alloc(AllocError::NodeFull { .. }))
        || matches!(e, EngineError::Cloud(c) if c.kind == CloudErrorKind::QuotaExceeded)
}

/// The words of an ADD that found no NIC ready before its deadline.
pub fn no_free_nic_message(timeout_ms: u64, coming: u32, cooling: u32) -> String {
    format!(
        "no NIC became ready within {timeout_ms} ms ({coming} on the way, {cooling} cooling down); the pool is growing"
    )
}

/// An ADD that found no NIC ready before its deadline: try again later.
pub fn no_free_nic(message: String) -> AgentError {
    AgentError::new(codes::TRY_AGAIN_LATER, "no free NIC", message)
}

/// An ADD that found no NIC ready before its deadline, naming why the pool could
/// not grow when it knows (`shortage`): `VxnetFull`, `QuotaExceeded`, the account's
/// request quota, a refusal, an outage. Try again later (11) in every case: the
/// pod waits, and the runtime's retry succeeds once the cause is gone.
pub fn nic_shortage(
    timeout_ms: u64,
    coming: u32,
    cooling: u32,
    shortage: Option<&Shortage>,
) -> AgentError {
    let Some(s) = shortage else {
        return no_free_nic(no_free_nic_message(timeout_ms, coming, cooling));
    };
    let msg = match s.cause {
        ShortageCause::VxnetFull => "VxnetFull",
        ShortageCause::NicQuota => "QuotaExceeded",
        ShortageCause::RequestQuota => REQUEST_QUOTA,
        ShortageCause::Refused => "the cloud API refused the request",
        ShortageCause::Unavailable => "the cloud API does not answer",
    };
    AgentError::new(
        codes::TRY_AGAIN_LATER,
        msg,
        format!(
            "no NIC became ready within {timeout_ms} ms ({coming} on the way, {cooling} cooling down): {}",
            s.describe()
        ),
    )
}

/// The pod's labels could not be learned before its ADD: try again later.
pub fn policy_unknown(why: String) -> AgentError {
    AgentError::new(codes::TRY_AGAIN_LATER, "pod's network policy unknown", why)
}

/// The pod's policy chains were not programmed before its ADD's deadline (the
/// plumbing stays: a retried ADD finds it).
pub fn policy_not_programmed(why: String) -> AgentError {
    AgentError::new(codes::TRY_AGAIN_LATER, "network policy not programmed", why)
}

/// The ADD reply: the pod's /32 behind [`POD_GATEWAY`], its veth ends, the
/// NIC and its table, and the agent's `mtu`.
pub fn add_reply(request: &AddRequest, added: &Added, mtu: u32) -> AddReply {
    let p = &added.plumbed;
    AddReply {
        host: HostInterface {
            name: p.host_veth.clone(),
            mac: MacAddr(p.host_mac.unwrap_or_default()),
        },
        sandbox: SandboxInterface {
            name: request.pod.ifname.clone(),
            mac: MacAddr(p.sandbox_mac.unwrap_or_default()),
            netns: request.netns.clone(),
        },
        ip: Ipv4Net::new(p.ip, 32).expect("/32 is valid"),
        gateway: POD_GATEWAY,
        routes: vec![Route {
            dst: Ipv4Net::default(),
            gw: Some(POD_GATEWAY),
        }],
        mtu: Some(mtu),
        dns: None,
        nic: added.attachment.nic.clone(),
        table: added.attachment.table,
    }
}

/// CHECK after the host verified the plumbing: the addresses and the host veth
/// that `prevResult` lists must be the attachment's.
pub fn check_reply(
    expected: &ExpectedAttachment,
    attachment: &PodAttachment,
) -> Result<CheckReply, AgentError> {
    let ip = Ipv4Net::new(attachment.ip, 32).expect("/32 is valid");
    if !expected.ips.is_empty() && !expected.ips.contains(&ip) {
        return Err(AgentError::new(
            codes::CHECK_MISMATCH,
            "pod address differs",
            format!("prevResult has {:?}, the pod holds {ip}", expected.ips),
        ));
    }
    if let (Some(host), Some(plumbed)) = (&expected.host, &attachment.plumbed)
        && host.name != plumbed.host_veth
    {
        return Err(AgentError::new(
            codes::CHECK_MISMATCH,
            "host veth differs",
            format!(
                "prevResult names {}, the pod's veth is {}",
                host.name, plumbed.host_veth
            ),
        ));
    }
    Ok(CheckReply {})
}

/// The STATUS answer: OK when [`Readiness`] says the node can serve an ADD,
/// else "plugin not available" (50) saying why.
pub fn status_reply(
    readiness: Readiness,
    counts: &UsageCounts,
    attached_pods: u32,
) -> Result<StatusReply, AgentError> {
    match readiness {
        Readiness::Ready => Ok(StatusReply {
            free_nics: counts.free,
            attached_pods,
        }),
        Readiness::NodeFull { assigned, max } => Err(AgentError::new(
            codes::PLUGIN_NOT_AVAILABLE,
            "no NIC available",
            format!("0 free NICs and {assigned} of {max} pod NICs are assigned"),
        )),
        Readiness::CloudUnavailable => Err(AgentError::new(
            codes::PLUGIN_NOT_AVAILABLE,
            "cloud API unavailable",
            "0 free NICs and the last pool round failed",
        )),
        Readiness::CannotGrow(cause) => Err(AgentError::new(
            codes::PLUGIN_NOT_AVAILABLE,
            cause.reason(),
            format!(
                "0 free NICs ({} assigned) and the pool cannot grow: {}",
                counts.assigned,
                cause.reason()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{CloudError, HostError, StoreError};
    use crate::types::AttachmentId;

    #[test]
    fn engine_errors_map_to_the_documented_codes() {
        let code = |e: EngineError| engine_error(&e).code;
        assert_eq!(
            code(EngineError::Alloc(AllocError::NodeFull { max_nics: 2 })),
            codes::TRY_AGAIN_LATER
        );
        assert_eq!(
            code(EngineError::UnknownAttachment(AttachmentId {
                container_id: "c".into(),
                ifname: "eth0".into()
            })),
            codes::UNKNOWN_CONTAINER
        );
        assert_eq!(
            code(HostError::new(HostErrorKind::Mismatch, "route").into()),
            codes::CHECK_MISMATCH
        );
        assert_eq!(code(StoreError::new("disk").into()), codes::TRY_AGAIN_LATER);
        assert_eq!(
            code(CloudError::new(CloudErrorKind::Permanent, "CreateNics", "auth").into()),
            codes::INTERNAL
        );
    }

    #[test]
    fn the_request_quota_and_resource_quotas_are_try_again_later_naming_them() {
        // A withheld call (breaker open) used to map to 999 "hostnic agent failed".
        let throttled = engine_error(
            &CloudError::new(CloudErrorKind::Throttled, "CreateNics", "breaker open").into(),
        );
        assert_eq!(throttled.code, codes::TRY_AGAIN_LATER);
        assert!(throttled.msg.contains("request quota"), "{throttled:?}");
        let quota = engine_error(
            &CloudError::new(CloudErrorKind::QuotaExceeded, "CreateNics", "no IP").into(),
        );
        assert_eq!(
            (quota.code, quota.msg.as_str()),
            (codes::TRY_AGAIN_LATER, "QuotaExceeded")
        );
    }

    #[test]
    fn an_add_starved_by_a_full_vxnet_says_so_not_that_the_pool_is_growing() {
        use crate::types::Timestamp;
        let full = Shortage {
            cause: ShortageCause::VxnetFull,
            error: CloudError::new(
                CloudErrorKind::QuotaExceeded,
                "CreateNics",
                "vxnet [vxnet-a] does not have enough available IP addresses",
            )
            .with_code(2500),
            since: Timestamp(0),
        };
        let e = nic_shortage(10_000, 0, 0, Some(&full));
        assert_eq!(
            (e.code, e.msg.as_str()),
            (codes::TRY_AGAIN_LATER, "VxnetFull")
        );
        assert!(e.details.contains("vxnet-a"), "{e:?}");
        assert!(!e.details.contains("growing"), "{e:?}");
        let quota = Shortage {
            cause: ShortageCause::RequestQuota,
            error: CloudError::new(
                CloudErrorKind::Throttled,
                "CreateNics",
                "QuotaExceeded, the API request quota of access key [K] is exceeded",
            )
            .with_code(2500),
            since: Timestamp(0),
        };
        let e = nic_shortage(10_000, 0, 0, Some(&quota));
        assert_eq!(e.code, codes::TRY_AGAIN_LATER);
        assert!(e.msg.contains("request quota"), "{e:?}");
        let plain = nic_shortage(10_000, 2, 0, None);
        assert!(plain.details.contains("the pool is growing"));
    }

    #[test]
    fn a_quota_is_a_full_node_or_the_clouds_quota() {
        assert!(is_quota(&EngineError::Alloc(AllocError::NodeFull {
            max_nics: 1
        })));
        assert!(is_quota(
            &CloudError::new(CloudErrorKind::QuotaExceeded, "CreateNics", "q").into()
        ));
        assert!(!is_quota(
            &CloudError::new(CloudErrorKind::Retryable, "CreateNics", "busy").into()
        ));
    }

    #[test]
    fn a_request_of_another_version_is_refused_before_decoding() {
        let e = decode_request(br#"{"version": 9, "verb": "NOPE"}"#).unwrap_err();
        assert_eq!(e.code, codes::INCOMPATIBLE_VERSION);
        let e = decode_request(b"{").unwrap_err();
        assert_eq!(e.code, codes::DECODE_FAILED);
    }

    #[test]
    fn status_is_ok_exactly_when_the_node_is_ready() {
        let counts = UsageCounts {
            assigned: 1,
            cooling: 1,
            ..UsageCounts::default()
        };
        let ok = status_reply(Readiness::of(&counts, 2, true), &counts, 1).unwrap();
        assert_eq!(ok.free_nics, 0);
        let full = status_reply(
            Readiness::NodeFull {
                assigned: 2,
                max: 2,
            },
            &counts,
            2,
        );
        assert_eq!(full.unwrap_err().code, codes::PLUGIN_NOT_AVAILABLE);
    }
}
