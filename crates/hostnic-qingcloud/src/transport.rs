//! Sending a signed request: the HTTP transport (reqwest + rustls/ring) behind a
//! small trait, so retry and rate-limit logic is testable without a network.

use std::time::Duration;

use async_trait::async_trait;

/// GET with a query string, or POST with a form body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    /// Query string (what the SDKs use by default).
    Get,
    /// `application/x-www-form-urlencoded` body.
    Post,
}

impl HttpMethod {
    /// `GET` or `POST`, as signed.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
        }
    }
}

/// A signed request ready to go on the wire.
#[derive(Debug, Clone)]
pub struct WireRequest {
    /// GET or POST.
    pub method: HttpMethod,
    /// `<protocol>://<host>:<port><path>` without query.
    pub url: String,
    /// The encoded query (GET) or body (POST), signature included.
    pub query: String,
    /// The action, for logs.
    pub action: String,
}

/// The request never got an API answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transport: {message}")]
pub struct TransportError {
    /// What happened (connection refused, timeout, HTTP 502…).
    pub message: String,
    /// Whether trying again may help (true for network failures and 5xx/429).
    pub retryable: bool,
}

/// An error and its sources, `a: b: c`, each said once (reqwest repeats a
/// source's text in its own at some levels).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Sends one request and returns the response body.
#[async_trait]
pub trait Transport: Send + Sync {
    /// One attempt; no retry here.
    async fn send(&self, request: &WireRequest) -> Result<String, TransportError>;
}

/// The real transport: reqwest over rustls with the ring provider (plain HTTP for the simulator).
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
}

/// Installs the rustls ring crypto provider once per process (ignores "already installed").
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl HttpTransport {
    /// A transport with `timeout` per request (connect included).
    pub fn new(timeout: Duration) -> Result<Self, TransportError> {
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("hostnic/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TransportError {
                message: format!("cannot build HTTP client: {e}"),
                retryable: false,
            })?;
        Ok(Self { client })
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn send(&self, request: &WireRequest) -> Result<String, TransportError> {
        let builder = match request.method {
            HttpMethod::Get => self
                .client
                .get(format!("{}?{}", request.url, request.query)),
            HttpMethod::Post => self
                .client
                .post(&request.url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(request.query.clone()),
        };
        // reqwest errors carry the URL with the query (the signature, never the
        // secret): the message names the endpoint without it, and the whole chain of
        // causes ("error sending request" alone says nothing).
        let endpoint = format!("{} {}", request.method.as_str(), request.url);
        let response = builder.send().await.map_err(|e| TransportError {
            message: format!("{endpoint}: {}", chain(&e.without_url())),
            retryable: true,
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(TransportError {
                message: format!("{endpoint}: HTTP {status}"),
                retryable: status.is_server_error() || status.as_u16() == 429,
            });
        }
        response.text().await.map_err(|e| TransportError {
            message: format!(
                "{endpoint}: reading the answer: {}",
                chain(&e.without_url())
            ),
            retryable: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "transport: error sending request" said neither where nor why.
    #[tokio::test]
    async fn a_failed_request_names_the_endpoint_and_the_cause_but_not_the_query() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let transport = HttpTransport::new(Duration::from_secs(5)).unwrap();
        let url = format!("http://127.0.0.1:{port}/iaas/");
        let e = transport
            .send(&WireRequest {
                method: HttpMethod::Get,
                url: url.clone(),
                query: "action=DescribeNics&signature=SIGNED".into(),
                action: "DescribeNics".into(),
            })
            .await
            .unwrap_err();
        assert!(e.retryable);
        assert!(
            e.message.starts_with(&format!("GET {url}: ")),
            "{}",
            e.message
        );
        assert!(
            e.message
                .to_ascii_lowercase()
                .contains("connection refused"),
            "the cause: {}",
            e.message
        );
        assert!(!e.message.contains("SIGNED"), "{}", e.message);
    }
}
