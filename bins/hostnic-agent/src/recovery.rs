//! Saying loudly what the start rebuilt when the checkpoint could not be trusted.
//!
//! The decisions are the core's (`hostnic_core::recovery`); the file handling is the
//! store's. Here: one ERROR line with everything found and done, the counter
//! `hostnic_checkpoint_recovered_total{reason}`, and the reporter's events.

use hostnic_core::reconcile::PodsSeen;
use hostnic_core::types::PodInfo;

use crate::shared::Shared;

/// Reports what the startup reconcile rebuilt, if it rebuilt anything.
pub(crate) fn report(shared: &Shared) {
    let Some(recovery) = shared.engine.recovery() else {
        return;
    };
    tracing::error!(
        reason = recovery.reason.as_str(),
        pods = recovery.pods.len(),
        nics = recovery.adopted_nics,
        state_dir = %shared.settings.state_dir.display(),
        "{recovery}"
    );
    shared.metrics.inc(
        "hostnic_checkpoint_recovered_total",
        &[("reason", recovery.reason.as_str())],
    );
    if let Some(reporter) = &shared.reporter {
        reporter.checkpoint_recovered(&recovery);
    }
}

/// What the pod source said, for the engine: no source, no answer, or its pods.
pub(crate) fn pods_seen(has_source: bool, pods: Option<&[PodInfo]>) -> PodsSeen<'_> {
    match (has_source, pods) {
        (false, _) => PodsSeen::NoSource,
        (true, None) => PodsSeen::Unavailable,
        (true, Some(pods)) => PodsSeen::Listed(pods),
    }
}
