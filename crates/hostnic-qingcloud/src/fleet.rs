//! The fleet planner's cloud port ([`FleetCloud`]) on the client: every call one
//! request (one page), nothing that waits for a job.

use std::net::Ipv4Addr;

use async_trait::async_trait;
use hostnic_core::fleet::{
    FleetCloud, InstanceNics, JobAction, JobInfo, JobPage, JobProgress, JobQuery, NicPage, NicQuery,
};
use hostnic_core::ports::CloudError;
use hostnic_core::types::{CloudNic, InstanceId, JobId, NicId, RouterId, Vxnet, VxnetId};
use ipnet::Ipv4Net;
use serde_json::Value;

use crate::actions::{bad_answer, int_field, parse_nic, str_field};
use crate::client::QingCloudClient;
use crate::signer::Params;

/// The API answers at most this many items a page.
const PAGE: usize = 100;

fn items<'a>(answer: &'a Value, key: &str) -> &'a [Value] {
    answer
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn total(answer: &Value) -> u32 {
    answer
        .get("total_count")
        .and_then(Value::as_u64)
        .unwrap_or(0) as u32
}

/// A job's `directive`: the request it carries out, as a JSON string (or object).
fn directive(item: &Value) -> (Vec<NicId>, Option<InstanceId>) {
    let parsed = match item.get("directive") {
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).unwrap_or(Value::Null),
        Some(v) => v.clone(),
        None => Value::Null,
    };
    let mut nics: Vec<NicId> = parsed
        .get("nics")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(|s| NicId::new(s).ok())
                .collect()
        })
        .unwrap_or_default();
    if nics.is_empty()
        && let Some(ids) = str_field(item, "resource_ids")
    {
        nics = ids
            .split(',')
            .filter_map(|s| NicId::new(s.trim()).ok())
            .collect();
    }
    let instance = str_field(&parsed, "instance").map(InstanceId::new);
    (nics, instance)
}

fn job_info(item: &Value) -> Option<JobInfo> {
    let id = JobId::new(str_field(item, "job_id")?);
    let progress = match str_field(item, "status") {
        Some("successful") => JobProgress::Succeeded,
        Some("failed") | Some("done with failure") => JobProgress::Failed,
        _ => JobProgress::Running,
    };
    let action = match str_field(item, "job_action") {
        Some("AttachNics") => Some(JobAction::Attach),
        Some("DetachNics") => Some(JobAction::Detach),
        _ => None,
    };
    let (nics, instance) = directive(item);
    Some(JobInfo {
        id,
        progress,
        action,
        nics,
        instance,
    })
}

#[async_trait]
impl FleetCloud for QingCloudClient {
    async fn describe_instances(
        &self,
        instances: &[InstanceId],
    ) -> Result<Vec<InstanceNics>, CloudError> {
        const ACTION: &str = "DescribeInstances";
        let mut params = Params::new();
        params
            .list("instances", instances.iter().map(InstanceId::as_str))
            .set("verbose", 1)
            .set("limit", instances.len().clamp(1, PAGE));
        let answer = self.call(ACTION, params).await?;
        let mut out = Vec::new();
        for item in items(&answer, "instance_set") {
            let Some(id) = str_field(item, "instance_id") else {
                continue;
            };
            // A terminated instance is as good as gone.
            if matches!(str_field(item, "status"), Some("terminated" | "ceased")) {
                continue;
            }
            let mut primary = None;
            let mut nics = Vec::new();
            for nic in items(item, "vxnets") {
                if int_field(nic, "role") == Some(1) {
                    primary = str_field(nic, "vxnet_id").map(VxnetId::new);
                } else if let Some(n) = str_field(nic, "nic_id").and_then(|s| NicId::new(s).ok()) {
                    nics.push(n);
                }
            }
            let primary_vxnet = primary
                .ok_or_else(|| bad_answer(ACTION, format!("instance {id} has no primary NIC")))?;
            out.push(InstanceNics {
                id: InstanceId::new(id),
                primary_vxnet,
                nics,
            });
        }
        Ok(out)
    }

    async fn describe_vxnets(&self, vxnets: &[VxnetId]) -> Result<Vec<Vxnet>, CloudError> {
        let mut params = Params::new();
        params
            .list("vxnets", vxnets.iter().map(VxnetId::as_str))
            .set("verbose", 1)
            .set("limit", vxnets.len().clamp(1, PAGE));
        let answer = self.call("DescribeVxnets", params).await?;
        let mut out = Vec::new();
        for item in items(&answer, "vxnet_set") {
            let Some(id) = str_field(item, "vxnet_id") else {
                continue;
            };
            let router = item.get("router").unwrap_or(&Value::Null);
            let cidr: Option<Ipv4Net> =
                str_field(router, "ip_network").and_then(|s| s.parse().ok());
            let (cidr, gateway, router) = match cidr {
                Some(cidr) => (
                    cidr.trunc(),
                    str_field(router, "manager_ip")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| Ipv4Addr::from(u32::from(cidr.network()) + 1)),
                    str_field(item, "vpc_router_id")
                        .or_else(|| str_field(router, "router_id"))
                        .map(RouterId::new),
                ),
                // Not joined to a VPC router: no network hostnic can use. The
                // planner refuses it (no router), so the placeholder is never used.
                None => (Ipv4Net::default(), Ipv4Addr::UNSPECIFIED, None),
            };
            out.push(Vxnet {
                id: VxnetId::new(id),
                cidr,
                gateway,
                router,
            });
        }
        Ok(out)
    }

    async fn describe_nics(&self, query: &NicQuery) -> Result<NicPage, CloudError> {
        let mut params = Params::new();
        let (name, offset) = match query {
            NicQuery::Ids(ids) => {
                params
                    .list("nics", ids.iter().map(NicId::as_str))
                    .set("limit", ids.len().clamp(1, PAGE));
                (None, 0)
            }
            NicQuery::Named {
                name,
                available_only,
                offset,
            } => {
                params
                    .set("nic_name", name)
                    .set("offset", offset)
                    .set("limit", PAGE);
                if *available_only {
                    params.set("status", "available");
                }
                (Some(name), *offset)
            }
        };
        let answer = self.call("DescribeNics", params).await?;
        let raw = items(&answer, "nic_set");
        let mut nics: Vec<CloudNic> = raw.iter().filter_map(parse_nic).collect();
        // Name search may be fuzzy on the real API: exact matches only. The page
        // still moves by what the API answered.
        if let Some(name) = name {
            nics.retain(|n| &n.name == name);
        }
        let _ = offset;
        Ok(NicPage {
            nics,
            total: total(&answer).max(raw.len() as u32),
        })
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

    async fn describe_jobs(&self, query: &JobQuery) -> Result<JobPage, CloudError> {
        let mut params = Params::new();
        match query {
            JobQuery::Ids(ids) => {
                params
                    .list("jobs", ids.iter().map(JobId::as_str))
                    .set("limit", ids.len().clamp(1, PAGE));
            }
            JobQuery::Running { offset } => {
                params
                    .list("status", ["pending", "working"])
                    .set("offset", offset)
                    .set("limit", PAGE);
            }
        }
        let answer = self.call("DescribeJobs", params).await?;
        let raw = items(&answer, "job_set");
        let jobs: Vec<JobInfo> = raw.iter().filter_map(job_info).collect();
        Ok(JobPage {
            total: total(&answer).max(raw.len() as u32),
            jobs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_directive_names_its_nics_and_instance() {
        let item = serde_json::json!({
            "job_id": "j-1", "status": "working", "job_action": "AttachNics",
            "directive": "{\"nics\": [\"52:54:00:00:00:01\"], \"instance\": \"i-1\"}",
        });
        let job = job_info(&item).unwrap();
        assert_eq!(job.progress, JobProgress::Running);
        assert_eq!(job.action, Some(JobAction::Attach));
        assert_eq!(job.nics, vec![NicId::new("52:54:00:00:00:01").unwrap()]);
        assert_eq!(job.instance, Some(InstanceId::new("i-1")));
        // Without a directive the resource ids name the NICs.
        let item = serde_json::json!({
            "job_id": "j-2", "status": "successful", "job_action": "DetachNics",
            "resource_ids": "52:54:00:00:00:02",
        });
        let job = job_info(&item).unwrap();
        assert_eq!(
            (job.progress, job.action),
            (JobProgress::Succeeded, Some(JobAction::Detach))
        );
        assert_eq!(job.nics.len(), 1);
        assert!(job_info(&serde_json::json!({"status": "pending"})).is_none());
    }
}
