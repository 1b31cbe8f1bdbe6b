//! What the binary does before [`run_started`](crate::run_started): logging, the
//! stop signal, the one-shot modes (`--print-conflist`, `--install-cni-only`),
//! the kernel's link events, and the Kubernetes adapters, each start-up step
//! through [`retry`](crate::startup::retry) so its cause and fix show on `/readyz`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use hostnic_core::ports::{Cloud, NodeReporter, PodSource};
use hostnic_core::types::InstanceId;
use hostnic_linux::policy::PolicyRenderer;
use hostnic_linux::{LinkEvent, LinuxHost};
use tokio::sync::watch;

use crate::cli::Cli;
use crate::pods::{PodSourceKind, StaticPods};
use crate::policy::PolicyDeps;
use crate::settings::{LogFormat, Settings};
use crate::startup::{Failed, Pace, Startup, retry};
use crate::{HostEvent, Metrics};

/// Sets up logging: JSON or text, and ANSI colours only when stderr is a terminal
/// (a log file or `kubectl logs` gets plain text).
pub fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A flag that turns true on SIGTERM or SIGINT.
pub fn stop_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
    });
    rx
}

/// `--print-conflist`: the conflist on stdout, why it chains `portmap` or not on stderr.
pub fn print_conflist(settings: &Settings) -> ExitCode {
    use std::io::Write as _;
    eprintln!("{}", crate::cniconf::chains_portmap(settings).1);
    let _ = std::io::stdout().write_all(&crate::cniconf::render(settings));
    ExitCode::SUCCESS
}

/// `--install-cni-only`: installs the plugins into `cni_bin_dir` and says what.
pub fn install_cni_only(settings: &Settings) -> ExitCode {
    let yes_no = |done: bool, no: &str| {
        if done {
            "yes".to_string()
        } else {
            format!("no ({no})")
        }
    };
    match crate::cniconf::install_binaries(settings) {
        Ok(installed) => {
            println!(
                "installed into {}: hostnic {}, portmap {}",
                settings.cni_bin_dir.display(),
                yes_no(installed.hostnic, "no plugin next to the agent"),
                yes_no(
                    installed.portmap,
                    "none shipped, one already there, or portmap: never"
                ),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "hostnic-agent: cannot install the CNI plugins into {}: {e}",
                settings.cni_bin_dir.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// The kernel's NIC link events as the agent reacts to them; `None` when the
/// datapath cannot subscribe (NIC arrival is then noticed on the pool tick).
pub async fn link_events(host: &LinuxHost) -> Option<BoxStream<'static, HostEvent>> {
    match host.link_events().await {
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
    }
}

/// What the agent learns from the cluster: the pods, the node's reporter, the
/// NetworkPolicy enforcement.
#[derive(Default)]
pub struct Cluster {
    /// Which pods should exist on the node.
    pub pods: Option<Arc<dyn PodSource>>,
    /// Where the node's capacity and shortages are reported.
    pub reporter: Option<Arc<dyn NodeReporter>>,
    /// NetworkPolicy enforcement, when on.
    pub policy: Option<PolicyDeps>,
}

/// The pod source of `--pods` and, with `kube`, the Kubernetes adapters (the
/// node's vxnets from its annotation when `settings` names none); `None` when
/// the agent stopped while connecting.
pub async fn cluster(
    cli: &Cli,
    settings: &mut Settings,
    host: &LinuxHost,
    (startup, metrics, pace): (&Startup, &Metrics, &mut Pace),
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<Option<Cluster>> {
    let node = match &cli.pods {
        PodSourceKind::None => return Ok(Some(Cluster::default())),
        PodSourceKind::Static(path) => {
            let pods = Some(Arc::new(StaticPods::new(path)) as Arc<dyn PodSource>);
            return Ok(Some(Cluster {
                pods,
                ..Cluster::default()
            }));
        }
        PodSourceKind::Kube => cli
            .node_name
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--pods kube needs --node-name (HOSTNIC_NODE_NAME)"))?,
    };
    let Some(client) = kube_client(cli, (startup, metrics, pace), stop).await else {
        return Ok(None);
    };
    let k8s = Arc::new(hostnic_k8s::adapter(client.clone(), &node));
    let renderer = PolicyRenderer::new(Some(host.host_netns().clone()), &host.config().nft_binary);
    let mut policy = None;
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
    Ok(Some(Cluster {
        reporter: Some(k8s.clone() as Arc<dyn NodeReporter>),
        pods: Some(k8s),
        policy,
    }))
}

/// The Kubernetes client, retried until the API server's configuration is found.
async fn kube_client(
    cli: &Cli,
    (startup, metrics, pace): (&Startup, &Metrics, &mut Pace),
    stop: &mut watch::Receiver<bool>,
) -> Option<hostnic_k8s::Client> {
    let kubeconfig = cli.kubeconfig.clone();
    let step = "connecting to the Kubernetes API server";
    let connect = || {
        let kubeconfig = kubeconfig.clone();
        async move {
            hostnic_k8s::client(kubeconfig.as_deref()).await.map_err(|e| {
                Failed::new(
                    e,
                    "no Kubernetes client configuration",
                    "run in the cluster with the DaemonSet's ServiceAccount, or pass --kubeconfig",
                    true,
                )
            })
        }
    };
    retry(startup, metrics, pace, step, stop, |_| false, connect).await
}

/// Controller mode's cloud: no credentials; the node's NICs come from its
/// `HostnicNode`'s status (the core's `SuppliedCloud` over `KubeNicSupply`), its
/// instance's primary NIC from the host's default route. `None` when stopped.
pub async fn controller_cloud(
    cli: &Cli,
    settings: &mut Settings,
    host: &LinuxHost,
    instance: &InstanceId,
    (startup, metrics, pace): (&Startup, &Metrics, &mut Pace),
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<Option<Arc<dyn Cloud>>> {
    let Some(node) = cli.node_name.clone() else {
        anyhow::bail!("controller mode needs --node-name (HOSTNIC_NODE_NAME)");
    };
    let Some(kube) = kube_client(cli, (startup, metrics, &mut *pace), stop).await else {
        return Ok(None);
    };
    let step = "finding the primary interface";
    let find = || async {
        host.primary_interface().await.map_err(|e| {
            Failed::new(
                e,
                "the node's primary interface is unknown",
                "controller mode takes the primary NIC from the main table's default route: \
                 check `ip route show default`",
                false,
            )
        })
    };
    let Some(p) = retry(startup, metrics, pace, step, stop, |_| false, find).await else {
        return Ok(None);
    };
    let primary = crate::supply::Primary {
        nic: p.nic,
        ip: p.ip,
        network: p.network,
        gateway: p.gateway,
    };
    tracing::info!(node = %node, "controller mode: the hostnic controller makes the cloud calls; no credentials on this node");
    let options = hostnic_k8s::SupplyOptions::default();
    let supply = Arc::new(hostnic_k8s::KubeNicSupply::spawn(kube, &node, options));
    let cloud = crate::supply::controller_cloud(supply, instance, &primary, settings);
    *settings = crate::supply::controller_settings(settings.clone());
    Ok(Some(Arc::new(cloud)))
}
