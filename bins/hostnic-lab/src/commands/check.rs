//! `hostnic-lab check`: the connectivity matrix with real packets. Every cell
//! sends an ICMP echo and opens a TCP connection to a server in the target
//! namespace that answers with the source address it saw.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use hostnic_linux::lab::probe::{self, PeerServer};
use serde::Serialize;

use crate::labfile::{self, LabFile, PodRecord};

const PORT: u16 = 7777;

/// Options of `check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The lab directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// Print the cells as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One end of a probe.
#[derive(Debug, Clone, Serialize)]
pub struct End {
    /// Display name, e.g. `node1/default/p0` or `client`.
    pub name: String,
    /// Path of its namespace.
    pub netns: PathBuf,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// One cell of the matrix.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// What is checked, e.g. `pod→pod across nodes`.
    pub kind: &'static str,
    /// Sender.
    pub from: String,
    /// Receiver.
    pub to: String,
    /// Receiver's address.
    pub to_ip: Ipv4Addr,
    /// ICMP echo answered.
    pub icmp: bool,
    /// The source address the TCP server saw (none: no connection).
    pub seen_as: Option<Ipv4Addr>,
    /// The source address it must see.
    pub expect: Ipv4Addr,
    /// Error of the TCP probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Cell {
    /// ICMP and TCP went through and the source was the expected one.
    pub fn ok(&self) -> bool {
        self.icmp && self.seen_as == Some(self.expect)
    }
}

/// Runs the matrix and prints it.
pub async fn exec(args: CheckArgs) -> anyhow::Result<bool> {
    let dir = labfile::lab_dir(&args.dir)?;
    let cells = run(&dir).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&cells)?);
    } else {
        print_table(&cells);
    }
    Ok(!cells.is_empty() && cells.iter().all(Cell::ok))
}

fn pod_end(p: &PodRecord) -> End {
    End {
        name: format!("{}/{}/{}", p.node, p.namespace, p.name),
        netns: p.netns.clone(),
        ip: p.ip,
    }
}

/// The cells for the lab's pods: every pod to the client (no SNAT in the VPC)
/// and to the internet (SNAT to its node), the client to every pod, and for the
/// first pod of each node: a second pod on the node, the first pod of the next
/// node (both ways), its own node and the next node.
pub fn plan(lab: &LabFile, pods: &[PodRecord]) -> Vec<(&'static str, End, End, Ipv4Addr)> {
    let client = End {
        name: "client".into(),
        netns: lab.client.netns.clone(),
        ip: lab.client.ip,
    };
    let internet = End {
        name: "internet".into(),
        netns: lab.internet.netns.clone(),
        ip: lab.internet.ip,
    };
    let node_end = |name: &str| {
        lab.nodes.iter().find(|n| n.name == name).map(|n| End {
            name: n.name.clone(),
            netns: n.netns.clone(),
            ip: n.primary_ip,
        })
    };
    let mut cells = Vec::new();
    for p in pods {
        let pe = pod_end(p);
        cells.push((
            "pod→VPC client (keeps pod IP)",
            pe.clone(),
            client.clone(),
            p.ip,
        ));
        if let Some(node) = node_end(&p.node) {
            cells.push((
                "pod→internet (SNAT to node)",
                pe.clone(),
                internet.clone(),
                node.ip,
            ));
        }
        cells.push(("client→pod", client.clone(), pe, lab.client.ip));
    }
    let firsts: Vec<&PodRecord> = lab
        .nodes
        .iter()
        .filter_map(|n| pods.iter().find(|p| p.node == n.name))
        .collect();
    for (i, a) in firsts.iter().enumerate() {
        if let Some(b) = pods.iter().find(|p| p.node == a.node && p.name != a.name) {
            cells.push(("pod→pod same node", pod_end(a), pod_end(b), a.ip));
        }
        if let Some(node) = node_end(&a.node) {
            cells.push(("pod→own node", pod_end(a), node, a.ip));
        }
        if firsts.len() > 1 {
            let b = firsts[(i + 1) % firsts.len()];
            cells.push(("pod→pod across nodes", pod_end(a), pod_end(b), a.ip));
            if let Some(node) = node_end(&b.node) {
                cells.push(("pod→other node", pod_end(a), node, a.ip));
            }
        }
    }
    cells
}

/// Runs every planned cell.
pub async fn run(dir: &Path) -> anyhow::Result<Vec<Cell>> {
    let (lab, _) = labfile::load(dir)?;
    let pods = labfile::pods(dir)?;
    let plan = plan(&lab, &pods);
    // One peer server per target namespace, alive for the whole matrix.
    let mut targets: Vec<PathBuf> = plan.iter().map(|(_, _, to, _)| to.netns.clone()).collect();
    targets.sort();
    targets.dedup();
    let mut servers = Vec::new();
    for t in &targets {
        servers.push(PeerServer::start(t, PORT)?);
    }
    let mut cells = Vec::new();
    for (kind, from, to, expect) in plan {
        let from_name = from
            .netns
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let icmp = probe::ping(&from_name, to.ip, 2).await;
        let (fns, ip) = (from.netns.clone(), to.ip);
        let tcp = tokio::task::spawn_blocking(move || {
            probe::tcp_peer(&fns, ip, PORT, Duration::from_secs(3))
        })
        .await?;
        let (seen_as, error) = match tcp {
            Ok(seen) => (Some(seen), None),
            Err(e) => (None, Some(e.to_string())),
        };
        cells.push(Cell {
            kind,
            from: from.name,
            to: to.name,
            to_ip: to.ip,
            icmp,
            seen_as,
            expect,
            error,
        });
    }
    drop(servers);
    Ok(cells)
}

fn print_table(cells: &[Cell]) {
    println!(
        "{:<30} {:<24} {:<24} {:<5} {:<16} {:<16} result",
        "check", "from", "to", "icmp", "tcp seen as", "expected"
    );
    for c in cells {
        println!(
            "{:<30} {:<24} {:<24} {:<5} {:<16} {:<16} {}",
            c.kind,
            c.from,
            format!("{} {}", c.to, c.to_ip),
            if c.icmp { "ok" } else { "FAIL" },
            c.seen_as.map_or("-".to_string(), |ip| ip.to_string()),
            c.expect.to_string(),
            if c.ok() { "ok" } else { "FAIL" }
        );
        if let Some(e) = &c.error {
            println!("    {e}");
        }
    }
    let failed = cells.iter().filter(|c| !c.ok()).count();
    println!("{} cells, {failed} failed", cells.len());
}
