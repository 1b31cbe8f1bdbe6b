//! The agent's metrics: the families it exposes, the gauges it computes from
//! the engine's state at scrape time, and the QingCloud client's calls. The
//! registry and the text format are the core's [`Registry`].

use std::fmt::Write as _;

use hostnic_core::metrics::{Family, Registry};

/// Names, types and help of every metric, in output order.
const FAMILIES: &[Family] = &[
    (
        "hostnic_build_info",
        "gauge",
        "Always 1: the agent's version and the commit it was built from",
    ),
    (
        "hostnic_node_info",
        "gauge",
        "Always 1 once started: the node's instance and how pods get addresses (mode)",
    ),
    ("hostnic_nics", "gauge", "NICs of the node by state"),
    ("hostnic_pool_free", "gauge", "NICs ready for a pod now"),
    (
        "hostnic_pool_target",
        "gauge",
        "NICs the pool aims to keep free (min_free plus demand)",
    ),
    (
        "hostnic_pool_max_nics",
        "gauge",
        "Pod NICs the node may hold",
    ),
    ("hostnic_pods", "gauge", "Pod attachments on the node"),
    (
        "hostnic_ready",
        "gauge",
        "1 when the agent can serve an ADD",
    ),
    (
        "hostnic_cni_requests_total",
        "counter",
        "Plugin requests by verb and result",
    ),
    (
        "hostnic_socket_refused_total",
        "counter",
        "Plugin connections answered \"agent busy\" (code 11), by the cap they met: connections or bytes",
    ),
    (
        "hostnic_cni_request_duration_seconds",
        "histogram",
        "Time to answer a plugin request, by verb",
    ),
    (
        "hostnic_cloud_api_calls_total",
        "counter",
        "QingCloud API calls by action and final ret_code",
    ),
    (
        "hostnic_cloud_api_duration_seconds",
        "histogram",
        "QingCloud API call latency (retries included), by action",
    ),
    (
        "hostnic_pool_rounds_total",
        "counter",
        "Pool rounds run, by whether they did something",
    ),
    (
        "hostnic_reconcile_actions_total",
        "counter",
        "What reconciles found and did, by kind",
    ),
    (
        "hostnic_pending_dels_total",
        "counter",
        "Pending DEL records processed, by outcome",
    ),
    (
        "hostnic_default_route_restored_total",
        "counter",
        "Times the node's default route had to be restored",
    ),
    (
        "hostnic_no_free_nic_total",
        "counter",
        "ADDs that found the pool empty (and waited)",
    ),
    ("hostnic_errors_total", "counter", "Errors by area"),
    (
        "hostnic_checkpoint_recovered_total",
        "counter",
        "Starts that rebuilt the node from the host, the pod source and the cloud because the checkpoint was missing, torn, corrupt, unreadable, foreign or stale",
    ),
    (
        "hostnic_startup_failures_total",
        "counter",
        "Failed start-up attempts, by step and whether retrying alone can help (permanent)",
    ),
    (
        "hostnic_starting",
        "gauge",
        "1 while the agent is starting (resolving the node, reconciling), 0 once it serves",
    ),
    (
        "hostnic_startup_error",
        "gauge",
        "1 while the start is held up by a failure, by step and permanent",
    ),
    (
        "hostnic_cni_config_shadowed",
        "gauge",
        "Other CNI configurations that sort before hostnic's in cni_conf_dir (the runtime uses the first)",
    ),
    (
        "hostnic_reconciles_total",
        "counter",
        "Periodic and startup reconciles, by whether they asked the cloud (asked), did not need it (local), or needed it and it failed or was backing off (failed)",
    ),
    (
        "hostnic_reconcile_cloud_asks_total",
        "counter",
        "Reconciles that asked the cloud (one DescribeNics), by reason: startup, resync, job_unseen, doubt, link_missing, unexpected_link, unknown_address",
    ),
    (
        "hostnic_pool_shortage",
        "gauge",
        "1 while the pool could not grow the last time it tried, by cause: VxnetFull, QuotaExceeded, RequestQuotaExceeded, CloudRefused, CloudUnavailable",
    ),
    (
        "hostnic_cloud_breaker_state",
        "gauge",
        "The request-quota circuit breaker of the agent's cloud client: 1 for its state (closed, open, probing)",
    ),
    (
        "hostnic_cloud_breaker_trips_total",
        "counter",
        "Times the request-quota breaker opened (a request-quota 2500)",
    ),
    (
        "hostnic_cloud_breaker_probes_total",
        "counter",
        "Probes of the request quota sent while the breaker was open",
    ),
    (
        "hostnic_cloud_breaker_refused_total",
        "counter",
        "Cloud calls the breaker refused without sending them",
    ),
    (
        "hostnic_cloud_budget_limit",
        "gauge",
        "The agent's request budget: requests per window (absent when off)",
    ),
    (
        "hostnic_cloud_budget_window_seconds",
        "gauge",
        "The window of the agent's request budget",
    ),
    (
        "hostnic_cloud_budget_used",
        "gauge",
        "Requests (attempts) made in the current window",
    ),
    (
        "hostnic_cloud_budget_remaining",
        "gauge",
        "Requests left in the current window",
    ),
    (
        "hostnic_cloud_budget_refused_total",
        "counter",
        "Cloud calls that failed because the budget was spent",
    ),
    (
        "hostnic_policy_objects",
        "gauge",
        "NetworkPolicy inputs at the last sync: policies, namespaces, cluster pods, local pods",
    ),
    (
        "hostnic_policy_programmed",
        "gauge",
        "NetworkPolicy objects programmed in nftables: per pod chain rules and set elements",
    ),
    (
        "hostnic_policy_syncs_total",
        "counter",
        "NetworkPolicy syncs by result",
    ),
    (
        "hostnic_policy_sync_duration_seconds",
        "histogram",
        "Time of one NetworkPolicy dataplane transaction",
    ),
    (
        "hostnic_policy_enforcement_latency_seconds",
        "histogram",
        "From the arrival of an API watch event to the nftables commit that enforces it",
    ),
];

/// Gauges read from the engine at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// NICs by state label.
    pub nics: Vec<(&'static str, u32)>,
    /// Ready NICs.
    pub free: u32,
    /// Pool target.
    pub target: u32,
    /// Pod NIC limit.
    pub max_nics: u32,
    /// Attachments.
    pub pods: u32,
    /// Readiness.
    pub ready: bool,
    /// NetworkPolicy numbers, when enforcement is on.
    pub policy: Option<PolicyGauges>,
    /// The node's instance, once known.
    pub instance: Option<String>,
    /// Other CNI configurations sorting before hostnic's.
    pub shadowed: u32,
    /// The start is not over yet.
    pub starting: bool,
    /// The failure holding the start up: its step and whether it is permanent.
    pub startup_error: Option<(String, bool)>,
    /// The cloud client's breaker and budget, when the agent has the QingCloud client.
    pub cloud: Option<CloudGauges>,
    /// Why the pool could not grow the last time it tried (a `ShortageCause::reason`).
    pub shortage: Option<&'static str>,
}

/// The cloud client's breaker and budget at scrape time.
#[derive(Debug, Clone)]
pub struct CloudGauges {
    /// The request-quota breaker.
    pub breaker: hostnic_qingcloud::BreakerState,
    /// The request budget.
    pub budget: hostnic_qingcloud::BudgetState,
}

/// NetworkPolicy numbers of the last committed sync (the core enforcer's).
pub use hostnic_core::policy::PolicyGauges;

/// The agent's metrics. Cheap to update from any task (the registry's
/// `inc`, `add`, `observe`, `counter`).
#[derive(Debug)]
pub struct Metrics(Registry);

impl Default for Metrics {
    fn default() -> Self {
        Self(Registry::new(FAMILIES))
    }
}

impl std::ops::Deref for Metrics {
    type Target = Registry;

    fn deref(&self) -> &Registry {
        &self.0
    }
}

impl Metrics {
    /// Renders everything in the Prometheus text format, with `gauges`, then the
    /// process metrics ([`process_metrics`]).
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut text = self.render_hostnic(gauges);
        process_metrics(&mut text);
        text
    }

    fn render_hostnic(&self, gauges: &Gauges) -> String {
        self.0.render(|name, out| match name {
            "hostnic_build_info" => {
                let b = crate::startup::build();
                let _ = writeln!(
                    out,
                    "{name}{{{}}} 1",
                    hostnic_core::metrics::label_pairs(&[
                        ("version", &b.version),
                        ("commit", &b.commit)
                    ])
                );
            }
            "hostnic_node_info" => {
                if let Some(instance) = &gauges.instance {
                    let _ = writeln!(
                        out,
                        "{name}{{{}}} 1",
                        hostnic_core::metrics::label_pairs(&[
                            ("instance", instance),
                            ("mode", "exclusive")
                        ])
                    );
                }
            }
            "hostnic_starting" => {
                let _ = writeln!(out, "{name} {}", u8::from(gauges.starting));
            }
            "hostnic_startup_error" => {
                if let Some((step, permanent)) = &gauges.startup_error {
                    let _ = writeln!(
                        out,
                        "{name}{{{}}} 1",
                        hostnic_core::metrics::label_pairs(&[
                            ("step", step),
                            ("permanent", if *permanent { "true" } else { "false" })
                        ])
                    );
                }
            }
            "hostnic_cni_config_shadowed" => {
                let _ = writeln!(out, "{name} {}", gauges.shadowed);
            }
            "hostnic_nics" => {
                for (state, n) in &gauges.nics {
                    let _ = writeln!(out, "{name}{{state=\"{state}\"}} {n}");
                }
            }
            "hostnic_pool_free" => {
                let _ = writeln!(out, "{name} {}", gauges.free);
            }
            "hostnic_pool_target" => {
                let _ = writeln!(out, "{name} {}", gauges.target);
            }
            "hostnic_pool_max_nics" => {
                let _ = writeln!(out, "{name} {}", gauges.max_nics);
            }
            "hostnic_pods" => {
                let _ = writeln!(out, "{name} {}", gauges.pods);
            }
            "hostnic_ready" => {
                let _ = writeln!(out, "{name} {}", u8::from(gauges.ready));
            }
            "hostnic_pool_shortage" => {
                if let Some(cause) = gauges.shortage {
                    let _ = writeln!(out, "{name}{{cause=\"{cause}\"}} 1");
                }
            }
            "hostnic_cloud_breaker_state" => {
                if let Some(c) = &gauges.cloud {
                    for state in ["closed", "open", "probing"] {
                        let on = u8::from(c.breaker.status.as_str() == state);
                        let _ = writeln!(out, "{name}{{state=\"{state}\"}} {on}");
                    }
                }
            }
            "hostnic_cloud_breaker_trips_total"
            | "hostnic_cloud_breaker_probes_total"
            | "hostnic_cloud_breaker_refused_total"
            | "hostnic_cloud_budget_used"
            | "hostnic_cloud_budget_remaining"
            | "hostnic_cloud_budget_refused_total" => {
                if let Some(c) = &gauges.cloud {
                    let value = match name {
                        "hostnic_cloud_breaker_trips_total" => c.breaker.trips,
                        "hostnic_cloud_breaker_probes_total" => c.breaker.probes,
                        "hostnic_cloud_breaker_refused_total" => c.breaker.refused,
                        "hostnic_cloud_budget_used" => u64::from(c.budget.used),
                        "hostnic_cloud_budget_remaining" if c.budget.limit.is_none() => return,
                        "hostnic_cloud_budget_remaining" => u64::from(c.budget.remaining),
                        _ => c.budget.refused,
                    };
                    let _ = writeln!(out, "{name} {value}");
                }
            }
            "hostnic_cloud_budget_limit" | "hostnic_cloud_budget_window_seconds" => {
                if let Some(limit) = gauges.cloud.as_ref().and_then(|c| c.budget.limit) {
                    let value = if name == "hostnic_cloud_budget_limit" {
                        f64::from(limit.requests)
                    } else {
                        limit.window.as_secs_f64()
                    };
                    let _ = writeln!(out, "{name} {value}");
                }
            }
            "hostnic_policy_objects" => {
                if let Some(p) = &gauges.policy {
                    for (kind, n) in [
                        ("policies", p.policies),
                        ("namespaces", p.namespaces),
                        ("cluster_pods", p.cluster_pods),
                        ("local_pods", p.local_pods),
                    ] {
                        let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {n}");
                    }
                }
            }
            "hostnic_policy_programmed" => {
                if let Some(p) = &gauges.policy {
                    for (kind, n) in [("rules", p.rules), ("set_elements", p.elements)] {
                        let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {n}");
                    }
                }
            }
            _ => {}
        })
    }
}

/// The standard `process_*` metrics of the agent's own process, from `/proc/self`
/// (the names Prometheus' client libraries use): resident and virtual memory, CPU
/// seconds, open and maximum file descriptors, start time. Nothing is written when
/// `/proc` cannot be read.
pub fn process_metrics(out: &mut String) {
    let Some(p) = ProcessStats::read() else {
        return;
    };
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

impl ProcessStats {
    /// Reads `/proc/self`; `None` when it cannot.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|t| *t > 0)
            .unwrap_or(100) as f64;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .filter(|p| *p > 0)
            .unwrap_or(4096) as u64;
        let fields = parse_stat(&stat)?;
        let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| {
                l.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3))
                    .and_then(|v| v.parse().ok())
            });
        Some(Self {
            cpu_seconds: (fields.utime + fields.stime) as f64 / ticks,
            resident_bytes: fields.rss_pages * page,
            virtual_bytes: fields.vsize,
            open_fds,
            max_fds,
            start_time_seconds: boot_time.map(|b| b + fields.start_ticks as f64 / ticks),
        })
    }
}

struct StatFields {
    utime: u64,
    stime: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

/// The fields of `/proc/PID/stat` the metrics need (see proc(5)); the command
/// name in parentheses may contain spaces, so fields are counted after its `)`.
fn parse_stat(stat: &str) -> Option<StatFields> {
    let rest = stat.rsplit_once(") ")?.1;
    // `rest` starts at field 3 (state).
    let f: Vec<&str> = rest.split_whitespace().collect();
    let at = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(StatFields {
        utime: at(14)?,
        stime: at(15)?,
        start_ticks: at(22)?,
        vsize: at(23)?,
        rss_pages: at(24)?,
    })
}

impl hostnic_qingcloud::stats::CallObserver for Metrics {
    fn observe(&self, record: &hostnic_qingcloud::stats::CallRecord) {
        let code = record
            .ret_code
            .map_or_else(|| "none".to_string(), |c| c.to_string());
        self.inc(
            "hostnic_cloud_api_calls_total",
            &[("action", &record.action), ("ret_code", &code)],
        );
        self.0.observe(
            "hostnic_cloud_api_duration_seconds",
            &[("action", &record.action)],
            record.duration,
        );
        if record.error.is_some() {
            self.inc("hostnic_errors_total", &[("area", "cloud")]);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn counters_and_histograms_render_in_text_format() {
        let m = Metrics::default();
        m.inc(
            "hostnic_cni_requests_total",
            &[("verb", "ADD"), ("result", "ok")],
        );
        m.observe(
            "hostnic_cni_request_duration_seconds",
            &[("verb", "ADD")],
            Duration::from_millis(3),
        );
        let text = m.render(&Gauges {
            nics: vec![("free", 2)],
            free: 2,
            ..Gauges::default()
        });
        assert!(text.contains("hostnic_cni_requests_total{verb=\"ADD\",result=\"ok\"} 1\n"));
        assert!(text.contains(
            "hostnic_cni_request_duration_seconds_bucket{verb=\"ADD\",le=\"0.002\"} 0\n"
        ));
        assert!(text.contains(
            "hostnic_cni_request_duration_seconds_bucket{verb=\"ADD\",le=\"0.005\"} 1\n"
        ));
        assert!(text.contains("hostnic_cni_request_duration_seconds_count{verb=\"ADD\"} 1\n"));
        assert!(text.contains("hostnic_nics{state=\"free\"} 2\n"));
        assert!(text.contains("# TYPE hostnic_errors_total counter\n"));
    }

    #[test]
    fn build_info_and_process_metrics_are_exported() {
        let text = Metrics::default().render(&Gauges::default());
        let b = crate::startup::build();
        assert!(
            text.contains(&format!(
                "hostnic_build_info{{version=\"{}\",commit=\"{}\"}} 1\n",
                b.version, b.commit
            )),
            "{text}"
        );
        for name in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(
                text.contains(&format!("\n{name} ")),
                "{name} missing:\n{text}"
            );
        }
        let p = ProcessStats::read().unwrap();
        assert!(p.resident_bytes > 1 << 20, "{p:?}");
        assert!(p.open_fds >= 3, "{p:?}");
    }

    #[test]
    fn the_stat_line_is_read_after_the_command_name() {
        let line = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 1 0 1000 123456 789 rest";
        let f = parse_stat(line).unwrap();
        assert_eq!((f.utime, f.stime, f.start_ticks), (150, 50, 1000));
        assert_eq!((f.vsize, f.rss_pages), (123456, 789));
    }

    #[test]
    fn the_breaker_and_the_budget_render_when_the_client_is_known() {
        let m = Metrics::default();
        assert!(
            !m.render(&Gauges::default())
                .contains("hostnic_cloud_breaker_state{")
        );
        let config =
            hostnic_qingcloud::Config::new("AK", hostnic_qingcloud::Secret::new("SK"), "pek3a");
        let client = hostnic_qingcloud::QingCloudClient::new(
            &config,
            hostnic_qingcloud::ClientOptions {
                budget: Some(hostnic_qingcloud::WindowLimit::new(
                    60,
                    Duration::from_secs(3600),
                )),
                ..Default::default()
            },
        )
        .unwrap();
        let text = m.render(&Gauges {
            cloud: Some(CloudGauges {
                breaker: client.breaker(),
                budget: client.budget(),
            }),
            shortage: Some("VxnetFull"),
            ..Gauges::default()
        });
        assert!(
            text.contains("hostnic_cloud_breaker_state{state=\"closed\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("hostnic_cloud_breaker_state{state=\"open\"} 0\n"));
        assert!(text.contains("hostnic_cloud_budget_limit 60\n"));
        assert!(text.contains("hostnic_cloud_budget_window_seconds 3600\n"));
        assert!(text.contains("hostnic_cloud_budget_remaining 60\n"));
        assert!(text.contains("hostnic_pool_shortage{cause=\"VxnetFull\"} 1\n"));
    }

    #[test]
    fn policy_gauges_render_only_when_enforcing() {
        let m = Metrics::default();
        let off = m.render(&Gauges::default());
        assert!(!off.contains("hostnic_policy_objects{"));
        let on = m.render(&Gauges {
            policy: Some(PolicyGauges {
                policies: 2,
                namespaces: 3,
                cluster_pods: 40,
                local_pods: 5,
                rules: 9,
                elements: 17,
            }),
            ..Gauges::default()
        });
        assert!(on.contains("hostnic_policy_objects{kind=\"policies\"} 2\n"));
        assert!(on.contains("hostnic_policy_objects{kind=\"local_pods\"} 5\n"));
        assert!(on.contains("hostnic_policy_programmed{kind=\"set_elements\"} 17\n"));
        assert!(on.contains("# TYPE hostnic_policy_programmed gauge\n"));
    }
}
