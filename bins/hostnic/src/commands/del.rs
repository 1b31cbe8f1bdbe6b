//! DEL: ask the agent to release the attachment; if the agent cannot be
//! reached, leave a pending-DEL record for it and succeed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hostnic_core::api::{
    DelRequest, PROTOCOL_VERSION, PendingDel, Reply, Request, RequestBody, codes,
};

use hostnic_core::types::Timestamp;

use super::{Ctx, millis};
use crate::client::{self, CallError};
use crate::error::CniError;
use crate::pending::write_pending_del;

/// How long the agent may take to release a pod.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs DEL.
pub fn exec(ctx: &Ctx<'_>) -> Result<String, CniError> {
    let timeout = ctx.timeout(DEFAULT_TIMEOUT);
    let body = DelRequest {
        pod: ctx.pod(),
        netns: ctx.env.netns.clone(),
        network: ctx.conf.name.clone(),
        cni_version: ctx.conf.version.as_str().to_string(),
        prev_result: ctx.conf.prev_result.clone(),
        timeout_ms: millis(timeout),
    };
    let request = Request::new(RequestBody::Del(body.clone()));
    match client::call(&ctx.conf.agent_socket, &request, timeout) {
        Ok(Reply::Del(reply)) => {
            ctx.log.info(format_args!(
                "{}",
                if reply.released {
                    "released"
                } else {
                    "nothing to release"
                }
            ));
            Ok(String::new())
        }
        Ok(other) => Err(super::wrong_verb(&other)),
        Err(e @ (CallError::Unreachable(_) | CallError::NoAnswer(_))) => {
            let reason = e.to_string();
            let record = PendingDel {
                version: PROTOCOL_VERSION,
                pod: body.pod,
                netns: body.netns,
                network: body.network,
                requested_at_ms: Timestamp(now_ms()),
                reason: reason.clone(),
                prev_result: body.prev_result,
            };
            match write_pending_del(&ctx.conf.state_dir, &record) {
                Ok(path) => {
                    ctx.log.warn(format_args!(
                        "{reason}; recorded the DEL in {} for the agent to complete when it is back",
                        path.display()
                    ));
                    Ok(String::new())
                }
                Err(io) => Err(CniError::new(
                    codes::IO_FAILURE,
                    "hostnic agent is unreachable and the DEL could not be recorded",
                    format!(
                        "{reason}; writing under {}: {io}",
                        ctx.conf.state_dir.display()
                    ),
                )),
            }
        }
        Err(e) => Err(ctx.call_error(e)),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
