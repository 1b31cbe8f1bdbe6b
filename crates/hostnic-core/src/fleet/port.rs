//! [`FleetCloud`]: the cloud as the fleet planner's executor sees it — every call
//! batched, every listing one page, and no call that waits for a job.

use async_trait::async_trait;

use crate::fleet::model::{InstanceNics, JobPage, JobQuery, NicPage, NicQuery};
use crate::ports::CloudError;
use crate::types::{CloudNic, InstanceId, JobId, NicId, Vxnet, VxnetId};

/// The cloud calls of the fleet planner, one request each (`create_nics` also tags
/// the new NICs). Implemented by the QingCloud client and by
/// `testing::FleetCloudSim`. Errors say, through their kind, whether the call
/// had an effect (see [`CloudErrorKind`](crate::ports::CloudErrorKind)).
#[async_trait]
pub trait FleetCloud: Send + Sync {
    /// `DescribeInstances` (verbose) of up to 100 instances: the ones that exist,
    /// with their primary vxnet and attached NICs.
    async fn describe_instances(
        &self,
        instances: &[InstanceId],
    ) -> Result<Vec<InstanceNics>, CloudError>;

    /// `DescribeVxnets` of up to 100 vxnets: the ones that exist (a vxnet outside
    /// any VPC has no router).
    async fn describe_vxnets(&self, vxnets: &[VxnetId]) -> Result<Vec<Vxnet>, CloudError>;

    /// One page of `DescribeNics`.
    async fn describe_nics(&self, query: &NicQuery) -> Result<NicPage, CloudError>;

    /// `CreateNics` of `count` NICs named `name` in `vxnet`, tagged as hostnic's.
    async fn create_nics(
        &self,
        vxnet: &VxnetId,
        count: u32,
        name: &str,
    ) -> Result<Vec<CloudNic>, CloudError>;

    /// `AttachNics`: starts attaching `nics` to `instance`.
    async fn attach_nics(&self, instance: &InstanceId, nics: &[NicId])
    -> Result<JobId, CloudError>;

    /// `DetachNics`: starts detaching `nics` from their instances.
    async fn detach_nics(&self, nics: &[NicId]) -> Result<JobId, CloudError>;

    /// `DeleteNics` of detached NICs.
    async fn delete_nics(&self, nics: &[NicId]) -> Result<(), CloudError>;

    /// One page of `DescribeJobs`: the jobs asked for that the API knows, or
    /// the account's running NIC jobs.
    async fn describe_jobs(&self, query: &JobQuery) -> Result<JobPage, CloudError>;
}

#[async_trait]
impl<T: FleetCloud + ?Sized> FleetCloud for std::sync::Arc<T> {
    async fn describe_instances(
        &self,
        instances: &[InstanceId],
    ) -> Result<Vec<InstanceNics>, CloudError> {
        (**self).describe_instances(instances).await
    }
    async fn describe_vxnets(&self, vxnets: &[VxnetId]) -> Result<Vec<Vxnet>, CloudError> {
        (**self).describe_vxnets(vxnets).await
    }
    async fn describe_nics(&self, query: &NicQuery) -> Result<NicPage, CloudError> {
        (**self).describe_nics(query).await
    }
    async fn create_nics(
        &self,
        vxnet: &VxnetId,
        count: u32,
        name: &str,
    ) -> Result<Vec<CloudNic>, CloudError> {
        (**self).create_nics(vxnet, count, name).await
    }
    async fn attach_nics(
        &self,
        instance: &InstanceId,
        nics: &[NicId],
    ) -> Result<JobId, CloudError> {
        (**self).attach_nics(instance, nics).await
    }
    async fn detach_nics(&self, nics: &[NicId]) -> Result<JobId, CloudError> {
        (**self).detach_nics(nics).await
    }
    async fn delete_nics(&self, nics: &[NicId]) -> Result<(), CloudError> {
        (**self).delete_nics(nics).await
    }
    async fn describe_jobs(&self, query: &JobQuery) -> Result<JobPage, CloudError> {
        (**self).describe_jobs(query).await
    }
}
