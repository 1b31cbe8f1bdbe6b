//! `hostnicctl`: operator diagnostics for hostnic.
//!
//! Subcommands live one per file in `commands/`, each with an `exec()`.
//! `cloud` checks credentials and connectivity against the QingCloud API
//! (tables, or `--json`); `cleanup` removes a node's leftover NICs (dry run by
//! default); `status`, `pool`, `pods`, `nics` and `policy` read the agent's
//! introspection endpoint (loopback); `cluster` shows every node through the API
//! server and the agents' metrics; `completions` prints a shell completion script.

mod commands;

use clap::{Parser, Subcommand};

/// `--version`: the crate version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("HOSTNIC_COMMIT"),
    ")"
);

/// Operator diagnostics for hostnic.
#[derive(Debug, Parser)]
#[command(version = VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Talk to the QingCloud API with the agent's client and credentials file.
    Cloud(commands::cloud::CloudArgs),
    /// A node's leftover hostnic_<instance> NICs after uninstall: list them, and
    /// with --yes detach and delete them.
    Cleanup(commands::cleanup::CleanupArgs),
    /// Every node of the cluster: version, mode, readiness, pods, NICs, free, errors.
    Cluster(commands::cluster::ClusterArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(commands::completions::CompletionsArgs),
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

/// Output read by a pipe that closes early (`| head`, `| grep -q`) ends the
/// command quietly, as other command-line tools do, instead of panicking in
/// `println!` (Rust ignores SIGPIPE, and `unsafe` to restore it is not allowed here).
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    quiet_broken_pipe();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match Cli::parse().command {
        Command::Cloud(args) => commands::cloud::exec(args).await,
        Command::Cleanup(args) => commands::cleanup::exec(args).await,
        Command::Cluster(args) => commands::cluster::exec(args).await,
        Command::Completions(args) => commands::completions::exec::<Cli>(args),
        Command::Status(args) => commands::status::exec(args).await,
        Command::Pool(args) => commands::pool::exec(args).await,
        Command::Pods(args) => commands::pods::exec(args).await,
        Command::Nics(args) => commands::nics::exec(args).await,
        Command::Policy(args) => commands::policy::exec(args).await,
    }
}
