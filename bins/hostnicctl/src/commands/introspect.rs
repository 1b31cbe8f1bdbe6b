//! Reading the agent's introspection endpoint (`/v1/*`) as the typed documents
//! of `hostnic_core::api::introspect` (reqwest), and printing tables; shared by
//! `status`, `pool`, `pods`, `nics` and `policy`.

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Where the agent's introspection endpoint is, and how to print.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// The agent's metrics/introspection address.
    #[arg(
        long,
        env = "HOSTNIC_AGENT_URL",
        default_value = "http://127.0.0.1:61678"
    )]
    pub url: String,
    /// Print the agent's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// GETs `path` (e.g. `/v1/status`) from the agent and decodes its document.
pub async fn get<T: DeserializeOwned>(url: &str, path: &str) -> anyhow::Result<T> {
    let (status, body) = fetch(url, path).await?;
    if !(200..300).contains(&status) {
        bail!("{path}: HTTP {status}: {}", body.trim());
    }
    serde_json::from_str(&body).with_context(|| format!("{path}: not the agent's document"))
}

/// GETs `path` from the agent: the HTTP status and the body, whatever the status.
pub async fn fetch(url: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let base = url.trim_end_matches('/');
    let authority = base
        .strip_prefix("http://")
        .with_context(|| format!("--url {url:?} must start with http://"))?
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    hostnic_qingcloud::transport::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("HTTP client")?;
    let response = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .with_context(|| {
            format!(
                "cannot reach the hostnic agent's introspection at {authority} (--url or \
                 HOSTNIC_AGENT_URL; the agent serves /v1/* on loopback: run hostnicctl on the \
                 node, e.g. kubectl -n kube-system exec ds/hostnic-node -- hostnicctl status)"
            )
        })?;
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .with_context(|| format!("{path}: reading the answer"))?;
    Ok((status, body))
}

/// Prints `value` as pretty JSON.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A table cell: `-` for nothing.
pub fn cell(v: impl ToString) -> String {
    let s = v.to_string();
    if s.is_empty() { "-".into() } else { s }
}

/// An optional table cell: `-` for `None`.
pub fn opt(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".into(), cell)
}

/// Renders rows under `headers` with aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["NIC", "IP"],
            &[vec!["52:54:00:00:00:01".into(), "172.16.1.5".into()]],
        );
        assert_eq!(t, "NIC                IP\n52:54:00:00:00:01  172.16.1.5\n");
    }

    #[test]
    fn cells_show_null_and_empty_as_dash() {
        assert_eq!(opt(None::<String>), "-");
        assert_eq!(cell(""), "-");
        assert_eq!(cell(3), "3");
    }
}
