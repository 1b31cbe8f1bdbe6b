//! The agent's use of the QingCloud client: its options from the settings, the
//! request-quota breaker and the budget as log lines, metrics and a Kubernetes
//! event, the credentials file followed when the `qcsecret` Secret changes, and
//! the client's waits run on the agent's time scale.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hostnic_core::ports::{Cloud, CloudError, CloudNetwork, CloudNics, NicFilter};
use hostnic_core::types::{
    CloudNic, Instance, InstanceId, JobId, JobOutcome, JobStatus, NicId, Vxnet, VxnetId,
};
use hostnic_qingcloud::{
    BreakerState, BreakerStatus, ClientOptions, Config, QingCloudClient, WindowLimit,
};
use ipnet::Ipv4Net;
use tokio::sync::watch;

use crate::settings::Settings;
use crate::shared::Shared;
use crate::shutdown::stopped;

/// The agent's QingCloud client, for what the core's ports do not carry: its
/// breaker and budget (metrics, logs, events) and its credentials (reloaded when
/// the file at `credentials` changes).
#[derive(Debug, Clone)]
pub struct CloudClient {
    /// The client (the same one the agent's `Deps::cloud` is, or wraps).
    pub client: QingCloudClient,
    /// The `qcsecret` `config.yaml` the credentials came from, watched for changes.
    pub credentials: Option<PathBuf>,
}

/// The client's options from the credentials file (`connection_retries`,
/// `connection_timeout`) and the settings (`cloud_budget`, `breaker_probe_*`).
pub fn client_options(settings: &Settings, config: &Config) -> ClientOptions {
    ClientOptions {
        budget: WindowLimit::parse_optional(&settings.cloud_budget).unwrap_or(None),
        breaker_probe_interval: Duration::from_secs_f64(settings.breaker_probe_secs),
        breaker_probe_max: Duration::from_secs_f64(settings.breaker_probe_max_secs),
        ..ClientOptions::from_config(config)
    }
}

/// Logs, counts and reports every transition of the request-quota breaker: a
/// WARN line and a `RequestQuotaExceeded` event on the node when it opens, an INFO
/// line and `RequestQuotaRecovered` when it closes.
pub(crate) async fn breaker_task(shared: Arc<Shared>, mut breaker: watch::Receiver<BreakerState>) {
    let mut stop = shared.shutdown.clone();
    let mut was = breaker.borrow_and_update().status;
    loop {
        tokio::select! {
            changed = breaker.changed() => if changed.is_err() { return },
            _ = stopped(&mut stop) => return,
        }
        let state = breaker.borrow_and_update().clone();
        let message = state.last_error.clone().unwrap_or_default();
        match (was, state.status) {
            (BreakerStatus::Closed, BreakerStatus::Open | BreakerStatus::Probing) => {
                tracing::warn!(
                    message = %message,
                    trips = state.trips,
                    next_probe_in = ?state.next_probe_in(),
                    "the account's API request quota is exhausted: the agent stops calling the cloud and probes it rarely; pods that need a new NIC wait"
                );
                if let Some(reporter) = &shared.reporter {
                    reporter.request_quota(true, &message);
                }
            }
            (BreakerStatus::Open | BreakerStatus::Probing, BreakerStatus::Closed) => {
                tracing::info!(
                    probes = state.probes,
                    refused = state.refused,
                    "the account's API request quota is available again: cloud calls resume"
                );
                if let Some(reporter) = &shared.reporter {
                    reporter.request_quota(false, "cloud calls resume");
                }
                // What waited for the cloud may go now.
                shared.pool_wake.notify_one();
            }
            _ => {}
        }
        was = state.status;
    }
}

/// What identifies one version of a file: replacing it (a Secret update swaps the
/// `..data` symlink of the mounted directory) changes the inode, editing it the
/// modification time or the length.
fn version_of(path: &Path) -> Option<(u64, u64, std::time::SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.modified().ok()?, m.len()))
}

/// Re-reads the credentials file every `credentials_check_secs` when it changed
/// and, if the key or secret differ, signs with them from then on and bumps
/// `changed` (the start's retries and the engine's holds end at once). A change of
/// zone or endpoint is logged: it needs a restart.
pub(crate) async fn credentials_task(
    client: QingCloudClient,
    path: PathBuf,
    every: Duration,
    changed: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen = version_of(&path);
    let mut current = Config::load(&path).ok();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped(&mut stop) => return,
        }
        let now = version_of(&path);
        if now == seen {
            continue;
        }
        seen = now;
        let config = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                // Half-written or broken: keep the credentials in use, look again later.
                tracing::warn!(path = %path.display(), error = %e, "the credentials file changed but cannot be used; keeping the current credentials");
                continue;
            }
        };
        let same_key = current.as_ref().is_some_and(|c| {
            c.access_key_id == config.access_key_id
                && c.secret_access_key == config.secret_access_key
        });
        if let Some(c) = &current
            && (c.zone != config.zone || c.endpoint != config.endpoint)
        {
            tracing::warn!(path = %path.display(), "the credentials file names another zone or endpoint: restart the agent to use it");
        }
        if !same_key {
            client.set_credentials(&config.access_key_id, config.secret_access_key.clone());
            tracing::info!(
                path = %path.display(),
                access_key_id = %config.access_key_id,
                "credentials reloaded: cloud calls are signed with the new key"
            );
            changed.send_modify(|generation| *generation += 1);
        }
        current = Some(config);
    }
}

/// Tells the engine every time the credentials changed: what the API refused
/// (a wrong secret) may succeed now.
pub(crate) async fn credentials_followed(shared: Arc<Shared>, mut changed: watch::Receiver<u64>) {
    let mut stop = shared.shutdown.clone();
    loop {
        tokio::select! {
            c = changed.changed() => if c.is_err() { return },
            _ = stopped(&mut stop) => return,
        }
        shared.engine.credentials_changed();
        shared.pool_wake.notify_one();
        shared.reconcile_wake.notify_one();
    }
}

/// The cloud as the agent runs it on a time scale of `scale` simulated seconds per
/// real second (1 in production): the engine's job timeouts are simulated time, the
/// client waits in real time.
pub(crate) struct Scaled {
    pub cloud: Arc<dyn Cloud>,
    pub scale: f64,
}

#[async_trait]
impl CloudNics for Scaled {
    async fn describe_nics(&self, filter: &NicFilter) -> Result<Vec<CloudNic>, CloudError> {
        self.cloud.describe_nics(filter).await
    }
    async fn create_nics(
        &self,
        vxnet: &VxnetId,
        count: u32,
        name: &str,
    ) -> Result<Vec<CloudNic>, CloudError> {
        self.cloud.create_nics(vxnet, count, name).await
    }
    async fn attach_nics(
        &self,
        instance: &InstanceId,
        nics: &[NicId],
    ) -> Result<JobId, CloudError> {
        self.cloud.attach_nics(instance, nics).await
    }
    async fn detach_nics(&self, nics: &[NicId]) -> Result<JobId, CloudError> {
        self.cloud.detach_nics(nics).await
    }
    async fn delete_nics(&self, nics: &[NicId]) -> Result<(), CloudError> {
        self.cloud.delete_nics(nics).await
    }
    async fn wait_job(&self, job: &JobId, timeout: Duration) -> Result<JobOutcome, CloudError> {
        self.cloud
            .wait_job(job, timeout.div_f64(self.scale.max(1e-3)))
            .await
    }
    async fn job_statuses(
        &self,
        jobs: &[JobId],
    ) -> Result<std::collections::BTreeMap<JobId, JobStatus>, CloudError> {
        self.cloud.job_statuses(jobs).await
    }
}

#[async_trait]
impl CloudNetwork for Scaled {
    async fn describe_instance(&self, instance: &InstanceId) -> Result<Instance, CloudError> {
        self.cloud.describe_instance(instance).await
    }
    async fn describe_vxnets(&self, vxnets: &[VxnetId]) -> Result<Vec<Vxnet>, CloudError> {
        self.cloud.describe_vxnets(vxnets).await
    }
    async fn vpc_cidrs(&self, vxnet: &VxnetId) -> Result<Vec<Ipv4Net>, CloudError> {
        self.cloud.vpc_cidrs(vxnet).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_set_the_budget_and_the_probe_backoff() {
        let config = Config::new("AK", hostnic_qingcloud::Secret::new("SK"), "pek3a");
        let o = client_options(&Settings::default(), &config);
        assert_eq!(
            o.budget,
            Some(WindowLimit::new(60, Duration::from_secs(3600)))
        );
        assert_eq!(o.breaker_probe_interval, Duration::from_secs(60));
        assert_eq!(o.breaker_probe_max, Duration::from_secs(3600));
        let off = Settings {
            cloud_budget: "off".into(),
            ..Settings::default()
        };
        assert_eq!(client_options(&off, &config).budget, None);
    }

    #[test]
    fn a_replaced_file_is_a_new_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "a").unwrap();
        let first = version_of(&path);
        // As the kubelet does: a new file, then a rename over the old name.
        let new = dir.path().join("config.yaml.new");
        std::fs::write(&new, "a").unwrap();
        std::fs::rename(&new, &path).unwrap();
        assert_ne!(version_of(&path), first);
        assert_eq!(version_of(&path), version_of(&path));
    }
}
