//! What the node agent needs of the QingCloud client besides the core's ports:
//! the client's options from the agent's settings, the credentials file
//! followed when the `qcsecret` Secret changes, and the cloud run on the
//! agent's time scale (a harness's agents live faster than real time).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hostnic_core::config::agent::Settings;
use hostnic_core::ports::{Cloud, CloudError, CloudNetwork, CloudNics, NicFilter};
use hostnic_core::startup::Failed;
use hostnic_core::types::{
    CloudNic, Instance, InstanceId, JobId, JobOutcome, JobStatus, NicId, Vxnet, VxnetId,
};
use ipnet::Ipv4Net;
use tokio::sync::watch;

use crate::{ClientOptions, Config, QingCloudClient, WindowLimit};

/// The instance id file of a QingCloud instance.
pub const INSTANCE_ID_FILE: &str = "/etc/qingcloud/instance-id";

/// The agent's client: credentials from `path` (the `qcsecret` Secret's
/// `config.yaml`), options from it and from `settings` ([`client_options`]).
pub fn load_client(path: &Path, settings: &Settings) -> Result<QingCloudClient, Failed> {
    let config = Config::load(path).map_err(|e| {
        Failed::new(
            e,
            "the qcsecret credentials file cannot be used",
            &format!(
                "create the Secret qcsecret with a config.yaml holding qy_access_key_id, \
                 qy_secret_access_key and zone, mounted at {} (HOSTNIC_CREDENTIALS); \
                 deploy/README.md",
                path.display()
            ),
            true,
        )
    })?;
    QingCloudClient::new(&config, client_options(settings, &config)).map_err(|e| {
        Failed::new(
            e,
            "the cloud client cannot be built",
            "check host, port and protocol in the qcsecret config.yaml",
            true,
        )
    })
}

/// The node's instance id: `flag` when given, else [`INSTANCE_ID_FILE`]'s content.
pub fn instance_id(flag: Option<&str>) -> Result<String, Failed> {
    if let Some(id) = flag {
        return Ok(id.to_string());
    }
    let id = std::fs::read_to_string(INSTANCE_ID_FILE).map_err(|e| {
        Failed::new(
            format!("{INSTANCE_ID_FILE}: {e}"),
            "the node's instance id is unknown",
            &format!(
                "mount the node's {INSTANCE_ID_FILE} into the agent (hostPath, as \
                 deploy/hostnic.yaml does) or pass --instance-id"
            ),
            true,
        )
    })?;
    match id.trim() {
        "" => Err(Failed::new(
            format!("{INSTANCE_ID_FILE} is empty"),
            "the node's instance id is unknown",
            "write the instance id into the file (QingCloud images do)",
            true,
        )),
        id => Ok(id.to_string()),
    }
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

/// What identifies one version of a file: replacing it (a Secret update swaps the
/// `..data` symlink of the mounted directory) changes the inode, editing it the
/// modification time or the length.
fn version_of(path: &Path) -> Option<(u64, u64, std::time::SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.modified().ok()?, m.len()))
}

/// Re-reads the credentials file at `path` every `every` when it changed
/// and, if the key or secret differ, signs with them from then on and bumps
/// `changed` (the agent's start retries and its engine's holds end at once), until
/// `stop` turns true. A change of zone or endpoint is logged: it needs a restart.
pub async fn follow_credentials(
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
            _ = stop.wait_for(|s| *s) => return,
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

/// The cloud as the agent runs it on a time scale of `scale` simulated seconds per
/// real second (1 in production): the engine's job timeouts are simulated time, the
/// client waits in real time.
pub struct Scaled {
    /// The cloud.
    pub cloud: Arc<dyn Cloud>,
    /// Simulated seconds per real second.
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
    // Controller mode under a time scale: the supplied pool round needs the supply.
    fn supplier(&self) -> Option<Arc<dyn hostnic_core::ports::NicSupply>> {
        self.cloud.supplier()
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
        let config = Config::new("AK", crate::Secret::new("SK"), "pek3a");
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
