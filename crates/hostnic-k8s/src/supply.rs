//! [`KubeNicSupply`]: the core's [`NicSupply`] over the node's [`HostnicNode`]
//! (the agent's controller mode). The agent writes the object's `spec` (its
//! request); the controller answers in its `status` (the NICs attached for the
//! node), which this adapter watches.
//!
//! - **Created** on the first request, named like the node, with an owner
//!   reference to its `Node`: Kubernetes deletes it when the Node goes, and the
//!   controller frees its NICs after its grace period.
//! - **Coalesced writes.** A request equal to the last one written writes
//!   nothing (a node at rest writes nothing at all); changes are written at most
//!   once per `min_interval` (default 3 s), the latest one winning. A write
//!   replaces the spec naming the resourceVersion it read; a 409 is read again
//!   and written again.
//! - **Never blocking.** [`NicSupply::request`] only hands the request to the
//!   writer task; failures are retried there with backoff (1 s doubling to
//!   30 s), so the agent keeps serving from its pool while the API server or the
//!   controller is down.
//! - **Status watched** with a `metadata.name` field selector (one object, never
//!   a cluster-wide watch); [`NicSupply::supplied`] answers from the watch's
//!   copy once it has listed the object (a pool round costs the API server
//!   nothing; the last status seen stays while the API server is down), and
//!   [`NicSupply::changes`] streams every status seen.
//!
//! Writes (creates and spec replaces) are counted ([`KubeNicSupply::writes`]):
//! the harness measures the agents' API traffic from it and from the fake API
//! server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use hostnic_core::fleet::NodeDemand;
use hostnic_core::ports::{NicSupply, Supplied, SupplyError, SupplyErrorKind};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::crd::{HostnicNode, HostnicNodeSpec};

/// How [`KubeNicSupply`] writes.
#[derive(Debug, Clone)]
pub struct SupplyOptions {
    /// At most one spec write per this interval.
    pub min_interval: Duration,
    /// First retry delay after a failed write (doubling).
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
}

impl Default for SupplyOptions {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_secs(3),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// The node's [`HostnicNode`] as its [`NicSupply`]. Dropping it stops its tasks.
#[derive(Debug)]
pub struct KubeNicSupply {
    api: Api<HostnicNode>,
    node: String,
    demand: watch::Sender<Option<NodeDemand>>,
    /// The status last watched; `None` until the watch has listed the object.
    status: watch::Receiver<Option<Supplied>>,
    writes: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for KubeNicSupply {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl KubeNicSupply {
    /// Starts the writer and the status watch of node `node`'s object.
    pub fn spawn(client: Client, node: &str, options: SupplyOptions) -> Self {
        let api: Api<HostnicNode> = Api::all(client.clone());
        let (demand_tx, demand_rx) = watch::channel(None);
        let (status_tx, status_rx) = watch::channel(None);
        let writes = Arc::new(AtomicU64::new(0));
        // Deletions of the object the watch saw: the writer writes the request
        // again (an object deleted by hand is re-created; one deleted with its Node
        // has no agent left to re-create it).
        let (deleted_tx, deleted_rx) = watch::channel(0u64);
        let writer = Writer {
            api: api.clone(),
            nodes: Api::all(client),
            node: node.to_owned(),
            options,
            writes: writes.clone(),
        };
        let tasks = vec![
            tokio::spawn(writer.run(demand_rx, deleted_rx)),
            tokio::spawn(watch_status(
                api.clone(),
                node.to_owned(),
                status_tx,
                deleted_tx,
            )),
        ];
        Self {
            api,
            node: node.to_owned(),
            demand: demand_tx,
            status: status_rx,
            writes,
            tasks,
        }
    }

    /// Spec writes (creates and replaces) made so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl NicSupply for KubeNicSupply {
    async fn request(&self, request: &NodeDemand) -> Result<(), SupplyError> {
        self.demand.send_if_modified(|d| {
            if d.as_ref() == Some(request) {
                false
            } else {
                *d = Some(request.clone());
                true
            }
        });
        Ok(())
    }

    async fn supplied(&self) -> Result<Supplied, SupplyError> {
        // The watch's copy once it has listed the object: a pool round costs the
        // API server nothing.
        if let Some(s) = self.status.borrow().clone() {
            return Ok(s);
        }
        match self.api.get_opt(&self.node).await {
            Ok(Some(obj)) => Ok(supplied_of(&obj)),
            Ok(None) => Ok(Supplied::default()),
            Err(e) => Err(supply_error(&e)),
        }
    }

    fn changes(&self) -> BoxStream<'static, Supplied> {
        let rx = self.status.clone();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                rx.changed().await.ok()?;
                let seen = rx.borrow_and_update().clone();
                if let Some(s) = seen {
                    return Some((s, rx));
                }
            }
        })
        .boxed()
    }
}

/// What a `HostnicNode`'s status says the node has: its NICs (any phase), the
/// refusal of its request (`Valid` False: `reason: message`), `Ready`.
pub fn supplied_of(obj: &HostnicNode) -> Supplied {
    let Some(status) = &obj.status else {
        return Supplied::default();
    };
    let refusal = status
        .condition("Valid")
        .filter(|c| c.status == "False")
        .map(|c| format!("{}: {}", c.reason, c.message));
    Supplied {
        answered: true,
        nics: obj.record().map(|r| r.nics).unwrap_or_default(),
        refusal,
        ready: status
            .condition("Ready")
            .is_some_and(|c| c.status == "True"),
    }
}

/// The spec that states `demand`.
pub fn spec_of(demand: &NodeDemand) -> HostnicNodeSpec {
    HostnicNodeSpec {
        instance_id: demand.instance.as_str().to_owned(),
        vxnets: demand
            .vxnets
            .iter()
            .map(|v| v.as_str().to_owned())
            .collect(),
        want_nics: i64::from(demand.want),
        max_nics: i64::from(demand.max_nics),
        release: demand.release.iter().map(ToString::to_string).collect(),
        missing: demand.missing.iter().map(ToString::to_string).collect(),
        waiting_pods: i64::from(demand.waiting),
    }
}

fn supply_error(e: &kube::Error) -> SupplyError {
    let kind = match e {
        kube::Error::Api(s) if matches!(s.code, 400 | 401 | 403 | 422) => {
            SupplyErrorKind::Permanent
        }
        _ => SupplyErrorKind::Retryable,
    };
    SupplyError::new(kind, e.to_string())
}

struct Writer {
    api: Api<HostnicNode>,
    nodes: Api<Node>,
    node: String,
    options: SupplyOptions,
    writes: Arc<AtomicU64>,
}

impl Writer {
    async fn run(
        self,
        mut demand: watch::Receiver<Option<NodeDemand>>,
        mut deleted: watch::Receiver<u64>,
    ) {
        let mut written: Option<HostnicNodeSpec> = None;
        let mut last_write: Option<tokio::time::Instant> = None;
        let mut delay = self.options.backoff_initial;
        let mut watching = true;
        loop {
            tokio::select! {
                changed = demand.changed() => if changed.is_err() {
                    return;
                },
                gone = deleted.changed(), if watching => match gone {
                    // Gone: the request is written again, creating the object.
                    Ok(()) => written = None,
                    Err(_) => {
                        watching = false;
                        continue;
                    }
                },
            }
            loop {
                // Coalesce: wait out the interval, then write the latest request.
                if let Some(at) = last_write {
                    tokio::time::sleep_until(at + self.options.min_interval).await;
                }
                let Some(want) = demand.borrow_and_update().as_ref().map(spec_of) else {
                    break;
                };
                if written.as_ref() == Some(&want) {
                    break;
                }
                match self.write(&want).await {
                    Ok(()) => {
                        last_write = Some(tokio::time::Instant::now());
                        written = Some(want);
                        delay = self.options.backoff_initial;
                        // A change that came while writing is written next.
                        if !demand.has_changed().unwrap_or(false) {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(node = %self.node, error = %e, retry_in = ?delay, "writing the node's HostnicNode");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(self.options.backoff_max);
                    }
                }
            }
        }
    }

    /// Replaces the spec (reading the object first, so the write names its
    /// resourceVersion), or creates the object.
    async fn write(&self, spec: &HostnicNodeSpec) -> Result<(), String> {
        for _ in 0..3 {
            match self
                .api
                .get_opt(&self.node)
                .await
                .map_err(|e| e.to_string())?
            {
                Some(obj) if obj.spec == *spec => return Ok(()),
                Some(mut obj) => {
                    obj.spec = spec.clone();
                    obj.status = None;
                    match self
                        .api
                        .replace(&self.node, &PostParams::default(), &obj)
                        .await
                    {
                        Ok(_) => {
                            self.writes.fetch_add(1, Ordering::Relaxed);
                            return Ok(());
                        }
                        Err(kube::Error::Api(s)) if s.code == 409 => continue,
                        Err(e) => return Err(e.to_string()),
                    }
                }
                None => {
                    let obj = HostnicNode {
                        metadata: ObjectMeta {
                            name: Some(self.node.clone()),
                            owner_references: self.owner().await,
                            ..Default::default()
                        },
                        spec: spec.clone(),
                        status: None,
                    };
                    match self.api.create(&PostParams::default(), &obj).await {
                        Ok(_) => {
                            self.writes.fetch_add(1, Ordering::Relaxed);
                            return Ok(());
                        }
                        Err(kube::Error::Api(s)) if s.code == 409 => continue,
                        Err(e) => return Err(e.to_string()),
                    }
                }
            }
        }
        Err("the object kept changing while it was written (409 three times)".into())
    }

    /// The owner reference to the node's Node (none when it cannot be read: the
    /// object is still created, and the controller frees its NICs when the node
    /// leaves anyway).
    async fn owner(&self) -> Option<Vec<OwnerReference>> {
        match self.nodes.get_opt(&self.node).await {
            Ok(Some(node)) => Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: self.node.clone(),
                uid: node.metadata.uid?,
                ..Default::default()
            }]),
            Ok(None) => {
                tracing::warn!(node = %self.node, "no Node object: the HostnicNode is created without an owner");
                None
            }
            Err(e) => {
                tracing::warn!(node = %self.node, error = %e, "reading the Node for the HostnicNode's owner");
                None
            }
        }
    }
}

async fn watch_status(
    api: Api<HostnicNode>,
    node: String,
    tx: watch::Sender<Option<Supplied>>,
    deleted: watch::Sender<u64>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut listed: Option<Supplied> = None;
    while let Some(event) = stream.next().await {
        let supplied = match event {
            Ok(watcher::Event::Apply(obj)) => supplied_of(&obj),
            Ok(watcher::Event::Delete(_)) => {
                deleted.send_modify(|n| *n += 1);
                Supplied::default()
            }
            Ok(watcher::Event::Init) => {
                listed = None;
                continue;
            }
            Ok(watcher::Event::InitApply(obj)) => {
                listed = Some(supplied_of(&obj));
                continue;
            }
            Ok(watcher::Event::InitDone) => listed.take().unwrap_or_default(),
            Err(e) => {
                tracing::debug!(node = %node, error = %e, "watching the node's HostnicNode");
                continue;
            }
        };
        tx.send_if_modified(|s| {
            if s.as_ref() == Some(&supplied) {
                false
            } else {
                *s = Some(supplied);
                true
            }
        });
    }
}
