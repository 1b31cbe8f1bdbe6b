//! `/metrics` (Prometheus text), `/healthz` (the process runs its loops) and
//! `/readyz` (the API server's objects are synced and the cloud client is built:
//! a standby is ready to take over too).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hostnic_qingcloud::QingCloudClient;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
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

fn answer(code: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

fn route(probe: &Probe, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let text = "text/plain; charset=utf-8";
    match req.uri().path() {
        "/metrics" => answer(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            probe.metrics.render(&probe.client),
        ),
        "/healthz" if probe.alive.load(Ordering::SeqCst) => {
            answer(StatusCode::OK, text, "ok\n".into())
        }
        "/healthz" => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            text,
            "control loop stopped\n".into(),
        ),
        "/readyz" if probe.ready.load(Ordering::SeqCst) => {
            answer(StatusCode::OK, text, "ready\n".into())
        }
        "/readyz" => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            text,
            "waiting for the API server's objects\n".into(),
        ),
        _ => answer(StatusCode::NOT_FOUND, text, "not found\n".into()),
    }
}

/// Serves on `listener` until the task is aborted.
pub(crate) fn serve(listener: TcpListener, probe: Arc<Probe>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let probe = probe.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let response = route(&probe, &req);
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
