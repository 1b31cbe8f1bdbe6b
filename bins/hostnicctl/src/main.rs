//! `hostnicctl`: operator diagnostics for hostnic.
//!
//! Subcommands live one per file in `commands/`, each with an `exec()`.
//! Today: `cloud` (check credentials and connectivity against the QingCloud API);
//! the agent's `status|pool|pods|nics` will join them.

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
    }
}
