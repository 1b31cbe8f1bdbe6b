//! HTTP requests (reqwest) to the lab's own servers on loopback: the
//! simulator's admin endpoints, the fake Kubernetes API server and the agents'
//! introspection endpoints.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail};

/// `host:port` of an `http://host:port/...` URL.
pub fn authority(url: &str) -> anyhow::Result<&str> {
    url.strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .filter(|a| !a.is_empty())
        .with_context(|| format!("not an http URL: {url}"))
}

/// One request; the status code and the body (JSON; `null` when empty, a
/// string when not JSON).
pub async fn request(
    authority: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> anyhow::Result<(u16, serde_json::Value)> {
    tokio::time::timeout(timeout, request_inner(authority, method, path, body))
        .await
        .with_context(|| {
            format!("{method} http://{authority}{path}: no answer within {timeout:?}")
        })?
}

async fn request_inner(
    authority: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        hostnic_qingcloud::transport::install_crypto_provider();
        reqwest::Client::new()
    });
    let method = reqwest::Method::from_bytes(method.as_bytes())?;
    let content_type = if method == reqwest::Method::PATCH {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let mut request = client
        .request(method, format!("http://{authority}{path}"))
        .header("Accept", "application/json");
    if let Some(body) = body {
        request = request
            .header("Content-Type", content_type)
            .body(body.to_string());
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("connect to {authority}"))?;
    let status = response.status().as_u16();
    let body = response.text().await?;
    if body.trim().is_empty() {
        return Ok((status, serde_json::Value::Null));
    }
    // An error page that is not JSON comes back as a string.
    let value = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    Ok((status, value))
}

/// POSTs `body` (JSON) to `path` on the simulator serving `sim_url` and returns the JSON answer.
pub async fn post_json(
    sim_url: &str,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let (status, value) = request(
        authority(sim_url)?,
        "POST",
        path,
        Some(body),
        Duration::from_secs(30),
    )
    .await
    .context("the simulator")?;
    if status != 200 {
        bail!("{path}: HTTP {status}: {value}");
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authority_is_host_and_port() {
        assert_eq!(
            authority("http://127.0.0.1:80/iaas/").unwrap(),
            "127.0.0.1:80"
        );
        assert!(authority("https://x").is_err());
    }
}
