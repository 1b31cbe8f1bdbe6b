//! Pool and allocation settings, with the original hostnic's defaults; the node
//! agent's whole configuration ([`agent`]), the CNI conflist it writes
//! ([`conflist`]) and request limits ([`limit`]).

pub mod agent;
pub mod conflist;
pub mod limit;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of the warm pool and the allocator.
///
/// Defaults follow the original hostnic (`min_free` 5, `max_free` 10, refills of
/// at least 5 NICs, 30 s IP cooldown, a NIC kept at least 1 min) and the IaaS limit
/// of 63 NICs per instance, primary included (so 62 pod NICs). The cloud settings
/// (`cloud_resync`, `permanent_hold`) are what a 1,000-node cluster sharing one
/// account's 2,000 requests an hour can afford.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Keep at least this many NICs ready for new pods.
    pub min_free: u32,
    /// Release ready NICs beyond this many.
    pub max_free: u32,
    /// Never hold more pod NICs than this on the node (the primary NIC is not counted).
    pub max_nics: u32,
    /// The smallest refill: when the pool falls below `min_free` it creates at least
    /// this many NICs at once (never past `max_free` plus demand). A round's whole
    /// need goes in one CreateNics (the API takes up to 252) and all the NICs of a
    /// round in one AttachNics / DetachNics / DeleteNics, so a burst of pods costs
    /// a handful of calls however large it is. (The original hostnic's 5 NICs per
    /// call; it was the largest batch here before it became the smallest.)
    pub batch_size: u32,
    /// A NIC is kept at least this long after it was created or adopted.
    #[serde(with = "duration_secs")]
    pub min_lifetime: Duration,
    /// A released NIC is given to another pod only after this long.
    #[serde(with = "duration_secs")]
    pub ip_cooldown: Duration,
    /// First policy-routing table number for NIC tables; NIC `k` uses `table_base + k`.
    pub table_base: u32,
    /// Host veth name prefix (at most 4 characters).
    pub veth_prefix: String,
    /// How long to wait for an attach/detach job.
    #[serde(with = "duration_secs")]
    pub job_timeout: Duration,
    /// First retry delay after a failed cloud or host operation.
    #[serde(with = "duration_secs")]
    pub backoff_base: Duration,
    /// Longest retry delay.
    #[serde(with = "duration_secs")]
    pub backoff_max: Duration,
    /// An attached NIC whose link is missing on the host for this long is detached and attached again.
    #[serde(with = "duration_secs")]
    pub missing_link_grace: Duration,
    /// A pod's attachment is released for the pod being gone from the pod source only once
    /// it is older than this: an ADD can arrive before the pod watch has seen the pod.
    #[serde(with = "duration_secs")]
    pub pod_gone_grace: Duration,
    /// The periodic reconcile compares checkpoint, host and pods without the cloud;
    /// it asks the cloud (one DescribeNics) when something local disagrees, at start,
    /// and at least this often (plus 2–27 % jitter, so nodes spread out): 30 min is
    /// at most 2 calls per node in any hour at rest (1.75 on average).
    #[serde(with = "duration_secs")]
    pub cloud_resync: Duration,
    /// After the API refused the account (wrong credentials 1200, no balance 2400) the
    /// node makes no cloud call for this long, unless the credentials change; other
    /// permanent refusals (1400 denied, 1100) back off up to this long per operation.
    #[serde(with = "duration_secs")]
    pub permanent_hold: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            min_free: 5,
            max_free: 10,
            max_nics: 62,
            batch_size: 5,
            min_lifetime: Duration::from_secs(60),
            ip_cooldown: Duration::from_secs(30),
            table_base: 1000,
            veth_prefix: "nic".to_string(),
            job_timeout: Duration::from_secs(180),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            missing_link_grace: Duration::from_secs(60),
            pod_gone_grace: Duration::from_secs(60),
            cloud_resync: Duration::from_secs(1800),
            permanent_hold: Duration::from_secs(1800),
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pool setting {field}: {reason}")]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// Why it is rejected.
    pub reason: String,
}

impl PoolConfig {
    /// Checks that the settings are consistent.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, reason: &str| {
            Err(ConfigError {
                field,
                reason: reason.to_string(),
            })
        };
        if self.max_free < self.min_free {
            return err("max_free", "must be at least min_free");
        }
        if self.max_nics == 0 || self.max_nics > 62 {
            return err(
                "max_nics",
                "must be between 1 and 62 (63 NICs per instance, primary included)",
            );
        }
        if self.batch_size == 0 || self.batch_size > 62 {
            return err("batch_size", "must be between 1 and 62");
        }
        if self.cloud_resync < Duration::from_secs(1) {
            return err("cloud_resync", "must be at least 1 second");
        }
        if self.veth_prefix.is_empty() || self.veth_prefix.len() > 4 {
            return err("veth_prefix", "must be 1 to 4 characters");
        }
        if !self.veth_prefix.chars().all(|c| c.is_ascii_alphanumeric()) {
            return err("veth_prefix", "must be ASCII letters and digits");
        }
        let last = u64::from(self.table_base) + u64::from(self.max_nics);
        if self.table_base == 0
            || (self.table_base <= 255 && last >= 253)
            || last > u64::from(u32::MAX)
        {
            return err(
                "table_base",
                "NIC tables must not overlap 0 or the reserved tables 253-255",
            );
        }
        Ok(())
    }
}

/// Serialises a `Duration` as whole seconds (fractions allowed when reading).
pub mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes seconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    /// Reads seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        if !(0.0..=1.0e9).contains(&secs) {
            return Err(serde::de::Error::custom("duration out of range"));
        }
        Ok(Duration::from_secs_f64(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_original_hostnic_ones_and_valid() {
        let c = PoolConfig::default();
        assert_eq!(
            (c.min_free, c.max_free, c.batch_size, c.max_nics),
            (5, 10, 5, 62)
        );
        assert_eq!(c.ip_cooldown, Duration::from_secs(30));
        c.validate().unwrap();
    }

    #[test]
    fn inconsistent_settings_are_rejected_with_the_field_name() {
        let c = PoolConfig {
            min_free: 11,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "max_free");
        let c = PoolConfig {
            max_nics: 63,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "max_nics");
        let c = PoolConfig {
            table_base: 200,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "table_base");
        let c = PoolConfig {
            veth_prefix: "toolong".into(),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "veth_prefix");
    }

    #[test]
    fn partial_yaml_like_json_keeps_defaults() {
        let c: PoolConfig = serde_json::from_str(r#"{"min_free": 2, "ip_cooldown": 1.5}"#).unwrap();
        assert_eq!(c.min_free, 2);
        assert_eq!(c.max_free, 10);
        assert_eq!(c.ip_cooldown, Duration::from_millis(1500));
    }
}
