//! `hostnic-lab demo`: up, pods, check, delete all, leak checks, down — one command.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use hostnic_linux::lab::cmd;

use super::up::UpArgs;
use super::{check, down, nic, pod};
use crate::labfile::{self, LabFile};

/// Options of `demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 2)]
    pub nodes: usize,
    /// Pods per node.
    #[arg(long, default_value_t = 6)]
    pub pods_per_node: usize,
    /// The lab directory (default: a fresh one under the temp dir, removed at the end).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Runs the demo; true if every step held.
pub async fn exec(args: DemoArgs) -> anyhow::Result<bool> {
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("hostnic-lab-demo-{}", std::process::id()))
    });
    let up = UpArgs {
        dir: dir.clone(),
        nodes: args.nodes,
        attach_latency_ms: 200,
        job_latency_ms: 50,
        fault_rate: 0.0,
        timeout_s: 120,
        no_agents: false,
    };
    let started = Instant::now();
    let result = steps(&up, args.pods_per_node).await;
    let t = Instant::now();
    let leftovers = down::down(&dir).await;
    let down_s = t.elapsed().as_secs_f64();
    let mut ok = match &result {
        Ok(ok) => *ok,
        Err(e) => {
            println!("FAILED: {e:#}");
            false
        }
    };
    println!("down: {down_s:.1} s");
    for l in &leftovers {
        println!("leftover: {l}");
        ok = false;
    }
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!(
        "demo {} in {:.1} s",
        if ok { "passed" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    Ok(ok)
}

async fn steps(up: &UpArgs, pods_per_node: usize) -> anyhow::Result<bool> {
    let t = Instant::now();
    let lab = super::up::start(up).await?;
    println!(
        "up: {} nodes, simulator at {} ({:.1} s)",
        lab.nodes.len(),
        lab.sim_url,
        t.elapsed().as_secs_f64()
    );
    let dir = labfile::lab_dir(&up.dir)?;
    let t = Instant::now();
    let mut pods = Vec::new();
    for i in 0..pods_per_node {
        for node in &lab.nodes {
            let name = format!("p{i}");
            let (record, _) = pod::add(&dir, &node.name, "default", &name)
                .await
                .with_context(|| format!("pod add {}/default/{name}", node.name))?;
            pods.push(record);
        }
    }
    println!(
        "pods: {} added ({:.1} s)",
        pods.len(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let cells = check::run(&dir).await?;
    let failed: Vec<&check::Cell> = cells.iter().filter(|c| !c.ok()).collect();
    println!(
        "check: {} cells, {} failed ({:.1} s)",
        cells.len(),
        failed.len(),
        t.elapsed().as_secs_f64()
    );
    for c in &failed {
        println!(
            "  FAIL {} {} → {} {}: icmp {}, seen as {:?}, expected {} {}",
            c.kind,
            c.from,
            c.to,
            c.to_ip,
            c.icmp,
            c.seen_as,
            c.expect,
            c.error.as_deref().unwrap_or("")
        );
    }
    let t = Instant::now();
    for p in &pods {
        pod::del(&dir, &p.node, &p.namespace, &p.name)
            .await
            .with_context(|| format!("pod del {}/{}/{}", p.node, p.namespace, p.name))?;
    }
    println!(
        "pods: {} deleted ({:.1} s)",
        pods.len(),
        t.elapsed().as_secs_f64()
    );
    // The agents may still be releasing surplus NICs (detach, then delete): let them settle.
    let t = Instant::now();
    let mut leaks = leaks(&lab).await?;
    while !leaks.is_empty() && t.elapsed() < std::time::Duration::from_secs(30) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        leaks = self::leaks(&lab).await?;
    }
    for l in &leaks {
        println!("  LEAK {l}");
    }
    println!("leaks: {}", leaks.len());
    Ok(failed.is_empty() && !cells.is_empty() && leaks.is_empty())
}

/// NICs in the simulator without an owner, and pod plumbing left on the nodes.
pub async fn leaks(lab: &LabFile) -> anyhow::Result<Vec<String>> {
    let mut leaks = Vec::new();
    for n in nic::nics(lab).await? {
        if n["instance_id"].is_null() {
            leaks.push(format!(
                "NIC {} ({}) is attached to no instance",
                n["nic_id"].as_str().unwrap_or("?"),
                n["private_ip"].as_str().unwrap_or("?")
            ));
        }
    }
    for node in &lab.nodes {
        let ns = netns_name(&node.netns);
        let links = cmd::ip_in(&ns, &["-o", "link", "show", "type", "veth"]).await?;
        for name in links
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n))
            .filter(|n| *n != "eth0" && !n.starts_with("hn"))
        {
            leaks.push(format!("{}: pod veth {name} left", node.name));
        }
        let rules = cmd::ip_in(&ns, &["rule", "show"]).await?;
        for rule in rules
            .lines()
            .filter(|l| l.starts_with("512:") || l.starts_with("1536:"))
        {
            leaks.push(format!("{}: rule {rule}", node.name));
        }
        for object in policy_objects(&ns).await {
            leaks.push(format!("{}: nftables {object} left", node.name));
        }
    }
    Ok(leaks)
}

/// Per-pod policy chains (`pin-…`, `pout-…`) and peer sets (`pol-…`, `pole-…`)
/// in the node's `inet hostnic` table: none may outlive the pods and policies.
async fn policy_objects(netns: &str) -> Vec<String> {
    let Ok(out) = cmd::run(
        "ip",
        &[
            "netns", "exec", netns, "nft", "-j", "list", "table", "inet", "hostnic",
        ],
    )
    .await
    else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&out) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        for (kind, prefixes) in [
            ("chain", &["pin-", "pout-"][..]),
            ("set", &["pol-", "pole-"][..]),
        ] {
            if let Some(name) = item[kind]["name"].as_str()
                && prefixes.iter().any(|p| name.starts_with(p))
            {
                found.push(format!("{kind} {name}"));
            }
        }
    }
    found
}

fn netns_name(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string()
}
