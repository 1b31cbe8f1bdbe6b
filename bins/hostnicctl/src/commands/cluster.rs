//! `hostnicctl cluster`: one line per node of the cluster — its hostnic version,
//! mode, readiness, pods, NICs, free NICs and what is wrong — like `cilium status
//! --all-nodes`.
//!
//! Where the numbers come from: the agents' introspection (`/v1/*`) answers on
//! their node's loopback only, so the view reads what the cluster may read: the
//! API server's node list and the agent pods of the DaemonSet (found by label;
//! with the host network a pod's IP is its node's), then each agent's public
//! `/metrics` and `/readyz` (the port named `metrics` of its container). That is
//! one [`Source`]; the controller's per-node objects, once they exist, are
//! another arm of it, read with one list call and no connection to the nodes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;

use super::introspect::{print_json, table};

/// Arguments of `hostnicctl cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// The kubeconfig; default: $KUBECONFIG, ~/.kube/config, or in-cluster.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The namespace of the agents' DaemonSet.
    #[arg(long, default_value = "kube-system")]
    namespace: String,
    /// The label selector of the agents' pods.
    #[arg(
        long,
        default_value = "app.kubernetes.io/name=hostnic,app.kubernetes.io/component=node"
    )]
    selector: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One node of the view.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeRow {
    /// The node's name.
    pub node: String,
    /// The agent's version, if it answered.
    pub version: Option<String>,
    /// How pods get addresses (`exclusive`).
    pub mode: Option<String>,
    /// The agent can serve an ADD.
    pub ready: Option<bool>,
    /// Pod attachments.
    pub pods: Option<u64>,
    /// NICs of the node, whatever their state.
    pub nics: Option<u64>,
    /// NICs free for a pod now.
    pub free: Option<u64>,
    /// What is wrong, if anything.
    pub errors: Vec<String>,
}

/// Where the view's numbers come from.
pub enum Source {
    /// The agents' `/metrics` and `/readyz`, found through their DaemonSet's pods.
    AgentMetrics {
        /// The API server.
        client: kube::Client,
        /// The DaemonSet's namespace.
        namespace: String,
        /// Its pods' label selector.
        selector: String,
    },
}

impl Source {
    /// One row per node of the cluster, sorted by name.
    pub async fn rows(&self) -> anyhow::Result<Vec<NodeRow>> {
        match self {
            Source::AgentMetrics {
                client,
                namespace,
                selector,
            } => agent_rows(client, namespace, selector).await,
        }
    }
}

/// The agent of a node: its metrics base URL.
fn agent_url(pod: &Pod) -> Option<(String, String)> {
    let node = pod.spec.as_ref()?.node_name.clone()?;
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    let port = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("metrics"))
        .map_or(61678, |p| p.container_port);
    Some((node, format!("http://{ip}:{port}")))
}

async fn agent_rows(
    client: &kube::Client,
    namespace: &str,
    selector: &str,
) -> anyhow::Result<Vec<NodeRow>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let nodes = nodes
        .list(&ListParams::default())
        .await
        .context("listing the nodes")?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = pods
        .list(&ListParams::default().labels(selector))
        .await
        .with_context(|| format!("listing the agent pods ({namespace}, {selector})"))?;
    let agents: BTreeMap<String, String> = pods.items.iter().filter_map(agent_url).collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?;
    let names: Vec<String> = nodes
        .items
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    let rows = names.into_iter().map(|node| {
        let url = agents.get(&node).cloned();
        let http = http.clone();
        async move {
            match url {
                None => NodeRow {
                    node,
                    errors: vec!["no hostnic agent pod on this node".into()],
                    ..NodeRow::default()
                },
                Some(url) => scrape(&http, node, &url).await,
            }
        }
    });
    let mut rows = futures::future::join_all(rows).await;
    rows.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(rows)
}

/// Reads one agent's `/metrics` and `/readyz` into its row.
async fn scrape(http: &reqwest::Client, node: String, url: &str) -> NodeRow {
    let mut row = NodeRow {
        node,
        ..NodeRow::default()
    };
    let text = match http.get(format!("{url}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => {
            let e = e.without_url();
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                let text = s.to_string();
                if !why.contains(&text) {
                    why.push_str(&format!(": {text}"));
                }
                source = s.source();
            }
            row.errors
                .push(format!("agent unreachable at {url}: {why}"));
            return row;
        }
    };
    let samples = parse_metrics(&text);
    let first = |name: &str| samples.iter().find(|s| s.name == name);
    let sum = |name: &str| {
        let v: Vec<f64> = samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() as u64)
    };
    row.version = first("hostnic_build_info").and_then(|s| s.labels.get("version").cloned());
    row.mode = first("hostnic_node_info").and_then(|s| s.labels.get("mode").cloned());
    row.ready = first("hostnic_ready").map(|s| s.value > 0.0);
    row.pods = sum("hostnic_pods");
    row.nics = sum("hostnic_nics");
    row.free = sum("hostnic_pool_free");
    if let Ok(r) = http.get(format!("{url}/readyz")).send().await
        && !r.status().is_success()
    {
        let body = r.text().await.unwrap_or_default();
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let line = line.trim().trim_start_matches("not ready: ");
            row.errors.push(line.to_string());
        }
    }
    row
}

/// One sample of the text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric's name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// Parses the Prometheus text format (comments skipped, label values unescaped).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let Some(open) = line.find('{') else {
        let (name, value) = line.split_once(' ')?;
        return Some(Sample {
            name: name.to_string(),
            labels: BTreeMap::new(),
            value: value.split_whitespace().next()?.parse().ok()?,
        });
    };
    let chars: Vec<char> = line[open + 1..].chars().collect();
    let mut i = 0;
    let mut labels = BTreeMap::new();
    loop {
        while chars.get(i).is_some_and(|c| *c == ',' || *c == ' ') {
            i += 1;
        }
        if *chars.get(i)? == '}' {
            i += 1;
            break;
        }
        let start = i;
        while *chars.get(i)? != '=' {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        i += 1;
        if *chars.get(i)? != '"' {
            return None;
        }
        i += 1;
        let mut value = String::new();
        loop {
            let c = *chars.get(i)?;
            i += 1;
            match c {
                '\\' => {
                    let next = *chars.get(i)?;
                    i += 1;
                    value.push(if next == 'n' { '\n' } else { next });
                }
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim().to_string(), value);
    }
    let rest: String = chars[i..].iter().collect();
    Some(Sample {
        name: line[..open].to_string(),
        labels,
        value: rest.split_whitespace().next()?.parse().ok()?,
    })
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), ToString::to_string)
}

/// The table of the view.
pub fn render(rows: &[NodeRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.node.clone(),
                opt(&r.version),
                opt(&r.mode),
                opt(&r.ready),
                opt(&r.pods),
                opt(&r.nics),
                opt(&r.free),
                if r.errors.is_empty() {
                    "-".into()
                } else {
                    r.errors.join("; ")
                },
            ]
        })
        .collect();
    table(
        &[
            "NODE", "VERSION", "MODE", "READY", "PODS", "NICS", "FREE", "ERRORS",
        ],
        &cells,
    )
}

/// Runs `hostnicctl cluster`.
pub async fn exec(args: ClusterArgs) -> anyhow::Result<()> {
    let client = hostnic_k8s::client(args.kubeconfig.as_deref())
        .await
        .context("Kubernetes client")?;
    let source = Source::AgentMetrics {
        client,
        namespace: args.namespace,
        selector: args.selector,
    };
    let rows = source.rows().await?;
    if args.json {
        return print_json(&rows);
    }
    print!("{}", render(&rows));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse_with_labels_escapes_and_without() {
        let text = "# HELP x y\nhostnic_pods 3\nhostnic_nics{state=\"free\"} 2\n\
                    hostnic_build_info{version=\"0.1.0\",commit=\"a\\\"b\"} 1\n\
                    h_bucket{verb=\"ADD\",le=\"+Inf\",} 7\n";
        let s = parse_metrics(text);
        assert_eq!(s.len(), 4, "{s:?}");
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].labels["state"], "free");
        assert_eq!(s[2].labels["commit"], "a\"b");
        assert_eq!(s[3].labels["le"], "+Inf");
        assert_eq!(s[3].value, 7.0);
    }

    #[test]
    fn the_table_shows_every_node_and_what_is_wrong() {
        let t = render(&[
            NodeRow {
                node: "node1".into(),
                version: Some("0.1.0".into()),
                mode: Some("exclusive".into()),
                ready: Some(true),
                pods: Some(4),
                nics: Some(9),
                free: Some(5),
                errors: vec![],
            },
            NodeRow {
                node: "node2".into(),
                errors: vec!["no hostnic agent pod on this node".into()],
                ..NodeRow::default()
            },
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NODE"), "{t}");
        assert!(
            lines[1].contains("exclusive") && lines[1].ends_with('-'),
            "{t}"
        );
        assert!(lines[2].contains("no hostnic agent pod"), "{t}");
    }
}
