//! `hostnic-agent`: parse flags, set up logging, build the adapters, call
//! [`hostnic_agent::run`]. The flags are [`hostnic_agent::cli::Cli`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt;
use hostnic_agent::cli::{Cli, CloudKind, HostKind};
use hostnic_agent::pods::{PodSourceKind, StaticPods};
use hostnic_agent::policy::PolicyDeps;
use hostnic_agent::settings::LogFormat;
use hostnic_agent::{Deps, HostEvent, Metrics};
use hostnic_core::ports::{NodeReporter, PodSource, SystemClock};
use hostnic_core::types::InstanceId;
use hostnic_linux::policy::PolicyRenderer;
use hostnic_linux::{LinkEvent, LinuxHost, LinuxHostConfig};
use hostnic_qingcloud::{Config, QingCloudClient};

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
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
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
        eprintln!("{}", hostnic_agent::cniconf::chains_portmap(&settings).1);
        std::io::stdout().write_all(&hostnic_agent::cniconf::render(&settings))?;
        return Ok(());
    }
    init_tracing(settings.log_format);
    let metrics = Arc::new(Metrics::default());

    let CloudKind::Qingcloud = cli.cloud;
    let config = Config::load(&cli.credentials)
        .with_context(|| format!("credentials {}", cli.credentials.display()))?;
    let cloud = QingCloudClient::new(
        &config,
        hostnic_agent::cloud::client_options(&settings, &config),
    )?;
    cloud.add_observer(metrics.clone());
    let instance = match &cli.instance_id {
        Some(id) => id.clone(),
        None => std::fs::read_to_string("/etc/qingcloud/instance-id")
            .context("no --instance-id and /etc/qingcloud/instance-id is unreadable")?
            .trim()
            .to_string(),
    };
    anyhow::ensure!(!instance.is_empty(), "the instance id is empty");

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

    let (mut pods, mut reporter, mut policy) = (None::<Arc<dyn PodSource>>, None, None);
    match &cli.pods {
        PodSourceKind::None => {}
        PodSourceKind::Static(path) => pods = Some(Arc::new(StaticPods::new(path))),
        PodSourceKind::Kube => {
            let node = (cli.node_name.clone())
                .context("--pods kube needs --node-name (HOSTNIC_NODE_NAME)")?;
            let client = hostnic_k8s::client(cli.kubeconfig.as_deref()).await?;
            let k8s = Arc::new(hostnic_k8s::adapter(client.clone(), &node));
            let renderer =
                PolicyRenderer::new(Some(host.host_netns().clone()), &host.config().nft_binary);
            if cli.network_policy {
                tracing::info!("enforcing NetworkPolicy");
                let source = Arc::new(hostnic_k8s::KubePolicySource::spawn(client));
                policy = Some(PolicyDeps {
                    source,
                    dataplane: Box::new(renderer),
                });
            } else {
                // Enforcement turned off: chains an earlier run programmed go.
                match renderer.remove_all().await {
                    Ok(()) => tracing::info!("NetworkPolicy off; policy chains removed"),
                    Err(e) => tracing::warn!(error = %e, "cannot remove policy chains"),
                }
            }
            if settings.vxnets.is_empty() {
                // An unreachable API server delays the start by at most 30 s.
                settings.vxnets = k8s.node.annotated_vxnets(Duration::from_secs(30)).await;
            }
            reporter = Some(k8s.clone() as Arc<dyn NodeReporter>);
            pods = Some(k8s);
        }
    }

    let client = hostnic_agent::CloudClient {
        client: cloud.clone(),
        credentials: Some(cli.credentials.clone()),
    };
    let deps = Deps {
        cloud,
        host,
        clock: SystemClock,
        pods,
        nic_events,
        metrics,
        reporter,
        policy,
        client: Some(client),
        time_scale: 1.0,
    };
    hostnic_agent::run(deps, settings, InstanceId::new(instance), shutdown_signal()).await?;
    Ok(())
}
