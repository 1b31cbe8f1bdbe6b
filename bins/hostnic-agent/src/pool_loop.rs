//! The pool task (a round on every tick or wake-up), the periodic reconcile,
//! and the event tasks that wake the pool.
//!
//! The periodic reconcile is the core's: local (checkpoint, host, pods) unless
//! something disagrees, at start, or on the slow resync; a node at rest makes no
//! cloud call between resyncs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use hostnic_core::engine::EngineError;
use hostnic_core::ports::PodSource;
use hostnic_core::reconcile::ReconcileReport;

use crate::HostEvent;
use hostnic_core::types::PodEvent;

use crate::pending;
use crate::shared::Shared;
use crate::shutdown::stopped;

/// One reconcile with the pods (when the source is authoritative); records metrics.
pub(crate) async fn reconcile_once(
    shared: &Shared,
    startup: bool,
) -> Result<ReconcileReport, EngineError> {
    let pods = shared.authoritative_pods().await;
    // ADD and DEL are kept off the host only while it is compared and repaired,
    // not while the engine waits for a pool round or for the cloud.
    let result = shared
        .engine
        .reconcile_witnessed(
            crate::recovery::pods_seen(shared.pods.is_some(), pods.as_deref()),
            startup,
            shared.plumbing.write(),
        )
        .await;
    if let Some(policy) = &shared.policy {
        // Pods reconcile removed leave the policy too.
        policy.request();
    }
    let m = &shared.metrics;
    // A reconcile that asked the cloud tells whether it answers while idle.
    match &result {
        Err(EngineError::Cloud(_)) => shared.cloud_ok.store(false, Ordering::SeqCst),
        Ok(r) if r.cloud_error.is_some() => shared.cloud_ok.store(false, Ordering::SeqCst),
        Ok(r) if r.cloud.is_some() => shared.cloud_ok.store(true, Ordering::SeqCst),
        _ => {}
    }
    match &result {
        Ok(report) => {
            hostnic_core::metrics::agent::count_reconcile(m, report);
            if let Some(reason) = &report.cloud
                && !startup
            {
                tracing::debug!(%reason, "the reconcile asked the cloud");
            }
            if !report.is_clean() {
                tracing::info!(
                    startup,
                    adopted = report.adopted.len(),
                    forgotten = report.forgotten.len(),
                    corrected = report.corrected.len(),
                    recovered = report.recovered.len(),
                    actions = report.actions.len(),
                    "reconcile repaired the node"
                );
            }
            let now = shared.engine.clock().now();
            *shared
                .last_reconcile
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some((report.clone(), now.0));
        }
        Err(e) => {
            m.inc("hostnic_errors_total", &[("area", "reconcile")]);
            tracing::warn!(startup, error = %e, "reconcile failed");
        }
    }
    // Whatever reconcile found may need pool work (re-attach, delete).
    shared.pool_wake.notify_one();
    result
}

/// How long a woken pool waits for the rest of a burst before it plans: ADDs and
/// pending pods of one burst then make one batch (real time, at least 5 ms).
const COALESCE: Duration = Duration::from_millis(100);

/// Runs pool rounds: after a round that did something at once, else on the tick
/// or when woken. Waiting ADDs are woken after every round.
pub(crate) async fn pool_task(shared: Arc<Shared>) {
    let interval = shared.real(Duration::from_secs_f64(shared.settings.pool_interval_secs));
    let coalesce = shared.real(COALESCE).max(Duration::from_millis(5));
    let mut stop = shared.shutdown.clone();
    loop {
        shared.update_demand();
        let round = shared.engine.run_pool().await;
        let busy = round.actions > 0;
        shared.metrics.inc(
            "hostnic_pool_rounds_total",
            &[("busy", if busy { "true" } else { "false" })],
        );
        for failure in &round.failures {
            tracing::warn!(error = %failure, "pool action failed");
            shared
                .metrics
                .inc("hostnic_errors_total", &[("area", "pool")]);
        }
        if busy {
            // Only a round that did something says whether the cloud answers.
            shared
                .cloud_ok
                .store(round.failures.is_empty(), Ordering::SeqCst);
        }
        *shared.last_round.lock().unwrap_or_else(|p| p.into_inner()) = Some(round.clone());
        if let Some(reporter) = &shared.reporter {
            let now = shared.engine.clock().now();
            // While a shortage keeps the pool from growing (a full vxnet, a quota),
            // the node offers only the NICs it holds.
            let (free, assignable) = shared
                .engine
                .with_state(|s| (s.usage_counts(now).free, s.assignable_pods()));
            reporter.capacity(free, assignable);
        }
        shared.refresh_readiness();
        shared.round_done.notify_waiters();
        if *stop.borrow() {
            return;
        }
        if busy && round.failures.is_empty() {
            continue;
        }
        // Failed actions are held back by the engine's backoff; do not spin on them.
        let pause = if busy {
            shared.real(Duration::from_millis(50))
        } else {
            interval
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shared.pool_wake.notified() => {
                // Woken by demand: let the rest of the burst arrive, one batch for all.
                tokio::time::sleep(coalesce).await;
            }
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Periodic work: reconcile (with the pods when authoritative), pending DELs that
/// timed out while the agent was alive, and the node setup (default-route guard).
pub(crate) async fn periodic_task(shared: Arc<Shared>) {
    let interval = shared.real(Duration::from_secs_f64(
        shared.settings.reconcile_interval_secs,
    ));
    let mut stop = shared.shutdown.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shared.reconcile_wake.notified() => {
                tracing::debug!("reconciling now (a NIC link vanished, or new credentials)");
            }
            _ = stopped(&mut stop) => return,
        }
        match shared
            .engine
            .host()
            .ensure_node(&shared.identity.node)
            .await
        {
            Ok(report) if report.default_route_restored => {
                tracing::warn!("the node's default route was missing and has been restored");
                shared
                    .metrics
                    .inc("hostnic_default_route_restored_total", &[]);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "node setup");
                shared
                    .metrics
                    .inc("hostnic_errors_total", &[("area", "node")]);
            }
        }
        let _ = reconcile_once(&shared, false).await;
        pending::replay(&shared).await;
    }
}

/// Reacts to the kernel's NIC link events: a link appearing wakes the pool (it
/// prepares attached NICs), one of the node's NICs vanishing triggers a reconcile, an
/// address put on a pod NIC is stripped by preparing the NIC again.
pub(crate) async fn event_task(shared: Arc<Shared>, mut events: BoxStream<'static, HostEvent>) {
    while let Some(event) = events.next().await {
        match event {
            HostEvent::NicAppeared => shared.pool_wake.notify_one(),
            HostEvent::NicRemoved(nic) => {
                // Pod veths come and go too; only the node's own NICs matter here.
                if shared.engine.with_state(|s| s.nics().contains_key(&nic)) {
                    shared.reconcile_wake.notify_one();
                }
            }
            HostEvent::NicAddressAdded(nic) => {
                let plumbing = shared.engine.with_state(|s| {
                    s.nics()
                        .get(&nic)
                        .filter(|e| e.host_ready)
                        .map(|e| s.nic_plumbing(e))
                });
                if let Some(plumbing) = plumbing {
                    tracing::warn!(%nic, "an IPv4 address was put on a pod NIC (DHCP?); removing it");
                    if let Err(e) = shared.engine.host().prepare_nic(&plumbing).await {
                        tracing::warn!(%nic, error = %e, "preparing the NIC again");
                        shared
                            .metrics
                            .inc("hostnic_errors_total", &[("area", "host")]);
                    }
                }
            }
        }
    }
}

/// Follows the pod source: a pending pod raises demand and wakes the pool; a pod
/// that got its address or went away lowers it.
pub(crate) async fn pod_event_task(shared: Arc<Shared>, source: Arc<dyn PodSource>) {
    let mut changes = source.changes();
    // Pods that arrived between the startup reconcile's listing and the subscription
    // sent no event: count them now.
    if shared.authoritative_pods().await.is_some() && shared.demand() > 0 {
        shared.pool_wake.notify_one();
    }
    while let Some(event) = changes.next().await {
        // Recount from the source (cheap for the static file; the kube adapter caches).
        let _ = shared.authoritative_pods().await;
        if let PodEvent::Upserted(pod) = &event
            && pod.pending
        {
            shared.pool_wake.notify_one();
        }
    }
}
