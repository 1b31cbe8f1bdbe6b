//! The controller's settings: the fleet planner's (`FleetConfig`), the request
//! budget, leader election, the metrics address. A YAML file (`--config`) holds
//! any of them; flags override the common ones (see `main.rs`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hostnic_core::fleet::FleetConfig;
use hostnic_k8s::lease::LeaseConfig;
use hostnic_qingcloud::WindowLimit;
use serde::{Deserialize, Serialize};

/// The controller's default request budget: 1,500 requests per hour of the
/// account's 2,000, leaving 500 to the cloud controller manager, the CSI driver
/// and people's scripts.
pub const DEFAULT_BUDGET: WindowLimit = WindowLimit {
    requests: 1500,
    window: Duration::from_secs(3600),
};

/// Everything the controller needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The fleet planner's settings (cluster name, limits, timing).
    pub fleet: FleetConfig,
    /// The request budget of the controller (all replicas: a new leader starts
    /// from what the previous one spent, recorded on the Lease).
    pub budget: WindowLimit,
    /// Leader election.
    pub lease: LeaseConfig,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: SocketAddr,
    /// When idle, the controller plans again at least this often.
    pub idle_round: Duration,
    /// After a change of the nodes, wait this long for more before planning.
    pub debounce: Duration,
    /// Status writes in flight at most.
    pub status_writers: usize,
    /// Simulated seconds per real second (a simulator run with `--time-scale`).
    pub time_scale: f64,
}

impl Settings {
    /// Defaults for the controller of `cluster`, identity `identity`.
    pub fn new(cluster: &str, identity: &str) -> Self {
        Self {
            fleet: FleetConfig {
                cluster: cluster.into(),
                ..FleetConfig::default()
            },
            budget: DEFAULT_BUDGET,
            lease: LeaseConfig::new("kube-system", "hostnic-controller", identity),
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 61680)),
            idle_round: Duration::from_secs(60),
            debounce: Duration::from_millis(200),
            status_writers: 16,
            time_scale: 1.0,
        }
    }

    /// Every duration `k` times shorter: the planner, the lease, the budget's
    /// window, the idle round (for a simulator run `k` times faster).
    pub fn time_scaled(mut self, k: f64) -> Self {
        if !(k > 0.0 && k.is_finite()) || k == 1.0 {
            return self;
        }
        self.fleet = self.fleet.time_scaled(k);
        self.budget = self.budget.scaled(k);
        let s = |d: Duration| d.div_f64(k).max(Duration::from_millis(10));
        self.lease.lease_duration = s(self.lease.lease_duration);
        self.lease.renew_deadline = s(self.lease.renew_deadline);
        self.lease.retry_period = s(self.lease.retry_period);
        self.idle_round = s(self.idle_round);
        self.debounce = s(self.debounce);
        self.time_scale = k;
        self
    }

    /// Checks the settings.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.fleet.validate()?;
        anyhow::ensure!(
            self.budget.requests > 0,
            "the request budget must be positive"
        );
        anyhow::ensure!(
            self.lease.renew_deadline < self.lease.lease_duration,
            "the lease's renew deadline must be shorter than its duration"
        );
        anyhow::ensure!(self.status_writers > 0, "status_writers must be positive");
        Ok(())
    }
}

/// The YAML file: every key optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// The fleet planner's settings (`cluster`, `node_gone_grace`, …).
    pub fleet: Option<FleetConfig>,
    /// The request budget, `REQUESTS/SECONDS`.
    pub budget: Option<String>,
    /// Where metrics are served.
    pub metrics_addr: Option<SocketAddr>,
}

impl FileConfig {
    /// Reads the file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_budget_1500_an_hour() {
        let s = Settings::new("prod", "a");
        s.validate().unwrap();
        assert_eq!(
            (s.budget.requests, s.budget.window),
            (1500, Duration::from_secs(3600))
        );
        assert_eq!(s.fleet.nic_name(), "hostnic_prod");
    }

    #[test]
    fn a_time_scaled_controller_lives_in_simulated_time() {
        let s = Settings::new("c", "a").time_scaled(60.0);
        assert_eq!(s.budget.window, Duration::from_secs(60));
        assert_eq!(s.fleet.node_gone_grace, Duration::from_secs(5));
        assert_eq!(s.lease.lease_duration, Duration::from_millis(250));
        s.validate().unwrap();
    }

    #[test]
    fn the_file_rejects_unknown_keys() {
        assert!(serde_yaml::from_str::<FileConfig>("budgett: 1/1").is_err());
        let f: FileConfig = serde_yaml::from_str(
            "budget: 1000/3600\nfleet:\n  cluster: prod\n  node_gone_grace: 60\n",
        )
        .unwrap();
        assert_eq!(f.fleet.unwrap().node_gone_grace, Duration::from_secs(60));
    }
}
