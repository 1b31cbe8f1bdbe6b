//! One module per CNI verb, each with an `exec()` returning the whole of stdout.

pub mod add;
pub mod check;
pub mod del;
pub mod gc;
pub mod status;
pub mod version;

use std::time::Duration;

use hostnic_core::api::{Reply, codes};
use hostnic_core::types::PodKey;

use crate::client::CallError;
use crate::config::NetConf;
use crate::env::CniEnv;
use crate::error::CniError;
use crate::log::Logger;

/// What every verb works with.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The environment.
    pub env: &'a CniEnv,
    /// The network configuration.
    pub conf: &'a NetConf,
    /// The logger.
    pub log: &'a Logger,
}

impl Ctx<'_> {
    /// The pod named by the environment (fields the runtime left out are empty).
    pub fn pod(&self) -> PodKey {
        PodKey {
            namespace: self.env.args.pod_namespace.clone(),
            name: self.env.args.pod_name.clone(),
            container_id: self.env.container_id.clone().unwrap_or_default(),
            ifname: self.env.ifname.clone().unwrap_or_default(),
        }
    }

    /// The agent timeout for a verb: `agentTimeoutMs` if set, else `default`.
    pub fn timeout(&self, default: Duration) -> Duration {
        self.conf.agent_timeout.unwrap_or(default)
    }

    /// The usual translation of a failed call: unreachable or silent agent →
    /// code 11, protocol violation → code 5, agent error → as the agent said.
    pub fn call_error(&self, e: CallError) -> CniError {
        let socket = self.conf.agent_socket.display();
        match e {
            CallError::Unreachable(e) => CniError::new(
                codes::TRY_AGAIN_LATER,
                "hostnic agent is unreachable",
                format!("{socket}: {e}"),
            ),
            CallError::NoAnswer(e) => CniError::new(
                codes::TRY_AGAIN_LATER,
                "hostnic agent did not answer",
                format!("{socket}: {e}"),
            ),
            CallError::Protocol(m) => CniError::new(
                codes::IO_FAILURE,
                "hostnic agent sent an invalid answer",
                format!("{socket}: {m}"),
            ),
            CallError::Agent(e) => e.into(),
        }
    }
}

/// `client::call` checks that the reply answers the verb asked, so a verb
/// receiving another verb's reply is a bug of the plugin.
fn wrong_verb(reply: &Reply) -> CniError {
    CniError::new(
        codes::INTERNAL,
        "reply of the wrong verb",
        format!("got a {} reply", reply.verb()),
    )
}

/// Milliseconds of a duration, for the request's `timeout_ms`.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
