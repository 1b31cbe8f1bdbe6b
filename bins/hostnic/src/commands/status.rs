//! STATUS: is the agent ready to serve ADDs? Code 50 when it is not.

use std::time::Duration;

use hostnic_core::api::{Reply, Request, RequestBody, StatusRequest, codes};

use super::{Ctx, millis};
use crate::client::{self, CallError};
use crate::error::CniError;

/// How long the agent may take to report its status.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs STATUS.
pub fn exec(ctx: &Ctx<'_>) -> Result<String, CniError> {
    let timeout = ctx.timeout(DEFAULT_TIMEOUT);
    let request = Request::new(RequestBody::Status(StatusRequest {
        network: ctx.conf.name.clone(),
        cni_version: ctx.conf.version.as_str().to_string(),
        timeout_ms: millis(timeout),
    }));
    let socket = ctx.conf.agent_socket.display();
    match client::call(&ctx.conf.agent_socket, &request, timeout) {
        Ok(Reply::Status(s)) => {
            ctx.log.debug(format_args!(
                "ready: {} free NICs, {} pods",
                s.free_nics, s.attached_pods
            ));
            Ok(String::new())
        }
        Ok(other) => Err(super::wrong_verb(&other)),
        // The agent says why it is not ready (e.g. no NIC it could give).
        Err(CallError::Agent(e)) => Err(e.into()),
        Err(CallError::Unreachable(e)) => Err(CniError::new(
            codes::PLUGIN_NOT_AVAILABLE,
            "hostnic agent is down",
            format!("{socket}: {e}"),
        )),
        Err(e) => Err(CniError::new(
            codes::PLUGIN_NOT_AVAILABLE,
            "hostnic agent is not answering",
            format!("{socket}: {e}"),
        )),
    }
}
