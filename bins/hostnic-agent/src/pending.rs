//! Pending DELs: records the plugin left under `<stateDir>/pending-del/` when
//! it could not reach the agent (contract in `docs/agent-api.md`).

use std::fs;
use std::path::Path;

use hostnic_core::api::{PENDING_DEL_DIR, PendingDel};

use crate::shared::Shared;

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The DEL was performed (or the attachment was already gone).
    Done,
    /// The attachment was re-ADDed after the record was written: left alone.
    Superseded,
    /// The DEL failed retryably: the record stays for the next reconcile.
    Kept,
    /// The record could not be decoded: moved aside to `*.bad`.
    Bad,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Superseded => "superseded",
            Outcome::Kept => "kept",
            Outcome::Bad => "bad",
        }
    }
}

/// Performs every pending DEL of the state directory, removing the files it completed.
pub(crate) async fn replay(shared: &Shared) {
    let dir = shared.settings.state_dir.join(PENDING_DEL_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read pending DELs");
            return;
        }
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with('.') {
            if name.contains(".tmp-") {
                // A plugin died while writing; its DEL was retried by the runtime.
                let _ = fs::remove_file(&path);
            }
            continue;
        }
        if !name.ends_with(".json") {
            continue;
        }
        let outcome = replay_one(shared, &path).await;
        shared.metrics.inc(
            "hostnic_pending_dels_total",
            &[("outcome", outcome.label())],
        );
    }
}

async fn replay_one(shared: &Shared, path: &Path) -> Outcome {
    let record: PendingDel = match fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            let bad = path.with_extension("json.bad");
            tracing::warn!(file = %path.display(), error = %e, "undecodable pending DEL moved aside");
            let _ = fs::rename(path, &bad);
            return Outcome::Bad;
        }
    };
    let id = record.pod.attachment();
    let newer = shared.engine.with_state(|s| {
        s.attachment(&id)
            .is_some_and(|a| a.assigned_at > record.requested_at_ms)
    });
    if newer {
        tracing::info!(attachment = %id, "pending DEL older than the attachment's ADD: dropped");
        let _ = fs::remove_file(path);
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
            let _ = fs::remove_file(path);
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
