//! `hostnic-lab`: a whole QingCloud VPC with Kubernetes nodes on one machine.
//!
//! The simulator plays the cloud API, network namespaces play the VPC router,
//! the nodes, a VPC client and an internet host (`hostnic_linux::lab`), and
//! attaching a NIC in the simulator makes a real link appear on the node. The
//! lab never touches the machine's own network namespace.
//!
//! The lab daemon also hosts a fake Kubernetes API server: the agents run with
//! `--pods kube` against it, `pod add` keeps Pod objects as kubelet does, and
//! NetworkPolicies applied to it are enforced by the agents (`netpol` runs the
//! upstream truth tables on real packets).
//!
//! Subcommands, one file each under `commands/`: `up`, `down`, `pod`, `ns`,
//! `apply`/`delete`, `check`, `leaks`, `netpol`, `netpol-bench`, `agent`, `nic`,
//! `podman`, `bench`, `demo`, `scale` (N real agents in one process against the
//! quota-enforcing simulator), and the internal `serve` (the background lab
//! daemon) and `listen` (a pod's TCP listener).

mod agents;
mod apiserver;
mod commands;
mod http;
mod labfile;
mod plot;

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
    /// Create a namespace in the lab's API server, or set its labels.
    Ns(commands::ns::NsArgs),
    /// Create or replace NetworkPolicies from a YAML or JSON file.
    Apply(commands::apply::ApplyArgs),
    /// Delete a NetworkPolicy.
    Delete(commands::apply::DeleteArgs),
    /// Run NetworkPolicy truth-table cases on real packets.
    Netpol(commands::netpol::NetpolArgs),
    /// Enforcement latency: policy written → verdict observed on packets.
    NetpolBench(commands::netpol_bench::NetpolBenchArgs),
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
    /// Leftovers once all pods are gone: unowned NICs, pod plumbing, policy chains.
    Leaks(commands::leaks::LeaksArgs),
    /// up, pods, check, delete all, leak checks, down: one command.
    Demo(commands::demo::DemoArgs),
    /// N real agents in one process against the simulator with the request quota on:
    /// calls at rest, cold start, churn, restart storm (docs/scale.md).
    Scale(commands::scale::ScaleArgs),
    /// The lab daemon (started by `up`).
    #[command(hide = true)]
    Serve(commands::up::UpArgs),
    /// A pod's TCP listener (started by `pod add --listen`).
    #[command(hide = true)]
    Listen(commands::listen::ListenArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The listener enters the pod's namespace with the whole process: before
    // any other thread exists.
    if let Command::Listen(args) = &cli.command {
        return match commands::listen::exec(args) {
            Ok(_) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hostnic-lab listen: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    // The daemon logs what it does; the commands only warnings (their output is the
    // result); the scale harness's thousand agents only errors (RUST_LOG=warn for more).
    let level = match cli.command {
        Command::Serve(_) => "info",
        Command::Scale(_) => "error",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
            Command::Scale(args) => commands::scale::exec(args).await,
            Command::Podman(args) => commands::podman::exec(args).await,
            Command::Bench(args) => commands::bench::exec(args).await,
            Command::Leaks(args) => commands::leaks::exec(args).await,
            Command::Ns(args) => commands::ns::exec(args).await,
            Command::Apply(args) => commands::apply::exec_apply(args).await,
            Command::Delete(args) => commands::apply::exec_delete(args).await,
            Command::Netpol(args) => commands::netpol::exec(args).await,
            Command::NetpolBench(args) => commands::netpol_bench::exec(args).await,
            Command::Listen(_) => unreachable!("handled before the runtime starts"),
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
