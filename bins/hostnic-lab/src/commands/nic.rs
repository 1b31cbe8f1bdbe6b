//! `hostnic-lab nic list|vanish`: the simulator's NICs, through its admin endpoints.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::http;
use crate::labfile::{self, LabFile};

/// Options of `nic`.
#[derive(Debug, Clone, Args)]
pub struct NicArgs {
    /// `list` or `vanish`.
    pub verb: NicVerb,
    /// The lab directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// The NIC (its MAC), for `vanish`.
    #[arg(long)]
    pub nic: Option<String>,
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NicVerb {
    /// Print every NIC of the simulator: id, ip, status, instance, and
    /// `primary`, `pod:NS/NAME`, `free` (warm pool) or `detached`.
    List,
    /// Make a NIC disappear from the cloud (and from its node).
    Vanish,
}

/// Runs `nic`.
pub async fn exec(args: NicArgs) -> anyhow::Result<bool> {
    let dir = labfile::lab_dir(&args.dir)?;
    let lab: LabFile = labfile::read(&labfile::lab_json(&dir))?;
    match args.verb {
        NicVerb::List => {
            let pods = labfile::pods(&dir)?;
            for nic in nics(&lab).await? {
                let ip = nic["private_ip"].as_str().unwrap_or("?");
                let instance = nic["instance_id"].as_str().unwrap_or("-");
                // What the NIC is used for, as far as the lab knows.
                let role = if lab.nodes.iter().any(|n| n.primary_ip.to_string() == ip)
                    || lab.client.ip.to_string() == ip
                {
                    "primary".to_string()
                } else if let Some(p) = pods.iter().find(|p| p.ip.to_string() == ip) {
                    format!("pod:{}/{}", p.namespace, p.name)
                } else if instance == "-" {
                    "detached".to_string()
                } else {
                    "free".to_string()
                };
                println!(
                    "{} {:<15} {:<10} {:<12} {role}",
                    nic["nic_id"].as_str().unwrap_or("?"),
                    ip,
                    nic["status"].as_str().unwrap_or("?"),
                    instance,
                );
            }
        }
        NicVerb::Vanish => {
            let nic = args.nic.context("vanish needs --nic MAC")?;
            vanish(&lab, &nic).await?;
            println!("{nic} vanished");
        }
    }
    Ok(true)
}

/// Every NIC of the simulator as its state dump shows it.
pub async fn nics(lab: &LabFile) -> anyhow::Result<Vec<serde_json::Value>> {
    let state = http::post_json(&lab.sim_url, "/_sim/state", &serde_json::json!({})).await?;
    Ok(match &state["nics"] {
        serde_json::Value::Object(m) => m.values().cloned().collect(),
        serde_json::Value::Array(a) => a.clone(),
        _ => Vec::new(),
    })
}

/// Makes `nic` vanish through the simulator's admin endpoint.
pub async fn vanish(lab: &LabFile, nic: &str) -> anyhow::Result<()> {
    http::post_json(
        &lab.sim_url,
        "/_sim/vanish",
        &serde_json::json!({ "nic_id": nic }),
    )
    .await?;
    Ok(())
}
