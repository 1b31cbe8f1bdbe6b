//! # hostnic-http
//!
//! The HTTP side of hostnic's daemons: a plain HTTP/1.1 listener (hyper on a
//! tokio `TcpListener`) for `/metrics`, the kubelet's probes and read-only JSON
//! documents, which answers through a routing function the daemon gives it.
//! An adapter like the others: it depends on no other workspace crate.
//!
//! Every listener bounds what a client can hold, since the metrics address is
//! reachable by the whole cluster: at most [`MAX_CONNECTIONS`] connections at
//! once (more are closed at once), headers within [`HEADER_TIMEOUT`], a
//! connection at most [`CONNECTION_LIFETIME`]; only `GET` and `HEAD` reach the
//! routing function (anything else is 405).
//!
//! Used by the node agent (`/metrics`, `/healthz`, `/readyz`, `/v1/*`) and the
//! controller (`/metrics`, `/healthz`, `/readyz`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
pub use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections one listener serves at once; more are closed as they arrive.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may stay open, keep-alive included.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// An answer.
pub type Response = hyper::Response<Full<Bytes>>;

/// Serves `listener` forever (until the task is aborted), answering every `GET`
/// and `HEAD` with `route`, within the bounds above.
pub async fn serve<F>(listener: TcpListener, route: F)
where
    F: Fn(&Request<Incoming>) -> Response + Send + Sync + 'static,
{
    let route = Arc::new(route);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors or similar: do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // At the limit: closed at once rather than queued.
            drop(stream);
            continue;
        };
        let route = route.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = answer(&*route, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            drop(permit);
        });
    }
}

fn answer<F>(route: &F, req: &Request<Incoming>) -> Response
where
    F: Fn(&Request<Incoming>) -> Response,
{
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed: use GET\n", req.method()),
        );
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return r;
    }
    route(req)
}

/// `body` with `status` and `content_type`.
pub fn reply(status: StatusCode, content_type: &str, body: String) -> Response {
    hyper::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static headers are valid")
}

/// Plain text.
pub fn text(status: StatusCode, body: String) -> Response {
    reply(status, "text/plain", body)
}

/// `value` as pretty JSON, 200.
pub fn json<T: serde::Serialize>(value: &T) -> Response {
    reply(
        StatusCode::OK,
        "application/json",
        serde_json::to_string_pretty(value).unwrap_or_default(),
    )
}
