//! [`PodEvents`]: Kubernetes Events on a pod when its CNI ADD could not get a NIC,
//! or when the agent rebuilt it from the node after losing its checkpoint.

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
}

impl NicShortage {
    /// The event's `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NoFreeNic => "NoFreeNic",
            Self::QuotaExceeded => "NicQuotaExceeded",
        }
    }
}

/// The reason of the event on a pod whose address the agent recovered from the node
/// (its checkpoint was missing, damaged or older than the node).
pub const CHECKPOINT_RECOVERED: &str = "CheckpointRecovered";

#[derive(Debug)]
struct Pending {
    namespace: String,
    name: String,
    uid: Option<String>,
    reason: &'static str,
    action: &'static str,
    message: String,
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
            kind: Some("Pod".into()),
            namespace: Some(p.namespace.clone()),
            name: Some(p.name.clone()),
            uid: p.uid.clone(),
            ..Default::default()
        };
        // The API limits a note to 1 kB.
        let note: String = p.message.chars().take(1000).collect();
        let event = Event {
            type_: EventType::Warning,
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
