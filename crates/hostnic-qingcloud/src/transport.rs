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
        // reqwest errors carry the URL (and so the query with the signature, never the
        // secret); strip it anyway to keep logs short.
        let response = builder.send().await.map_err(|e| TransportError {
            message: e.without_url().to_string(),
            retryable: true,
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(TransportError {
                message: format!("HTTP {status}"),
                retryable: status.is_server_error() || status.as_u16() == 429,
            });
        }
        response.text().await.map_err(|e| TransportError {
            message: e.without_url().to_string(),
            retryable: true,
        })
    }
}
