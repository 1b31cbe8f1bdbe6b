//! Reading the agent's introspection endpoint (`/v1/*`) and printing tables;
//! shared by `status`, `pool`, `pods` and `nics`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

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

/// GETs `path` (e.g. `/v1/status`) from the agent and parses the JSON body.
pub fn get(url: &str, path: &str) -> anyhow::Result<Value> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--url {url:?} must start with http://"))?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let mut stream = TcpStream::connect(authority)
        .with_context(|| format!("cannot reach the hostnic agent at {authority}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let request =
        format!("GET {prefix}{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("the agent sent no HTTP answer");
    };
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200") {
        bail!("{path}: {status}: {}", body.trim());
    }
    serde_json::from_str(body).with_context(|| format!("{path}: not JSON"))
}

/// Prints `value` as pretty JSON.
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A JSON value as a table cell (`-` for null).
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
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

/// Prints a list document (`/v1/nics`, `/v1/pods`) as a table of `columns` (key, header).
pub fn print_list(value: &Value, columns: &[(&str, &str)]) {
    let rows: Vec<Vec<String>> = value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| columns.iter().map(|(k, _)| cell(&item[*k])).collect())
                .collect()
        })
        .unwrap_or_default();
    let headers: Vec<&str> = columns.iter().map(|(_, h)| *h).collect();
    print!("{}", table(&headers, &rows));
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
        assert_eq!(cell(&Value::Null), "-");
        assert_eq!(cell(&Value::String(String::new())), "-");
        assert_eq!(cell(&serde_json::json!(3)), "3");
    }
}
