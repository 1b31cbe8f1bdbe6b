//! Pending DELs: the records the plugin left when it could not reach the agent
//! (files in `hostnic_store::pending`), performed at start and on reconciles.

use std::path::Path;

use hostnic_store::pending::{self, Outcome};

use crate::shared::Shared;

/// Performs every pending DEL of the state directory, removing the files it completed.
pub(crate) async fn replay(shared: &Shared) {
    for path in pending::records(&shared.settings.state_dir) {
        let outcome = replay_one(shared, &path).await;
        shared.metrics.inc(
            "hostnic_pending_dels_total",
            &[("outcome", outcome.label())],
        );
    }
}

async fn replay_one(shared: &Shared, path: &Path) -> Outcome {
    let Some(record) = pending::read(path) else {
        return Outcome::Bad;
    };
    let id = record.pod.attachment();
    let newer = shared.engine.with_state(|s| {
        s.attachment(&id)
            .is_some_and(|a| a.assigned_at > record.requested_at_ms)
    });
    if newer {
        tracing::info!(attachment = %id, "pending DEL older than the attachment's ADD: dropped");
        pending::remove(path);
        return Outcome::Superseded;
    }
    let result = {
        let _shared = shared.plumbing.read().await;
        shared
            .engine
            .del_pod(&record.pod, record.netns.as_deref())
            .await
    };
    match result {
        Ok(released) => {
            tracing::info!(
                attachment = %id,
                released = released.is_some(),
                reason = %record.reason,
                "pending DEL completed"
            );
            pending::remove(path);
            shared.pool_wake.notify_one();
            Outcome::Done
        }
        Err(e) => {
            tracing::warn!(attachment = %id, error = %e, "pending DEL failed; kept for the next reconcile");
            shared
                .metrics
                .inc("hostnic_errors_total", &[("area", "pending_del")]);
            Outcome::Kept
        }
    }
}
