//! Shared by the lab's tests: running the `hostnic-lab` binary, a lab directory
//! taken down however a test ends, and reading its JSON files.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

pub const LAB: &str = env!("CARGO_BIN_EXE_hostnic-lab");

/// Runs `hostnic-lab ARGS`; (success, stdout).
pub fn lab(args: &[&str]) -> (bool, String) {
    let out = Command::new(LAB).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        eprintln!(
            "hostnic-lab {args:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (out.status.success(), stdout)
}

/// A lab directory; the lab in it is taken down however the test ends.
pub struct LabGuard {
    pub dir: tempfile::TempDir,
}

impl LabGuard {
    /// A fresh, empty lab directory.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    /// The namespace prefix of the lab (from `lab-state.json`).
    pub fn prefix(&self) -> String {
        let state: Value = read_json(&self.dir.path().join("lab-state.json"));
        state["prefix"].as_str().unwrap().to_string()
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = Command::new(LAB)
            .args(["down", "--dir", self.path()])
            .output();
    }
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}
