//! `/metrics` (Prometheus text), `/healthz` (the process runs its loops) and
//! `/readyz` (the API server's objects are synced and the cloud client is built:
//! a standby is ready to take over too).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hostnic_http::{Request, Response, StatusCode, reply};
use hostnic_qingcloud::QingCloudClient;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// What the endpoints read.
#[derive(Debug)]
pub(crate) struct Probe {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) client: QingCloudClient,
    pub(crate) ready: AtomicBool,
    pub(crate) alive: AtomicBool,
}

fn route<B>(probe: &Probe, req: &Request<B>) -> Response {
    let text = "text/plain; charset=utf-8";
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            probe.metrics.render(&probe.client),
        ),
        "/healthz" if probe.alive.load(Ordering::SeqCst) => {
            reply(StatusCode::OK, text, "ok\n".into())
        }
        "/healthz" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            text,
            "control loop stopped\n".into(),
        ),
        "/readyz" if probe.ready.load(Ordering::SeqCst) => {
            reply(StatusCode::OK, text, "ready\n".into())
        }
        "/readyz" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            text,
            "waiting for the API server's objects\n".into(),
        ),
        _ => reply(StatusCode::NOT_FOUND, text, "not found\n".into()),
    }
}

/// Serves on `listener` until the task is aborted, within hostnic-http's bounds
/// (connections, header timeout, connection lifetime; `GET`/`HEAD` only).
pub(crate) fn serve(listener: TcpListener, probe: Arc<Probe>) -> JoinHandle<()> {
    tokio::spawn(hostnic_http::serve(listener, move |req| route(&probe, req)))
}
