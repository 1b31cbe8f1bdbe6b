//! `qingcloud-sim`: a signature-checking QingCloud API simulator on loopback.
//!
//! Prints one JSON line `{"url": "http://127.0.0.1:PORT/iaas/", ...}` on stdout
//! when ready, logs to stderr, and runs until SIGINT/SIGTERM. The secret comes
//! from the environment (`QINGCLOUD_SIM_SECRET`), a file (`--secret-file`) or a
//! `qcsecret` credentials file (`--credentials`), never from the command line,
//! where every user of the machine could read it in `ps`.
//! `docs/simulator.md` describes the flags, the admin endpoints and the fidelity.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use hostnic_qingcloud::Config;
use hostnic_qingcloud::sim::{SimConfig, Simulator, Topology, WindowLimit};

/// A signature-checking simulator of the QingCloud IaaS API.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on (keep it on loopback); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The accepted access key id (default: the credentials file's).
    #[arg(long)]
    access_key_id: Option<String>,
    /// A file holding the secret access key (surrounding whitespace ignored).
    /// Default: the environment variable QINGCLOUD_SIM_SECRET.
    #[arg(long, conflicts_with = "credentials")]
    secret_file: Option<PathBuf>,
    /// A `qcsecret`-style config.yaml: its access key id, secret and zone are the
    /// simulator's, so the same file serves the simulator and its clients.
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// Refused: a secret on the command line is visible to every user in `ps`.
    #[arg(long, hide = true, value_name = "SECRET")]
    secret_access_key: Option<String>,
    /// The zone (overrides the topology's and the credentials file's).
    #[arg(long)]
    zone: Option<String>,
    /// A YAML/JSON topology file (routers, vxnets, instances); default: the built-in one.
    #[arg(long, conflicts_with = "instances")]
    topology: Option<PathBuf>,
    /// A generated VPC of this many instances (`i-sim00001`…), with `--vxnets`.
    #[arg(long, requires = "vxnets")]
    instances: Option<usize>,
    /// The generated VPC's vxnets (/24 each, `vxnet-sim1`…, under router `rtr-sim1`).
    #[arg(long, requires = "instances")]
    vxnets: Option<usize>,
    /// The API request quota per access key: REQUESTS/SECONDS (simulated), or `off`.
    #[arg(long, default_value = "2000/3600")]
    quota: String,
    /// Simulated seconds per real second: job latencies and the quota window run
    /// this many times faster.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// How long a job works before its effect, in simulated milliseconds.
    #[arg(long, default_value_t = 500)]
    attach_latency_ms: u64,
    /// How long a job stays pending, in simulated milliseconds.
    #[arg(long, default_value_t = 100)]
    job_latency_ms: u64,
    /// Probability of answering 5000/5100 instead of running the action.
    #[arg(long, default_value_t = 0.0)]
    fault_rate: f64,
    /// Requests per second above which the API answers 2500 (0 = unlimited), besides the quota.
    #[arg(long, default_value_t = 0.0)]
    rate_limit: f64,
}

/// The access key id, secret and zone to serve.
fn credentials(args: &Args) -> anyhow::Result<(String, String, Option<String>)> {
    if args.secret_access_key.is_some() {
        bail!(
            "--secret-access-key is not accepted: a secret on the command line is visible in `ps`; \
             use QINGCLOUD_SIM_SECRET, --secret-file FILE or --credentials FILE"
        );
    }
    if let Some(path) = &args.credentials {
        let config = Config::load(path)?;
        let key = args.access_key_id.clone().unwrap_or(config.access_key_id);
        return Ok((
            key,
            config.secret_access_key.expose().to_string(),
            Some(config.zone),
        ));
    }
    let key = args
        .access_key_id
        .clone()
        .context("--access-key-id is required (or --credentials FILE)")?;
    let secret = match &args.secret_file {
        Some(path) => read_secret(path)?,
        None => std::env::var("QINGCLOUD_SIM_SECRET").context(
            "no secret: set QINGCLOUD_SIM_SECRET, or give --secret-file FILE or --credentials FILE",
        )?,
    };
    if secret.is_empty() {
        bail!("the secret is empty");
    }
    Ok((key, secret, None))
}

fn read_secret(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the secret file {}", path.display()))?;
    Ok(text.trim().to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.fault_rate),
        "--fault-rate must be between 0 and 1"
    );
    anyhow::ensure!(
        args.time_scale.is_finite() && args.time_scale > 0.0,
        "--time-scale must be a positive number"
    );
    let quota = WindowLimit::parse_optional(&args.quota).context("--quota")?;
    let (access_key_id, secret, file_zone) = credentials(&args)?;
    let mut topology = match (&args.topology, args.instances, args.vxnets) {
        (Some(path), _, _) => Topology::load(path)?,
        (None, Some(instances), Some(vxnets)) => Topology::generated(instances, vxnets)
            .map_err(anyhow::Error::msg)
            .context("--instances/--vxnets")?,
        _ => Topology::default(),
    };
    if let Some(zone) = args.zone.clone().or(file_zone) {
        topology.zone = zone;
    }
    let (instances, vxnets) = (topology.instances.len(), topology.vxnets.len());
    let config = SimConfig {
        listen: args.listen,
        topology,
        attach_latency: Duration::from_millis(args.attach_latency_ms),
        job_latency: Duration::from_millis(args.job_latency_ms),
        fault_rate: args.fault_rate,
        rate_limit_qps: args.rate_limit,
        quota,
        time_scale: args.time_scale,
        ..SimConfig::new(access_key_id, secret)
    };
    let sim = Simulator::start(config, None)
        .await
        .with_context(|| format!("cannot start on {}", args.listen))?;
    let ready = serde_json::json!({
        "url": sim.url(),
        "listen": sim.addr().to_string(),
        "zone": sim.zone(),
        "admin": format!("http://{}/_sim/", sim.addr()),
        "quota": quota.map_or_else(|| "off".to_string(), |q| q.to_string()),
        "time_scale": args.time_scale,
        "instances": instances,
        "vxnets": vxnets,
    });
    println!("{ready}");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    sim.shutdown().await;
    Ok(())
}
