//! The core's cloud ports implemented on the client.

use std::time::Duration;

use async_trait::async_trait;
use hostnic_core::ports::{CloudError, CloudNetwork, CloudNics, NicFilter};
use hostnic_core::types::{
    CloudNic, Instance, InstanceId, JobId, JobOutcome, JobStatus, NicId, Vxnet, VxnetId,
};
use ipnet::Ipv4Net;

use crate::client::QingCloudClient;

#[async_trait]
impl CloudNics for QingCloudClient {
    async fn describe_nics(&self, filter: &NicFilter) -> Result<Vec<CloudNic>, CloudError> {
        QingCloudClient::describe_nics(self, filter).await
    }

    async fn create_nics(
        &self,
        vxnet: &VxnetId,
        count: u32,
        name: &str,
    ) -> Result<Vec<CloudNic>, CloudError> {
        QingCloudClient::create_nics(self, vxnet, count, name).await
    }

    async fn attach_nics(
        &self,
        instance: &InstanceId,
        nics: &[NicId],
    ) -> Result<JobId, CloudError> {
        QingCloudClient::attach_nics(self, instance, nics).await
    }

    async fn detach_nics(&self, nics: &[NicId]) -> Result<JobId, CloudError> {
        QingCloudClient::detach_nics(self, nics).await
    }

    async fn delete_nics(&self, nics: &[NicId]) -> Result<(), CloudError> {
        QingCloudClient::delete_nics(self, nics).await
    }

    async fn wait_job(&self, job: &JobId, timeout: Duration) -> Result<JobOutcome, CloudError> {
        QingCloudClient::wait_job(self, job, timeout).await
    }

    async fn job_statuses(
        &self,
        jobs: &[JobId],
    ) -> Result<std::collections::BTreeMap<JobId, JobStatus>, CloudError> {
        use crate::actions::JobStatus as Api;
        let mut known = QingCloudClient::job_statuses(self, jobs).await?;
        Ok(jobs
            .iter()
            .map(|j| {
                let status = match known.remove(j) {
                    Some(Api::Pending | Api::Working) => JobStatus::Running,
                    Some(Api::Successful) => JobStatus::Done(JobOutcome::Successful),
                    Some(Api::Failed) => JobStatus::Done(JobOutcome::Failed),
                    None => JobStatus::Unknown,
                };
                (j.clone(), status)
            })
            .collect())
    }
}

#[async_trait]
impl CloudNetwork for QingCloudClient {
    async fn describe_instance(&self, instance: &InstanceId) -> Result<Instance, CloudError> {
        QingCloudClient::describe_instance(self, instance).await
    }

    async fn describe_vxnets(&self, vxnets: &[VxnetId]) -> Result<Vec<Vxnet>, CloudError> {
        QingCloudClient::describe_vxnets(self, vxnets).await
    }

    async fn vpc_cidrs(&self, vxnet: &VxnetId) -> Result<Vec<Ipv4Net>, CloudError> {
        QingCloudClient::vpc_cidrs(self, vxnet).await
    }
}
