//! Network namespaces for tests: `ip` with a panic on failure, and namespaces
//! named uniquely per process and test, deleted (in reverse order) on drop.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use hostnic_linux::NetNs;

/// Runs `ip` with `args`, panicking with its stderr on failure; returns stdout.
pub fn ip(args: &[&str]) -> String {
    try_ip(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `ip` with `args`; its stdout, or what failed (with its stderr).
pub fn try_ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("run ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `ip -n NS -j ARGS…`, parsed (an empty answer is an empty array).
pub fn ip_json(ns: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["-n", ns, "-j"];
    all.extend_from_slice(args);
    let out = ip(&all);
    if out.trim().is_empty() {
        return serde_json::Value::Array(vec![]);
    }
    serde_json::from_str(&out).expect("ip -j prints JSON")
}

/// A name `<prefix>-<pid>-<n>-<role>`, unique in this process.
pub fn unique(prefix: &str, role: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}-{role}", std::process::id())
}

/// Namespaces created by a test, deleted on drop (also when the test fails).
#[derive(Debug)]
pub struct Namespaces {
    prefix: String,
    names: Vec<String>,
}

impl Namespaces {
    /// No namespace yet; `prefix` tells a suite's namespaces apart.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            names: Vec::new(),
        }
    }

    /// A fresh namespace for `role`; its name.
    pub fn create(&mut self, role: &str) -> String {
        self.create_ns(role).0
    }

    /// A fresh namespace for `role`: its name and handle.
    pub fn create_ns(&mut self, role: &str) -> (String, NetNs) {
        let name = unique(&self.prefix, role);
        let ns = NetNs::create_named(&name).expect("create namespace");
        self.names.push(name.clone());
        (name, ns)
    }

    /// Deletes `name` on drop too (a namespace made some other way).
    pub fn adopt(&mut self, name: &str) {
        self.names.push(name.to_string());
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.names.drain(..).rev() {
            if let Err(e) = NetNs::delete_named(&name) {
                eprintln!("cleanup of namespace {name} failed: {e}");
            }
        }
    }
}
