//! The HTTP endpoint: `/metrics` (Prometheus text), `/healthz`, `/readyz`, and the
//! introspection JSON `/v1/status`, `/v1/nics`, `/v1/pods`, `/v1/policy` and
//! `/v1/policy/pods/{namespace}/{name}`. Plain HTTP/1.1 on
//! loopback by default.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hostnic_core::api::introspect::{self, Pool, Status};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::shared::Shared;

/// The agent's state once startup is done; until then the endpoint answers
/// `/healthz` (alive) and `/metrics` (counters), and 503 elsewhere.
pub(crate) type Slot = Arc<std::sync::OnceLock<Arc<Shared>>>;

/// Binds `addr` and serves in a task, from the agent's start on.
pub(crate) async fn spawn(
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    slot: Slot,
) -> Result<JoinHandle<()>, (String, std::io::Error)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| (addr.to_string(), e))?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz, /v1/*");
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let slot = slot.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let response = match slot.get() {
                        Some(shared) => route(shared, &req),
                        None => starting(&metrics, &req),
                    };
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }))
}

/// Answers while the agent is still starting (resolving its identity, reconciling).
fn starting<B>(metrics: &Metrics, req: &Request<B>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok (starting)\n".into()),
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(&crate::metrics::Gauges::default()),
        ),
        "/readyz" | "/v1/status" | "/v1/nics" | "/v1/pods" | "/v1/policy" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "starting: resolving the node and reconciling\n".into(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static headers are valid")
}

fn json<T: serde::Serialize>(value: &T) -> Response<Full<Bytes>> {
    reply(
        StatusCode::OK,
        "application/json",
        serde_json::to_string_pretty(value).unwrap_or_default(),
    )
}

fn route<B>(shared: &Shared, req: &Request<B>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            shared.metrics.render(&shared.gauges()),
        ),
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            if let Some(e) = shared.engine.store_failure() {
                // An ADD's answer must be durable: none can succeed until room is made.
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: pods cannot be recorded: {e}\n"),
                )
            } else if shared.ready.load(Ordering::SeqCst) {
                reply(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                // Why, when the pool cannot grow: a full vxnet, a quota, a refusal.
                let why = shared
                    .engine
                    .with_state(|s| s.growth_blocked().map(|b| format!(": {}", b.describe())))
                    .unwrap_or_default();
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: no NIC ready and none can be created{why}\n"),
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
            None => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        },
    }
}

/// `/v1/policy/pods/{namespace}/{name}`: 404 for a pod the last sync did not know.
fn pod_policy(shared: &Shared, rest: &str) -> Response<Full<Bytes>> {
    let Some(enforcer) = &shared.policy else {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "network policy enforcement is off\n".into(),
        );
    };
    let Ok(pod) = rest.parse::<hostnic_core::policy::PodRef>() else {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "expected /v1/policy/pods/NAMESPACE/NAME\n".into(),
        );
    };
    match enforcer.enforcer.pod_policy(&pod) {
        Some(doc) => json(&doc),
        None => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
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
    }
}
