//! [`PodEvents`]: Kubernetes Events on a pod when its CNI ADD could not get a NIC,
//! or when the agent rebuilt it from the node after losing its checkpoint, and on
//! the node when the account's API request quota is exhausted or back.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The reporting controller of hostnic's events.
pub const REPORTER: &str = "hostnic";

/// Events waiting to be sent beyond this are dropped (the API server is slow or down).
const QUEUE: usize = 64;

/// Why a pod could not get a NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicShortage {
    /// The warm pool had no NIC before the ADD's deadline (reason `NoFreeNic`).
    NoFreeNic,
    /// The cloud refused more NICs or addresses: quota of NICs per instance or the
    /// vxnet's addresses exhausted (reason `NicQuotaExceeded`).
    QuotaExceeded,
    /// The node's pod vxnets have no address (or NIC) left (reason `VxnetFull`).
    VxnetFull,
    /// The account's API request quota is exhausted: no NIC can be created or
    /// attached until it frees (reason `RequestQuotaExceeded`).
    RequestQuota,
    /// The cloud refused the request or did not answer (reason `CloudUnavailable`).
    CloudUnavailable,
}

impl NicShortage {
    /// The event's `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NoFreeNic => "NoFreeNic",
            Self::QuotaExceeded => "NicQuotaExceeded",
            Self::VxnetFull => "VxnetFull",
            Self::RequestQuota => "RequestQuotaExceeded",
            Self::CloudUnavailable => "CloudUnavailable",
        }
    }
}

/// The reason of the event on a pod whose address the agent recovered from the node
/// (its checkpoint was missing, damaged or older than the node).
pub const CHECKPOINT_RECOVERED: &str = "CheckpointRecovered";

/// The reason of the Warning event on the node when the agent's cloud client met
/// the account's API request quota (its circuit breaker opened).
pub const REQUEST_QUOTA_EXCEEDED: &str = "RequestQuotaExceeded";

/// The reason of the Normal event on the node when the quota answered again.
pub const REQUEST_QUOTA_RECOVERED: &str = "RequestQuotaRecovered";

#[derive(Debug)]
struct Pending {
    /// Empty for the node (a cluster-scoped object).
    namespace: String,
    name: String,
    uid: Option<String>,
    reason: &'static str,
    action: &'static str,
    message: String,
    /// `Node` or `Pod`.
    kind: &'static str,
    warning: bool,
}

/// Records Warning events on pods (events.k8s.io/v1, via kube's [`Recorder`], which
/// folds repeats into a series). [`nic_shortage`](Self::nic_shortage) never blocks: the
/// events are sent by a background task, and dropped if the queue is full.
#[derive(Debug, Clone)]
pub struct PodEvents {
    tx: mpsc::Sender<Pending>,
    /// Stops the sending task when the last clone is dropped.
    _task: std::sync::Arc<AbortOnDrop>,
}

#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PodEvents {
    /// Starts the sending task; `instance` names the reporting instance (the node).
    pub fn spawn(client: Client, instance: &str) -> Self {
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: REPORTER.to_owned(),
                instance: Some(instance.to_owned()),
            },
        );
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(send_loop(recorder, rx));
        Self {
            tx,
            _task: std::sync::Arc::new(AbortOnDrop(task)),
        }
    }

    /// Records that the pod `namespace/name` (UID if known) could not get a NIC.
    pub fn nic_shortage(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<String>,
        shortage: NicShortage,
        message: impl Into<String>,
    ) {
        self.send(Pending {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid,
            reason: shortage.reason(),
            action: "AllocateNic",
            message: message.into(),
            kind: "Pod",
            warning: true,
        });
    }

    /// Records that the agent recovered the pod `namespace/name` (UID if known) from
    /// the node: its checkpoint could not be trusted (reason `CheckpointRecovered`).
    pub fn checkpoint_recovered(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<String>,
        message: impl Into<String>,
    ) {
        self.send(Pending {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid,
            reason: CHECKPOINT_RECOVERED,
            action: "RecoverCheckpoint",
            message: message.into(),
            kind: "Pod",
            warning: true,
        });
    }

    /// Records on the node `node` that the account's API request quota is
    /// `exhausted` (Warning `RequestQuotaExceeded`) or back (Normal
    /// `RequestQuotaRecovered`).
    pub fn request_quota(&self, node: &str, exhausted: bool, message: impl Into<String>) {
        let (reason, warning) = if exhausted {
            (REQUEST_QUOTA_EXCEEDED, true)
        } else {
            (REQUEST_QUOTA_RECOVERED, false)
        };
        self.send(Pending {
            namespace: String::new(),
            name: node.to_owned(),
            uid: None,
            reason,
            action: "CallCloud",
            message: message.into(),
            kind: "Node",
            warning,
        });
    }

    fn send(&self, pending: Pending) {
        let (namespace, name) = (pending.namespace.clone(), pending.name.clone());
        if self.tx.try_send(pending).is_err() {
            tracing::debug!(namespace, name, "event queue full; event dropped");
        }
    }
}

async fn send_loop(recorder: Recorder, mut rx: mpsc::Receiver<Pending>) {
    while let Some(p) = rx.recv().await {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some(p.kind.into()),
            namespace: (!p.namespace.is_empty()).then(|| p.namespace.clone()),
            name: Some(p.name.clone()),
            uid: p.uid.clone(),
            ..Default::default()
        };
        // The API limits a note to 1 kB.
        let note: String = p.message.chars().take(1000).collect();
        let event = Event {
            type_: if p.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: p.reason.to_owned(),
            note: Some(note),
            action: p.action.to_owned(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, pod = %format!("{}/{}", p.namespace, p.name), "recording event");
        }
    }
}
