//! `qingcloud-sim`: a signature-checking QingCloud API simulator on loopback.
//!
//! Prints one JSON line `{"url": "http://127.0.0.1:PORT/iaas/", ...}` on stdout
//! when ready, logs to stderr, and runs until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use hostnic_qingcloud::sim::{SimConfig, Simulator, Topology};

/// A signature-checking simulator of the QingCloud IaaS API.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on (keep it on loopback); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The accepted access key id.
    #[arg(long)]
    access_key_id: String,
    /// Its secret.
    #[arg(long, env = "QINGCLOUD_SIM_SECRET", hide_env_values = true)]
    secret_access_key: String,
    /// The zone (overrides the topology's).
    #[arg(long)]
    zone: Option<String>,
    /// A YAML/JSON topology file (routers, vxnets, instances); default: the built-in one.
    #[arg(long)]
    topology: Option<PathBuf>,
    /// How long an attach/detach job works before the NICs change.
    #[arg(long, default_value_t = 500)]
    attach_latency_ms: u64,
    /// How long a job stays pending.
    #[arg(long, default_value_t = 100)]
    job_latency_ms: u64,
    /// Probability of answering 5000/5100 instead of running the action.
    #[arg(long, default_value_t = 0.0)]
    fault_rate: f64,
    /// Requests per second above which the API answers 2500 (0 = unlimited).
    #[arg(long, default_value_t = 0.0)]
    rate_limit: f64,
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
    let mut topology = match &args.topology {
        Some(path) => Topology::load(path)?,
        None => Topology::default(),
    };
    if let Some(zone) = &args.zone {
        topology.zone = zone.clone();
    }
    let config = SimConfig {
        listen: args.listen,
        topology,
        attach_latency: Duration::from_millis(args.attach_latency_ms),
        job_latency: Duration::from_millis(args.job_latency_ms),
        fault_rate: args.fault_rate,
        rate_limit_qps: args.rate_limit,
        ..SimConfig::new(args.access_key_id, args.secret_access_key)
    };
    let sim = Simulator::start(config, None)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let ready = serde_json::json!({
        "url": sim.url(),
        "listen": sim.addr().to_string(),
        "zone": sim.zone(),
        "admin": format!("http://{}/_sim/", sim.addr()),
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
