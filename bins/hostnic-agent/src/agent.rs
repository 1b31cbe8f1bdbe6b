//! The composition of the agent: start the HTTP endpoint, resolve the node,
//! open the engine from the checkpoint, reconcile, replay pending DELs, start
//! the tasks, serve the plugin, wind down. Each start-up step runs through
//! [`startup::retry`](crate::startup::retry), which reports what holds it up.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hostnic_core::engine::Engine;
use hostnic_core::ports::{Clock, Cloud, CloudNetwork, CloudNics, HostNetwork};
use hostnic_core::types::InstanceId;
use tokio::sync::Notify;

use crate::http::Endpoint;
use crate::policy::Enforcement;
use crate::settings::Settings;
use crate::shared::Shared;
use crate::shutdown::{self, AbortOnDrop};
use crate::startup::{Failed, Pace, Startup, retry};
use crate::store::FileStore;
use crate::{Deps, cloud, pending, pool_loop, server};
use hostnic_core::engine::EngineError;
use hostnic_core::identity::{IdentityError, NodeIdentity as Identity};

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The state directory or the checkpoint could not be used.
    #[error("state directory {path}: {message}")]
    State {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The configuration does not fit the cloud (a vxnet that does not exist…).
    #[error("{0}")]
    Config(String),
    /// A socket could not be bound.
    #[error("cannot listen on {what}: {source}")]
    Listen {
        /// Socket path or address.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Runs the agent until `shutdown` completes: resolves the node's identity,
/// opens the engine from the checkpoint, reconciles, replays pending DELs,
/// then serves the plugin while the pool and reconcile loops run. On shutdown
/// it stops accepting, lets in-flight requests finish, and leaves the pool,
/// the checkpoint and the CNI config in place.
pub async fn run<C, H, K>(
    deps: Deps<C, H, K>,
    settings: Settings,
    instance_id: InstanceId,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError>
where
    C: CloudNics + CloudNetwork + 'static,
    H: HostNetwork + 'static,
    K: Clock + 'static,
{
    // The HTTP endpoint first: liveness, metrics and the start's progress while the
    // cloud may still be away.
    let startup = Arc::new(Startup::default());
    let endpoint = Endpoint::start(&settings, deps.metrics.clone(), startup).await?;
    run_started(deps, settings, instance_id, endpoint, shutdown).await
}

/// [`run`] with an [`Endpoint`] the caller started first (the binary does, so
/// that failures while it builds the adapters show on `/readyz` too).
pub async fn run_started<C, H, K>(
    deps: Deps<C, H, K>,
    settings: Settings,
    instance_id: InstanceId,
    endpoint: Endpoint,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError>
where
    C: CloudNics + CloudNetwork + 'static,
    H: HostNetwork + 'static,
    K: Clock + 'static,
{
    let scale = if deps.time_scale.is_finite() && deps.time_scale > 0.0 {
        deps.time_scale
    } else {
        1.0
    };
    let mut cloud: Arc<dyn Cloud> = Arc::new(deps.cloud);
    if scale != 1.0 {
        cloud = Arc::new(cloud::Scaled { cloud, scale });
    }
    let host: Arc<dyn HostNetwork> = Arc::new(deps.host);
    let clock: Arc<dyn Clock> = Arc::new(deps.clock);
    let (stop_tx, stop_rx) = shutdown::signal(shutdown);
    let mut stop = stop_rx.clone();
    let real = |d: std::time::Duration| d.div_f64(scale);
    // The credentials file, followed from the start: a wrong secret fixed by a Secret
    // update ends the start's wait at once.
    let (credentials_tx, credentials_rx) = tokio::sync::watch::channel(0u64);
    let _credentials = deps.client.as_ref().and_then(|c| {
        let path = c.credentials.clone()?;
        Some(AbortOnDrop(tokio::spawn(cloud::follow_credentials(
            c.client.clone(),
            path,
            real(std::time::Duration::from_secs_f64(
                settings.credentials_check_secs,
            )),
            credentials_tx.clone(),
            stop_rx.clone(),
        ))))
    });
    let mut pace = Pace {
        scale,
        seed: instance_id
            .as_str()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            }),
        hold: settings.pool.permanent_hold,
        credentials: Some(credentials_rx.clone()),
    };
    let startup = endpoint.startup.clone();
    let metrics = deps.metrics.clone();
    let Some(store) = retry(
        &startup,
        &metrics,
        &mut pace,
        "opening the state directory",
        &mut stop,
        |_| false,
        || {
            std::future::ready(match crate::store::newer_checkpoint(&settings.state_dir) {
                Some(found) => Err(Failed::newer_checkpoint(&settings.state_dir, &found)),
                None => match settings.journal_bytes {
                    Some(bytes) => FileStore::with_journal_capacity(&settings.state_dir, bytes),
                    None => FileStore::new(&settings.state_dir),
                }
                .map_err(|e| {
                    Failed::io(
                        &format!("state directory {}", settings.state_dir.display()),
                        &e,
                    )
                }),
            })
        },
    )
    .await
    else {
        return Ok(());
    };
    let state_err = |message: String| AgentError::State {
        path: settings.state_dir.clone(),
        message,
    };

    tracing::info!(instance = %instance_id, "resolving the node's identity");
    let Some(identity) = retry(
        &startup,
        &metrics,
        &mut pace,
        "resolving the instance",
        &mut stop,
        |e: &IdentityError| matches!(e, IdentityError::Cloud(c) if c.refuses_account()),
        || {
            Identity::resolve(
                cloud.as_ref(),
                &instance_id,
                &settings.vxnets,
                &settings.snat_exclusions,
                settings.external_snat,
            )
        },
    )
    .await
    else {
        return Ok(());
    };
    tracing::info!(
        primary_nic = %identity.instance.primary_nic,
        primary_ip = %identity.instance.primary_ip,
        vxnets = ?identity.vxnets.iter().map(|v| v.id.to_string()).collect::<Vec<_>>(),
        "node identity"
    );
    let Some(report) = retry(
        &startup,
        &metrics,
        &mut pace,
        "node setup",
        &mut stop,
        |_| false,
        || host.ensure_node(&identity.node),
    )
    .await
    else {
        return Ok(());
    };
    if report.default_route_restored {
        tracing::warn!("the node's default route was missing and has been restored");
        deps.metrics
            .inc("hostnic_default_route_restored_total", &[]);
    }

    let engine = Engine::open(
        cloud,
        host,
        clock,
        store,
        settings.pool.clone(),
        instance_id.clone(),
        identity.vxnets.clone(),
    )
    .map_err(|e| state_err(format!("cannot use the checkpoint: {e}")))?;

    let policy = deps
        .policy
        .map(|p| Arc::new(Enforcement::new(p, deps.metrics.clone())));
    let shared = Arc::new(Shared {
        engine,
        settings,
        metrics: deps.metrics,
        identity,
        pods: deps.pods,
        reporter: deps.reporter,
        client: deps.client.as_ref().map(|c| c.client.clone()),
        time_scale: scale,
        policy,
        pool_wake: Notify::new(),
        round_done: Notify::new(),
        reconcile_wake: Notify::new(),
        waiting_adds: AtomicU32::new(0),
        waiting: Mutex::new(Default::default()),
        pending_pods: AtomicU32::new(0),
        pending: Mutex::new(Default::default()),
        cloud_ok: AtomicBool::new(true),
        ready: AtomicBool::new(false),
        plumbing: tokio::sync::RwLock::new(()),
        last_round: Mutex::new(None),
        last_reconcile: Mutex::new(None),
        started: Instant::now(),
        shutdown: stop_rx.clone(),
    });

    // Startup reconcile: settles what a crash left in flight before anything is served.
    let s = shared.clone();
    let reconciled = retry(
        &startup,
        &metrics,
        &mut pace,
        "startup reconcile",
        &mut stop,
        |e: &EngineError| matches!(e, EngineError::Cloud(c) if c.refuses_account()),
        || {
            let s = s.clone();
            async move { pool_loop::reconcile_once(&s, true).await }
        },
    )
    .await;
    if reconciled.is_none() {
        return Ok(());
    }
    crate::recovery::report(&shared);
    // Pending DELs before the socket serves ADDs (an ADD of a reused id must not race them).
    pending::replay(&shared).await;

    startup.done();
    crate::cniconf::settle_shadowing(&shared.settings);
    let _ = endpoint.slot.set(shared.clone());
    let pool = tokio::spawn(pool_loop::pool_task(shared.clone()));
    let mut others = vec![tokio::spawn(pool_loop::periodic_task(shared.clone()))];
    if let Some(events) = deps.nic_events {
        others.push(tokio::spawn(pool_loop::event_task(shared.clone(), events)));
    }
    if let Some(source) = shared.pods.clone() {
        others.push(tokio::spawn(pool_loop::pod_event_task(
            shared.clone(),
            source,
        )));
    }
    if let Some(enforcement) = shared.policy.clone() {
        others.push(tokio::spawn(enforcement.run(shared.clone())));
    }
    if let Some(client) = &shared.client {
        others.push(tokio::spawn(cloud::breaker_task(
            shared.clone(),
            client.watch_breaker(),
        )));
    }
    if let Some(supplier) = shared.engine.cloud().supplier() {
        others.push(tokio::spawn(crate::supply::wake_on_supply(
            shared.clone(),
            supplier,
        )));
    }
    others.push(tokio::spawn(cloud::credentials_followed(
        shared.clone(),
        credentials_rx,
    )));

    let served = server::serve(shared.clone()).await;
    // The server has drained.
    shutdown::wind_down(&shared, &stop_tx, pool, others, endpoint).await;
    drop(credentials_tx);
    served
}
