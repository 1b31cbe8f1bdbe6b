//! A minimal HTTP/1.1 client for the simulator's admin endpoints on loopback.

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// POSTs `body` (JSON) to `path` on the simulator serving `sim_url` and returns the JSON answer.
pub async fn post_json(
    sim_url: &str,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let authority = sim_url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .with_context(|| format!("not an http URL: {sim_url}"))?;
    let body = body.to_string();
    let mut stream = TcpStream::connect(authority)
        .await
        .with_context(|| format!("connect to the simulator at {authority}"))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!("{path}: HTTP {status}: {body}");
    }
    serde_json::from_str(body).with_context(|| format!("{path}: not JSON: {body}"))
}
