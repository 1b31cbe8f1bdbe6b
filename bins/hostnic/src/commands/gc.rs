//! GC: ask the agent to release every attachment not listed as valid.

use std::time::Duration;

use hostnic_core::api::{GcRequest, Reply, Request, RequestBody};

use super::{Ctx, millis};
use crate::client;
use crate::error::CniError;

/// How long the agent may take to collect garbage.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs GC.
pub fn exec(ctx: &Ctx<'_>) -> Result<String, CniError> {
    // Without the list every attachment would look stale: refuse rather than
    // detach every pod of the node.
    let Some(valid) = &ctx.conf.valid_attachments else {
        return Err(CniError::config(
            "GC needs cni.dev/valid-attachments",
            "refusing to collect without the list of attachments to keep",
        ));
    };
    let timeout = ctx.timeout(DEFAULT_TIMEOUT);
    let request = Request::new(RequestBody::Gc(GcRequest {
        network: ctx.conf.name.clone(),
        cni_version: ctx.conf.version.as_str().to_string(),
        valid_attachments: valid.clone(),
        timeout_ms: millis(timeout),
    }));
    match client::call(&ctx.conf.agent_socket, &request, timeout) {
        Ok(Reply::Gc(reply)) => {
            ctx.log.info(format_args!(
                "kept {} attachments, released {}",
                valid.len(),
                reply.released.len()
            ));
            Ok(String::new())
        }
        Ok(other) => Err(super::wrong_verb(&other)),
        Err(e) => Err(ctx.call_error(e)),
    }
}
