//! `hostnic-agent`: parse flags, set up logging, build the adapters, call
//! [`hostnic_agent::run`]. Every flag can also be given as an `HOSTNIC_*`
//! environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use hostnic_agent::pods::{PodSourceKind, StaticPods};
use hostnic_agent::policy::{NftPolicy, PolicyDeps};
use hostnic_agent::settings::{LogFormat, Settings};
use hostnic_agent::{Deps, HostEvent, Metrics, NodeReporter};
use hostnic_core::ports::{PodSource, SystemClock};
use hostnic_core::types::InstanceId;
use hostnic_linux::policy::PolicyRenderer;
use hostnic_linux::{LinkEvent, LinuxHost, LinuxHostConfig};
use hostnic_qingcloud::sim::{SimConfig, Simulator};
use hostnic_qingcloud::{ClientOptions, Config, QingCloudClient};

/// Which cloud the agent talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CloudKind {
    /// The QingCloud API (endpoint from the credentials file).
    Qingcloud,
    /// An in-process simulator of the API (demos).
    Sim,
}

/// Which datapath the agent drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum HostKind {
    /// rtnetlink + nftables.
    Linux,
}

/// The hostnic node agent: owns the node's NICs and serves the hostnic CNI plugin.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The agent's YAML configuration (see deploy/agent.example.yaml); defaults apply without it.
    #[arg(long, env = "HOSTNIC_CONFIG")]
    config: Option<PathBuf>,
    /// The `qcsecret` config.yaml (credentials, zone, endpoint).
    #[arg(
        long,
        env = "HOSTNIC_CREDENTIALS",
        default_value = "/etc/qingcloud/config.yaml"
    )]
    credentials: PathBuf,
    /// The instance id; default: the content of /etc/qingcloud/instance-id
    /// (with --cloud sim: the simulator's first instance).
    #[arg(long, env = "HOSTNIC_INSTANCE_ID")]
    instance_id: Option<String>,
    /// The cloud to talk to.
    #[arg(long, env = "HOSTNIC_CLOUD", value_enum, default_value = "qingcloud")]
    cloud: CloudKind,
    /// Attach latency of the in-process simulator (--cloud sim), in milliseconds.
    #[arg(long, env = "HOSTNIC_SIM_ATTACH_LATENCY_MS", default_value_t = 500)]
    sim_attach_latency_ms: u64,
    /// Where the pods of this node come from: `none`, `kube` or `static:FILE`.
    #[arg(long, env = "HOSTNIC_PODS", default_value = "none")]
    pods: PodSourceKind,
    /// With `--pods kube`: the kubeconfig; default: in-cluster service account
    /// (or $KUBECONFIG, ~/.kube/config).
    #[arg(long, env = "HOSTNIC_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// With `--pods kube`: this node's name (the DaemonSet sets it from spec.nodeName).
    #[arg(long, env = "HOSTNIC_NODE_NAME")]
    node_name: Option<String>,
    /// With `--pods kube`: enforce Kubernetes NetworkPolicy on this node's pods
    /// (cluster-wide watches of policies, namespaces and pods; `false` turns it off).
    #[arg(
        long,
        env = "HOSTNIC_NETWORK_POLICY",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    network_policy: bool,
    /// The datapath.
    #[arg(long, env = "HOSTNIC_HOST", value_enum, default_value = "linux")]
    host: HostKind,
    /// Overrides `socket` of the config file.
    #[arg(long, env = "HOSTNIC_SOCKET")]
    socket: Option<PathBuf>,
    /// Overrides `state_dir` of the config file.
    #[arg(long, env = "HOSTNIC_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Overrides `metrics_addr` of the config file.
    #[arg(long, env = "HOSTNIC_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Overrides `cni_conf_dir` of the config file.
    #[arg(long, env = "HOSTNIC_CNI_CONF_DIR")]
    cni_conf_dir: Option<PathBuf>,
    /// Overrides `cni_bin_dir` of the config file.
    #[arg(long, env = "HOSTNIC_CNI_BIN_DIR")]
    cni_bin_dir: Option<PathBuf>,
    /// Overrides `plugin_binary` of the config file.
    #[arg(long, env = "HOSTNIC_PLUGIN_BINARY")]
    plugin_binary: Option<PathBuf>,
    /// Overrides `host_netns` of the config file (a namespace path holding the node's NICs).
    #[arg(long, env = "HOSTNIC_HOST_NETNS")]
    host_netns: Option<PathBuf>,
    /// Overrides `log_format` of the config file.
    #[arg(long, env = "HOSTNIC_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Prints the CNI conflist this agent would write on this node (from the
    /// configuration and what is in `cni_bin_dir`), then exits without starting.
    #[arg(long)]
    print_conflist: bool,
}

impl Cli {
    fn settings(&self) -> anyhow::Result<Settings> {
        let mut s = match &self.config {
            Some(path) => Settings::load(path)?,
            None => Settings::default(),
        };
        let set = |slot: &mut PathBuf, v: &Option<PathBuf>| {
            if let Some(v) = v {
                *slot = v.clone();
            }
        };
        set(&mut s.socket, &self.socket);
        set(&mut s.state_dir, &self.state_dir);
        set(&mut s.cni_conf_dir, &self.cni_conf_dir);
        set(&mut s.cni_bin_dir, &self.cni_bin_dir);
        if let Some(a) = self.metrics_addr {
            s.metrics_addr = a;
        }
        if self.plugin_binary.is_some() {
            s.plugin_binary = self.plugin_binary.clone();
        }
        if self.host_netns.is_some() {
            s.host_netns = self.host_netns.clone();
        }
        if let Some(f) = self.log_format {
            s.log_format = f;
        }
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
    let mut settings = cli.settings()?;
    if cli.print_conflist {
        use std::io::Write as _;
        let (_, why) = hostnic_agent::cniconf::chains_portmap(&settings);
        eprintln!("{why}");
        std::io::stdout().write_all(&hostnic_agent::cniconf::render(&settings))?;
        return Ok(());
    }
    init_tracing(settings.log_format);
    let metrics = Arc::new(Metrics::default());

    // The cloud.
    let mut _sim = None;
    let (client, default_instance) = match cli.cloud {
        CloudKind::Qingcloud => {
            let config = Config::load(&cli.credentials)
                .with_context(|| format!("credentials {}", cli.credentials.display()))?;
            let client = QingCloudClient::new(&config, ClientOptions::from_config(&config))?;
            (client, None)
        }
        CloudKind::Sim => {
            let sim_config = SimConfig {
                attach_latency: std::time::Duration::from_millis(cli.sim_attach_latency_ms),
                ..SimConfig::new("HOSTNICSIM", "hostnic-sim-secret")
            };
            let first = sim_config.topology.instances.first().map(|i| i.id.clone());
            let sim = Simulator::start(sim_config, None).await?;
            tracing::info!(url = %sim.url(), "in-process QingCloud simulator");
            let client = QingCloudClient::for_url(
                &sim.url(),
                "HOSTNICSIM",
                hostnic_qingcloud::Secret::new("hostnic-sim-secret"),
                &sim.zone(),
                ClientOptions::default(),
            )?;
            _sim = Some(sim);
            (client, first)
        }
    };
    client.add_observer(metrics.clone());

    let instance = match (&cli.instance_id, default_instance) {
        (Some(id), _) => id.clone(),
        (None, Some(id)) => id,
        (None, None) => std::fs::read_to_string("/etc/qingcloud/instance-id")
            .context("no --instance-id and /etc/qingcloud/instance-id is unreadable")?
            .trim()
            .to_string(),
    };
    anyhow::ensure!(!instance.is_empty(), "the instance id is empty");

    // The host.
    let HostKind::Linux = cli.host;
    let host = LinuxHost::new(LinuxHostConfig {
        veth_prefix: settings.pool.veth_prefix.clone(),
        mtu: settings.mtu,
        table_base: settings.pool.table_base,
        snat: !settings.external_snat,
        host_netns: settings.host_netns.clone(),
        ..LinuxHostConfig::default()
    })
    .await
    .context("host datapath")?;
    let nic_events = match host.link_events().await {
        Ok(events) => Some(
            events
                .map(|e| match e {
                    LinkEvent::LinkChanged { .. } => HostEvent::NicAppeared,
                    LinkEvent::LinkRemoved { nic } => HostEvent::NicRemoved(nic),
                    LinkEvent::Ipv4AddressAdded { nic, .. } => HostEvent::NicAddressAdded(nic),
                })
                .boxed(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "no link events; NIC arrival is noticed on the pool tick");
            None
        }
    };

    // The pods.
    let mut reporter = None;
    let mut policy = None;
    let pods: Option<Arc<dyn PodSource>> = match &cli.pods {
        PodSourceKind::None => None,
        PodSourceKind::Static(path) => Some(Arc::new(StaticPods::new(path))),
        PodSourceKind::Kube => {
            let node = cli
                .node_name
                .clone()
                .context("--pods kube needs --node-name (HOSTNIC_NODE_NAME)")?;
            let client = hostnic_k8s::client(cli.kubeconfig.as_deref()).await?;
            let k8s = hostnic_k8s::adapter(client.clone(), &node);
            let (ns, nft) = (host.host_netns().clone(), host.config().nft_binary.clone());
            if cli.network_policy {
                tracing::info!("enforcing NetworkPolicy");
                policy = Some(PolicyDeps {
                    source: Arc::new(hostnic_k8s::KubePolicySource::spawn(client)),
                    dataplane: Box::new(NftPolicy::new(Some(ns), nft)),
                });
            } else {
                let mut renderer = PolicyRenderer::new(Some(ns), nft);
                // Enforcement turned off: chains an earlier run programmed must not
                // keep isolating pods nobody enforces policy for any more.
                let removed =
                    tokio::task::spawn_blocking(move || renderer.remove_all_blocking()).await;
                match removed {
                    Ok(Ok(())) => tracing::info!("NetworkPolicy off; policy chains removed"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot remove policy chains"),
                    Err(e) => tracing::warn!(error = %e, "cannot remove policy chains"),
                }
            }
            if settings.vxnets.is_empty() {
                // The node annotation chooses the vxnets when the config names none; an
                // unreachable API server delays the start by at most 30 s.
                match k8s
                    .node
                    .vxnets_with_retry(std::time::Duration::from_secs(30))
                    .await
                {
                    Ok(vxnets) if !vxnets.is_empty() => {
                        tracing::info!(?vxnets, "vxnets from the node annotation");
                        settings.vxnets = vxnets;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "node vxnet annotation unreadable"),
                }
            }
            let k8s = Arc::new(k8s);
            reporter = Some(Arc::new(KubeReporter(k8s.clone())) as Arc<dyn NodeReporter>);
            Some(Arc::new(KubeAdapterPods(k8s)) as Arc<dyn PodSource>)
        }
    };

    let deps = Deps {
        cloud: client,
        host,
        clock: SystemClock,
        pods,
        nic_events,
        metrics,
        reporter,
        policy,
    };
    hostnic_agent::run(deps, settings, InstanceId::new(instance), shutdown_signal()).await?;
    Ok(())
}

/// The Kubernetes adapter's pod watch as the agent's pod source.
struct KubeAdapterPods(Arc<hostnic_k8s::KubeAdapter>);

#[async_trait::async_trait]
impl PodSource for KubeAdapterPods {
    async fn pods(
        &self,
    ) -> Result<Vec<hostnic_core::types::PodInfo>, hostnic_core::ports::PodSourceError> {
        self.0.pods.pods().await
    }

    fn changes(&self) -> futures::stream::BoxStream<'static, hostnic_core::types::PodEvent> {
        self.0.pods.changes()
    }
}

/// Publishes capacity on the Node and records events on pods that got no NIC.
struct KubeReporter(Arc<hostnic_k8s::KubeAdapter>);

impl NodeReporter for KubeReporter {
    fn capacity(&self, free_nics: u32, assignable_pods: u32) {
        self.0.capacity.publish(hostnic_k8s::Capacity {
            free_nics,
            assignable_pods,
        });
    }

    fn nic_shortage(&self, pod: &hostnic_core::types::PodKey, quota: bool, message: &str) {
        // Pods the runtime did not name (podman, ctr) have nowhere to put an event.
        if pod.namespace.is_empty() || pod.name.is_empty() {
            return;
        }
        let shortage = if quota {
            hostnic_k8s::NicShortage::QuotaExceeded
        } else {
            hostnic_k8s::NicShortage::NoFreeNic
        };
        self.0
            .record_nic_shortage(&pod.namespace, &pod.name, shortage, message);
    }

    fn checkpoint_recovered(&self, recovery: &hostnic_core::recovery::Recovery) {
        for pod in &recovery.pods {
            let Some((namespace, name)) = pod.pod.as_deref().and_then(|p| p.split_once('/')) else {
                continue;
            };
            self.0.record_checkpoint_recovered(
                namespace,
                name,
                format!(
                    "the hostnic agent's checkpoint was {}; this pod keeps its address {} \
                     (NIC {}), recovered from the node",
                    recovery.reason.describe(),
                    pod.ip,
                    pod.nic
                ),
            );
        }
    }
}
