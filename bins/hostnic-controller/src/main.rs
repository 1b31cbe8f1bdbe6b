//! `hostnic-controller`: parse flags, set up logging, build the QingCloud and
//! Kubernetes clients, call [`hostnic_controller::run`]. Every flag can also be
//! given as an environment variable (`HOSTNIC_*`; the identity defaults to the
//! pod's name).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use hostnic_controller::{Deps, FileConfig, Settings};
use hostnic_qingcloud::{ClientOptions, Config, QingCloudClient, WindowLimit};

/// Log output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The hostnic controller: the one caller of the QingCloud API for the cluster.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The `qcsecret` config.yaml (credentials, zone, endpoint).
    #[arg(
        long,
        env = "HOSTNIC_CREDENTIALS",
        default_value = "/etc/qingcloud/qcsecret/config.yaml"
    )]
    credentials: PathBuf,
    /// A YAML file of settings (`fleet:`, `budget:`, `metrics_addr:`).
    #[arg(long, env = "HOSTNIC_CONFIG")]
    config: Option<PathBuf>,
    /// The kubeconfig; default: in-cluster service account (or $KUBECONFIG).
    #[arg(long, env = "HOSTNIC_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The cluster's name: NICs are named `hostnic_<name>`, which scopes garbage
    /// collection to this cluster. Every cluster of an account needs its own.
    #[arg(long, env = "HOSTNIC_CLUSTER_NAME")]
    cluster_name: Option<String>,
    /// The request budget of the controller, REQUESTS/SECONDS (default 1500/3600,
    /// of the account's 2000/3600).
    #[arg(long, env = "HOSTNIC_BUDGET")]
    budget: Option<WindowLimit>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, env = "HOSTNIC_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Namespace of the leader election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    lease_namespace: String,
    /// Name of the leader election Lease.
    #[arg(long, env = "HOSTNIC_LEASE_NAME", default_value = "hostnic-controller")]
    lease_name: String,
    /// This replica's identity on the Lease (default: the pod or host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Simulated seconds per real second, against a simulator run with the same
    /// `--time-scale`: every duration (budget window, lease, planner) is shorter.
    #[arg(long, env = "HOSTNIC_TIME_SCALE", default_value_t = 1.0)]
    time_scale: f64,
    /// Log format.
    #[arg(long, env = "HOSTNIC_LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
}

impl Cli {
    fn settings(&self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "hostnic-controller".into());
        // Unique even if two replicas share a name (a restarted pod): a suffix.
        let suffix = std::process::id();
        let identity = format!("{}_{suffix}", self.identity.clone().unwrap_or(host));
        let mut s = Settings::new("kubernetes", &identity);
        if let Some(fleet) = file.fleet {
            s.fleet = fleet;
        }
        if let Some(b) = &file.budget {
            s.budget = b
                .parse()
                .map_err(|e| anyhow::anyhow!("budget in the config file: {e}"))?;
        }
        if let Some(a) = file.metrics_addr {
            s.metrics_addr = a;
        }
        if let Some(c) = &self.cluster_name {
            s.fleet.cluster = c.clone();
        }
        if let Some(b) = self.budget {
            s.budget = b;
        }
        if let Some(a) = self.metrics_addr {
            s.metrics_addr = a;
        }
        s.lease.namespace = self.lease_namespace.clone();
        s.lease.name = self.lease_name.clone();
        let s = s.time_scaled(self.time_scale);
        s.validate()?;
        Ok(s)
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown requested");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let settings = cli.settings()?;
    let config = Config::load(&cli.credentials)
        .with_context(|| format!("credentials {}", cli.credentials.display()))?;
    let options = ClientOptions {
        budget: Some(settings.budget),
        ..ClientOptions::from_config(&config)
    };
    let options = if cli.time_scale != 1.0 {
        ClientOptions {
            budget: Some(settings.budget),
            ..options.time_scaled(cli.time_scale)
        }
    } else {
        options
    };
    let cloud = QingCloudClient::new(&config, options)?;
    let kube = hostnic_k8s::client(cli.kubeconfig.as_deref()).await?;
    tracing::info!(
        cluster = %settings.fleet.cluster,
        budget = %settings.budget,
        identity = %settings.lease.identity,
        "hostnic-controller starting"
    );
    hostnic_controller::run(Deps { cloud, kube }, settings, shutdown_signal()).await
}
