//! ADD: ask the agent to attach the pod and print the CNI result.

use std::time::Duration;

use hostnic_core::api::{AddRequest, Reply, Request, RequestBody};

use super::{Ctx, millis};
use crate::client;
use crate::error::CniError;
use crate::result::add_result;

/// How long the agent may take to attach a pod (it may have to attach a NIC).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs ADD.
pub fn exec(ctx: &Ctx<'_>) -> Result<String, CniError> {
    if ctx.conf.prev_result.is_some() {
        ctx.log.warn(format_args!(
            "ignoring prevResult: hostnic creates the interface and should be the first plugin"
        ));
    }
    let timeout = ctx.timeout(DEFAULT_TIMEOUT);
    let request = Request::new(RequestBody::Add(AddRequest {
        pod: ctx.pod(),
        pod_uid: ctx.env.args.pod_uid.clone(),
        netns: ctx.env.netns.clone().unwrap_or_default(),
        network: ctx.conf.name.clone(),
        cni_version: ctx.conf.version.as_str().to_string(),
        veth_prefix: ctx.conf.veth_prefix.clone(),
        mtu: ctx.conf.mtu,
        runtime_config: ctx.conf.runtime_config.clone(),
        timeout_ms: millis(timeout),
    }));
    match client::call(&ctx.conf.agent_socket, &request, timeout) {
        Ok(Reply::Add(reply)) => {
            ctx.log.info(format_args!(
                "attached: ip {} nic {} table {} veth {}",
                reply.ip, reply.nic, reply.table, reply.host.name
            ));
            let result = add_result(ctx.conf.version, &reply, ctx.conf.dns.as_ref());
            Ok(result.to_string() + "\n")
        }
        Ok(other) => Err(super::wrong_verb(&other)),
        Err(e) => Err(ctx.call_error(e)),
    }
}
