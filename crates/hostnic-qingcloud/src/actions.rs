//! Typed API actions: requests built from domain types, answers parsed into them.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use hostnic_core::ports::{CloudError, CloudErrorKind, NicFilter};
use hostnic_core::types::{
    CloudNic, CloudNicStatus, Instance, InstanceId, JobId, JobOutcome, NicId, RouterId, Vxnet,
    VxnetId,
};
use ipnet::Ipv4Net;
use serde_json::Value;

use crate::client::QingCloudClient;
use crate::signer::Params;

/// The tag every NIC hostnic creates carries, so leaked NICs can be found.
pub const HOSTNIC_TAG: &str = "hostnic";

/// The status of a job as DescribeJobs reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Queued.
    Pending,
    /// Running.
    Working,
    /// Done.
    Successful,
    /// Failed.
    Failed,
}

/// Which addresses [`QingCloudClient::create_nics_with`] gives the new NICs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicAddresses {
    /// `count` NICs (1 to 252), each with the vxnet's next free address.
    Automatic(u32),
    /// One NIC per address (`private_ips.N`).
    Exact(Vec<Ipv4Addr>),
    /// `count` NICs without any address (`disable_ip=1`).
    None(u32),
}

/// What CreateNics should make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicRequest {
    /// The vxnet.
    pub vxnet: VxnetId,
    /// The NICs' name.
    pub name: String,
    /// Their addresses.
    pub addresses: NicAddresses,
}

/// A NIC CreateNics made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedNic {
    /// Its id (MAC).
    pub id: NicId,
    /// Its address (`None` when created without one).
    pub ip: Option<Ipv4Addr>,
}

pub(crate) fn bad_answer(action: &str, what: impl std::fmt::Display) -> CloudError {
    CloudError::new(
        CloudErrorKind::Retryable,
        action,
        format!("unexpected answer: {what}"),
    )
}

pub(crate) fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

pub(crate) fn int_field(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(|x| {
        x.as_i64()
            .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
    })
}

/// Parses one `nic_set` item; `None` (with a warning) for items hostnic cannot use.
pub(crate) fn parse_nic(item: &Value) -> Option<CloudNic> {
    let id = str_field(item, "nic_id")?;
    let id = match NicId::new(id) {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "skipping a NIC whose id is not a MAC");
            return None;
        }
    };
    let ip = str_field(item, "private_ip").and_then(|s| s.parse::<Ipv4Addr>().ok());
    let Some(ip) = ip else {
        tracing::warn!(nic = %id, "skipping a NIC without a private IPv4 address");
        return None;
    };
    let instance = str_field(item, "instance_id").map(InstanceId::new);
    let status = match str_field(item, "status") {
        Some("in-use") => CloudNicStatus::InUse,
        _ => CloudNicStatus::Available,
    };
    Some(CloudNic {
        id,
        name: str_field(item, "nic_name").unwrap_or_default().to_string(),
        vxnet: VxnetId::new(str_field(item, "vxnet_id").unwrap_or_default()),
        ip,
        instance: if status == CloudNicStatus::InUse {
            instance
        } else {
            None
        },
        status,
        primary: int_field(item, "role") == Some(1),
    })
}

impl QingCloudClient {
    /// Calls a Describe action page by page (`offset`, `limit` of at most 100: the API
    /// answers no more whatever `limit` says) and returns every item of `set_key`,
    /// until `total_count` items came or a page is empty.
    pub async fn describe_all(
        &self,
        action: &str,
        params: Params,
        set_key: &str,
    ) -> Result<Vec<Value>, CloudError> {
        let limit = self.options().page_size.clamp(1, 100);
        let mut items = Vec::new();
        let mut offset = 0u64;
        loop {
            let mut page = params.clone();
            page.set("offset", offset).set("limit", limit);
            let answer = self.call(action, page).await?;
            let set = answer
                .get(set_key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let total = answer
                .get("total_count")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let got = set.len() as u64;
            items.extend(set);
            offset += got;
            if got == 0 || offset >= total {
                return Ok(items);
            }
        }
    }

    /// DescribeNics over all pages.
    pub async fn describe_nics(&self, filter: &NicFilter) -> Result<Vec<CloudNic>, CloudError> {
        let mut params = Params::new();
        params
            .list("nics", filter.nics.iter().map(NicId::as_str))
            .list("vxnets", filter.vxnets.iter().map(VxnetId::as_str))
            .list("instances", filter.instance.iter().map(InstanceId::as_str))
            .set_opt("nic_name", filter.name.as_deref());
        let items = self.describe_all("DescribeNics", params, "nic_set").await?;
        let mut nics: Vec<CloudNic> = items.iter().filter_map(parse_nic).collect();
        // Name search may be fuzzy on the real API: keep exact matches only.
        if let Some(name) = &filter.name {
            nics.retain(|n| &n.name == name);
        }
        if let Some(instance) = &filter.instance {
            nics.retain(|n| n.instance.as_ref() == Some(instance));
        }
        Ok(nics)
    }

    /// CreateNics `count` NICs in `vxnet` named `name`, then tags them `hostnic`
    /// (a tagging failure is logged, not returned: the NICs exist and carry the name).
    pub async fn create_nics(
        &self,
        vxnet: &VxnetId,
        count: u32,
        name: &str,
    ) -> Result<Vec<CloudNic>, CloudError> {
        const ACTION: &str = "CreateNics";
        let created = self
            .create_nics_with(&NicRequest {
                vxnet: vxnet.clone(),
                name: name.to_string(),
                addresses: NicAddresses::Automatic(count),
            })
            .await?;
        created
            .into_iter()
            .map(|nic| {
                let ip = nic
                    .ip
                    .ok_or_else(|| bad_answer(ACTION, "a NIC without a private IP"))?;
                Ok(CloudNic {
                    id: nic.id,
                    name: name.to_string(),
                    vxnet: vxnet.clone(),
                    ip,
                    instance: None,
                    status: CloudNicStatus::Available,
                    primary: false,
                })
            })
            .collect()
    }

    /// CreateNics as [`NicRequest`] says (`count` up to 252, or `private_ips.N`, or
    /// `disable_ip`), then tags them `hostnic` (a tagging failure is logged only).
    pub async fn create_nics_with(
        &self,
        request: &NicRequest,
    ) -> Result<Vec<CreatedNic>, CloudError> {
        const ACTION: &str = "CreateNics";
        let mut params = Params::new();
        params
            .set("vxnet", request.vxnet.as_str())
            .set("nic_name", &request.name);
        match &request.addresses {
            NicAddresses::Automatic(count) => {
                params.set("count", count);
            }
            NicAddresses::Exact(ips) => {
                params.list("private_ips", ips);
            }
            NicAddresses::None(count) => {
                params.set("count", count).set("disable_ip", 1);
            }
        }
        let answer = self.call(ACTION, params).await?;
        let items = answer
            .get("nics")
            .and_then(Value::as_array)
            .ok_or_else(|| bad_answer(ACTION, "no `nics`"))?;
        let mut nics = Vec::with_capacity(items.len());
        for item in items {
            let id = str_field(item, "nic_id")
                .and_then(|s| NicId::new(s).ok())
                .ok_or_else(|| bad_answer(ACTION, "a NIC without a MAC id"))?;
            let ip = str_field(item, "private_ip").and_then(|s| s.parse().ok());
            nics.push(CreatedNic { id, ip });
        }
        let ids: Vec<NicId> = nics.iter().map(|n| n.id.clone()).collect();
        if let Err(e) = self.tag_nics(&ids).await {
            tracing::warn!(error = %e, count = ids.len(), name = %request.name, "created NICs could not be tagged; they still carry their name");
        }
        Ok(nics)
    }

    /// The id of the `hostnic` tag, created on first use and cached.
    pub async fn hostnic_tag(&self) -> Result<String, CloudError> {
        let mut cache = self.tag_cache().lock().await;
        if let Some(id) = cache.as_ref() {
            return Ok(id.clone());
        }
        let mut params = Params::new();
        params.set("search_word", HOSTNIC_TAG);
        let tags = self.describe_all("DescribeTags", params, "tag_set").await?;
        let found = tags
            .iter()
            .find(|t| str_field(t, "tag_name") == Some(HOSTNIC_TAG))
            .and_then(|t| str_field(t, "tag_id"))
            .map(str::to_string);
        let id = match found {
            Some(id) => id,
            None => {
                let mut params = Params::new();
                params.set("tag_name", HOSTNIC_TAG);
                let answer = self.call("CreateTag", params).await?;
                str_field(&answer, "tag_id")
                    .ok_or_else(|| bad_answer("CreateTag", "no tag_id"))?
                    .to_string()
            }
        };
        *cache = Some(id.clone());
        Ok(id)
    }

    /// AttachTags the `hostnic` tag to `nics`.
    pub async fn tag_nics(&self, nics: &[NicId]) -> Result<(), CloudError> {
        if nics.is_empty() {
            return Ok(());
        }
        let tag = self.hostnic_tag().await?;
        let mut params = Params::new();
        for (i, nic) in nics.iter().enumerate() {
            let n = i + 1;
            params
                .set(format!("resource_tag_pairs.{n}.tag_id"), &tag)
                .set(format!("resource_tag_pairs.{n}.resource_type"), "nic")
                .set(format!("resource_tag_pairs.{n}.resource_id"), nic.as_str());
        }
        self.call("AttachTags", params).await.map(|_| ())
    }

    async fn job_call(&self, action: &str, params: Params) -> Result<JobId, CloudError> {
        let answer = self.call(action, params).await?;
        str_field(&answer, "job_id")
            .map(JobId::new)
            .ok_or_else(|| bad_answer(action, "no job_id"))
    }

    /// AttachNics: starts attaching `nics` to `instance`.
    pub async fn attach_nics(
        &self,
        instance: &InstanceId,
        nics: &[NicId],
    ) -> Result<JobId, CloudError> {
        let mut params = Params::new();
        params
            .list("nics", nics.iter().map(NicId::as_str))
            .set("instance", instance.as_str());
        self.job_call("AttachNics", params).await
    }

    /// DetachNics: starts detaching `nics`.
    pub async fn detach_nics(&self, nics: &[NicId]) -> Result<JobId, CloudError> {
        let mut params = Params::new();
        params.list("nics", nics.iter().map(NicId::as_str));
        self.job_call("DetachNics", params).await
    }

    /// DeleteNics: deletes detached `nics`.
    pub async fn delete_nics(&self, nics: &[NicId]) -> Result<(), CloudError> {
        let mut params = Params::new();
        params.list("nics", nics.iter().map(NicId::as_str));
        self.call("DeleteNics", params).await.map(|_| ())
    }

    /// DescribeJobs for every job of `jobs` in one call per 100 jobs (`jobs.1`…`jobs.N`):
    /// the status of each job the API knows (unknown jobs are absent).
    pub async fn job_statuses(
        &self,
        jobs: &[JobId],
    ) -> Result<HashMap<JobId, JobStatus>, CloudError> {
        const ACTION: &str = "DescribeJobs";
        let mut out = HashMap::with_capacity(jobs.len());
        for chunk in jobs.chunks(100) {
            let mut params = Params::new();
            params.list("jobs", chunk.iter().map(JobId::as_str));
            let items = self.describe_all(ACTION, params, "job_set").await?;
            for item in &items {
                let Some(id) = str_field(item, "job_id") else {
                    continue;
                };
                let status = match str_field(item, "status") {
                    Some("pending") => JobStatus::Pending,
                    Some("working") => JobStatus::Working,
                    Some("successful") => JobStatus::Successful,
                    Some("failed") | Some("done with failure") => JobStatus::Failed,
                    other => return Err(bad_answer(ACTION, format!("job status {other:?}"))),
                };
                out.insert(JobId::new(id), status);
            }
        }
        Ok(out)
    }

    /// DescribeJobs for one job.
    pub async fn job_status(&self, job: &JobId) -> Result<JobStatus, CloudError> {
        self.job_statuses(std::slice::from_ref(job))
            .await?
            .remove(job)
            .ok_or_else(|| {
                CloudError::new(
                    CloudErrorKind::NotFound,
                    "DescribeJobs",
                    format!("job {job} not found"),
                )
            })
    }

    /// Waits until `job` finished or `timeout` passed (then a retryable error: the
    /// job may still finish). Concurrent waits of this client share one poller, so
    /// one DescribeJobs asks for every job in flight; each job is first polled
    /// `job_poll_initial` after the wait starts, then with doubling delays up to
    /// `job_poll_max`. A poll refused by the breaker ends the wait with `Throttled`.
    pub async fn wait_job(&self, job: &JobId, timeout: Duration) -> Result<JobOutcome, CloudError> {
        match crate::jobs::wait(self, job, timeout).await? {
            JobStatus::Successful => Ok(JobOutcome::Successful),
            _ => Ok(JobOutcome::Failed),
        }
    }

    /// DescribeInstances for one instance: its primary NIC (role 1).
    pub async fn describe_instance(&self, instance: &InstanceId) -> Result<Instance, CloudError> {
        const ACTION: &str = "DescribeInstances";
        let mut params = Params::new();
        params
            .set("instances.1", instance.as_str())
            .set("verbose", 1);
        let answer = self.call(ACTION, params).await?;
        let item = answer
            .get("instance_set")
            .and_then(Value::as_array)
            .and_then(|s| {
                s.iter()
                    .find(|i| str_field(i, "instance_id") == Some(instance.as_str()))
            })
            .ok_or_else(|| {
                CloudError::new(
                    CloudErrorKind::NotFound,
                    ACTION,
                    format!("instance {instance} not found"),
                )
            })?;
        let primary = item
            .get("vxnets")
            .and_then(Value::as_array)
            .and_then(|v| v.iter().find(|n| int_field(n, "role") == Some(1)))
            .ok_or_else(|| bad_answer(ACTION, format!("instance {instance} has no primary NIC")))?;
        Ok(Instance {
            id: instance.clone(),
            primary_nic: str_field(primary, "nic_id")
                .and_then(|s| NicId::new(s).ok())
                .ok_or_else(|| bad_answer(ACTION, "primary NIC id is not a MAC"))?,
            primary_ip: str_field(primary, "private_ip")
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad_answer(ACTION, "primary NIC has no IPv4 address"))?,
            primary_vxnet: VxnetId::new(str_field(primary, "vxnet_id").unwrap_or_default()),
        })
    }

    /// DescribeVxnets: CIDR, gateway and router of each vxnet.
    pub async fn describe_vxnets(&self, vxnets: &[VxnetId]) -> Result<Vec<Vxnet>, CloudError> {
        const ACTION: &str = "DescribeVxnets";
        let mut params = Params::new();
        params
            .list("vxnets", vxnets.iter().map(VxnetId::as_str))
            .set("verbose", 1);
        let items = self.describe_all(ACTION, params, "vxnet_set").await?;
        let mut out = Vec::new();
        for item in &items {
            let id = VxnetId::new(str_field(item, "vxnet_id").unwrap_or_default());
            let router = item.get("router").unwrap_or(&Value::Null);
            let cidr: Ipv4Net = str_field(router, "ip_network")
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    CloudError::new(
                        CloudErrorKind::Permanent,
                        ACTION,
                        format!("vxnet {id} is not joined to a VPC router (no ip_network)"),
                    )
                })?;
            let gateway = str_field(router, "manager_ip")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| Ipv4Addr::from(u32::from(cidr.network()) + 1));
            out.push(Vxnet {
                id,
                cidr: cidr.trunc(),
                gateway,
                router: str_field(item, "vpc_router_id")
                    .or_else(|| str_field(router, "router_id"))
                    .map(RouterId::new),
            });
        }
        if let Ok(mut cache) = self.vxnet_cache().lock() {
            for v in &out {
                cache.insert(v.id.clone(), v.clone());
            }
        }
        for wanted in vxnets {
            if !out.iter().any(|v| &v.id == wanted) {
                return Err(CloudError::new(
                    CloudErrorKind::NotFound,
                    ACTION,
                    format!("vxnet {wanted} not found"),
                ));
            }
        }
        Ok(out)
    }

    /// The VPC router's network and the networks of its vxnets.
    pub async fn vpc_cidrs(&self, vxnet: &VxnetId) -> Result<Vec<Ipv4Net>, CloudError> {
        // The node's start asked for its vxnets a moment ago: their router does not
        // change, so that answer saves a DescribeVxnets.
        let known = self
            .vxnet_cache()
            .lock()
            .ok()
            .and_then(|c| c.get(vxnet).cloned());
        let vx = match known {
            Some(v) => vec![v],
            None => self.describe_vxnets(std::slice::from_ref(vxnet)).await?,
        };
        let Some(router) = vx.first().and_then(|v| v.router.clone()) else {
            return Ok(vx.iter().map(|v| v.cidr).collect());
        };
        let mut cidrs = Vec::new();
        let mut params = Params::new();
        params.set("routers.1", router.as_str()).set("verbose", 1);
        let answer = self.call("DescribeRouters", params).await?;
        if let Some(set) = answer.get("router_set").and_then(Value::as_array) {
            for r in set {
                if let Some(net) =
                    str_field(r, "vpc_network").and_then(|s| s.parse::<Ipv4Net>().ok())
                {
                    cidrs.push(net.trunc());
                }
            }
        }
        let mut params = Params::new();
        params.set("router", router.as_str()).set("verbose", 1);
        let items = self
            .describe_all("DescribeRouterVxnets", params, "router_vxnet_set")
            .await?;
        for item in &items {
            if let Some(net) = str_field(item, "ip_network").and_then(|s| s.parse::<Ipv4Net>().ok())
            {
                cidrs.push(net.trunc());
            }
        }
        cidrs.sort();
        cidrs.dedup();
        Ok(cidrs)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use tokio::time::Instant;

    use super::*;
    use crate::client::ClientOptions;
    use crate::config::{Config, Secret};
    use crate::transport::{Transport, TransportError, WireRequest};

    /// Answers DescribeJobs: each asked job is `working` until `done_after` polls, then
    /// `successful`; records when each poll came and which jobs it asked for.
    struct JobScript {
        polls: Mutex<Vec<(Instant, Vec<String>)>>,
        done_after: usize,
    }

    #[async_trait]
    impl Transport for JobScript {
        async fn send(&self, request: &WireRequest) -> Result<String, TransportError> {
            let asked: Vec<String> = url::form_urlencoded::parse(request.query.as_bytes())
                .filter(|(k, _)| k.starts_with("jobs."))
                .map(|(_, v)| v.into_owned())
                .collect();
            let mut polls = self.polls.lock().unwrap();
            polls.push((Instant::now(), asked.clone()));
            let status = if polls.len() > self.done_after {
                "successful"
            } else {
                "working"
            };
            let set: Vec<Value> = asked
                .iter()
                .map(|j| serde_json::json!({"job_id": j, "status": status}))
                .collect();
            Ok(
                serde_json::json!({"ret_code": 0, "job_set": set, "total_count": set.len()})
                    .to_string(),
            )
        }
    }

    fn waiter(done_after: usize) -> (QingCloudClient, Arc<JobScript>) {
        let script = Arc::new(JobScript {
            polls: Mutex::new(Vec::new()),
            done_after,
        });
        let options = ClientOptions {
            budget: None,
            job_poll_initial: Duration::from_secs(1),
            job_poll_max: Duration::from_secs(5),
            ..ClientOptions::default()
        };
        let config = Config::new("AK", Secret::new("SK"), "pek3a");
        (
            QingCloudClient::with_transport(&config, options, script.clone()),
            script,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_job_waiter_polls_with_doubling_delays_up_to_the_cap() {
        let (client, script) = waiter(4);
        let start = Instant::now();
        let outcome = client
            .wait_job(&JobId::new("j-1"), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(outcome, JobOutcome::Successful);
        let polls: Vec<u64> = script
            .polls
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _)| (*t - start).as_secs())
            .collect();
        // First poll after 1 s, then 2, 4, 5, 5 s apart.
        assert_eq!(polls, [1, 3, 7, 12, 17]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_job_waiter_gives_up_at_the_timeout_with_a_retryable_error() {
        let (client, script) = waiter(usize::MAX);
        let start = Instant::now();
        let err = client
            .wait_job(&JobId::new("j-1"), Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        // Polls at 1, 3 and 7 s; the next would be at 12.
        assert_eq!(script.polls.lock().unwrap().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_waits_share_one_describe_jobs_per_poll() {
        let (client, script) = waiter(2);
        let mut set = tokio::task::JoinSet::new();
        for i in 0..5 {
            let client = client.clone();
            set.spawn(async move {
                client
                    .wait_job(&JobId::new(format!("j-{i}")), Duration::from_secs(60))
                    .await
            });
        }
        while let Some(r) = set.join_next().await {
            assert_eq!(r.unwrap().unwrap(), JobOutcome::Successful);
        }
        let polls = script.polls.lock().unwrap().clone();
        // Three polls in all (not fifteen), each asking for all five jobs.
        assert_eq!(polls.len(), 3, "{polls:?}");
        for (_, asked) in &polls {
            let mut asked = asked.clone();
            asked.sort();
            assert_eq!(asked, ["j-0", "j-1", "j-2", "j-3", "j-4"]);
        }
        // The poller ended with the last wait.
        assert!(!client.job_poller().lock_running());
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_the_api_does_not_know_ends_its_wait_with_not_found() {
        struct Empty;
        #[async_trait]
        impl Transport for Empty {
            async fn send(&self, _: &WireRequest) -> Result<String, TransportError> {
                Ok(r#"{"ret_code":0,"job_set":[],"total_count":0}"#.into())
            }
        }
        let config = Config::new("AK", Secret::new("SK"), "pek3a");
        let client =
            QingCloudClient::with_transport(&config, ClientOptions::default(), Arc::new(Empty));
        let err = client
            .wait_job(&JobId::new("j-gone"), Duration::from_secs(60))
            .await
            .unwrap_err();
        assert_eq!(err.kind, CloudErrorKind::NotFound);
    }

    #[test]
    fn nic_items_parse_with_role_and_status() {
        let item = serde_json::json!({"nic_id": "52:54:9E:00:00:01", "nic_name": "hostnic_i-1",
            "vxnet_id": "vxnet-1", "private_ip": "172.16.1.5", "instance_id": "i-1",
            "status": "in-use", "role": 0});
        let nic = parse_nic(&item).unwrap();
        assert_eq!(nic.id.as_str(), "52:54:9e:00:00:01");
        assert_eq!(nic.status, CloudNicStatus::InUse);
        assert_eq!(nic.instance, Some(InstanceId::new("i-1")));
        assert!(!nic.primary);
        let primary = serde_json::json!({"nic_id": "52:54:00:00:00:01", "private_ip": "172.16.1.2",
            "status": "in-use", "instance_id": "i-1", "role": 1});
        assert!(parse_nic(&primary).unwrap().primary);
        assert!(
            parse_nic(&serde_json::json!({"nic_id": "nic-abc", "private_ip": "1.2.3.4"})).is_none()
        );
    }
}
