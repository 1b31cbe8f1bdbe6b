//! The standard `process_*` metrics of a process, as Prometheus' client
//! libraries name them. Reading them is the Linux adapter's (`/proc/self`).

use std::fmt::Write as _;

/// The standard `process_*` metrics of the agent's own process, from `/proc/self`
/// (the names Prometheus' client libraries use): resident and virtual memory, CPU
/// seconds, open and maximum file descriptors, start time. (`hostnic-linux` reads
/// them.)
pub fn render(out: &mut String, p: &ProcessStats) {
    let mut family = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    family(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds",
        p.cpu_seconds,
    );
    family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes",
        p.resident_bytes as f64,
    );
    family(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes",
        p.virtual_bytes as f64,
    );
    family(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors",
        p.open_fds as f64,
    );
    if let Some(max) = p.max_fds {
        family(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors",
            max as f64,
        );
    }
    if let Some(start) = p.start_time_seconds {
        family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch in seconds",
            start,
        );
    }
}

/// What `/proc/self` says about the agent's process.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessStats {
    /// User + system CPU time.
    pub cpu_seconds: f64,
    /// Resident set size.
    pub resident_bytes: u64,
    /// Virtual memory size.
    pub virtual_bytes: u64,
    /// Entries of `/proc/self/fd`.
    pub open_fds: u64,
    /// The soft limit of open files.
    pub max_fds: Option<u64>,
    /// When the process started (Unix seconds).
    pub start_time_seconds: Option<f64>,
}
