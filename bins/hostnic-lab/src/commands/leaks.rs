//! `hostnic-lab leaks --dir DIR [--wait-s 30]`: what should be gone once every
//! pod is deleted: NICs attached to no instance, pod veths and rules on the
//! nodes, per-pod policy chains and sets. Waits (agents may still be releasing
//! NICs) and exits non-zero if anything is left.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use super::demo;
use crate::labfile;

/// Options of `leaks`.
#[derive(Debug, Clone, Args)]
pub struct LeaksArgs {
    /// The lab directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// Allow the agents this long to settle.
    #[arg(long, default_value_t = 30)]
    pub wait_s: u64,
}

/// Runs the check; true when nothing leaked.
pub async fn exec(args: LeaksArgs) -> anyhow::Result<bool> {
    let dir = labfile::lab_dir(&args.dir)?;
    let (lab, _) = labfile::load(&dir)?;
    let pods = labfile::pods(&dir)?;
    let started = Instant::now();
    let mut leaks = demo::leaks(&lab).await?;
    while !leaks.is_empty() && started.elapsed() < Duration::from_secs(args.wait_s) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        leaks = demo::leaks(&lab).await?;
    }
    for p in &pods {
        println!(
            "note: pod {}/{} on {} still exists (its plumbing is not a leak)",
            p.namespace, p.name, p.node
        );
    }
    for l in &leaks {
        println!("LEAK {l}");
    }
    println!("leaks: {}", leaks.len());
    Ok(leaks.is_empty())
}
