//! The pod driver: what kubelet and the container runtime do for a pod, through
//! the agent's real Unix socket (the plugin ↔ agent protocol the `hostnic` binary
//! speaks). A pod is listed pending in the node's pod source, its sandbox waits for
//! the node's CNI configuration, ADD is sent with the plugin's 30 s deadline, and a
//! failed ADD is followed by a DEL of that sandbox and a new sandbox after a
//! backoff (5 s doubling to 60 s, ±20 %), until the pod has its address or the
//! scenario's deadline passes. Once served, the pod source lists it with its address.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hostnic_core::api::{
    AddRequest, CheckRequest, DelRequest, ExpectedAttachment, Outcome, Reply, RequestBody,
};
use hostnic_core::backoff::ExponentialBackoff;
use hostnic_core::types::{PodInfo, PodKey};
use hostnic_testkit::requests::try_call;
use hostnic_testkit::time::ScaledClock;
use tokio::sync::Semaphore;

use super::fleet::Node;

/// The namespace of the harness's pods.
pub const NAMESPACE: &str = "scale";

/// The plugin's default ADD deadline (simulated).
const ADD_TIMEOUT: Duration = Duration::from_secs(30);

/// What happened to one pod.
#[derive(Debug, Clone)]
pub struct PodResult {
    /// The node's index.
    pub node: usize,
    /// The pod's name.
    pub name: String,
    /// Simulated seconds since the start of the run when it was scheduled.
    pub scheduled: f64,
    /// ... and when its ADD succeeded.
    pub served: Option<f64>,
    /// Every ADD that got an answer: simulated milliseconds from sending to answer.
    pub add_ms: Vec<f64>,
    /// Sandboxes tried.
    pub attempts: u32,
    /// The address it got, and its sandbox (container id).
    pub ip: Option<(Ipv4Addr, String)>,
    /// The last failure, if it was never served.
    pub last_error: Option<String>,
}

/// Runs pods like kubelet.
#[derive(Clone)]
pub struct Driver {
    /// The fleet's clock.
    pub clock: ScaledClock,
    /// Bounds the requests in flight (a connection each; the process has a limit of
    /// file descriptors, and kubelet's parallelism is bounded too).
    pub inflight: Arc<Semaphore>,
    /// Pods served so far (for the samples).
    pub served: Arc<AtomicU64>,
}

fn key(name: &str, container: &str) -> PodKey {
    PodKey {
        namespace: NAMESPACE.into(),
        name: name.into(),
        container_id: container.into(),
        ifname: "eth0".into(),
    }
}

fn netns(container: &str) -> String {
    format!("/var/run/netns/{container}")
}

impl Driver {
    /// Simulated seconds since the fleet's clock started.
    pub fn now(&self) -> f64 {
        self.clock.elapsed().as_secs_f64()
    }

    fn real(&self, simulated: Duration) -> Duration {
        self.clock.real(simulated)
    }

    /// Schedules pod `name` on `node` and runs its sandboxes until it is served or
    /// `deadline` (simulated seconds since the start) passes.
    pub async fn run_pod(&self, node: Arc<Node>, name: String, deadline: f64) -> PodResult {
        let scheduled = self.now();
        node.pods.upsert(PodInfo {
            namespace: NAMESPACE.into(),
            name: name.clone(),
            pending: true,
            ip: None,
        });
        let mut result = PodResult {
            node: node.index,
            name: name.clone(),
            scheduled,
            served: None,
            add_ms: Vec::new(),
            attempts: 0,
            ip: None,
            last_error: None,
        };
        // Kubelet creates no sandbox before the network plugin is ready.
        while !node.conflist().exists() {
            if self.now() > deadline {
                result.last_error = Some("the node's CNI configuration never appeared".into());
                return result;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let backoff = ExponentialBackoff::new(Duration::from_secs(5), Duration::from_secs(60));
        let seed = (node.index as u64) << 20 ^ name.len() as u64;
        loop {
            let container = format!("{name}-{}", result.attempts);
            result.attempts += 1;
            let timeout_ms = self.real(ADD_TIMEOUT).as_millis().max(20) as u64;
            let add = RequestBody::Add(AddRequest {
                pod: key(&name, &container),
                pod_uid: None,
                netns: netns(&container),
                network: "hostnic".into(),
                cni_version: "1.0.0".into(),
                veth_prefix: None,
                mtu: None,
                runtime_config: None,
                timeout_ms,
            });
            let sent = self.now();
            let answer = {
                let _permit = self.inflight.acquire().await;
                try_call(&node.socket(), add).await
            };
            match answer {
                Ok(response) => {
                    result.add_ms.push((self.now() - sent) * 1000.0);
                    match response.outcome {
                        Outcome::Ok(Reply::Add(reply)) => {
                            let ip = reply.ip.addr();
                            node.pods.upsert(PodInfo {
                                namespace: NAMESPACE.into(),
                                name: name.clone(),
                                pending: false,
                                ip: Some(ip),
                            });
                            result.served = Some(self.now());
                            result.ip = Some((ip, container));
                            self.served.fetch_add(1, Ordering::Relaxed);
                            return result;
                        }
                        Outcome::Ok(other) => {
                            result.last_error = Some(format!("ADD answered {other:?}"));
                        }
                        Outcome::Error(e) => {
                            result.last_error =
                                Some(format!("code {}: {}: {}", e.code, e.msg, e.details));
                        }
                    }
                }
                Err(e) => result.last_error = Some(format!("agent unreachable: {e}")),
            }
            // The runtime tears the failed sandbox down (DEL), and kubelet tries a new
            // one after its backoff.
            let _ = self.del(&node, &name, &container).await;
            let wait = backoff.spread(result.attempts - 1, seed);
            if self.now() + wait.as_secs_f64() > deadline {
                return result;
            }
            tokio::time::sleep(self.real(wait)).await;
        }
    }

    /// DEL of `name`'s sandbox `container` (the pod stays listed).
    pub async fn del(&self, node: &Node, name: &str, container: &str) -> Result<(), String> {
        let del = RequestBody::Del(DelRequest {
            pod: key(name, container),
            netns: Some(netns(container)),
            network: "hostnic".into(),
            cni_version: "1.0.0".into(),
            prev_result: None,
            timeout_ms: self.real(Duration::from_secs(20)).as_millis().max(20) as u64,
        });
        let _permit = self.inflight.acquire().await;
        match try_call(&node.socket(), del).await {
            Ok(r) => match r.outcome {
                Outcome::Ok(_) => Ok(()),
                Outcome::Error(e) => Err(format!("code {}: {}", e.code, e.msg)),
            },
            Err(e) => Err(e.to_string()),
        }
    }

    /// Deletes pod `name` as the API server and kubelet do: DEL of its sandbox,
    /// then gone from the pod source.
    pub async fn delete_pod(&self, node: &Node, name: &str, container: &str) -> Result<(), String> {
        let r = self.del(node, name, container).await;
        node.pods.delete(NAMESPACE, name);
        r
    }

    /// CHECK of a served pod's sandbox: its plumbing is still there, with `ip`.
    pub async fn check(&self, node: &Node, name: &str, container: &str) -> Result<(), String> {
        let check = RequestBody::Check(CheckRequest {
            pod: key(name, container),
            netns: netns(container),
            network: "hostnic".into(),
            cni_version: "1.0.0".into(),
            expected: ExpectedAttachment::default(),
            prev_result: serde_json::json!({}),
            timeout_ms: self.real(Duration::from_secs(10)).as_millis().max(20) as u64,
        });
        let _permit = self.inflight.acquire().await;
        match try_call(&node.socket(), check).await {
            Ok(r) => match r.outcome {
                Outcome::Ok(_) => Ok(()),
                Outcome::Error(e) => Err(format!("code {}: {}: {}", e.code, e.msg, e.details)),
            },
            Err(e) => Err(e.to_string()),
        }
    }
}
