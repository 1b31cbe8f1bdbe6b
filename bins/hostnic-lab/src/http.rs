//! A minimal HTTP/1.1 client for the lab's own servers on loopback: the
//! simulator's admin endpoints, the fake Kubernetes API server and the agents'
//! introspection endpoints.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `host:port` of an `http://host:port/...` URL.
pub fn authority(url: &str) -> anyhow::Result<&str> {
    url.strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .filter(|a| !a.is_empty())
        .with_context(|| format!("not an http URL: {url}"))
}

/// One request; the status code and the body (JSON; `null` when empty, a
/// string when not JSON).
/// Each request uses its own connection (`Connection: close`).
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
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut stream = TcpStream::connect(authority)
        .await
        .with_context(|| format!("connect to {authority}"))?;
    let content_type = if method == "PATCH" {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("malformed HTTP status line: {head}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    if body.trim().is_empty() {
        return Ok((status, serde_json::Value::Null));
    }
    // An error page that is not JSON comes back as a string.
    let value = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    Ok((status, value))
}

/// The payload of a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
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
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }

    #[test]
    fn the_authority_is_host_and_port() {
        assert_eq!(
            authority("http://127.0.0.1:80/iaas/").unwrap(),
            "127.0.0.1:80"
        );
        assert!(authority("https://x").is_err());
    }
}
