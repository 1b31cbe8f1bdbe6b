//! Pending DELs: records the plugin left under `<stateDir>/pending-del/` when it
//! could not reach the agent (contract in `docs/agent-api.md`). The agent
//! decides what to do with each ([`Outcome`]); reading, listing and removing the
//! files is here.

use std::fs;
use std::path::{Path, PathBuf};

use hostnic_core::api::{PENDING_DEL_DIR, PendingDel};

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The DEL was performed (or the attachment was already gone).
    Done,
    /// The attachment was re-ADDed after the record was written: left alone.
    Superseded,
    /// The DEL failed retryably: the record stays for the next reconcile.
    Kept,
    /// The record could not be decoded: moved aside to `*.bad`.
    Bad,
}

impl Outcome {
    /// The `outcome` label of `hostnic_pending_dels_total`.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Superseded => "superseded",
            Outcome::Kept => "kept",
            Outcome::Bad => "bad",
        }
    }
}

/// The records of `state_dir`, oldest name first. Temporary files a plugin left
/// when it died while writing are removed (the runtime retried that DEL).
pub fn records(state_dir: &Path) -> Vec<PathBuf> {
    let dir = state_dir.join(PENDING_DEL_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read pending DELs");
            return Vec::new();
        }
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    paths.retain(|path| {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return false;
        };
        if name.starts_with('.') {
            if name.contains(".tmp-") {
                let _ = fs::remove_file(path);
            }
            return false;
        }
        name.ends_with(".json")
    });
    paths
}

/// The record at `path`; one that cannot be decoded is moved aside to
/// `*.json.bad` (and `None`).
pub fn read(path: &Path) -> Option<PendingDel> {
    match fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(r) => Some(r),
        Err(e) => {
            let bad = path.with_extension("json.bad");
            tracing::warn!(file = %path.display(), error = %e, "undecodable pending DEL moved aside");
            let _ = fs::rename(path, &bad);
            None
        }
    }
}

/// Forgets the record at `path` (done or superseded).
pub fn remove(path: &Path) {
    let _ = fs::remove_file(path);
}
