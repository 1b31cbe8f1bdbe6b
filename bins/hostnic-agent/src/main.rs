//! `hostnic-agent`: parse flags, set up logging, start the HTTP endpoint, build
//! the adapters, call [`hostnic_agent::run_started`]. The flags are
//! [`hostnic_agent::cli::Cli`].
//!
//! Every step that can fail before the agent runs (the credentials file, the
//! instance id, the datapath, the Kubernetes client) goes through the start-up
//! record, so its cause and fix show on `/readyz` and `hostnicctl status` and a
//! permanent failure is not retried in a tight loop.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures::StreamExt;
use hostnic_agent::cli::{Cli, CloudKind, HostKind};
use hostnic_agent::pods::{PodSourceKind, StaticPods};
use hostnic_agent::policy::PolicyDeps;
use hostnic_agent::settings::{AgentMode, LogFormat, Settings};
use hostnic_agent::startup::{self, Failed};
use hostnic_agent::{Deps, Endpoint, HostEvent, Metrics, Startup};
use hostnic_core::ports::{Cloud, NodeReporter, PodSource, SystemClock};
use hostnic_core::types::InstanceId;
use hostnic_linux::policy::PolicyRenderer;
use hostnic_linux::{LinkEvent, LinuxHost, LinuxHostConfig};
use hostnic_qingcloud::{Config, QingCloudClient};
use tokio::sync::watch;

/// The instance id file of a QingCloud instance.
const INSTANCE_ID_FILE: &str = "/etc/qingcloud/instance-id";

/// Sets up logging: JSON or text, and ANSI colours only when stderr is a terminal
/// (a log file or `kubectl logs` gets plain text).
fn init_tracing(format: LogFormat) {
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
fn stop_signal() -> watch::Receiver<bool> {
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

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let settings = match cli.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hostnic-agent: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if cli.print_conflist {
        use std::io::Write as _;
        eprintln!("{}", hostnic_agent::cniconf::chains_portmap(&settings).1);
        let _ = std::io::stdout().write_all(&hostnic_agent::cniconf::render(&settings));
        return std::process::ExitCode::SUCCESS;
    }
    if cli.install_cni_only {
        return match hostnic_agent::cniconf::install_binaries(&settings) {
            Ok(installed) => {
                println!(
                    "installed into {}: hostnic {}, portmap {}",
                    settings.cni_bin_dir.display(),
                    if installed.hostnic {
                        "yes"
                    } else {
                        "no (no plugin next to the agent)"
                    },
                    if installed.portmap {
                        "yes"
                    } else {
                        "no (none shipped, one already there, or portmap: never)"
                    },
                );
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "hostnic-agent: cannot install the CNI plugins into {}: {e}",
                    settings.cni_bin_dir.display()
                );
                std::process::ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hostnic-agent: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(agent(cli, settings)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("hostnic-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn agent(cli: Cli, mut settings: Settings) -> anyhow::Result<()> {
    init_tracing(settings.log_format);
    let b = startup::build();
    tracing::info!(version = %b.version, commit = %b.commit, "hostnic-agent starting");
    let direct = settings.mode == AgentMode::Direct;
    let mut inputs = Vec::new();
    if direct {
        inputs.push(cli.credentials.clone());
    }
    inputs.extend(cli.config.clone());
    if cli.instance_id.is_none() {
        inputs.push(PathBuf::from(INSTANCE_ID_FILE));
    }
    let startup = Arc::new(Startup::new(inputs));
    let metrics = Arc::new(Metrics::default());
    let endpoint = Endpoint::start(&settings, metrics.clone(), startup.clone()).await?;
    let mut stop = stop_signal();
    let mut pace = startup::Pace::default();

    let CloudKind::Qingcloud = cli.cloud;
    // Controller mode reads no credentials: the controller makes the cloud calls.
    let mut qingcloud = None;
    if direct {
        let credentials = cli.credentials.clone();
        let Some(cloud) = startup::retry(
            &startup,
            &metrics,
            &mut pace,
            "loading the credentials",
            &mut stop,
            |_| false,
            || {
                std::future::ready((|| {
                    let config = Config::load(&credentials).map_err(|e| {
                        Failed::new(
                            e,
                            "the qcsecret credentials file cannot be used",
                            &format!(
                                "create the Secret qcsecret with a config.yaml holding \
                                 qy_access_key_id, qy_secret_access_key and zone, mounted at {} \
                                 (HOSTNIC_CREDENTIALS); deploy/README.md",
                                credentials.display()
                            ),
                            true,
                        )
                    })?;
                    QingCloudClient::new(
                        &config,
                        hostnic_agent::cloud::client_options(&settings, &config),
                    )
                    .map_err(|e| {
                        Failed::new(
                            e,
                            "the cloud client cannot be built",
                            "check host, port and protocol in the qcsecret config.yaml",
                            true,
                        )
                    })
                })())
            },
        )
        .await
        else {
            return Ok(());
        };
        cloud.add_observer(metrics.clone());
        qingcloud = Some(cloud);
    }

    let flag = cli.instance_id.clone();
    let Some(instance) = startup::retry(
        &startup,
        &metrics,
        &mut pace,
        "reading the instance id",
        &mut stop,
        |_| false,
        || {
            std::future::ready(match &flag {
                Some(id) => Ok(id.clone()),
                None => std::fs::read_to_string(INSTANCE_ID_FILE)
                    .map_err(|e| {
                        Failed::new(
                            format!("{INSTANCE_ID_FILE}: {e}"),
                            "the node's instance id is unknown",
                            &format!(
                                "mount the node's {INSTANCE_ID_FILE} into the agent \
                                 (hostPath, as deploy/hostnic.yaml does) or pass \
                                 --instance-id"
                            ),
                            true,
                        )
                    })
                    .map(|s| s.trim().to_string())
                    .and_then(|id| {
                        if id.is_empty() {
                            Err(Failed::new(
                                format!("{INSTANCE_ID_FILE} is empty"),
                                "the node's instance id is unknown",
                                "write the instance id into the file (QingCloud images do)",
                                true,
                            ))
                        } else {
                            Ok(id)
                        }
                    }),
            })
        },
    )
    .await
    else {
        return Ok(());
    };

    let HostKind::Linux = cli.host;
    let host_config = LinuxHostConfig {
        veth_prefix: settings.pool.veth_prefix.clone(),
        mtu: settings.mtu,
        table_base: settings.pool.table_base,
        snat: !settings.external_snat,
        host_netns: settings.host_netns.clone(),
        ..LinuxHostConfig::default()
    };
    let Some(host) = startup::retry(
        &startup,
        &metrics,
        &mut pace,
        "opening the host datapath",
        &mut stop,
        |_| false,
        || {
            let config = host_config.clone();
            async move {
                LinuxHost::new(config).await.map_err(|e| {
                    let message = format!("host datapath: {e}");
                    let lower = message.to_ascii_lowercase();
                    if lower.contains("not permitted") || lower.contains("permission denied") {
                        Failed::new(
                            message,
                            "the agent may not change the node's network",
                            "run the agent as root with NET_ADMIN, NET_RAW and SYS_ADMIN (the \
                             DaemonSet's container is privileged; keep it so)",
                            true,
                        )
                    } else {
                        Failed::new(
                            message,
                            "the node's datapath cannot be opened",
                            "check that the kernel has netlink and nftables, and that the \
                             `nft` binary exists",
                            true,
                        )
                    }
                })
            }
        },
    )
    .await
    else {
        return Ok(());
    };
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
            let Some(node) = cli.node_name.clone() else {
                anyhow::bail!("--pods kube needs --node-name (HOSTNIC_NODE_NAME)");
            };
            let kubeconfig = cli.kubeconfig.clone();
            let Some(client) = startup::retry(
                &startup,
                &metrics,
                &mut pace,
                "connecting to the Kubernetes API server",
                &mut stop,
                |_| false,
                || {
                    let kubeconfig = kubeconfig.clone();
                    async move {
                        hostnic_k8s::client(kubeconfig.as_deref())
                            .await
                            .map_err(|e| {
                                Failed::new(
                                    e,
                                    "no Kubernetes client configuration",
                                    "run in the cluster with the DaemonSet's ServiceAccount, or \
                                     pass --kubeconfig",
                                    true,
                                )
                            })
                    }
                },
            )
            .await
            else {
                return Ok(());
            };
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

    let (cloud, client): (Arc<dyn Cloud>, _) = match qingcloud {
        Some(cloud) => (
            Arc::new(cloud.clone()),
            Some(hostnic_agent::CloudClient {
                client: cloud,
                credentials: Some(cli.credentials.clone()),
            }),
        ),
        None => {
            let Some(node) = cli.node_name.clone() else {
                anyhow::bail!("controller mode needs --node-name (HOSTNIC_NODE_NAME)");
            };
            let kubeconfig = cli.kubeconfig.clone();
            let Some(kube) = startup::retry(
                &startup,
                &metrics,
                &mut pace,
                "connecting to the Kubernetes API server",
                &mut stop,
                |_| false,
                || {
                    let kubeconfig = kubeconfig.clone();
                    async move {
                        hostnic_k8s::client(kubeconfig.as_deref())
                            .await
                            .map_err(|e| {
                                Failed::new(
                                    e,
                                    "no Kubernetes client configuration",
                                    "controller mode needs the API server: run in the cluster \
                                     with the DaemonSet's ServiceAccount, or pass --kubeconfig",
                                    true,
                                )
                            })
                    }
                },
            )
            .await
            else {
                return Ok(());
            };
            let Some(primary) = startup::retry(
                &startup,
                &metrics,
                &mut pace,
                "finding the primary interface",
                &mut stop,
                |_| false,
                || async {
                    host.primary_interface().await.map_err(|e| {
                        Failed::new(
                            e,
                            "the node's primary interface is unknown",
                            "controller mode takes the primary NIC from the main table's \
                             default route: check `ip route show default`",
                            false,
                        )
                    })
                },
            )
            .await
            else {
                return Ok(());
            };
            let primary = hostnic_agent::supply::Primary {
                nic: primary.nic,
                ip: primary.ip,
                network: primary.network,
                gateway: primary.gateway,
            };
            tracing::info!(node = %node, "controller mode: the hostnic controller makes the cloud calls; no credentials on this node");
            let supply = Arc::new(hostnic_k8s::KubeNicSupply::spawn(
                kube,
                &node,
                hostnic_k8s::SupplyOptions::default(),
            ));
            let cloud = hostnic_agent::supply::controller_cloud(
                supply,
                &InstanceId::new(instance.clone()),
                &primary,
                &settings,
            );
            settings = hostnic_agent::supply::controller_settings(settings);
            (Arc::new(cloud), None)
        }
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
        client,
        time_scale: 1.0,
    };
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    hostnic_agent::run_started(
        deps,
        settings,
        InstanceId::new(instance),
        endpoint,
        shutdown,
    )
    .await?;
    Ok(())
}
