//! # hostnic-controller
//!
//! The one caller of the QingCloud API for the whole cluster, and the only holder
//! of its credentials. Node agents state what they need in their `HostnicNode`
//! (spec); the controller — one leader among its replicas, elected on a Lease —
//! plans the cluster's cloud calls with the core's fleet planner under one
//! request budget, makes them through the QingCloud client (its breaker and
//! budget), and answers in each `HostnicNode`'s status: the NICs attached, jobs in
//! flight, conditions. `docs/controller.md` has the design.
//!
//! [`start`] is the whole controller over a QingCloud client and a Kubernetes
//! client, so tests run replicas in-process against the simulator and the fake
//! API server; `main.rs` only parses flags and builds the clients.
//!
//! ## Layout
//! - [`settings`]: the settings (fleet planner, budget, lease, addresses).
//! - [`budget`]: the request ledger carried on the Lease, the budget of a round.
//! - `cluster`: reflectors of HostnicNodes and Nodes, the demand set.
//! - `control`: the control loop (take-over, rounds, write-ahead statuses).
//! - `status`: status writes.
//! - `events`: Events on Nodes the controller cannot serve.
//! - [`metrics`]: Prometheus text.
//! - `http`: `/metrics`, `/healthz`, `/readyz`.

pub mod budget;
mod cluster;
mod control;
mod events;
mod http;
pub mod metrics;
pub mod settings;
mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hostnic_k8s::lease::{self, Leadership};
use hostnic_qingcloud::QingCloudClient;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use metrics::Metrics;
pub use settings::{DEFAULT_BUDGET, FileConfig, Settings};

/// What the controller talks to.
#[derive(Clone)]
pub struct Deps {
    /// The QingCloud API (its budget should be the controller's, see [`Settings::budget`]).
    pub cloud: QingCloudClient,
    /// The Kubernetes API.
    pub kube: kube::Client,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps")
            .field("cloud", &self.cloud)
            .finish_non_exhaustive()
    }
}

/// A running controller replica.
#[derive(Debug)]
pub struct Running {
    /// Where `/metrics`, `/healthz`, `/readyz` are served.
    pub metrics_addr: SocketAddr,
    /// Whether this replica leads.
    pub leadership: watch::Receiver<Leadership>,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    lease: JoinHandle<()>,
    control: JoinHandle<()>,
    http: JoinHandle<()>,
}

impl Running {
    /// Stops gracefully: the round in progress ends, the Lease is released (so
    /// another replica takes over at once).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.control.await;
        let _ = self.lease.await;
        self.http.abort();
    }

    /// Stops at once, as a crash would: nothing is released, calls in flight are
    /// dropped (tests of a leader killed in the middle of a round).
    pub fn kill(self) {
        self.control.abort();
        self.lease.abort();
        self.http.abort();
    }
}

/// Starts a controller replica: its metrics endpoint, its candidacy on the
/// Lease, its watches and its control loop.
pub async fn start(deps: Deps, settings: Settings) -> anyhow::Result<Running> {
    settings.validate()?;
    let metrics = Arc::new(Metrics::default());
    let ledger = Arc::new(Mutex::new(budget::Ledger::new(settings.budget)));
    deps.cloud
        .add_observer(Arc::new(budget::LedgerObserver(ledger.clone())));
    let listener = TcpListener::bind(settings.metrics_addr)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {}: {e}", settings.metrics_addr))?;
    let metrics_addr = listener.local_addr()?;
    let probe = Arc::new(http::Probe {
        metrics: metrics.clone(),
        client: deps.cloud.clone(),
        ready: AtomicBool::new(false),
        alive: AtomicBool::new(true),
    });
    let http = http::serve(listener, probe.clone());
    let (stop, shutdown) = watch::channel(false);
    let (leadership, notes, lease) =
        lease::spawn_with_notes(deps.kube.clone(), settings.lease.clone(), shutdown.clone());
    let cluster = cluster::Cluster::spawn(deps.kube.clone());
    let events =
        events::NodeEvents::spawn(deps.kube.clone(), &settings.lease.identity, metrics.clone());
    let ctx = control::Ctx {
        client: deps.cloud,
        kube: deps.kube,
        settings,
        metrics: metrics.clone(),
        cluster,
        notes,
        ledger,
        events,
    };
    let ready = probe.clone();
    let control_leadership = leadership.clone();
    let control = tokio::spawn(async move {
        let sync = async {
            ctx.cluster.ready().await;
            ready.ready.store(true, Ordering::SeqCst);
        };
        sync.await;
        control::run(ctx, control_leadership, shutdown).await;
        ready.alive.store(false, Ordering::SeqCst);
    });
    tracing::info!(%metrics_addr, "serving /metrics, /healthz, /readyz");
    Ok(Running {
        metrics_addr,
        leadership,
        metrics,
        stop,
        lease,
        control,
        http,
    })
}

/// Runs a controller replica until `shutdown` completes, then stops gracefully.
pub async fn run(
    deps: Deps,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let running = start(deps, settings).await?;
    shutdown.await;
    running.stop().await;
    Ok(())
}
