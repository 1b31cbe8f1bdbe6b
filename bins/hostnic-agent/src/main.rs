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
use hostnic_agent::settings::Settings;
use hostnic_agent::startup::{self, Pace, retry};
use hostnic_agent::{CloudClient, Deps, Endpoint, Metrics, Startup};
use hostnic_core::ports::SystemClock;
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
    let mut inputs = vec![cli.credentials.clone()];
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
    let step = "loading the credentials";
    let load = || std::future::ready(load_client(&cli.credentials, &settings));
    let Some(cloud) = retry(s, m, &mut pace, step, &mut stop, |_| false, load).await else {
        return Ok(());
    };
    cloud.add_observer(metrics.clone());

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

    let client = CloudClient {
        client: cloud.clone(),
        credentials: Some(cli.credentials.clone()),
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
        client: Some(client),
        time_scale: 1.0,
    };
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let instance = InstanceId::new(instance);
    hostnic_agent::run_started(deps, settings, instance, endpoint, shutdown).await?;
    Ok(())
}
