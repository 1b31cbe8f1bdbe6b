//! The VIP actions as the API names them on the wire (`AllocateVips`,
//! `DescribeVips`, `ReleaseVips`): addresses of a vxnet reserved without a NIC,
//! which the shared-NIC mode claims for pods.

use std::net::Ipv4Addr;

use hostnic_core::ports::CloudError;
use hostnic_core::types::{InstanceId, JobId, NicId, VxnetId};
use serde_json::Value;

use crate::actions::{bad_answer, str_field};
use crate::client::QingCloudClient;
use crate::signer::Params;

/// Which addresses [`QingCloudClient::allocate_vips`] reserves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VipAddresses {
    /// `count` (1 to 252) of the vxnet's free addresses.
    Count(u32),
    /// Free addresses of `first..=last` (`vip_range`): all of them, or `count`.
    Range {
        /// The range's first address.
        first: Ipv4Addr,
        /// Its last address (inclusive).
        last: Ipv4Addr,
        /// How many to take (`None`: the whole range, which must be free).
        count: Option<u32>,
    },
    /// Exactly these addresses (`vip_addrs.N`).
    Exact(Vec<Ipv4Addr>),
}

/// What AllocateVips answered: the job and the new VIPs' ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocatedVips {
    /// The allocation job (the addresses are held from the answer on).
    pub job: JobId,
    /// The VIP ids, in address order.
    pub vips: Vec<String>,
}

/// A VIP as DescribeVips answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    /// The id, e.g. `vip-abc`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The address it holds.
    pub addr: Ipv4Addr,
    /// Its vxnet.
    pub vxnet: VxnetId,
    /// The instance answering ARP for it, if any.
    pub instance: Option<InstanceId>,
    /// The NIC answering ARP for it, if any.
    pub nic: Option<NicId>,
    /// Creation time as the API wrote it.
    pub create_time: String,
}

/// A filter for [`QingCloudClient::describe_vips`]. Empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VipFilter {
    /// Only VIPs of these vxnets.
    pub vxnets: Vec<VxnetId>,
    /// Only these VIPs.
    pub vips: Vec<String>,
    /// Only VIPs holding these addresses.
    pub addrs: Vec<Ipv4Addr>,
    /// Only VIPs named exactly this.
    pub name: Option<String>,
}

fn parse_vip(item: &Value) -> Option<Vip> {
    Some(Vip {
        id: str_field(item, "vip_id")?.to_string(),
        name: str_field(item, "vip_name").unwrap_or_default().to_string(),
        addr: str_field(item, "vip_addr")?.parse().ok()?,
        vxnet: VxnetId::new(str_field(item, "vxnet_id").unwrap_or_default()),
        instance: str_field(item, "instance_id").map(InstanceId::new),
        nic: str_field(item, "nic_id").and_then(|s| NicId::new(s).ok()),
        create_time: str_field(item, "create_time")
            .unwrap_or_default()
            .to_string(),
    })
}

impl QingCloudClient {
    /// AllocateVips in `vxnet`, named `name`.
    pub async fn allocate_vips(
        &self,
        vxnet: &VxnetId,
        name: &str,
        addresses: &VipAddresses,
    ) -> Result<AllocatedVips, CloudError> {
        const ACTION: &str = "AllocateVips";
        let mut params = Params::new();
        params.set("vxnet_id", vxnet.as_str()).set("vip_name", name);
        match addresses {
            VipAddresses::Count(n) => {
                params.set("count", n);
            }
            VipAddresses::Range { first, last, count } => {
                params
                    .set("vip_range", format!("{first}-{last}"))
                    .set_opt("count", *count);
            }
            VipAddresses::Exact(addrs) => {
                params.list("vip_addrs", addrs);
            }
        }
        let answer = self.call(ACTION, params).await?;
        let job = str_field(&answer, "job_id")
            .map(JobId::new)
            .ok_or_else(|| bad_answer(ACTION, "no job_id"))?;
        let vips = answer
            .get("vips")
            .and_then(Value::as_array)
            .ok_or_else(|| bad_answer(ACTION, "no `vips`"))?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        Ok(AllocatedVips { job, vips })
    }

    /// DescribeVips over all pages; name matches are exact.
    pub async fn describe_vips(&self, filter: &VipFilter) -> Result<Vec<Vip>, CloudError> {
        let mut params = Params::new();
        params
            .list("vxnets", filter.vxnets.iter().map(VxnetId::as_str))
            .list("vips", &filter.vips)
            .list("vip_addrs", &filter.addrs)
            .set_opt("vip_name", filter.name.as_deref());
        let items = self.describe_all("DescribeVips", params, "vip_set").await?;
        let mut vips: Vec<Vip> = items.iter().filter_map(parse_vip).collect();
        if let Some(name) = &filter.name {
            vips.retain(|v| &v.name == name);
        }
        Ok(vips)
    }

    /// ReleaseVips: starts releasing `vips` (each must be unclaimed).
    pub async fn release_vips(&self, vips: &[String]) -> Result<JobId, CloudError> {
        const ACTION: &str = "ReleaseVips";
        let mut params = Params::new();
        params.list("vips", vips);
        let answer = self.call(ACTION, params).await?;
        str_field(&answer, "job_id")
            .map(JobId::new)
            .ok_or_else(|| bad_answer(ACTION, "no job_id"))
    }
}
