//! CHECK: ask the agent to verify the pod's plumbing against `prevResult`.

use std::time::Duration;

use hostnic_core::api::{CheckRequest, Reply, Request, RequestBody};

use super::{Ctx, millis};
use crate::client;
use crate::error::CniError;
use crate::result::expected_from_prev_result;

/// How long the agent may take to verify a pod.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs CHECK.
pub fn exec(ctx: &Ctx<'_>) -> Result<String, CniError> {
    let Some(prev) = &ctx.conf.prev_result else {
        return Err(CniError::config(
            "CHECK needs prevResult",
            "the runtime must pass the result of ADD as prevResult",
        ));
    };
    let pod = ctx.pod();
    let expected = expected_from_prev_result(prev, &pod.ifname);
    let timeout = ctx.timeout(DEFAULT_TIMEOUT);
    let request = Request::new(RequestBody::Check(CheckRequest {
        pod,
        netns: ctx.env.netns.clone().unwrap_or_default(),
        network: ctx.conf.name.clone(),
        cni_version: ctx.conf.version.as_str().to_string(),
        expected,
        prev_result: prev.clone(),
        timeout_ms: millis(timeout),
    }));
    match client::call(&ctx.conf.agent_socket, &request, timeout) {
        Ok(Reply::Check(_)) => {
            ctx.log.info(format_args!("plumbing matches prevResult"));
            Ok(String::new())
        }
        Ok(other) => Err(super::wrong_verb(&other)),
        Err(e) => Err(ctx.call_error(e)),
    }
}
