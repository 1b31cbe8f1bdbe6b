//! `hostnic-lab scale`: a cluster of N real agents in one process against one
//! simulator with the account's request quota on, measured in simulated time
//! (issue 14's harness; how to run it, and what it found: `docs/scale.md`).
//!
//! Each node runs the agent's own code (its library `run`: server on a real Unix
//! socket, pool and reconcile tasks, its real QingCloud client over HTTP, its
//! checkpoint in a temp dir) with the host datapath replaced by the core's
//! `FakeHost`, whose NIC links follow the simulator's attachments, and a pod source
//! fed by a pod driver that sends ADD/DEL through the agent's socket as kubelet and
//! the runtime do. With `--time-scale K` the simulator, the agents' clients, their
//! intervals, backoffs and timeouts and the core's clock all run K times faster.
//!
//! Layout:
//! - `cloud`: the simulator (in-process or started separately) and its counters.
//! - `fleet`: the nodes and the agent wiring (`Wiring`: `Direct`, or `Controlled`
//!   with the controller crate's library in-process, leader-elected on the fake
//!   API server's Lease, and agents over `SuppliedCloud`/`KubeNicSupply`).
//! - `driver`: the pods, through the agents' sockets.
//! - `scenario`: rest, cold, churn, restart.
//! - `report`: figures, JSON, SVG, targets.

mod cloud;
mod driver;
mod fleet;
mod report;
mod scenario;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::ValueEnum;

/// What the fleet goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// The fleet idle for `--rest-secs` (a simulated hour).
    Rest,
    /// Nodes start and N × M pods arrive at once.
    Cold,
    /// Pods replaced at a steady rate.
    Churn,
    /// Every agent restarted at once (after an idle hour).
    Restart,
}

impl Scenario {
    fn as_str(self) -> &'static str {
        match self {
            Scenario::Rest => "rest",
            Scenario::Cold => "cold",
            Scenario::Churn => "churn",
            Scenario::Restart => "restart",
        }
    }
}

/// Who calls the cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Each agent with its own client (today's design).
    Direct,
    /// One leader-elected controller for the cluster makes every cloud call; the
    /// agents hold no credentials and ask through their `HostnicNode` on the fake
    /// API server (over HTTP).
    Controller,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Controller => "controller",
        }
    }
}

/// `hostnic-lab scale`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    /// Nodes (agents) in the fleet.
    #[arg(long, default_value_t = 50)]
    pub nodes: usize,
    /// Pods per node.
    #[arg(long, default_value_t = 30)]
    pub pods_per_node: usize,
    /// Scenarios to run, one fleet and one simulator each (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "rest")]
    pub scenario: Vec<Scenario>,
    /// The account's API request quota of the in-process simulator, `N/SECONDS` or `off`.
    #[arg(long, default_value = "2000/3600")]
    pub quota: String,
    /// Simulated seconds per real second (the simulator, the agents and their clients).
    #[arg(long, default_value_t = 60.0)]
    pub time_scale: f64,
    /// A simulator started separately (`qingcloud-sim --instances N --quota Q
    /// --time-scale K --credentials FILE`): its API URL. Its own counters then
    /// confirm the harness's figures; its quota and time scale apply.
    #[arg(long, requires = "credentials")]
    pub sim_url: Option<String>,
    /// With `--sim-url`: the `qcsecret` `config.yaml` of its access key.
    #[arg(long, requires = "sim_url")]
    pub credentials: Option<PathBuf>,
    /// Writes the figures as JSON there, and the plot next to it (`.svg`).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Who calls the cloud: `controller` (one controller, credential-less agents)
    /// or `direct` (each agent with its own client).
    #[arg(long, value_enum, default_value = "controller")]
    pub mode: Mode,
    /// Exit non-zero when a scenario misses one of issue 14's targets.
    #[arg(long)]
    pub assert: bool,
    /// Simulated seconds the fleet stays idle (`rest`, and before a `restart`).
    #[arg(long, default_value_t = 3600.0)]
    pub rest_secs: f64,
    /// Simulated seconds of replacing pods (`churn`).
    #[arg(long, default_value_t = 1800.0)]
    pub churn_secs: f64,
    /// Each node replaces one pod every this many simulated seconds (`churn`).
    #[arg(long, default_value_t = 60.0)]
    pub churn_every_secs: f64,
    /// A pod without its address this many simulated seconds after it was
    /// scheduled has failed.
    #[arg(long, default_value_t = 43200.0)]
    pub deadline_secs: f64,
}

/// Runs the scenarios; `Ok(false)` when `--assert` and a target was missed.
pub async fn exec(args: ScaleArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(args.nodes > 0, "--nodes must be at least 1");
    anyhow::ensure!(
        args.time_scale.is_finite() && args.time_scale > 0.0,
        "--time-scale must be positive"
    );
    if args.sim_url.is_none() {
        hostnic_qingcloud::WindowLimit::parse_optional(&args.quota)
            .with_context(|| format!("--quota {}", args.quota))?;
    }
    let mut reports = Vec::new();
    for scenario in args.scenario.clone() {
        let report = scenario::run(scenario, &args)
            .await
            .with_context(|| format!("scenario {}", scenario.as_str()))?;
        print!("{}", report.summary());
        reports.push(report);
    }
    if let Some(path) = &args.json {
        let json = if reports.len() == 1 {
            serde_json::to_string_pretty(&reports[0])?
        } else {
            serde_json::to_string_pretty(&reports)?
        };
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        for r in &reports {
            let svg = if reports.len() == 1 {
                path.with_extension("svg")
            } else {
                let stem = path.file_stem().unwrap_or_default().to_string_lossy();
                path.with_file_name(format!("{stem}-{}.svg", r.scenario))
            };
            std::fs::write(&svg, r.svg()).with_context(|| format!("writing {}", svg.display()))?;
            println!("wrote {} and {}", path.display(), svg.display());
        }
    }
    let met = reports.iter().all(report::Report::met);
    if args.assert && !met {
        eprintln!("hostnic-lab scale: a target was missed (see above)");
        return Ok(false);
    }
    Ok(true)
}
