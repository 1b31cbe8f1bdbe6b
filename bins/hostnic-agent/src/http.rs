//! The HTTP endpoints: `/metrics` (Prometheus text), `/healthz`, `/readyz`, and
//! the introspection JSON `/v1/status`, `/v1/nics`, `/v1/pods`, `/v1/policy` and
//! `/v1/policy/pods/{namespace}/{name}`. Plain HTTP/1.1.
//!
//! Metrics and introspection are apart, as the AWS VPC CNI keeps them
//! (`:61678`, loopback `:61679`): `/v1/*` has no authentication and names every
//! pod, so it is answered only on a listener bound to a loopback address. The
//! metrics listener (`metrics_addr`, which the cluster scrapes) answers `/v1/*`
//! only when it is itself on loopback; otherwise a second listener serves
//! introspection on [`Settings::introspection`].
//!
//! Every listener is `hostnic-http`'s, bounded: at most [`MAX_CONNECTIONS`]
//! connections at once, headers within [`HEADER_TIMEOUT`], a connection at most
//! [`CONNECTION_LIFETIME`]; only `GET` and `HEAD` (anything else is 405).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hostnic_core::api::introspect::{self, Pool, Status};
pub use hostnic_http::{CONNECTION_LIFETIME, HEADER_TIMEOUT, MAX_CONNECTIONS};
use hostnic_http::{Request, Response, StatusCode, json, reply, text};
use tokio::net::TcpListener;

use crate::agent::AgentError;
use crate::metrics::{Gauges, Metrics};
use crate::settings::Settings;
use crate::shared::Shared;
use crate::shutdown::AbortOnDrop;
use crate::startup::Startup;

/// The agent's state once startup is done; until then the endpoints answer from
/// the [`Startup`] record.
pub(crate) type Slot = Arc<std::sync::OnceLock<Arc<Shared>>>;

/// The running listeners; dropping it stops them.
pub struct Endpoint {
    pub(crate) slot: Slot,
    pub(crate) startup: Arc<Startup>,
    _tasks: Vec<AbortOnDrop>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").finish_non_exhaustive()
    }
}

/// What a listener answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Metrics and health only: `/v1/*` is refused with a pointer to loopback.
    Public,
    /// Everything (a loopback listener).
    All,
}

#[derive(Clone)]
struct Ctx {
    slot: Slot,
    metrics: Arc<Metrics>,
    startup: Arc<Startup>,
    scope: Scope,
    introspection: SocketAddr,
}

impl Endpoint {
    /// Binds the metrics listener (and the introspection listener when apart)
    /// and serves from the agent's start on.
    pub async fn start(
        settings: &Settings,
        metrics: Arc<Metrics>,
        startup: Arc<Startup>,
    ) -> Result<Self, AgentError> {
        let slot: Slot = Arc::new(std::sync::OnceLock::new());
        let introspection = settings.introspection();
        let mut binds = vec![settings.metrics_addr];
        if introspection != settings.metrics_addr {
            binds.push(introspection);
        }
        let mut tasks = Vec::new();
        for addr in binds {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::Listen {
                    what: addr.to_string(),
                    source,
                })?;
            let scope = if addr.ip().is_loopback() {
                Scope::All
            } else {
                Scope::Public
            };
            let what = match (scope, addr == introspection) {
                (Scope::All, true) if addr == settings.metrics_addr => {
                    "/metrics, /healthz, /readyz, /v1/*"
                }
                (Scope::All, true) => "/v1/* (introspection), /healthz, /readyz, /metrics",
                _ => "/metrics, /healthz, /readyz",
            };
            tracing::info!(%addr, "serving {what}");
            let ctx = Ctx {
                slot: slot.clone(),
                metrics: metrics.clone(),
                startup: startup.clone(),
                scope,
                introspection,
            };
            tasks.push(AbortOnDrop(tokio::spawn(hostnic_http::serve(
                listener,
                move |req| answer(&ctx, req),
            ))));
        }
        Ok(Self {
            slot,
            startup,
            _tasks: tasks,
        })
    }
}

fn answer<B>(ctx: &Ctx, req: &Request<B>) -> Response {
    let path = req.uri().path();
    if path == "/healthz" {
        return healthz(ctx);
    }
    if path.starts_with("/v1/") && ctx.scope == Scope::Public {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "introspection is served on loopback only: http://{}{path} \
                 (introspection_addr; hostnicctl --url http://{})\n",
                ctx.introspection, ctx.introspection
            ),
        );
    }
    match ctx.slot.get() {
        Some(shared) => route(shared, ctx, req),
        None => starting(ctx, req),
    }
}

/// Alive unless restarting would help (a permanent start-up failure, and a file
/// the agent read at start changed since): then the kubelet restarts it.
fn healthz(ctx: &Ctx) -> Response {
    if let Some(why) = ctx.startup.restart_would_help() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("restart needed: {why}\n"),
        );
    }
    if ctx.slot.get().is_some() {
        text(StatusCode::OK, "ok\n".into())
    } else {
        text(StatusCode::OK, "ok (starting)\n".into())
    }
}

fn startup_gauges(ctx: &Ctx, mut gauges: Gauges) -> Gauges {
    gauges.starting = !ctx.startup.is_done();
    if gauges.starting {
        gauges.startup_error = ctx
            .startup
            .last_error()
            .map(|e| (e.step.clone(), e.permanent));
    }
    gauges
}

/// Answers while the agent is still starting (resolving its identity, reconciling).
fn starting<B>(ctx: &Ctx, req: &Request<B>) -> Response {
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            ctx.metrics.render(&startup_gauges(ctx, Gauges::default())),
        ),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, ctx.startup.readyz_text()),
        "/v1/status" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            serde_json::to_string_pretty(&ctx.startup.status(crate::startup::build()))
                .unwrap_or_default(),
        ),
        "/v1/nics" | "/v1/pods" | "/v1/policy" => {
            text(StatusCode::SERVICE_UNAVAILABLE, ctx.startup.readyz_text())
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// Why the node is not ready, in words; empty when it is.
pub(crate) fn not_ready(shared: &Shared) -> Vec<String> {
    let mut why = Vec::new();
    if let Some(e) = shared.engine.store_failure() {
        // An ADD's answer must be durable: none can succeed until room is made.
        why.push(format!("pods cannot be recorded: {e}"));
    }
    if !shared.ready.load(Ordering::SeqCst) {
        let blocked = shared.engine.with_state(|s| s.growth_blocked().cloned());
        why.push(shared.readiness().0.explain(blocked.as_ref()));
    }
    let shadowing = crate::cniconf::shadowing(&shared.settings);
    if !shadowing.is_empty() {
        why.push(crate::cniconf::shadowing_text(&shadowing));
    }
    why
}

fn route<B>(shared: &Shared, ctx: &Ctx, req: &Request<B>) -> Response {
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            shared.metrics.render(&startup_gauges(ctx, shared.gauges())),
        ),
        "/readyz" => {
            let why = not_ready(shared);
            if why.is_empty() {
                text(StatusCode::OK, "ready\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {}\n", why.join("\nnot ready: ")),
                )
            }
        }
        "/v1/status" => json(&status(shared)),
        "/v1/nics" => json(&shared.engine.with_state(introspect::nics)),
        "/v1/pods" => json(&shared.engine.with_state(introspect::pods)),
        "/v1/policy" => json(&match &shared.policy {
            Some(p) => p.enforcer.status(),
            None => introspect::PolicyStatus::default(),
        }),
        path => match path.strip_prefix("/v1/policy/pods/") {
            Some(rest) => pod_policy(shared, rest),
            None => text(StatusCode::NOT_FOUND, "not found\n".into()),
        },
    }
}

/// `/v1/policy/pods/{namespace}/{name}`: 404 for a pod the last sync did not know.
fn pod_policy(shared: &Shared, rest: &str) -> Response {
    let Some(enforcer) = &shared.policy else {
        return text(
            StatusCode::NOT_FOUND,
            "network policy enforcement is off\n".into(),
        );
    };
    let Ok(pod) = rest.parse::<hostnic_core::policy::PodRef>() else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected /v1/policy/pods/NAMESPACE/NAME\n".into(),
        );
    };
    match enforcer.enforcer.pod_policy(&pod) {
        Some(doc) => json(&doc),
        None => text(
            StatusCode::NOT_FOUND,
            format!("pod {pod} is unknown to network policy\n"),
        ),
    }
}

/// The `/v1/status` document.
pub(crate) fn status(shared: &Shared) -> Status {
    let (c, _, pods) = shared.usage();
    let cfg = shared.engine.with_state(|s| s.config().clone());
    let id = &shared.identity;
    Status {
        instance: id.instance.id.to_string(),
        primary_nic: id.instance.primary_nic.to_string(),
        primary_ip: id.instance.primary_ip.to_string(),
        vxnets: id.vxnets.iter().map(|v| v.id.to_string()).collect(),
        ready: shared.ready.load(Ordering::SeqCst),
        cloud_ok: shared.cloud_ok.load(Ordering::SeqCst),
        uptime_secs: shared.started.elapsed().as_secs(),
        pool: Pool::new(
            &c,
            &cfg,
            shared.waiting_adds.load(Ordering::SeqCst),
            shared.pending_pods.load(Ordering::SeqCst),
        ),
        pods,
        last_round_failures: shared
            .last_round
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|r| r.failures.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        last_reconcile_at_ms: shared
            .last_reconcile
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, at)| *at),
        build: crate::startup::build(),
        mode: "exclusive".into(),
        not_ready: not_ready(shared),
    }
}
