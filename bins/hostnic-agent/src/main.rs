//! `hostnic-agent`: parse flags, set up logging, start the HTTP endpoint, build
//! the adapters, call [`hostnic_agent::run_started`]. The flags are
//! [`hostnic_agent::cli::Cli`]; the steps before the run are
//! [`hostnic_agent::boot`]'s and the adapters'.
//!
//! Every step that can fail before the agent runs (the credentials file, the
//! instance id, the datapath, the Kubernetes client) goes through the start-up
//! record, so its cause and fix show on `/readyz` and `hostnicctl status` and a
//! permanent failure is not retried in a tight loop.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use hostnic_agent::boot;
use hostnic_agent::cli::{Cli, CloudKind, HostKind};
use hostnic_agent::settings::{AgentMode, Settings};
use hostnic_agent::startup::{self, Pace, retry};
use hostnic_agent::{CloudClient, Deps, Endpoint, Metrics, Startup};
use hostnic_core::ports::{Cloud, SystemClock};
use hostnic_core::types::InstanceId;
use hostnic_qingcloud::agent::{INSTANCE_ID_FILE, instance_id, load_client};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match cli.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hostnic-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.print_conflist {
        return boot::print_conflist(&settings);
    }
    if cli.install_cni_only {
        return boot::install_cni_only(&settings);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hostnic-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(agent(cli, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("hostnic-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn agent(cli: Cli, mut settings: Settings) -> anyhow::Result<()> {
    boot::init_tracing(settings.log_format);
    let b = startup::build();
    tracing::info!(version = %b.version, commit = %b.commit, "hostnic-agent starting");
    // The files a restart would read again.
    let direct = settings.mode == AgentMode::Direct;
    let mut inputs: Vec<PathBuf> = direct
        .then(|| cli.credentials.clone())
        .into_iter()
        .collect();
    inputs.extend(cli.config.clone());
    if cli.instance_id.is_none() {
        inputs.push(PathBuf::from(INSTANCE_ID_FILE));
    }
    let startup = Arc::new(Startup::new(inputs, hostnic_store::fingerprint));
    let metrics = Arc::new(Metrics::default());
    let endpoint = Endpoint::start(&settings, metrics.clone(), startup.clone()).await?;
    let mut stop = boot::stop_signal();
    let mut pace = Pace::default();
    let (s, m) = (&*startup, &*metrics);

    let CloudKind::Qingcloud = cli.cloud;
    // Controller mode reads no credentials: the controller makes the cloud calls.
    let mut qingcloud = None;
    if direct {
        let step = "loading the credentials";
        let load = || std::future::ready(load_client(&cli.credentials, &settings));
        let Some(c) = retry(s, m, &mut pace, step, &mut stop, |_| false, load).await else {
            return Ok(());
        };
        c.add_observer(metrics.clone());
        qingcloud = Some(c);
    }

    let step = "reading the instance id";
    let read = || std::future::ready(instance_id(cli.instance_id.as_deref()));
    let Some(instance) = retry(s, m, &mut pace, step, &mut stop, |_| false, read).await else {
        return Ok(());
    };

    let HostKind::Linux = cli.host;
    let config = hostnic_linux::agent::host_config(&settings);
    let step = "opening the host datapath";
    let open = || hostnic_linux::agent::open(config.clone());
    let Some(host) = retry(s, m, &mut pace, step, &mut stop, |_| false, open).await else {
        return Ok(());
    };
    let nic_events = boot::link_events(&host).await;

    let ctx = (s, m, &mut pace);
    let Some(cluster) = boot::cluster(&cli, &mut settings, &host, ctx, &mut stop).await? else {
        return Ok(());
    };

    let instance = InstanceId::new(instance);
    let (cloud, client): (Arc<dyn Cloud>, _) = match qingcloud {
        Some(c) => {
            let credentials = Some(cli.credentials.clone());
            (
                Arc::new(c.clone()),
                Some(CloudClient {
                    client: c,
                    credentials,
                }),
            )
        }
        None => {
            let ctx = (s, m, &mut pace);
            let made =
                boot::controller_cloud(&cli, &mut settings, &host, &instance, ctx, &mut stop);
            let Some(cloud) = made.await? else {
                return Ok(());
            };
            (cloud, None)
        }
    };
    let deps = Deps {
        cloud,
        host,
        clock: SystemClock,
        pods: cluster.pods,
        nic_events,
        metrics,
        reporter: cluster.reporter,
        policy: cluster.policy,
        client,
        time_scale: 1.0,
    };
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    hostnic_agent::run_started(deps, settings, instance, endpoint, shutdown).await?;
    Ok(())
}
