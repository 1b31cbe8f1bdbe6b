//! The HTTP endpoint: `/metrics` (Prometheus text), `/healthz`, `/readyz`, and the
//! introspection JSON `/v1/status`, `/v1/nics`, `/v1/pods`, `/v1/policy` and
//! `/v1/policy/pods/{namespace}/{name}`. Plain HTTP/1.1 on
//! loopback by default.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hostnic_core::pool::{CloudLink, Usage};
use hostnic_core::ports::{Clock, CloudNetwork, CloudNics, HostNetwork};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::agent::Shared;
use crate::introspect::{Nic, Pod, Pool, Status};
use crate::metrics::Metrics;

/// The agent's state once startup is done; until then the endpoint answers
/// `/healthz` (alive) and `/metrics` (counters), and 503 elsewhere.
pub(crate) type Slot<C, H, K> = Arc<std::sync::OnceLock<Arc<Shared<C, H, K>>>>;

/// Binds `addr` and serves in a task, from the agent's start on.
pub(crate) async fn spawn<C, H, K>(
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    slot: Slot<C, H, K>,
) -> Result<JoinHandle<()>, (String, std::io::Error)>
where
    C: CloudNics + CloudNetwork + 'static,
    H: HostNetwork + 'static,
    K: Clock + 'static,
{
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

fn route<C, H, K, B>(shared: &Shared<C, H, K>, req: &Request<B>) -> Response<Full<Bytes>>
where
    C: CloudNics + CloudNetwork + 'static,
    H: HostNetwork + 'static,
    K: Clock + 'static,
{
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            shared.metrics.render(&shared.gauges()),
        ),
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            if shared.ready.load(Ordering::SeqCst) {
                reply(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready: no NIC ready and none can be created\n".into(),
                )
            }
        }
        "/v1/status" => json(&status(shared)),
        "/v1/nics" => json(&nics(shared)),
        "/v1/pods" => json(&pods(shared)),
        "/v1/policy" => json(&match &shared.policy {
            Some(p) => p.status(),
            None => crate::introspect::PolicyStatus::default(),
        }),
        path => match path.strip_prefix("/v1/policy/pods/") {
            Some(rest) => pod_policy(shared, rest),
            None => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        },
    }
}

/// `/v1/policy/pods/{namespace}/{name}`: 404 for a pod the last sync did not know.
fn pod_policy<C, H, K>(shared: &Shared<C, H, K>, rest: &str) -> Response<Full<Bytes>>
where
    C: CloudNics + CloudNetwork + 'static,
    H: HostNetwork + 'static,
    K: Clock + 'static,
{
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
    match crate::introspect::pod_policy(&enforcer.compiled(), &pod) {
        Some(doc) => json(&doc),
        None => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("pod {pod} is unknown to network policy\n"),
        ),
    }
}

/// The `/v1/status` document.
pub(crate) fn status<C, H, K>(shared: &Shared<C, H, K>) -> Status
where
    C: CloudNics + CloudNetwork + 'static,
    H: HostNetwork + 'static,
    K: Clock + 'static,
{
    let now = shared.engine.clock().now();
    let (c, cfg, pods) = shared.engine.with_state(|s| {
        (
            s.usage_counts(now),
            s.config().clone(),
            s.attachments().len() as u32,
        )
    });
    let id = &shared.identity;
    Status {
        instance: id.instance.id.to_string(),
        primary_nic: id.instance.primary_nic.to_string(),
        primary_ip: id.instance.primary_ip.to_string(),
        vxnets: id.vxnets.iter().map(|v| v.id.to_string()).collect(),
        ready: shared.ready.load(Ordering::SeqCst),
        cloud_ok: shared.cloud_ok.load(Ordering::SeqCst),
        uptime_secs: shared.started.elapsed().as_secs(),
        pool: Pool {
            free: c.free,
            assigned: c.assigned,
            cooling: c.cooling,
            preparing: c.preparing,
            retiring: c.retiring,
            creating: c.creating,
            min_free: cfg.min_free,
            max_free: cfg.max_free,
            max_nics: cfg.max_nics,
            waiting_adds: shared.waiting_adds.load(Ordering::SeqCst),
            pending_pods: shared.pending_pods.load(Ordering::SeqCst),
        },
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

fn link_name(link: CloudLink) -> &'static str {
    match link {
        CloudLink::Unattached => "unattached",
        CloudLink::Attaching => "attaching",
        CloudLink::Attached => "attached",
        CloudLink::Detaching => "detaching",
        CloudLink::Deleting => "deleting",
        CloudLink::Uncertain { .. } => "uncertain",
    }
}

/// The `/v1/nics` document.
pub(crate) fn nics<C, H, K>(shared: &Shared<C, H, K>) -> Vec<Nic>
where
    C: CloudNics + CloudNetwork + 'static,
    H: HostNetwork + 'static,
    K: Clock + 'static,
{
    shared.engine.with_state(|s| {
        s.nics()
            .values()
            .map(|n| {
                let (usage, pod) = match &n.usage {
                    Usage::Free { .. } => ("free", None),
                    Usage::Cooling { .. } => ("cooling", None),
                    Usage::Retiring => ("retiring", None),
                    Usage::Assigned { to } => (
                        "assigned",
                        Some(
                            s.attachment(to)
                                .map(|a| a.pod.display_name())
                                .unwrap_or_else(|| to.to_string()),
                        ),
                    ),
                };
                Nic {
                    id: n.id.to_string(),
                    ip: n.ip.to_string(),
                    vxnet: n.vxnet.to_string(),
                    table: n.table,
                    link: link_name(n.link).into(),
                    host_ready: n.host_ready,
                    usage: usage.into(),
                    pod,
                }
            })
            .collect()
    })
}

/// The `/v1/pods` document.
pub(crate) fn pods<C, H, K>(shared: &Shared<C, H, K>) -> Vec<Pod>
where
    C: CloudNics + CloudNetwork + 'static,
    H: HostNetwork + 'static,
    K: Clock + 'static,
{
    shared.engine.with_state(|s| {
        s.attachments()
            .values()
            .map(|a| Pod {
                namespace: a.pod.namespace.clone(),
                name: a.pod.name.clone(),
                container_id: a.pod.container_id.clone(),
                ifname: a.pod.ifname.clone(),
                ip: a.ip.to_string(),
                nic: a.nic.to_string(),
                table: a.table,
                host_veth: a.plumbed.as_ref().map(|p| p.host_veth.clone()),
                netns: a.netns.clone(),
                assigned_at_ms: a.assigned_at.0,
            })
            .collect()
    })
}
