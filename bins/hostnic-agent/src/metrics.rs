//! The agent's metrics: the core's [`Registry`] made from the agent's families
//! (`hostnic_core::metrics::agent`), rendered with this build, the gauges computed
//! at scrape time and the process's own numbers; and the QingCloud client's calls.

use hostnic_core::metrics::Registry;
pub use hostnic_core::metrics::agent::{CloudGauges, Gauges};
/// NetworkPolicy numbers of the last committed sync (the core enforcer's).
pub use hostnic_core::policy::PolicyGauges;

/// The agent's metrics. Cheap to update from any task (the registry's
/// `inc`, `add`, `observe`, `counter`).
#[derive(Debug)]
pub struct Metrics(Registry);

impl Default for Metrics {
    fn default() -> Self {
        Self(Registry::new(hostnic_core::metrics::agent::FAMILIES))
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
    /// process metrics (nothing of them when `/proc` cannot be read).
    pub fn render(&self, gauges: &Gauges) -> String {
        let build = crate::startup::build();
        let mut text = hostnic_core::metrics::agent::render(&self.0, &build, gauges);
        if let Some(p) = hostnic_linux::process::read() {
            hostnic_core::metrics::process::render(&mut text, &p);
        }
        text
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
        let p = hostnic_linux::process::read().unwrap();
        assert!(p.resident_bytes > 1 << 20, "{p:?}");
        assert!(p.open_fds >= 3, "{p:?}");
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
            cloud: Some(client.gauges()),
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
