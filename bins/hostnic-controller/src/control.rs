//! The control loop: follow until elected; on taking over, resume the fleet
//! planner from every `HostnicNode`'s recorded status (a fresh list, not the
//! cache) and the request ledger carried on the Lease; then rounds while leading:
//!
//! 1. plan from the demand set, under the budget;
//! 2. write the statuses that changed — including NICs reserved for attaches
//!    about to be made: the write-ahead record a new leader resumes from (an
//!    attach whose record could not be written is not made this round);
//! 3. make the round's calls, abandoned at once if leadership is lost;
//! 4. learn from the outcomes, write the statuses again (the jobs just started
//!    are recorded before anything waits on them), record events, metrics;
//! 5. plan again at once if the round did something, else at the planner's next
//!    wake-up, a change of the nodes, the budget freeing, or the idle interval.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hostnic_core::fleet::{Breaker, Fleet, FleetCall, NodeDemand, NodeRecord, NodeView, execute};
use hostnic_core::ports::{Clock, SystemClock};
use hostnic_k8s::crd::HostnicNode;
use hostnic_k8s::lease::{Leadership, LeaseNotes};
use hostnic_qingcloud::QingCloudClient;
use kube::Api;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::budget::{LEDGER_ANNOTATION, Ledger, round_budget};
use crate::cluster::Cluster;
use crate::events::NodeEvents;
use crate::metrics::{Gauges, Metrics};
use crate::settings::Settings;
use crate::status::StatusWriter;

/// What the loop works with.
pub(crate) struct Ctx {
    pub(crate) client: QingCloudClient,
    pub(crate) kube: kube::Client,
    pub(crate) settings: Settings,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) cluster: Cluster,
    pub(crate) notes: Arc<Mutex<LeaseNotes>>,
    pub(crate) ledger: Arc<Mutex<Ledger>>,
    pub(crate) events: NodeEvents,
}

fn leading(rx: &watch::Receiver<Leadership>) -> bool {
    rx.borrow().is_leader()
}

/// Until this replica leads (`true`) or no longer leads (`false`); false if the
/// election ended.
async fn until_leading(rx: &mut watch::Receiver<Leadership>, leader: bool) -> bool {
    rx.wait_for(|l| l.is_leader() == leader).await.is_ok()
}

async fn until_shutdown(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn result_of(outcome: &hostnic_core::fleet::Outcome) -> &'static str {
    use hostnic_core::ports::CloudErrorKind::*;
    match outcome.error().map(|e| e.kind) {
        None => "ok",
        Some(Retryable) => "retryable",
        Some(NotFound) => "not-found",
        Some(QuotaExceeded) => "quota-exceeded",
        Some(Permanent) => "permanent",
        Some(Throttled) => "throttled",
    }
}

/// Runs until `shutdown` turns true.
pub(crate) async fn run(
    mut ctx: Ctx,
    mut leadership: watch::Receiver<Leadership>,
    mut shutdown: watch::Receiver<bool>,
) {
    ctx.cluster.ready().await;
    loop {
        tokio::select! {
            ok = until_leading(&mut leadership, true) => if !ok { return },
            _ = until_shutdown(&mut shutdown) => return,
        }
        tracing::info!(identity = %ctx.settings.lease.identity, "leading: taking over the fleet");
        lead(&mut ctx, &mut leadership, &mut shutdown).await;
        ctx.metrics.set_gauges(Gauges::default());
        if *shutdown.borrow() {
            return;
        }
        tracing::info!("no longer leading");
    }
}

/// The records of every node, from a fresh list (the previous leader's last writes).
async fn records(ctx: &Ctx) -> Result<Vec<NodeRecord>, kube::Error> {
    let api: Api<HostnicNode> = Api::all(ctx.kube.clone());
    let list = api.list(&Default::default()).await?;
    Ok(list.items.iter().filter_map(HostnicNode::record).collect())
}

async fn lead(
    ctx: &mut Ctx,
    leadership: &mut watch::Receiver<Leadership>,
    shutdown: &mut watch::Receiver<bool>,
) {
    let clock = SystemClock;
    let retry = ctx.settings.lease.retry_period;
    let records = loop {
        match records(ctx).await {
            Ok(r) => break r,
            Err(e) => {
                tracing::warn!(error = %e, "listing HostnicNodes to take over; retrying");
                tokio::time::sleep(retry).await;
                if !leading(leadership) || *shutdown.borrow() {
                    return;
                }
            }
        }
    };
    if let Some(spent) = ctx
        .notes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .read
        .get(LEDGER_ANNOTATION)
    {
        ctx.ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .absorb(spent);
    }
    let mut fleet = Fleet::resume(ctx.settings.fleet.clone(), clock.now(), &records);
    let mut writer = StatusWriter::new(
        Api::all(ctx.kube.clone()),
        ctx.settings.status_writers,
        ctx.metrics.clone(),
    );
    tracing::info!(nodes = records.len(), "resumed from the recorded statuses");
    loop {
        if !leading(leadership) || *shutdown.borrow() {
            return;
        }
        let started = Instant::now();
        let demanded = ctx.cluster.demands();
        let demands: Vec<NodeDemand> = demanded.values().map(|d| d.demand.clone()).collect();
        let budget = round_budget(&ctx.client, &ctx.ledger);
        let mut round = fleet.plan(clock.now(), &demands, budget);
        let planned = started.elapsed();
        // Write-ahead: what the round is about to do is recorded first.
        let failed = writer.write(&fleet.views(), &demanded).await;
        let recorded = started.elapsed();
        if !failed.is_empty() {
            round.calls.retain(
                |c| !matches!(&c.call, FleetCall::AttachNics { node, .. } if failed.contains(node)),
            );
        }
        if !leading(leadership) {
            return;
        }
        let outcomes = tokio::select! {
            o = execute(&ctx.client, &round) => o,
            _ = until_leading(leadership, false) => {
                tracing::warn!("leadership lost in the middle of a round: its calls are abandoned");
                return;
            }
        };
        let called = started.elapsed();
        let now = clock.now();
        for (call, outcome) in outcomes {
            ctx.metrics
                .call(call.call.action(), call.lane, result_of(&outcome));
            fleet.complete(now, &call, outcome);
        }
        let views: Vec<NodeView> = fleet.views();
        writer.write(&views, &demanded).await;
        let cluster = &ctx.cluster;
        ctx.events.update(&views, |n| cluster.node_uid(n));
        let used = {
            let mut ledger = ctx.ledger.lock().unwrap_or_else(|p| p.into_inner());
            let record = ledger.encode();
            ctx.notes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .write
                .insert(LEDGER_ANNOTATION.into(), record);
            ctx.settings
                .budget
                .requests
                .saturating_sub(ledger.remaining())
        };
        ctx.metrics.set_gauges(gauges(&fleet, &views, &round, used));
        ctx.metrics.round(started.elapsed().as_secs_f64());
        if !round.is_empty() || !round.deferred.is_empty() {
            let ms = |d: Duration| d.as_millis() as u64;
            tracing::debug!(
                calls = round.calls.len(),
                requests = round.requests(),
                deferred = ?round.deferred,
                jobs = fleet.jobs_in_flight(),
                ms = ms(started.elapsed()),
                plan_ms = ms(planned),
                record_ms = ms(recorded - planned),
                calls_ms = ms(called - recorded),
                "round"
            );
        }
        if !round.is_empty() {
            tokio::task::yield_now().await;
            continue;
        }
        // Nothing to do now: sleep until something may change.
        let now = clock.now();
        let mut wait = ctx.settings.idle_round;
        if let Some(at) = fleet.next_wakeup(now) {
            wait = wait.min(at.since(now));
        }
        if !round.deferred.is_empty() {
            let breaker = match budget.breaker {
                Breaker::Open { .. } => ctx.client.breaker().next_probe_in(),
                Breaker::Closed => None,
            };
            let frees = ctx.client.budget().frees_in;
            let floor = Duration::from_secs(1).div_f64(ctx.settings.time_scale.max(1.0));
            wait = wait.min(breaker.unwrap_or(frees).max(floor));
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.cluster.changed.notified() => {
                // Let a burst of changes settle into one round.
                tokio::time::sleep(ctx.settings.debounce).await;
            }
            _ = until_leading(leadership, false) => return,
            _ = until_shutdown(shutdown) => return,
        }
    }
}

fn gauges(
    fleet: &Fleet,
    views: &[NodeView],
    round: &hostnic_core::fleet::FleetRound,
    used: u32,
) -> Gauges {
    let (stock, attaching, attached, detaching, uncertain) = fleet.nic_counts();
    let mut nodes: BTreeMap<&'static str, u32> = BTreeMap::new();
    for v in views {
        let state = if v.refusal.is_some() {
            "refused"
        } else if v.ready {
            "ready"
        } else {
            "waiting"
        };
        *nodes.entry(state).or_default() += 1;
    }
    Gauges {
        leader: true,
        queue: round.deferred.clone(),
        nodes,
        nics: [
            ("stock", stock),
            ("attaching", attaching),
            ("attached", attached),
            ("detaching", detaching),
            ("uncertain", uncertain),
        ]
        .into_iter()
        .collect(),
        jobs: fleet.jobs_in_flight() as u32,
        ledger_used: used,
    }
}
