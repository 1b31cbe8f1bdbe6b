//! The node agent's metric families and their rendering: the table of every
//! family the agent exposes (name, type, help, in output order) and the gauges it
//! computes from the engine's state at scrape time. The agent keeps the
//! [`Registry`] and serves the text; the families and their format live here, so
//! a dashboard or an alert rule has one place to read them from.

use std::fmt::Write as _;
use std::time::Duration;

use crate::api::introspect::Build;
use crate::metrics::{Family, Registry, label_pairs};
use crate::policy::PolicyGauges;
use crate::reconcile::{ReconcileAction, ReconcileReport};

/// Names, types and help of every metric, in output order.
pub const FAMILIES: &[Family] = &[
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

/// The cloud client's request-quota breaker and request budget at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CloudGauges {
    /// The breaker's state: `closed`, `open` or `probing`.
    pub breaker_status: &'static str,
    /// Times the breaker opened.
    pub breaker_trips: u64,
    /// Probes sent while it was open.
    pub breaker_probes: u64,
    /// Calls it refused without sending them.
    pub breaker_refused: u64,
    /// The budget: requests per window (`None`: unlimited).
    pub budget_limit: Option<(u32, Duration)>,
    /// Requests made in the current window.
    pub budget_used: u32,
    /// Requests left in it.
    pub budget_remaining: u32,
    /// Calls that failed because the budget was spent.
    pub budget_refused: u64,
}

/// Renders `registry` (made from [`FAMILIES`]) in the Prometheus text format, with
/// the agent's `build` and the `gauges` it computed at scrape time.
pub fn render(registry: &Registry, build: &Build, gauges: &Gauges) -> String {
    registry.render(|name, out| match name {
        "hostnic_build_info" => {
            let b = build;
            let _ = writeln!(
                out,
                "{name}{{{}}} 1",
                label_pairs(&[("version", &b.version), ("commit", &b.commit)])
            );
        }
        "hostnic_node_info" => {
            if let Some(instance) = &gauges.instance {
                let _ = writeln!(
                    out,
                    "{name}{{{}}} 1",
                    label_pairs(&[("instance", instance), ("mode", "exclusive")])
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
                    label_pairs(&[
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
                    let on = u8::from(c.breaker_status == state);
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
                    "hostnic_cloud_breaker_trips_total" => c.breaker_trips,
                    "hostnic_cloud_breaker_probes_total" => c.breaker_probes,
                    "hostnic_cloud_breaker_refused_total" => c.breaker_refused,
                    "hostnic_cloud_budget_used" => u64::from(c.budget_used),
                    "hostnic_cloud_budget_remaining" if c.budget_limit.is_none() => return,
                    "hostnic_cloud_budget_remaining" => u64::from(c.budget_remaining),
                    _ => c.budget_refused,
                };
                let _ = writeln!(out, "{name} {value}");
            }
        }
        "hostnic_cloud_budget_limit" | "hostnic_cloud_budget_window_seconds" => {
            if let Some(limit) = gauges.cloud.as_ref().and_then(|c| c.budget_limit) {
                let value = if name == "hostnic_cloud_budget_limit" {
                    f64::from(limit.0)
                } else {
                    limit.1.as_secs_f64()
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

/// Counts what one reconcile did: whether it asked the cloud and why
/// (`hostnic_reconciles_total`, `hostnic_reconcile_cloud_asks_total`), and what
/// it found and repaired, by kind (`hostnic_reconcile_actions_total`).
pub fn count_reconcile(registry: &Registry, report: &ReconcileReport) {
    let asked = match (&report.cloud, &report.cloud_error) {
        (_, Some(_)) => "failed",
        (Some(_), None) => "asked",
        (None, None) => "local",
    };
    registry.inc("hostnic_reconciles_total", &[("cloud", asked)]);
    if let Some(reason) = &report.cloud {
        registry.inc(
            "hostnic_reconcile_cloud_asks_total",
            &[("reason", reason.label())],
        );
    }
    let name = "hostnic_reconcile_actions_total";
    for (kind, n) in [
        ("adopted", report.adopted.len()),
        ("forgotten", report.forgotten.len()),
        ("corrected", report.corrected.len()),
        ("unprepared", report.unprepared.len()),
        ("recovered", report.recovered.len()),
    ] {
        registry.add(name, &[("kind", kind)], n as u64);
    }
    for action in &report.actions {
        let kind = match action {
            ReconcileAction::Unplumb { .. } => "unplumb",
            ReconcileAction::Release { .. } => "release",
            ReconcileAction::Replumb { .. } => "replumb",
        };
        registry.inc(name, &[("kind", kind)]);
    }
}
