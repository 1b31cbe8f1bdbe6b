//! The QingCloud simulator for in-process agents (feature `fakes`): the core's
//! `FakeHost` follows its attachments, and a real QingCloud client talks to it
//! over HTTP with signatures and asynchronous jobs.

use std::sync::Arc;
use std::time::Duration;

use hostnic_core::testing::FakeHost;
use hostnic_core::types::InstanceId;
use hostnic_qingcloud::sim::{SimConfig, SimHandle, Simulator};
use hostnic_qingcloud::{ClientOptions, QingCloudClient, Secret};

use crate::hooks::FakeHostLinks;

/// The simulator, its client, and the fake host of `instance`.
#[derive(Debug)]
pub struct SimCloud {
    /// The simulator (stops when dropped).
    pub sim: SimHandle,
    /// A client of it, polling jobs every 200–500 ms.
    pub client: QingCloudClient,
    /// The host whose NIC links appear as the simulator attaches NICs.
    pub host: FakeHost,
}

impl SimCloud {
    /// Starts the simulator with `attach_latency`, the fake host of `instance`
    /// (veths named `veth_prefix…`) as its attach hook, and a client.
    pub async fn start(instance: &str, veth_prefix: &str, attach_latency: Duration) -> Self {
        let host = FakeHost::new(InstanceId::new(instance), veth_prefix);
        let sim = Simulator::start(
            SimConfig {
                attach_latency,
                ..SimConfig::new("AKID", "SECRET")
            },
            Some(Arc::new(FakeHostLinks(host.clone()))),
        )
        .await
        .expect("start the simulator");
        let client = QingCloudClient::for_url(
            &sim.url(),
            "AKID",
            Secret::new("SECRET"),
            &sim.zone(),
            ClientOptions {
                job_poll_initial: Duration::from_millis(200),
                job_poll_max: Duration::from_millis(500),
                ..ClientOptions::default()
            },
        )
        .expect("a client of the simulator");
        Self { sim, client, host }
    }
}
