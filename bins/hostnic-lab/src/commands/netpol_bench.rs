//! `hostnic-lab netpol-bench --dir DIR [--pods 100] [--policies 20] [--rounds 20]`:
//! enforcement latency measured on packets.
//!
//! Setup: `--pods` labelled pods spread over the nodes in namespace
//! `netpol-bench`, each listening on port 80, and `--policies` background
//! policies (policy k isolates the pods of group k for ingress and allows group
//! k+1 on port 80). One watched flow, `client → target` on different nodes
//! (both outside every group), is probed by a train of TCP connects started
//! every `--interval-ms` from the client's namespace, each with a short
//! timeout. A round creates a policy that denies all ingress to `target` and
//! measures from the API server's answer to the start of the first connect that
//! fails; then deletes it and measures to the first connect that succeeds.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hostnic_linux::NetNs;
use serde::Serialize;
use serde_json::json;

use super::pod::{self, PodSpec};
use crate::apiserver::{self, ApiServer, Strictness};
use crate::labfile::{self, ContainerPort, PodRecord};

const NAMESPACE: &str = "netpol-bench";
const PORT: u16 = 80;
const WATCHED_POLICY: &str = "watched-deny";

/// Options of `netpol-bench`.
#[derive(Debug, Clone, Args)]
pub struct NetpolBenchArgs {
    /// The lab directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// Pods in place (the watched client and target included).
    #[arg(long, default_value_t = 100)]
    pub pods: usize,
    /// Background policies in place.
    #[arg(long, default_value_t = 20)]
    pub policies: usize,
    /// Rounds; each measures one block and one allow.
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// A new probe starts every this many milliseconds.
    #[arg(long, default_value_t = 5)]
    pub interval_ms: u64,
    /// Give up on a round after this many seconds.
    #[arg(long, default_value_t = 10)]
    pub timeout_s: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Keep the pods and policies afterwards.
    #[arg(long)]
    pub keep: bool,
}

/// Percentiles of a series, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `samples`.
    pub fn of(samples: &[Duration]) -> Self {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let rank = |p: f64| -> f64 {
            if ms.is_empty() {
                return 0.0;
            }
            let i = ((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
            ms[i]
        };
        Self {
            n: ms.len(),
            p50_ms: rank(0.50),
            p90_ms: rank(0.90),
            p99_ms: rank(0.99),
            max_ms: ms.last().copied().unwrap_or(0.0),
        }
    }
}

/// What the benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Pods in place.
    pub pods: usize,
    /// Background policies in place.
    pub policies: usize,
    /// Nodes of the watched flow (client, target).
    pub flow: (String, String),
    /// Policy created → the flow is blocked.
    pub block: Latency,
    /// Policy deleted → the flow is allowed again.
    pub allow: Latency,
    /// Both together.
    pub all: Latency,
    /// The agents' own report (`/v1/policy` synced) for the same writes.
    pub agent_synced: Latency,
}

/// A train of connects from one namespace to one address: probe `k` starts at
/// `origin + k × interval`; results are `(k, connected)`.
struct ProbeTrain {
    origin: Instant,
    interval: Duration,
    stop: Arc<AtomicBool>,
    results: Arc<Mutex<Vec<(u64, bool)>>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl ProbeTrain {
    fn start(
        from: &Path,
        to: Ipv4Addr,
        interval: Duration,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let ns = NetNs::open(from)?;
        let origin = Instant::now();
        let next = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(Vec::new()));
        // Enough workers that a probe starts on time while others wait out their timeout.
        let workers_n = (timeout.as_millis() / interval.as_millis().max(1)) as usize + 4;
        let mut workers = Vec::new();
        for _ in 0..workers_n {
            let (ns, next, stop, results) =
                (ns.clone(), next.clone(), stop.clone(), results.clone());
            workers.push(std::thread::spawn(move || {
                let _ = ns.run_blocking(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let at = origin + interval * k as u32;
                        let now = Instant::now();
                        if at > now {
                            std::thread::sleep(at - now);
                        }
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let ok = TcpStream::connect_timeout(&SocketAddr::from((to, PORT)), timeout)
                            .is_ok();
                        results
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((k, ok));
                    }
                });
            }));
        }
        Ok(Self {
            origin,
            interval,
            stop,
            results,
            workers,
        })
    }

    /// The slot starting at or after `t`.
    fn slot_at(&self, t: Instant) -> u64 {
        let since = t.saturating_duration_since(self.origin);
        since.as_nanos().div_ceil(self.interval.as_nanos().max(1)) as u64
    }

    fn start_of(&self, k: u64) -> Instant {
        self.origin + self.interval * k as u32
    }

    /// Waits until a probe started at or after slot `from` saw `verdict` and every
    /// probe before it finished; the earliest such slot.
    fn first(&self, from: u64, verdict: bool, deadline: Instant) -> Option<u64> {
        loop {
            {
                let results = self.results.lock().unwrap_or_else(|p| p.into_inner());
                let hit = results
                    .iter()
                    .filter(|(k, ok)| *k >= from && *ok == verdict)
                    .map(|(k, _)| *k)
                    .min();
                if let Some(hit) = hit {
                    let done: std::collections::BTreeSet<u64> = results
                        .iter()
                        .map(|(k, _)| *k)
                        .filter(|k| (from..hit).contains(k))
                        .collect();
                    if done.len() as u64 == hit - from {
                        return Some(hit);
                    }
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.join();
        }
    }
}

/// Runs the benchmark.
pub async fn exec(args: NetpolBenchArgs) -> anyhow::Result<bool> {
    let dir = labfile::lab_dir(&args.dir)?;
    let (lab, _) = labfile::load(&dir)?;
    if lab.nodes.len() < 2 || lab.nodes.iter().any(|n| n.pid.is_none()) {
        bail!("netpol-bench needs a lab of at least 2 nodes that all run an agent");
    }
    if args.pods < 2 {
        bail!("--pods must be at least 2 (the watched client and target)");
    }
    let api = ApiServer::of_lab(&dir)?;
    let sync_timeout = Duration::from_secs(60);
    let mut rv = api
        .put_namespace(
            NAMESPACE,
            &BTreeMap::from([("bench".to_string(), "netpol".to_string())]),
        )
        .await?;

    // Pods: p0 the client on node1, p1 the target on node2, the rest in groups.
    let t = Instant::now();
    let existing: BTreeMap<String, PodRecord> = labfile::pods(&dir)?
        .into_iter()
        .filter(|p| p.namespace == NAMESPACE)
        .map(|p| (p.name.clone(), p))
        .collect();
    let mut pods: Vec<PodRecord> = Vec::new();
    for i in 0..args.pods {
        let name = format!("p{i}");
        let labels = match i {
            0 => BTreeMap::from([("role".to_string(), "client".to_string())]),
            1 => BTreeMap::from([("role".to_string(), "target".to_string())]),
            _ => BTreeMap::from([(
                "group".to_string(),
                format!("g{}", i % args.policies.max(1)),
            )]),
        };
        if let Some(p) = existing.get(&name).filter(|p| p.labels == labels) {
            pods.push(p.clone());
            continue;
        }
        if let Some(p) = existing.get(&name) {
            pod::del(&dir, &p.node, NAMESPACE, &name).await?;
        }
        let node = &lab.nodes[i % lab.nodes.len()].name;
        let spec = PodSpec {
            labels,
            ports: vec![ContainerPort::tcp(PORT)],
            wait: None,
        };
        let (record, _, _, v) = pod::add_with(&dir, node, NAMESPACE, &name, &spec)
            .await
            .with_context(|| format!("pod add {NAMESPACE}/{name} on {node}"))?;
        rv = rv.max(v);
        pods.push(record);
    }
    for k in 0..args.policies {
        let policy = json!({
            "metadata": {"name": format!("background-{k}"), "namespace": NAMESPACE},
            "spec": {
                "podSelector": {"matchLabels": {"group": format!("g{k}")}},
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [{"podSelector": {"matchLabels": {"group": format!("g{}", (k + 1) % args.policies)}}}],
                    "ports": [{"port": PORT, "protocol": "TCP"}],
                }],
            },
        });
        rv = rv.max(api.put_policy(&policy).await?);
    }
    if let Some(v) = api.delete_policy(NAMESPACE, WATCHED_POLICY).await? {
        rv = rv.max(v);
    }
    apiserver::wait_enforced(&lab, rv, sync_timeout, Strictness::Strict).await?;
    if !args.json {
        println!(
            "setup: {} pods, {} policies in {:.1} s",
            pods.len(),
            args.policies,
            t.elapsed().as_secs_f64()
        );
    }

    let (client, target) = (pods[0].clone(), pods[1].clone());
    let interval = Duration::from_millis(args.interval_ms.max(1));
    let train = ProbeTrain::start(
        &client.netns,
        target.ip,
        interval,
        Duration::from_millis(100),
    )?;
    let deadline = |t: Instant| t + Duration::from_secs(args.timeout_s);
    let deny = json!({
        "metadata": {"name": WATCHED_POLICY, "namespace": NAMESPACE},
        "spec": {"podSelector": {"matchLabels": {"role": "target"}}, "policyTypes": ["Ingress"], "ingress": []},
    });
    let (mut block, mut allow, mut synced) = (Vec::new(), Vec::new(), Vec::new());
    let result = async {
        // The flow must be allowed before the first round.
        let now = train.slot_at(Instant::now());
        tokio::task::block_in_place(|| train.first(now, true, deadline(Instant::now())))
            .context("the watched flow is not allowed before the benchmark starts")?;
        for round in 0..args.rounds {
            for (blocking, samples) in [(true, &mut block), (false, &mut allow)] {
                let v = if blocking {
                    api.put_policy(&deny).await?
                } else {
                    api.delete_policy(NAMESPACE, WATCHED_POLICY)
                        .await?
                        .context("the watched policy vanished")?
                };
                let answered = Instant::now();
                let from = train.slot_at(answered);
                let sync =
                    apiserver::wait_enforced(&lab, v, sync_timeout, Strictness::Strict).await?;
                synced.push(sync);
                let hit = tokio::task::block_in_place(|| {
                    train.first(from, !blocking, deadline(answered))
                })
                .with_context(|| {
                    format!(
                        "round {round}: the flow was not {} within {} s",
                        if blocking { "blocked" } else { "allowed" },
                        args.timeout_s
                    )
                })?;
                samples.push(train.start_of(hit).saturating_duration_since(answered));
                // Let the flow settle before the next write.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        anyhow::Ok(())
    }
    .await;
    train.stop();
    let _ = api.delete_policy(NAMESPACE, WATCHED_POLICY).await;
    if !args.keep {
        for k in 0..args.policies {
            let _ = api
                .delete_policy(NAMESPACE, &format!("background-{k}"))
                .await;
        }
        for p in &pods {
            pod::del(&dir, &p.node, NAMESPACE, &p.name).await?;
        }
    }
    result?;
    let all: Vec<Duration> = block.iter().chain(allow.iter()).copied().collect();
    let report = Report {
        pods: pods.len(),
        policies: args.policies,
        flow: (client.node.clone(), target.node.clone()),
        block: Latency::of(&block),
        allow: Latency::of(&allow),
        all: Latency::of(&all),
        agent_synced: Latency::of(&synced),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "enforcement latency, {} pods, {} policies, flow {} → {} (probe every {} ms):",
            report.pods, report.policies, report.flow.0, report.flow.1, args.interval_ms
        );
        println!(
            "{:<34} {:>4} {:>8} {:>8} {:>8} {:>8}",
            "", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        for (what, l) in [
            ("policy created → flow blocked", &report.block),
            ("policy deleted → flow allowed", &report.allow),
            ("both", &report.all),
            ("agents report synced (/v1/policy)", &report.agent_synced),
        ] {
            println!(
                "{what:<34} {:>4} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
                l.n, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
            );
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(&samples);
        assert_eq!(
            (l.n, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms),
            (100, 50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(Latency::of(&[]).n, 0);
    }
}
