//! Stopping: the shutdown signal every task watches, and the order in which a
//! stopping agent winds its tasks down.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hostnic_core::ports::HostNetwork;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::shared::Shared;

/// How long a running pool round may take to finish when the agent stops.
const POOL_GRACE: Duration = Duration::from_secs(10);
/// How long the batched deletion of deleted pods' veths may take at stop.
const SETTLE_GRACE: Duration = Duration::from_secs(10);

/// Turns `shutdown` into a flag every task can watch (`true` once it completed).
pub(crate) fn signal(
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (Arc<watch::Sender<bool>>, watch::Receiver<bool>) {
    let (tx, rx) = watch::channel(false);
    let tx = Arc::new(tx);
    let sender = tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = sender.send(true);
    });
    (tx, rx)
}

/// Waits until `rx` says shutdown; returns at once if it already did.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Stops a task when dropped (every way out of `run`).
pub(crate) struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// After the server drained: stops the loops (a running pool round may finish,
/// so its jobs end recorded), then deletes the veths of deleted pods still
/// waiting for their batched deletion (a crash leaves them to the next start).
/// The pool, the checkpoint and the CNI configuration stay.
pub(crate) async fn wind_down(
    shared: &Shared,
    stop: &watch::Sender<bool>,
    mut pool: JoinHandle<()>,
    others: Vec<JoinHandle<()>>,
    http: crate::http::Endpoint,
) {
    let _ = stop.send(true);
    if tokio::time::timeout(shared.real(POOL_GRACE), &mut pool)
        .await
        .is_err()
    {
        pool.abort();
    }
    for task in others {
        task.abort();
    }
    drop(http);
    match tokio::time::timeout(shared.real(SETTLE_GRACE), shared.engine.host().settle()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "deleting the veths of deleted pods"),
        Err(_) => tracing::warn!("deleting the veths of deleted pods took over 10 s; left"),
    }
    tracing::info!("agent stopped; NICs, checkpoint and CNI configuration left in place");
}
