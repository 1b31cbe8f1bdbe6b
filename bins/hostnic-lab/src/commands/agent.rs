//! `hostnic-lab agent --node N start|stop|kill`: crash and upgrade scenarios.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use nix::sys::signal::Signal;

use crate::agents;
use crate::labfile::{self, LabFile};

/// Options of `agent`.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// `start`, `stop` (SIGTERM) or `kill` (SIGKILL).
    pub verb: AgentVerb,
    /// The lab directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// The node.
    #[arg(long)]
    pub node: String,
}

/// What to do with the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AgentVerb {
    /// Start it (again) with the lab's command line and wait until it serves.
    Start,
    /// SIGTERM, and wait for it to end.
    Stop,
    /// SIGKILL.
    Kill,
}

/// Runs `agent`.
pub async fn exec(args: AgentArgs) -> anyhow::Result<bool> {
    let dir = labfile::lab_dir(&args.dir)?;
    let lab: LabFile = labfile::read(&labfile::lab_json(&dir))?;
    let node = lab
        .nodes
        .iter()
        .find(|n| n.name == args.node)
        .with_context(|| format!("no node {} in this lab", args.node))?;
    let running = node.pid.filter(|p| agents::alive(*p));
    match args.verb {
        AgentVerb::Start => {
            if let Some(pid) = running {
                bail!("the agent of {} already runs (pid {pid})", node.name);
            }
            let pid = agents::start(&dir, node, Duration::from_secs(60)).await?;
            println!("agent of {} started and ready (pid {pid})", node.name);
        }
        AgentVerb::Stop | AgentVerb::Kill => {
            let pid = running.with_context(|| format!("no agent runs on {}", node.name))?;
            if args.verb == AgentVerb::Stop {
                if !agents::stop(pid, Duration::from_secs(20)).await {
                    println!(
                        "agent of {} ignored SIGTERM for 20 s and was killed",
                        node.name
                    );
                }
            } else {
                agents::signal(pid, Signal::SIGKILL);
            }
            agents::set_pid(&dir, &node.name, None)?;
            println!(
                "agent of {} (pid {pid}) {}",
                node.name,
                if args.verb == AgentVerb::Stop {
                    "stopped"
                } else {
                    "killed"
                }
            );
        }
    }
    Ok(true)
}
