//! What a scenario measured: the figures (JSON), the targets it is judged by, a
//! text summary, and the SVG plot (calls in the quota's window against the quota
//! line; pods served), drawn by hand (two polylines need no plotting crate).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// One sample of the run, every 30 simulated seconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Simulated seconds since the start.
    pub sim_secs: f64,
    /// Requests the simulator received so far.
    pub calls_total: u64,
    /// Requests in the quota's current window (the simulator's count).
    pub window_used: u64,
    /// Pods served so far.
    pub pods_served: u64,
    /// Agents whose request-quota breaker is open.
    pub breakers_open: u64,
}

/// The calls of one phase (setup, the measured phase), as the simulator counted them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    /// Requests.
    pub calls_total: u64,
    /// Requests by action.
    pub calls_by_action: BTreeMap<String, u64>,
    /// Request-quota 2500s the simulator sent.
    pub quota_errors: u64,
    /// Error answers by action and `ret_code`.
    pub errors_by_action: BTreeMap<String, BTreeMap<String, u64>>,
    /// Simulated seconds it lasted.
    pub seconds: f64,
}

/// One target of issue 14's "Done when", and whether the run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is asserted.
    pub name: String,
    /// Met.
    pub ok: bool,
    /// The figure.
    pub value: String,
}

/// Everything a scenario reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `rest`, `cold`, `churn` or `restart`.
    pub scenario: String,
    /// `direct` (each agent calls the cloud) or `controller` (one controller calls
    /// it for every credential-less agent).
    pub mode: String,
    /// Nodes.
    pub nodes: usize,
    /// Pods per node.
    pub pods_per_node: usize,
    /// The account's request quota (`N/W` or `off`).
    pub quota: String,
    /// Simulated seconds per real second.
    pub time_scale: f64,
    /// The simulator's URL when it was started separately.
    pub sim_url: Option<String>,
    /// Requests of the measured phase (the simulator's count): everything from the
    /// agents' start for `cold`; the idle hour for `rest`; the storm for `restart`;
    /// the replacements for `churn`.
    pub calls_total: u64,
    /// The same by action.
    pub calls_by_action: BTreeMap<String, u64>,
    /// Request-quota 2500s the simulator sent in the measured phase.
    pub quota_errors: u64,
    /// Error answers of the measured phase by action and `ret_code` (resource-quota
    /// 2500s included), as the simulator counted them.
    pub errors_by_action: BTreeMap<String, BTreeMap<String, u64>>,
    /// Requests of the measured phase as the agents' clients counted them
    /// (attempts that reached the wire), to check the simulator's figure.
    pub harness_calls_total: u64,
    /// Pods that got their address (in the measured phase).
    pub pods_served: u64,
    /// Pods that did not by the scenario's deadline.
    pub pods_failed: u64,
    /// Simulated seconds from the phase's start until every pod had its address.
    pub seconds_to_all_served: Option<f64>,
    /// Requests per node and simulated hour while idle (`rest`, `restart`).
    pub calls_per_node_hour_at_rest: Option<f64>,
    /// ADD requests that got an answer: simulated ms from sending to answer, p50.
    pub add_p50_ms: Option<f64>,
    /// ... p99.
    pub add_p99_ms: Option<f64>,
    /// From scheduling to the address, per pod, simulated seconds: p50.
    pub pod_ready_p50_s: Option<f64>,
    /// ... p99.
    pub pod_ready_p99_s: Option<f64>,
    /// ADD answers that were CNI code 11 (try again later), by message.
    pub add_errors: BTreeMap<String, u64>,
    /// Times an agent reported its request-quota breaker open / closed again.
    pub breaker_opened: u64,
    /// ...
    pub breaker_closed: u64,
    /// Agents whose breaker is still open at the end.
    pub breakers_open_at_end: u64,
    /// NICs named after a node but not attached to it, or beyond its pods plus
    /// `max_free`, once the fleet settled.
    pub leaks: u64,
    /// Pods whose CHECK failed after the restart storm (`restart`).
    pub checks_failed: Option<u64>,
    /// Pods replaced (`churn`), and requests per replaced pod.
    pub pods_replaced: Option<u64>,
    /// ...
    pub calls_per_replaced_pod: Option<f64>,
    /// Controller mode: every call from nothing to every pod served (the setup, in
    /// which the controller fills the warm pools, plus the measured burst).
    pub cold_start_calls: Option<u64>,
    /// Controller mode: `HostnicNode` spec writes by the agents (creates, updates,
    /// patches; the fake API server's count) in the setup...
    pub hostnicnode_writes_setup: Option<u64>,
    /// ... in the idle phase (`rest`, `restart`)...
    pub hostnicnode_writes_at_rest: Option<u64>,
    /// ... and in the measured phase.
    pub hostnicnode_writes: Option<u64>,
    /// ... the most one node wrote in any window of `write_window_secs` simulated
    /// seconds during the measured phase.
    pub hostnicnode_writes_max_per_node_window: Option<u64>,
    /// The window of the figure above, simulated seconds.
    pub write_window_secs: Option<f64>,
    /// The phase before the measured one (the fleet joining, pods placed, settling).
    pub setup: Phase,
    /// The idle hour, for `rest` and `restart`.
    pub rest: Option<Phase>,
    /// Wall-clock seconds of the whole scenario.
    pub wall_seconds: f64,
    /// Simulated seconds of it.
    pub sim_seconds: f64,
    /// The targets and whether they were met.
    pub targets: Vec<Target>,
    /// The samples behind the plot.
    pub samples: Vec<Sample>,
    /// The quota's limit and window (for the plot's line).
    #[serde(skip)]
    pub quota_line: Option<(u32, f64)>,
}

/// The `q` quantile (0–1) of `values`.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let i = ((values.len() - 1) as f64 * q).round() as usize;
    Some(values[i])
}

impl Report {
    /// Adds a target.
    pub fn target(&mut self, name: impl Into<String>, ok: bool, value: impl Into<String>) {
        self.targets.push(Target {
            name: name.into(),
            ok,
            value: value.into(),
        });
    }

    /// True when every target was met.
    pub fn met(&self) -> bool {
        self.targets.iter().all(|t| t.ok)
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.1}{unit}"));
        let _ = writeln!(
            s,
            "scenario {} ({} mode): {} nodes x {} pods, quota {}, time scale {}{}",
            self.scenario,
            self.mode,
            self.nodes,
            self.pods_per_node,
            self.quota,
            self.time_scale,
            self.sim_url
                .as_ref()
                .map(|u| format!(", simulator {u}"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "  setup: {} calls ({} request-quota 2500s) in {:.0} simulated s",
            self.setup.calls_total, self.setup.quota_errors, self.setup.seconds
        );
        if let Some(rest) = &self.rest {
            let _ = writeln!(
                s,
                "  at rest: {} calls in {:.0} simulated s = {} calls per node per hour; by action {:?}",
                rest.calls_total,
                rest.seconds,
                opt(self.calls_per_node_hour_at_rest, ""),
                rest.calls_by_action
            );
        }
        let _ = writeln!(
            s,
            "  measured: {} calls (the simulator), {} (the agents' clients); {} request-quota 2500s",
            self.calls_total, self.harness_calls_total, self.quota_errors
        );
        let _ = writeln!(s, "  calls by action: {:?}", self.calls_by_action);
        if let Some(total) = self.cold_start_calls {
            let _ = writeln!(s, "  cold start in all (setup + burst): {total} calls");
        }
        if self.hostnicnode_writes.is_some() {
            let o = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            let _ = writeln!(
                s,
                "  HostnicNode writes by agents: setup {}, at rest {}, measured {} (at most {} by one node in {} simulated s)",
                o(self.hostnicnode_writes_setup),
                o(self.hostnicnode_writes_at_rest),
                o(self.hostnicnode_writes),
                o(self.hostnicnode_writes_max_per_node_window),
                self.write_window_secs
                    .map_or("-".to_string(), |w| format!("{w:.0}")),
            );
        }
        if !self.errors_by_action.is_empty() {
            let _ = writeln!(s, "  error answers: {:?}", self.errors_by_action);
        }
        let _ = writeln!(
            s,
            "  pods: {} served, {} failed; all served after {} (simulated); ADD p50 {} p99 {}; pod ready p50 {} p99 {}",
            self.pods_served,
            self.pods_failed,
            opt(self.seconds_to_all_served, " s"),
            opt(self.add_p50_ms, " ms"),
            opt(self.add_p99_ms, " ms"),
            opt(self.pod_ready_p50_s, " s"),
            opt(self.pod_ready_p99_s, " s"),
        );
        if !self.add_errors.is_empty() {
            let _ = writeln!(s, "  ADD errors (then retried): {:?}", self.add_errors);
        }
        let _ = writeln!(
            s,
            "  breakers: opened {}, closed {}, open at the end {}; leaks {}",
            self.breaker_opened, self.breaker_closed, self.breakers_open_at_end, self.leaks
        );
        if let (Some(n), Some(per)) = (self.pods_replaced, self.calls_per_replaced_pod) {
            let _ = writeln!(
                s,
                "  churn: {n} pods replaced, {per:.2} calls per replaced pod"
            );
        }
        if let Some(failed) = self.checks_failed {
            let _ = writeln!(s, "  after the restart: {failed} pods failed CHECK");
        }
        let _ = writeln!(
            s,
            "  {:.0} simulated s in {:.1} wall s",
            self.sim_seconds, self.wall_seconds
        );
        for t in &self.targets {
            let _ = writeln!(
                s,
                "  target {}: {} ({})",
                t.name,
                if t.ok { "met" } else { "MISSED" },
                t.value
            );
        }
        s
    }

    /// The plot: requests in the quota's window against the quota (top), pods
    /// served (bottom), over simulated time.
    pub fn svg(&self) -> String {
        let (w, h, pad) = (900.0_f64, 560.0_f64, 60.0_f64);
        let panel = (h - 3.0 * pad) / 2.0;
        let t_max = self.samples.last().map_or(1.0, |s| s.sim_secs).max(1.0);
        let used_max = self
            .samples
            .iter()
            .map(|s| s.window_used as f64)
            .fold(0.0, f64::max);
        let limit = self.quota_line.map(|(n, _)| f64::from(n));
        let y1_max = limit.unwrap_or(0.0).max(used_max).max(1.0) * 1.1;
        let pods_max = (self.nodes * self.pods_per_node).max(1) as f64;
        let x = |t: f64| pad + (w - 2.0 * pad) * t / t_max;
        let y_top = |v: f64| pad + panel - panel * v / y1_max;
        let y_bottom = |v: f64| 2.0 * pad + 2.0 * panel - panel * v / pods_max;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"##
        );
        let _ = writeln!(s, r##"<rect width="{w}" height="{h}" fill="white"/>"##);
        let _ = writeln!(
            s,
            r##"<text x="{pad}" y="20" font-size="14">hostnic-lab scale: {} ({} nodes x {} pods, quota {}, time scale {})</text>"##,
            self.scenario, self.nodes, self.pods_per_node, self.quota, self.time_scale
        );
        for (top, label, max) in [
            (pad, "requests in the quota window", y1_max),
            (2.0 * pad + panel, "pods served", pods_max),
        ] {
            let _ = writeln!(
                s,
                r##"<rect x="{pad}" y="{top}" width="{}" height="{panel}" fill="none" stroke="#999"/>"##,
                w - 2.0 * pad
            );
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{}">{label}</text><text x="5" y="{}">{max:.0}</text><text x="5" y="{}">0</text>"##,
                pad + 5.0,
                top + 15.0,
                top + 12.0,
                top + panel
            );
        }
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}">simulated seconds (0 to {t_max:.0})</text>"##,
            w / 2.0 - 80.0,
            h - 15.0
        );
        if let Some(limit) = limit {
            let y = y_top(limit);
            let _ = writeln!(
                s,
                r##"<line x1="{pad}" y1="{y}" x2="{}" y2="{y}" stroke="#c00" stroke-dasharray="6,4"/><text x="{}" y="{}" fill="#c00">quota {limit:.0}</text>"##,
                w - pad,
                w - pad - 90.0,
                y - 4.0
            );
        }
        let line = |f: &dyn Fn(&Sample) -> (f64, f64), colour: &str| {
            let points: Vec<String> = self
                .samples
                .iter()
                .map(|p| {
                    let (px, py) = f(p);
                    format!("{px:.1},{py:.1}")
                })
                .collect();
            format!(
                r##"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"##,
                points.join(" ")
            )
        };
        let _ = writeln!(
            s,
            "{}",
            line(&|p| (x(p.sim_secs), y_top(p.window_used as f64)), "#1f5fbf")
        );
        let _ = writeln!(
            s,
            "{}",
            line(
                &|p| (x(p.sim_secs), y_bottom(p.pods_served as f64)),
                "#2a8a2a"
            )
        );
        let _ = writeln!(s, "</svg>");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_ranked_value() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&mut v, 0.5), Some(3.0));
        assert_eq!(quantile(&mut v, 0.99), Some(5.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }

    #[test]
    fn the_plot_is_svg_with_both_series_and_the_quota_line() {
        let r = Report {
            scenario: "cold".into(),
            nodes: 2,
            pods_per_node: 3,
            quota_line: Some((2000, 3600.0)),
            samples: vec![
                Sample {
                    sim_secs: 0.0,
                    calls_total: 0,
                    window_used: 0,
                    pods_served: 0,
                    breakers_open: 0,
                },
                Sample {
                    sim_secs: 60.0,
                    calls_total: 20,
                    window_used: 20,
                    pods_served: 6,
                    breakers_open: 0,
                },
            ],
            ..Report::default()
        };
        let svg = r.svg();
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("quota 2000"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
