//! `hostnic-lab bench --dir DIR`: system-level numbers measured in one run on
//! this machine — CNI ADD/DEL of `hostnic` against Debian's reference
//! `ptp` + `host-local` on the same kind of namespaces, a cold start of many
//! pods on one node, cloud API calls per pod under churn, and the agents' RSS.
//!
//! The report is written to `DIR/bench/bench.json` and, next to it, the latency
//! distributions of the four ADD/DEL series as an SVG plot
//! (`DIR/bench/latency.svg`, cumulative distributions on a log axis).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hostnic_linux::NetNs;
use hostnic_linux::lab::cmd;
use hostnic_testkit::cni::{self, CniCall};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::pod;
use crate::apiserver::{self, ApiServer};
use crate::http;
use crate::labfile::{self, LabFile};

const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// Options of `bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The lab directory (a lab that is up, with agents).
    #[arg(long)]
    pub dir: PathBuf,
    /// ADD+DEL pairs per plugin.
    #[arg(long, default_value_t = 30)]
    pub iterations: usize,
    /// Pods of the cold start (all added at once on the last node).
    #[arg(long, default_value_t = 40)]
    pub cold_pods: usize,
    /// DEL+ADD rounds of the churn.
    #[arg(long, default_value_t = 20)]
    pub churn: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Median and 99th percentile of a series, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Samples.
    pub n: usize,
    /// Median.
    pub median_ms: f64,
    /// 99th percentile (nearest rank).
    pub p99_ms: f64,
    /// Every sample, in order of measurement (the plot's data).
    pub samples_ms: Vec<f64>,
}

impl Stats {
    fn of(samples: &[Duration]) -> Self {
        let samples_ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        let mut ms = samples_ms.clone();
        ms.sort_by(|a, b| a.total_cmp(b));
        let rank = |q: f64| {
            if ms.is_empty() {
                0.0
            } else {
                ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1]
            }
        };
        Self {
            n: ms.len(),
            median_ms: rank(0.5),
            p99_ms: rank(0.99),
            samples_ms,
        }
    }
}

/// Everything `bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// hostnic ADD.
    pub hostnic_add: Stats,
    /// hostnic DEL.
    pub hostnic_del: Stats,
    /// ptp + host-local ADD.
    pub ptp_add: Stats,
    /// ptp + host-local DEL.
    pub ptp_del: Stats,
    /// Pods of the cold start.
    pub cold_pods: usize,
    /// Node of the cold start.
    pub cold_node: String,
    /// Seconds until every cold-start ADD returned.
    pub cold_start_s: f64,
    /// Cloud API requests made meanwhile (all nodes).
    pub cold_start_api_calls: u64,
    /// DEL+ADD rounds of the churn.
    pub churn_rounds: usize,
    /// Cloud API requests per churned pod.
    pub churn_api_calls_per_pod: f64,
    /// Resident set size of each agent, KiB.
    pub agent_rss_kib: Vec<(String, u64)>,
}

/// Runs the benchmark and prints the report.
pub async fn exec(args: BenchArgs) -> anyhow::Result<bool> {
    let dir = labfile::lab_dir(&args.dir)?;
    let (lab, state) = labfile::load(&dir)?;
    let (first, last) = match (lab.nodes.first(), lab.nodes.last()) {
        (Some(f), Some(l)) => (f.clone(), l.clone()),
        _ => bail!("the lab has no nodes"),
    };
    if first.pid.is_none() {
        bail!("the nodes run no agent: bench needs a lab started with hostnic-agent");
    }
    let bench_dir = dir.join("bench");
    let _ = std::fs::remove_dir_all(&bench_dir);
    std::fs::create_dir_all(&bench_dir)?;

    // Both plugins run through `nsenter --net=<their host namespace>`, so they
    // pay the same launcher cost; ptp creates its host veth in its own
    // namespace, never in the machine's.
    let hostnic_conf = pod::plugin_config(&serde_json::from_str(&std::fs::read_to_string(
        &first.conflist,
    )?)?)?;
    let hostnic_plugin = first.cni_bin_dir.join("hostnic");
    // The agents run with `--pods kube`: the pods the series names exist in the
    // API server, bound to the node, as kubelet would have made them.
    let api = ApiServer::of_lab(&dir)?;
    api.ensure_namespace("bench").await?;
    for i in 0..args.iterations {
        let obj = apiserver::pod_object(
            "bench",
            &format!("hostniclabbenchbh{i}"),
            &first.name,
            &Default::default(),
            &[],
        );
        api.apply(&apiserver::pods_path("bench"), &obj).await?;
    }
    let series = add_del_series(
        &state.prefix,
        "bh",
        &hostnic_plugin,
        &first.cni_bin_dir,
        &first.netns,
        &hostnic_conf,
        args.iterations,
    )
    .await;
    for i in 0..args.iterations {
        let _ = api
            .delete(&format!(
                "{}/hostniclabbenchbh{i}",
                apiserver::pods_path("bench")
            ))
            .await;
    }
    let (hostnic_add, hostnic_del) = series.context("hostnic ADD/DEL")?;

    let ptp_host = format!("{}bench-ptp", state.prefix);
    let ptp_ns = NetNs::create_named(&ptp_host)?;
    cmd::ip_in(&ptp_host, &["link", "set", "lo", "up"]).await?;
    let ptp_conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "bench-ptp",
        "type": "ptp",
        "ipam": {
            "type": "host-local",
            "subnet": "10.99.0.0/16",
            "dataDir": bench_dir.join("host-local"),
        }
    });
    let ptp = add_del_series(
        &state.prefix,
        "bp",
        &Path::new(REFERENCE_PLUGINS).join("ptp"),
        Path::new(REFERENCE_PLUGINS),
        ptp_ns.path(),
        &ptp_conf,
        args.iterations,
    )
    .await;
    let _ = NetNs::delete_named(&ptp_host);
    let (ptp_add, ptp_del) =
        ptp.context("ptp + host-local ADD/DEL (apt-get install containernetworking-plugins)")?;

    // Cold start: every pod at once on the last node.
    let before = api_calls(&lab).await?;
    let started = Instant::now();
    let mut adds = tokio::task::JoinSet::new();
    for i in 0..args.cold_pods {
        let (dir, node) = (dir.clone(), last.name.clone());
        adds.spawn(async move { pod::add(&dir, &node, "bench", &format!("cold{i}")).await });
    }
    let mut failures = Vec::new();
    while let Some(joined) = adds.join_next().await {
        if let Err(e) = joined? {
            failures.push(format!("{e:#}"));
        }
    }
    let cold_start_s = started.elapsed().as_secs_f64();
    let cold_start_api_calls = api_calls(&lab).await? - before;

    // Churn: delete a pod and add it again, round after round.
    let before = api_calls(&lab).await?;
    for r in 0..args.churn.min(args.cold_pods) {
        let name = format!("cold{r}");
        pod::del(&dir, &last.name, "bench", &name).await?;
        pod::add(&dir, &last.name, "bench", &name).await?;
    }
    let churn_calls = api_calls(&lab).await? - before;
    for i in 0..args.cold_pods {
        let _ = pod::del(&dir, &last.name, "bench", &format!("cold{i}")).await;
    }
    if !failures.is_empty() {
        bail!(
            "cold start: {} ADDs failed: {}",
            failures.len(),
            failures[0]
        );
    }

    let report = Report {
        hostnic_add,
        hostnic_del,
        ptp_add,
        ptp_del,
        cold_pods: args.cold_pods,
        cold_node: last.name.clone(),
        cold_start_s,
        cold_start_api_calls,
        churn_rounds: args.churn.min(args.cold_pods),
        churn_api_calls_per_pod: churn_calls as f64
            / args.churn.clamp(1, args.cold_pods.max(1)) as f64,
        agent_rss_kib: lab
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.pid.map_or(0, rss_kib)))
            .collect(),
    };
    let json = serde_json::to_string_pretty(&report)?;
    let (report_path, svg_path) = write_files(&bench_dir, &report, &json)?;
    if args.json {
        println!("{json}");
    } else {
        print_report(&report);
    }
    eprintln!(
        "report: {}\nplot:   {}",
        report_path.display(),
        svg_path.display()
    );
    Ok(true)
}

/// Writes `bench.json` and, next to it, `latency.svg`; their paths.
fn write_files(dir: &Path, report: &Report, json: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let report_path = dir.join("bench.json");
    std::fs::write(&report_path, format!("{json}\n"))
        .with_context(|| format!("write {}", report_path.display()))?;
    let svg = crate::plot::latency_svg(
        "CNI ADD/DEL latency: hostnic vs ptp + host-local (same launcher, same kind of namespace)",
        &[
            ("hostnic ADD", &report.hostnic_add.samples_ms),
            ("ptp + host-local ADD", &report.ptp_add.samples_ms),
            ("hostnic DEL", &report.hostnic_del.samples_ms),
            ("ptp + host-local DEL", &report.ptp_del.samples_ms),
        ],
    )?;
    let svg_path = dir.join("latency.svg");
    std::fs::write(&svg_path, svg).with_context(|| format!("write {}", svg_path.display()))?;
    Ok((report_path, svg_path))
}

/// `n` ADD+DEL pairs of `plugin` run in `host_ns`, each in a fresh namespace.
async fn add_del_series(
    prefix: &str,
    tag: &str,
    plugin: &Path,
    cni_path: &Path,
    host_ns: &Path,
    conf: &serde_json::Value,
    n: usize,
) -> anyhow::Result<(Stats, Stats)> {
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    for i in 0..n {
        let name = format!("{prefix}{tag}{i}");
        let ns = NetNs::create_named(&name)?;
        let id = format!("hostniclabbench{tag}{i}");
        let result = async {
            adds.push(run_plugin(plugin, cni_path, host_ns, "ADD", &id, ns.path(), conf).await?);
            dels.push(run_plugin(plugin, cni_path, host_ns, "DEL", &id, ns.path(), conf).await?);
            anyhow::Ok(())
        }
        .await;
        let _ = NetNs::delete_named(&name);
        result?;
    }
    Ok((Stats::of(&adds), Stats::of(&dels)))
}

/// Runs one CNI call and returns how long it took (launcher included).
async fn run_plugin(
    plugin: &Path,
    cni_path: &Path,
    host_ns: &Path,
    verb: &str,
    id: &str,
    netns: &Path,
    conf: &serde_json::Value,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut child = tokio::process::Command::new("nsenter")
        .arg(format!("--net={}", host_ns.display()))
        .arg(plugin)
        .env_clear()
        .envs(cni::env(&CniCall {
            verb,
            container_id: id,
            netns,
            pod: ("bench", id),
            cni_path,
        }))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {}", plugin.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(conf.to_string().as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "{} {verb}: {}{}",
            plugin.display(),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

/// Cloud API requests answered so far (all actions).
async fn api_calls(lab: &LabFile) -> anyhow::Result<u64> {
    let counters = http::post_json(&lab.sim_url, "/_sim/counters", &serde_json::json!({})).await?;
    Ok(counters
        .as_object()
        .map(|m| m.values().filter_map(|c| c["requests"].as_u64()).sum())
        .unwrap_or(0))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn print_report(r: &Report) {
    println!(
        "{:<40} {:>10} {:>10} {:>5}",
        "CNI call (launcher included)", "median ms", "p99 ms", "n"
    );
    for (name, s) in [
        ("hostnic ADD", &r.hostnic_add),
        ("ptp + host-local ADD", &r.ptp_add),
        ("hostnic DEL", &r.hostnic_del),
        ("ptp + host-local DEL", &r.ptp_del),
    ] {
        println!(
            "{name:<40} {:>10.1} {:>10.1} {:>5}",
            s.median_ms, s.p99_ms, s.n
        );
    }
    println!();
    println!(
        "cold start: {} pods at once on {}: all ready in {:.2} s, {} cloud API calls",
        r.cold_pods, r.cold_node, r.cold_start_s, r.cold_start_api_calls
    );
    println!(
        "churn: {} DEL+ADD rounds: {:.2} cloud API calls per pod",
        r.churn_rounds, r.churn_api_calls_per_pod
    );
    for (node, kib) in &r.agent_rss_kib {
        println!("agent RSS {node}: {:.1} MiB", *kib as f64 / 1024.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p99_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = Stats::of(&samples);
        assert_eq!((s.n, s.median_ms, s.p99_ms), (100, 50.0, 99.0));
        let one = Stats::of(&[Duration::from_millis(7)]);
        assert_eq!((one.median_ms, one.p99_ms), (7.0, 7.0));
        assert_eq!(Stats::of(&[]).n, 0);
    }

    #[test]
    fn the_report_and_its_plot_are_written_side_by_side() {
        let dir = tempfile::tempdir().unwrap();
        let s = |ms: &[u64]| {
            Stats::of(
                &ms.iter()
                    .map(|m| Duration::from_millis(*m))
                    .collect::<Vec<_>>(),
            )
        };
        let report = Report {
            hostnic_add: s(&[2, 3, 4]),
            hostnic_del: s(&[1, 2]),
            ptp_add: s(&[9, 11]),
            ptp_del: s(&[5]),
            cold_pods: 0,
            cold_node: "node2".into(),
            cold_start_s: 0.0,
            cold_start_api_calls: 0,
            churn_rounds: 0,
            churn_api_calls_per_pod: 0.0,
            agent_rss_kib: vec![],
        };
        let json = serde_json::to_string_pretty(&report).unwrap();
        let (j, svg) = write_files(dir.path(), &report, &json).unwrap();
        assert_eq!(j.parent(), svg.parent());
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(j).unwrap()).unwrap();
        assert_eq!(
            back["hostnic_add"]["samples_ms"].as_array().unwrap().len(),
            3
        );
        let svg = std::fs::read_to_string(svg).unwrap();
        assert!(svg.contains("hostnic ADD (n=3)") && svg.contains("ptp + host-local DEL (n=1)"));
    }
}
