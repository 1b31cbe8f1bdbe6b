//! `hostnic-lab down`: stops the daemon and the agents, removes every namespace
//! of the lab, and reports what could not be removed.

use std::path::Path;
use std::time::Duration;

use hostnic_linux::lab::fabric;

use crate::agents;
use crate::labfile::{self, LabFile, LabState};

/// Stops the lab in `dir`; false if anything was left behind.
pub async fn exec(dir: &Path) -> anyhow::Result<bool> {
    let dir = labfile::lab_dir(dir)?;
    let leftovers = down(&dir).await;
    for l in &leftovers {
        println!("leftover: {l}");
    }
    if leftovers.is_empty() {
        println!("lab in {} is down", dir.display());
    }
    Ok(leftovers.is_empty())
}

/// Stops everything; the leftovers, one line each.
pub async fn down(dir: &Path) -> Vec<String> {
    let mut leftovers = Vec::new();
    let lab = labfile::read::<LabFile>(&labfile::lab_json(dir)).ok();
    let state = labfile::read::<LabState>(&labfile::state_json(dir)).ok();
    if let Some(state) = &state
        && agents::alive(state.daemon_pid)
        && !agents::stop(state.daemon_pid, Duration::from_secs(20)).await
    {
        leftovers.push(format!("lab daemon {} had to be killed", state.daemon_pid));
    }
    if let Some(lab) = &lab {
        for node in &lab.nodes {
            if let Some(pid) = node.pid.filter(|p| agents::alive(*p)) {
                agents::stop(pid, Duration::from_secs(5)).await;
                if agents::alive(pid) {
                    leftovers.push(format!("agent of {} (pid {pid}) still runs", node.name));
                }
            }
        }
    }
    let prefix = state.map_or_else(|| labfile::prefix_for(dir), |s| s.prefix);
    leftovers.extend(fabric::destroy(&prefix).await);
    let _ = std::fs::remove_file(labfile::lab_json(dir));
    let _ = std::fs::remove_file(labfile::state_json(dir));
    let _ = std::fs::remove_dir_all(labfile::pods_dir(dir));
    leftovers
}
