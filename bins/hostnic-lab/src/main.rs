//! `hostnic-lab`: a whole QingCloud VPC with Kubernetes nodes on one machine.
//!
//! The simulator plays the cloud API, network namespaces play the VPC router,
//! the nodes, a VPC client and an internet host (`hostnic_linux::lab`), and
//! attaching a NIC in the simulator makes a real link appear on the node. The
//! lab never touches the machine's own network namespace.
//!
//! Subcommands, one file each under `commands/`: `up`, `down`, `pod`, `check`,
//! `agent`, `nic`, `podman`, `bench`, `demo`, and the internal `serve` (the background lab daemon).

mod agents;
mod commands;
mod hook;
mod http;
mod labfile;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "hostnic-lab",
    version,
    about = "A QingCloud VPC with hostnic nodes on one machine, with real packets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a lab in the background (simulator, VPC, nodes, agents) and write DIR/lab.json.
    Up(commands::up::UpArgs),
    /// Stop the lab in DIR and remove everything it created.
    Down {
        /// The lab directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Create or delete a pod through the node's CNI binary, as a runtime does.
    Pod(commands::pod::PodArgs),
    /// Run the connectivity matrix with real packets.
    Check(commands::check::CheckArgs),
    /// Start, stop (SIGTERM) or kill (SIGKILL) a node's agent.
    Agent(commands::agent::AgentArgs),
    /// NICs in the simulator: list them, or make one vanish.
    Nic(commands::nic::NicArgs),
    /// Run CMD in a throwaway busybox container that podman (CNI backend) puts on a node's hostnic network.
    Podman(commands::podman::PodmanArgs),
    /// CNI ADD/DEL vs ptp + host-local, cold start, API calls under churn, agent RSS.
    Bench(commands::bench::BenchArgs),
    /// up, pods, check, delete all, leak checks, down: one command.
    Demo(commands::demo::DemoArgs),
    /// The lab daemon (started by `up`).
    #[command(hide = true)]
    Serve(commands::up::UpArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The daemon logs what it does; the commands only warnings (their output is the result).
    let level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hostnic-lab: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => commands::up::exec(args).await,
            Command::Serve(args) => commands::serve::exec(args).await,
            Command::Down { dir } => commands::down::exec(&dir).await,
            Command::Pod(args) => commands::pod::exec(args).await,
            Command::Check(args) => commands::check::exec(args).await,
            Command::Agent(args) => commands::agent::exec(args).await,
            Command::Nic(args) => commands::nic::exec(args).await,
            Command::Demo(args) => commands::demo::exec(args).await,
            Command::Podman(args) => commands::podman::exec(args).await,
            Command::Bench(args) => commands::bench::exec(args).await,
        }
    });
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("hostnic-lab: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
