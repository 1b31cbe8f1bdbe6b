//! The fleet planner's settings: the cloud's limits and the planner's timing.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::duration_secs;

/// Settings of the fleet planner. The limits default to QingCloud's; the timing
/// to what a cluster of a thousand nodes can afford under the account's request
/// quota (see `docs/controller.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// The cluster's name: every NIC the planner creates is named
    /// `hostnic_<cluster>`, which scopes garbage collection to this cluster.
    pub cluster: String,
    /// NICs one instance takes, primary included (QingCloud: 64).
    pub instance_nic_limit: u32,
    /// The largest `max_nics` a node may ask for (62: the original hostnic's).
    pub max_pod_nics: u32,
    /// NICs one vxnet holds (QingCloud: 252).
    pub vxnet_nic_limit: u32,
    /// `count` of one `CreateNics` at most (QingCloud: 252).
    pub create_max: u32,
    /// NICs named in one `AttachNics`, `DetachNics` or `DeleteNics` at most.
    pub batch_max: u32,
    /// Ids named in one `Describe*` call at most (one page).
    pub page_max: u32,
    /// Requests one `CreateNics` costs: the call and the `AttachTags` of its NICs.
    pub create_cost: u32,
    /// Requests kept back from everything but job polls, so that jobs already
    /// started can always be followed.
    pub reserve: u32,
    /// First `DescribeJobs` of a job this long after it started.
    #[serde(with = "duration_secs")]
    pub job_poll_initial: Duration,
    /// Longest delay between two polls of a job (the delay doubles up to it).
    #[serde(with = "duration_secs")]
    pub job_poll_max: Duration,
    /// A job whose polls kept failing for this long is given up (its NICs are
    /// checked); also the longest the planner assumes a job may still run
    /// unseen (a NIC that may be on its way to an instance stays counted there).
    #[serde(with = "duration_secs")]
    pub job_timeout: Duration,
    /// A NIC given back is given to another node only after this long.
    #[serde(with = "duration_secs")]
    pub stock_cooldown: Duration,
    /// A detached NIC nobody needs is deleted after this long.
    #[serde(with = "duration_secs")]
    pub stock_linger: Duration,
    /// NICs on an instance no node claims (the node left the cluster) are
    /// detached and deleted after this long.
    #[serde(with = "duration_secs")]
    pub node_gone_grace: Duration,
    /// A vxnet that ran out of addresses is not tried again for this long.
    #[serde(with = "duration_secs")]
    pub vxnet_backoff: Duration,
    /// First delay after a node's call failed.
    #[serde(with = "duration_secs")]
    pub backoff_base: Duration,
    /// Longest delay after a node's calls failed.
    #[serde(with = "duration_secs")]
    pub backoff_max: Duration,
    /// Instances of the cluster's nodes are described again this often (drift:
    /// NICs that vanished or were attached by someone else).
    #[serde(with = "duration_secs")]
    pub verify_interval: Duration,
    /// Detached NICs of the cluster are listed this often (leftovers).
    #[serde(with = "duration_secs")]
    pub stock_scan_interval: Duration,
    /// Every NIC of the cluster is listed this often (NICs on instances of nodes
    /// that left while no planner was watching). Costs one call per 100 NICs.
    #[serde(with = "duration_secs")]
    pub full_inventory_interval: Duration,
    /// A NIC reported missing by its node is detached and re-attached at most
    /// once per this long.
    #[serde(with = "duration_secs")]
    pub repair_interval: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            cluster: "kubernetes".into(),
            instance_nic_limit: 64,
            max_pod_nics: 62,
            vxnet_nic_limit: 252,
            create_max: 252,
            batch_max: 100,
            page_max: 100,
            create_cost: 2,
            reserve: 5,
            job_poll_initial: Duration::from_secs(2),
            job_poll_max: Duration::from_secs(10),
            job_timeout: Duration::from_secs(300),
            stock_cooldown: Duration::from_secs(30),
            stock_linger: Duration::from_secs(300),
            node_gone_grace: Duration::from_secs(300),
            vxnet_backoff: Duration::from_secs(600),
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
            verify_interval: Duration::from_secs(2 * 3600),
            stock_scan_interval: Duration::from_secs(1800),
            full_inventory_interval: Duration::from_secs(24 * 3600),
            repair_interval: Duration::from_secs(300),
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fleet setting {field}: {reason}")]
pub struct FleetConfigError {
    /// The offending field.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

impl FleetConfig {
    /// The name of every NIC the planner creates: `hostnic_<cluster>`.
    pub fn nic_name(&self) -> String {
        format!("hostnic_{}", self.cluster)
    }

    /// The same settings with every duration `k` times shorter, for a planner
    /// living in a simulated cloud that runs `k` times faster (`--time-scale`).
    pub fn time_scaled(self, k: f64) -> Self {
        let s = |d: Duration| {
            if k > 0.0 && k.is_finite() {
                d.div_f64(k)
            } else {
                d
            }
        };
        Self {
            job_poll_initial: s(self.job_poll_initial),
            job_poll_max: s(self.job_poll_max),
            job_timeout: s(self.job_timeout),
            stock_cooldown: s(self.stock_cooldown),
            stock_linger: s(self.stock_linger),
            node_gone_grace: s(self.node_gone_grace),
            vxnet_backoff: s(self.vxnet_backoff),
            backoff_base: s(self.backoff_base),
            backoff_max: s(self.backoff_max),
            verify_interval: s(self.verify_interval),
            stock_scan_interval: s(self.stock_scan_interval),
            full_inventory_interval: s(self.full_inventory_interval),
            repair_interval: s(self.repair_interval),
            ..self
        }
    }

    /// Checks that the settings are consistent.
    pub fn validate(&self) -> Result<(), FleetConfigError> {
        let err = |field, reason: &str| {
            Err(FleetConfigError {
                field,
                reason: reason.into(),
            })
        };
        if self.cluster.is_empty()
            || self.cluster.len() > 63
            || !self
                .cluster
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return err(
                "cluster",
                "must be 1 to 63 letters, digits, '-', '_' or '.'",
            );
        }
        if self.instance_nic_limit < 2 {
            return err("instance_nic_limit", "must be at least 2");
        }
        if self.max_pod_nics == 0 || self.max_pod_nics >= self.instance_nic_limit {
            return err(
                "max_pod_nics",
                "must be at least 1 and less than instance_nic_limit (the primary NIC counts)",
            );
        }
        if self.create_max == 0 || self.create_max > 252 {
            return err("create_max", "must be 1 to 252 (CreateNics' count)");
        }
        for (field, v) in [
            ("batch_max", self.batch_max),
            ("page_max", self.page_max),
            ("vxnet_nic_limit", self.vxnet_nic_limit),
            ("create_cost", self.create_cost),
        ] {
            if v == 0 {
                return err(field, "must be at least 1");
            }
        }
        if self.page_max > 100 {
            return err("page_max", "the API answers at most 100 items a page");
        }
        if self.job_poll_initial.is_zero() || self.job_poll_max < self.job_poll_initial {
            return err(
                "job_poll_max",
                "job polls need a positive initial delay and a maximum at least as long",
            );
        }
        if self.backoff_base.is_zero() || self.backoff_max < self.backoff_base {
            return err("backoff_max", "must be at least backoff_base (> 0)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_name_nics_for_the_cluster() {
        let c = FleetConfig::default();
        c.validate().unwrap();
        assert_eq!(c.nic_name(), "hostnic_kubernetes");
    }

    #[test]
    fn bad_settings_name_their_field() {
        for (c, field) in [
            (
                FleetConfig {
                    cluster: "a b".into(),
                    ..Default::default()
                },
                "cluster",
            ),
            (
                FleetConfig {
                    max_pod_nics: 64,
                    ..Default::default()
                },
                "max_pod_nics",
            ),
            (
                FleetConfig {
                    create_max: 253,
                    ..Default::default()
                },
                "create_max",
            ),
            (
                FleetConfig {
                    page_max: 500,
                    ..Default::default()
                },
                "page_max",
            ),
        ] {
            assert_eq!(c.validate().unwrap_err().field, field);
        }
    }
}
