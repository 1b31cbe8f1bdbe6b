//! The agent's metrics: the families it exposes, the gauges it computes from
//! the engine's state at scrape time, and the QingCloud client's calls. The
//! registry and the text format are the core's [`Registry`].

use std::fmt::Write as _;

use hostnic_core::metrics::{Family, Registry};

/// Names, types and help of every metric, in output order.
const FAMILIES: &[Family] = &[
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
    /// Renders everything in the Prometheus text format, with `gauges`.
    pub fn render(&self, gauges: &Gauges) -> String {
        self.0.render(|name, out| match name {
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
