//! `hostnicctl`: operator diagnostics for hostnic.
//!
//! Subcommands live one per file in `commands/`, each with an `exec()`.
//! `cloud` checks credentials and connectivity against the QingCloud API;
//! `status`, `pool`, `pods`, `nics` and `policy` read the agent's introspection
//! endpoint.

mod commands;

use clap::{Parser, Subcommand};

/// Operator diagnostics for hostnic.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Talk to the QingCloud API with the agent's client and credentials file.
    Cloud(commands::cloud::CloudArgs),
    /// The agent's node, readiness and pool summary.
    Status(commands::introspect::AgentArgs),
    /// The agent's warm pool against its settings.
    Pool(commands::introspect::AgentArgs),
    /// The pods the agent has plumbed.
    Pods(commands::introspect::AgentArgs),
    /// The NICs of the node and who holds them.
    Nics(commands::introspect::AgentArgs),
    /// NetworkPolicy enforcement on the node, or a pod's effective allow sets
    /// (`hostnicctl policy NAMESPACE/NAME`).
    Policy(commands::policy::PolicyArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match Cli::parse().command {
        Command::Cloud(args) => commands::cloud::exec(args).await,
        Command::Status(args) => commands::status::exec(args).await,
        Command::Pool(args) => commands::pool::exec(args).await,
        Command::Pods(args) => commands::pods::exec(args).await,
        Command::Nics(args) => commands::nics::exec(args).await,
        Command::Policy(args) => commands::policy::exec(args).await,
    }
}
