use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ipnet::Ipv4Net;

use super::{AttachHook, ManualClock, Rng};
use crate::ports::{Clock, CloudError, CloudErrorKind, CloudNetwork, CloudNics, NicFilter};
use crate::types::{
    CloudNic, CloudNicStatus, Instance, InstanceId, JobId, JobOutcome, JobStatus, NicId, Timestamp,
    Vxnet, VxnetId,
};

/// The calls [`FakeCloud`] counts and can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CloudAction {
    /// `describe_nics`.
    DescribeNics,
    /// `create_nics`.
    CreateNics,
    /// `attach_nics`.
    AttachNics,
    /// `detach_nics`.
    DetachNics,
    /// `delete_nics`.
    DeleteNics,
    /// `wait_job` and `job_statuses` (DescribeJobs).
    WaitJob,
    /// `describe_instance`, `describe_vxnets`, `vpc_cidrs`.
    Topology,
}

/// Where an injected failure strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// The call fails and has no effect.
    Before,
    /// The call takes effect but its answer is lost: the caller sees an error.
    After,
}

/// The fake cloud's topology and behaviour.
#[derive(Debug, Clone)]
pub struct FakeCloudConfig {
    /// Vxnets (addresses `.2`..`.253` of each are allocatable).
    pub vxnets: Vec<Vxnet>,
    /// Addresses available per vxnet; `None` = as many as the CIDR allows.
    pub vxnet_capacity: Option<u32>,
    /// Instances with their primary NIC's address (in the first vxnet).
    pub instances: Vec<(InstanceId, Ipv4Addr)>,
    /// NICs per instance, primary included (QingCloud: 63).
    pub nics_per_instance: u32,
    /// Time from AttachNics to the job's end.
    pub attach_latency: Duration,
    /// Time from DetachNics to the job's end.
    pub detach_latency: Duration,
    /// Probability of a random retryable failure (5000) on any call.
    pub fault_rate: f64,
    /// Seed of the random faults.
    pub seed: u64,
    /// The VPC's network.
    pub vpc: Ipv4Net,
}

impl Default for FakeCloudConfig {
    fn default() -> Self {
        Self {
            vxnets: vec![Vxnet {
                id: VxnetId::new("vxnet-sim1"),
                cidr: "172.16.1.0/24".parse().expect("literal"),
                gateway: Ipv4Addr::new(172, 16, 1, 1),
                router: None,
            }],
            vxnet_capacity: None,
            instances: vec![(
                InstanceId::new("i-sim00001"),
                Ipv4Addr::new(172, 16, 1, 254),
            )],
            nics_per_instance: 63,
            attach_latency: Duration::from_secs(2),
            detach_latency: Duration::from_secs(2),
            fault_rate: 0.0,
            seed: 1,
            vpc: "172.16.0.0/16".parse().expect("literal"),
        }
    }
}

#[derive(Debug)]
struct Job {
    attach_to: Option<InstanceId>,
    nics: Vec<NicId>,
    done_at: Timestamp,
    fail: bool,
    applied: bool,
}

struct Inner {
    config: FakeCloudConfig,
    nics: BTreeMap<NicId, CloudNic>,
    jobs: BTreeMap<JobId, Job>,
    next_mac: u32,
    next_job: u64,
    requests: BTreeMap<CloudAction, u64>,
    max_batch: BTreeMap<CloudAction, usize>,
    faults: BTreeMap<CloudAction, VecDeque<(CloudErrorKind, FaultPoint)>>,
    failing_jobs: u32,
    rng: Rng,
    max_attached: BTreeMap<InstanceId, u32>,
    hook: Option<Arc<dyn AttachHook>>,
}

type HookCall = (bool, NicId, InstanceId);

/// An in-memory QingCloud: NICs, asynchronous jobs timed by a [`ManualClock`], quotas,
/// fault injection and counters. Clones share the same cloud.
#[derive(Clone)]
pub struct FakeCloud {
    inner: Arc<Mutex<Inner>>,
    clock: ManualClock,
}

impl std::fmt::Debug for FakeCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeCloud").finish_non_exhaustive()
    }
}

fn err(kind: CloudErrorKind, action: &str, code: i64, message: impl Into<String>) -> CloudError {
    CloudError::new(kind, action, message).with_code(code)
}

impl FakeCloud {
    /// A cloud with `config`, timed by `clock`. Each instance gets a primary NIC.
    pub fn new(config: FakeCloudConfig, clock: ManualClock) -> Self {
        let mut inner = Inner {
            rng: Rng::new(config.seed),
            config,
            nics: BTreeMap::new(),
            jobs: BTreeMap::new(),
            next_mac: 0x100,
            next_job: 1,
            requests: BTreeMap::new(),
            max_batch: BTreeMap::new(),
            faults: BTreeMap::new(),
            failing_jobs: 0,
            max_attached: BTreeMap::new(),
            hook: None,
        };
        let primaries: Vec<_> = inner.config.instances.clone();
        let vxnet = inner.config.vxnets[0].id.clone();
        for (instance, ip) in primaries {
            let id = inner.new_mac();
            inner.nics.insert(
                id.clone(),
                CloudNic {
                    id,
                    name: String::new(),
                    vxnet: vxnet.clone(),
                    ip,
                    instance: Some(instance),
                    status: CloudNicStatus::InUse,
                    primary: true,
                },
            );
        }
        FakeCloud {
            inner: Arc::new(Mutex::new(inner)),
            clock,
        }
    }

    /// Notifies `hook` of every attach and detach from now on.
    pub fn set_hook(&self, hook: Arc<dyn AttachHook>) {
        self.inner.lock().unwrap().hook = Some(hook);
    }

    /// The next call of `action` fails with `kind`, before or after its effect.
    pub fn fail_next(&self, action: CloudAction, kind: CloudErrorKind, point: FaultPoint) {
        self.inner
            .lock()
            .unwrap()
            .faults
            .entry(action)
            .or_default()
            .push_back((kind, point));
    }

    /// The next `n` jobs started end in `failed` without effect.
    pub fn fail_next_jobs(&self, n: u32) {
        self.inner.lock().unwrap().failing_jobs += n;
    }

    /// Sets the probability of random retryable failures.
    pub fn set_fault_rate(&self, rate: f64) {
        self.inner.lock().unwrap().config.fault_rate = rate;
    }

    /// Sets the attach job latency.
    pub fn set_attach_latency(&self, latency: Duration) {
        self.inner.lock().unwrap().config.attach_latency = latency;
    }

    /// Calls made of `action` (failed ones included).
    pub fn requests(&self, action: CloudAction) -> u64 {
        self.inner
            .lock()
            .unwrap()
            .requests
            .get(&action)
            .copied()
            .unwrap_or(0)
    }

    /// The largest batch ever passed to `action`.
    pub fn max_batch(&self, action: CloudAction) -> usize {
        self.inner
            .lock()
            .unwrap()
            .max_batch
            .get(&action)
            .copied()
            .unwrap_or(0)
    }

    /// The most NICs (primary included) ever attached to `instance` at once, or
    /// requested to be (attached + attaching).
    pub fn max_attached(&self, instance: &InstanceId) -> u32 {
        self.inner
            .lock()
            .unwrap()
            .max_attached
            .get(instance)
            .copied()
            .unwrap_or(0)
    }

    /// Every NIC in the cloud (jobs due by now applied first).
    pub fn nics(&self) -> Vec<CloudNic> {
        self.settle();
        self.inner.lock().unwrap().nics.values().cloned().collect()
    }

    /// Jobs not finished yet.
    pub fn running_jobs(&self) -> usize {
        self.settle();
        self.inner
            .lock()
            .unwrap()
            .jobs
            .values()
            .filter(|j| !j.applied)
            .count()
    }

    /// The primary NIC of `instance`.
    pub fn primary_nic(&self, instance: &InstanceId) -> Option<CloudNic> {
        self.inner
            .lock()
            .unwrap()
            .nics
            .values()
            .find(|n| n.primary && n.instance.as_ref() == Some(instance))
            .cloned()
    }

    /// Someone deletes `nic` behind hostnic's back (detaching it first if needed).
    pub fn vanish(&self, nic: &NicId) {
        let call = {
            let mut inner = self.inner.lock().unwrap();
            inner
                .nics
                .remove(nic)
                .and_then(|n| n.instance.map(|i| (false, n.id, i)))
        };
        self.notify(call.into_iter().collect());
    }

    /// Applies every job due by now and notifies the hook.
    pub fn settle(&self) {
        let now = self.clock.now();
        let calls = self.inner.lock().unwrap().apply_due(now);
        self.notify(calls);
    }

    fn notify(&self, calls: Vec<HookCall>) {
        let hook = self.inner.lock().unwrap().hook.clone();
        if let Some(hook) = hook {
            for (attached, nic, instance) in calls {
                if attached {
                    hook.attached(&nic, &instance);
                } else {
                    hook.detached(&nic, &instance);
                }
            }
        }
    }

    /// Counts the call and returns an injected fault, if any.
    fn enter(&self, action: CloudAction, batch: usize) -> Option<(CloudErrorKind, FaultPoint)> {
        self.settle();
        let mut inner = self.inner.lock().unwrap();
        *inner.requests.entry(action).or_default() += 1;
        let max = inner.max_batch.entry(action).or_default();
        *max = (*max).max(batch);
        if let Some(f) = inner.faults.get_mut(&action).and_then(VecDeque::pop_front) {
            return Some(f);
        }
        let rate = inner.config.fault_rate;
        if inner.rng.chance(rate) {
            let point = if inner.rng.next_u64().is_multiple_of(2) {
                FaultPoint::Before
            } else {
                FaultPoint::After
            };
            return Some((CloudErrorKind::Retryable, point));
        }
        None
    }

    fn injected(kind: CloudErrorKind, action: &str) -> CloudError {
        let code = match kind {
            CloudErrorKind::Retryable => 5000,
            CloudErrorKind::NotFound => 2100,
            CloudErrorKind::QuotaExceeded => 2500,
            CloudErrorKind::Permanent => 1400,
            CloudErrorKind::Throttled => 2500,
        };
        err(kind, action, code, "injected failure")
    }

    /// Runs `effect` honouring an injected fault.
    fn call<T>(
        &self,
        action: CloudAction,
        name: &str,
        batch: usize,
        effect: impl FnOnce(&mut Inner, Timestamp) -> Result<T, CloudError>,
    ) -> Result<T, CloudError> {
        let fault = self.enter(action, batch);
        if let Some((kind, FaultPoint::Before)) = fault {
            return Err(Self::injected(kind, name));
        }
        let now = self.clock.now();
        let result = effect(&mut self.inner.lock().unwrap(), now);
        match fault {
            Some((kind, FaultPoint::After)) => Err(Self::injected(kind, name)),
            _ => result,
        }
    }
}

impl Inner {
    fn new_mac(&mut self) -> NicId {
        self.next_mac += 1;
        let n = self.next_mac;
        NicId::from_mac([0x52, 0x54, 0x00, (n >> 16) as u8, (n >> 8) as u8, n as u8])
    }

    fn attached_count(&self, instance: &InstanceId) -> u32 {
        let attached = self
            .nics
            .values()
            .filter(|n| n.instance.as_ref() == Some(instance))
            .count();
        let attaching: usize = self
            .jobs
            .values()
            .filter(|j| !j.applied && j.attach_to.as_ref() == Some(instance))
            .flat_map(|j| j.nics.iter())
            .filter(|id| self.nics.get(*id).is_some_and(|n| n.instance.is_none()))
            .count();
        (attached + attaching) as u32
    }

    fn busy(&self, nic: &NicId) -> bool {
        self.jobs
            .values()
            .any(|j| !j.applied && j.nics.contains(nic))
    }

    fn apply_due(&mut self, now: Timestamp) -> Vec<HookCall> {
        let mut calls = Vec::new();
        for job in self
            .jobs
            .values_mut()
            .filter(|j| !j.applied && j.done_at <= now)
        {
            job.applied = true;
            if job.fail {
                continue;
            }
            for id in &job.nics {
                let Some(nic) = self.nics.get_mut(id) else {
                    continue;
                };
                match &job.attach_to {
                    Some(instance) => {
                        nic.instance = Some(instance.clone());
                        nic.status = CloudNicStatus::InUse;
                        calls.push((true, id.clone(), instance.clone()));
                    }
                    None => {
                        if let Some(instance) = nic.instance.take() {
                            calls.push((false, id.clone(), instance));
                        }
                        nic.status = CloudNicStatus::Available;
                    }
                }
            }
        }
        let instances: Vec<InstanceId> = self
            .config
            .instances
            .iter()
            .map(|(i, _)| i.clone())
            .collect();
        for i in instances {
            let n = self.attached_count(&i);
            let max = self.max_attached.entry(i).or_default();
            *max = (*max).max(n);
        }
        calls
    }

    fn start_job(
        &mut self,
        attach_to: Option<InstanceId>,
        nics: &[NicId],
        now: Timestamp,
    ) -> JobId {
        let latency = if attach_to.is_some() {
            self.config.attach_latency
        } else {
            self.config.detach_latency
        };
        let fail = self.failing_jobs > 0;
        if fail {
            self.failing_jobs -= 1;
        }
        let id = JobId::new(format!("j-fake{:05}", self.next_job));
        self.next_job += 1;
        self.jobs.insert(
            id.clone(),
            Job {
                attach_to,
                nics: nics.to_vec(),
                done_at: now.plus(latency),
                fail,
                applied: false,
            },
        );
        id
    }

    fn check_nics(
        &self,
        action: &str,
        nics: &[NicId],
        want: CloudNicStatus,
    ) -> Result<(), CloudError> {
        if nics.is_empty() {
            return Err(err(
                CloudErrorKind::Permanent,
                action,
                1100,
                "parameter nics is required",
            ));
        }
        for id in nics {
            let nic = self.nics.get(id).ok_or_else(|| {
                err(
                    CloudErrorKind::NotFound,
                    action,
                    2100,
                    format!("resource [{id}] not found"),
                )
            })?;
            if nic.primary || nic.status != want || self.busy(id) {
                return Err(err(
                    CloudErrorKind::Permanent,
                    action,
                    1400,
                    format!(
                        "nic [{id}] is in status [{:?}], cannot {action}",
                        nic.status
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl CloudNics for FakeCloud {
    async fn describe_nics(&self, filter: &NicFilter) -> Result<Vec<CloudNic>, CloudError> {
        self.call(CloudAction::DescribeNics, "DescribeNics", 0, |inner, _| {
            Ok(inner
                .nics
                .values()
                .filter(|n| filter.nics.is_empty() || filter.nics.contains(&n.id))
                .filter(|n| filter.instance.is_none() || n.instance == filter.instance)
                .filter(|n| filter.name.as_ref().is_none_or(|name| &n.name == name))
                .filter(|n| filter.vxnets.is_empty() || filter.vxnets.contains(&n.vxnet))
                .cloned()
                .collect())
        })
    }

    async fn create_nics(
        &self,
        vxnet: &VxnetId,
        count: u32,
        name: &str,
    ) -> Result<Vec<CloudNic>, CloudError> {
        self.call(
            CloudAction::CreateNics,
            "CreateNics",
            count as usize,
            |inner, _| {
                let a = "CreateNics";
                if count == 0 {
                    return Err(err(
                        CloudErrorKind::Permanent,
                        a,
                        1100,
                        "count must be positive",
                    ));
                }
                let v = inner
                    .config
                    .vxnets
                    .iter()
                    .find(|v| &v.id == vxnet)
                    .cloned()
                    .ok_or_else(|| {
                        err(
                            CloudErrorKind::NotFound,
                            a,
                            2100,
                            format!("resource [{vxnet}] not found"),
                        )
                    })?;
                let used: std::collections::BTreeSet<Ipv4Addr> = inner
                    .nics
                    .values()
                    .filter(|n| &n.vxnet == vxnet)
                    .map(|n| n.ip)
                    .collect();
                let capacity = inner
                    .config
                    .vxnet_capacity
                    .map(|c| c as usize)
                    .unwrap_or(usize::MAX);
                let free: Vec<Ipv4Addr> = v
                    .cidr
                    .hosts()
                    .filter(|ip| ip.octets()[3] >= 2 && ip.octets()[3] <= 253)
                    .filter(|ip| !used.contains(ip))
                    .take(capacity.saturating_sub(used.len()))
                    .take(count as usize)
                    .collect();
                if free.len() < count as usize {
                    return Err(err(
                        CloudErrorKind::QuotaExceeded,
                        a,
                        2500,
                        format!(
                            "no enough private ips in vxnet [{vxnet}]: {} left, {count} asked",
                            free.len()
                        ),
                    ));
                }
                let mut created = Vec::new();
                for ip in free {
                    let id = inner.new_mac();
                    let nic = CloudNic {
                        id: id.clone(),
                        name: name.to_string(),
                        vxnet: vxnet.clone(),
                        ip,
                        instance: None,
                        status: CloudNicStatus::Available,
                        primary: false,
                    };
                    inner.nics.insert(id, nic.clone());
                    created.push(nic);
                }
                Ok(created)
            },
        )
    }

    async fn attach_nics(
        &self,
        instance: &InstanceId,
        nics: &[NicId],
    ) -> Result<JobId, CloudError> {
        self.call(
            CloudAction::AttachNics,
            "AttachNics",
            nics.len(),
            |inner, now| {
                let a = "AttachNics";
                if !inner.config.instances.iter().any(|(i, _)| i == instance) {
                    return Err(err(
                        CloudErrorKind::NotFound,
                        a,
                        2100,
                        format!("resource [{instance}] not found"),
                    ));
                }
                inner.check_nics(a, nics, CloudNicStatus::Available)?;
                let after = inner.attached_count(instance) + nics.len() as u32;
                if after > inner.config.nics_per_instance {
                    return Err(err(
                        CloudErrorKind::QuotaExceeded,
                        a,
                        2500,
                        format!(
                            "instance [{instance}] can have at most {} nics",
                            inner.config.nics_per_instance
                        ),
                    ));
                }
                let job = inner.start_job(Some(instance.clone()), nics, now);
                let max = inner.max_attached.entry(instance.clone()).or_default();
                *max = (*max).max(after);
                Ok(job)
            },
        )
    }

    async fn detach_nics(&self, nics: &[NicId]) -> Result<JobId, CloudError> {
        self.call(
            CloudAction::DetachNics,
            "DetachNics",
            nics.len(),
            |inner, now| {
                inner.check_nics("DetachNics", nics, CloudNicStatus::InUse)?;
                Ok(inner.start_job(None, nics, now))
            },
        )
    }

    async fn delete_nics(&self, nics: &[NicId]) -> Result<(), CloudError> {
        self.call(
            CloudAction::DeleteNics,
            "DeleteNics",
            nics.len(),
            |inner, _| {
                inner.check_nics("DeleteNics", nics, CloudNicStatus::Available)?;
                for id in nics {
                    inner.nics.remove(id);
                }
                Ok(())
            },
        )
    }

    async fn wait_job(&self, job: &JobId, timeout: Duration) -> Result<JobOutcome, CloudError> {
        let done_at = self.call(CloudAction::WaitJob, "DescribeJobs", 1, |inner, _| {
            inner.jobs.get(job).map(|j| j.done_at).ok_or_else(|| {
                err(
                    CloudErrorKind::NotFound,
                    "DescribeJobs",
                    2100,
                    format!("resource [{job}] not found"),
                )
            })
        })?;
        let now = self.clock.now();
        if done_at > now.plus(timeout) {
            self.clock.advance(timeout);
            self.settle();
            return Err(err(
                CloudErrorKind::Retryable,
                "DescribeJobs",
                5100,
                format!("job {job} still running after {timeout:?}"),
            ));
        }
        // Waiting is simulated by moving the shared clock to the job's end.
        self.clock.advance_to(done_at);
        self.settle();
        let fail = self
            .inner
            .lock()
            .unwrap()
            .jobs
            .get(job)
            .is_some_and(|j| j.fail);
        Ok(if fail {
            JobOutcome::Failed
        } else {
            JobOutcome::Successful
        })
    }

    async fn job_statuses(&self, jobs: &[JobId]) -> Result<BTreeMap<JobId, JobStatus>, CloudError> {
        self.statuses(jobs)
    }
}

impl FakeCloud {
    /// Where `jobs` are, without waiting (DescribeJobs).
    fn statuses(&self, jobs: &[JobId]) -> Result<BTreeMap<JobId, JobStatus>, CloudError> {
        self.call(
            CloudAction::WaitJob,
            "DescribeJobs",
            jobs.len(),
            |inner, _| {
                Ok(jobs
                    .iter()
                    .map(|id| {
                        let status = match inner.jobs.get(id) {
                            None => JobStatus::Unknown,
                            Some(j) if !j.applied => JobStatus::Running,
                            Some(j) if j.fail => JobStatus::Done(JobOutcome::Failed),
                            Some(_) => JobStatus::Done(JobOutcome::Successful),
                        };
                        (id.clone(), status)
                    })
                    .collect())
            },
        )
    }
}

#[async_trait]
impl CloudNetwork for FakeCloud {
    async fn describe_instance(&self, instance: &InstanceId) -> Result<Instance, CloudError> {
        self.call(CloudAction::Topology, "DescribeInstances", 1, |inner, _| {
            let nic = inner
                .nics
                .values()
                .find(|n| n.primary && n.instance.as_ref() == Some(instance))
                .ok_or_else(|| {
                    err(
                        CloudErrorKind::NotFound,
                        "DescribeInstances",
                        2100,
                        format!("resource [{instance}] not found"),
                    )
                })?;
            Ok(Instance {
                id: instance.clone(),
                primary_nic: nic.id.clone(),
                primary_ip: nic.ip,
                primary_vxnet: nic.vxnet.clone(),
            })
        })
    }

    async fn describe_vxnets(&self, vxnets: &[VxnetId]) -> Result<Vec<Vxnet>, CloudError> {
        self.call(
            CloudAction::Topology,
            "DescribeVxnets",
            vxnets.len(),
            |inner, _| {
                Ok(inner
                    .config
                    .vxnets
                    .iter()
                    .filter(|v| vxnets.contains(&v.id))
                    .cloned()
                    .collect())
            },
        )
    }

    async fn vpc_cidrs(&self, _vxnet: &VxnetId) -> Result<Vec<Ipv4Net>, CloudError> {
        self.call(CloudAction::Topology, "DescribeRouters", 1, |inner, _| {
            Ok(vec![inner.config.vpc])
        })
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;

    fn cloud() -> (FakeCloud, ManualClock) {
        let clock = ManualClock::new(Timestamp(1_000));
        (
            FakeCloud::new(FakeCloudConfig::default(), clock.clone()),
            clock,
        )
    }

    #[test]
    fn attach_is_an_async_job_that_takes_the_configured_latency() {
        let (cloud, clock) = cloud();
        let i = InstanceId::new("i-sim00001");
        block_on(async {
            let nics = cloud
                .create_nics(&VxnetId::new("vxnet-sim1"), 2, "hostnic_i")
                .await
                .unwrap();
            let ids: Vec<_> = nics.iter().map(|n| n.id.clone()).collect();
            let job = cloud.attach_nics(&i, &ids).await.unwrap();
            assert!(
                cloud
                    .nics()
                    .iter()
                    .all(|n| n.primary || n.status == CloudNicStatus::Available)
            );
            assert_eq!(
                cloud.wait_job(&job, Duration::from_secs(10)).await.unwrap(),
                JobOutcome::Successful
            );
            assert_eq!(clock.now(), Timestamp(3_000));
            assert!(
                cloud
                    .nics()
                    .iter()
                    .all(|n| n.status == CloudNicStatus::InUse)
            );
            let again = cloud.attach_nics(&i, &ids).await.unwrap_err();
            assert_eq!(
                (again.kind, again.code),
                (CloudErrorKind::Permanent, Some(1400))
            );
        });
    }

    #[test]
    fn quotas_are_enforced() {
        let clock = ManualClock::new(Timestamp(0));
        let cfg = FakeCloudConfig {
            vxnet_capacity: Some(3),
            nics_per_instance: 3,
            ..Default::default()
        };
        let cloud = FakeCloud::new(cfg, clock);
        block_on(async {
            // The primary NIC takes one of the three addresses.
            let e = cloud
                .create_nics(&VxnetId::new("vxnet-sim1"), 3, "x")
                .await
                .unwrap_err();
            assert_eq!(e.kind, CloudErrorKind::QuotaExceeded);
            let nics = cloud
                .create_nics(&VxnetId::new("vxnet-sim1"), 2, "x")
                .await
                .unwrap();
            let ids: Vec<_> = nics.iter().map(|n| n.id.clone()).collect();
            let i = InstanceId::new("i-sim00001");
            cloud.attach_nics(&i, &ids).await.unwrap();
            assert_eq!(cloud.max_attached(&i), 3);
        });
    }

    #[test]
    fn a_fault_after_the_effect_loses_only_the_answer() {
        let (cloud, _) = cloud();
        cloud.fail_next(
            CloudAction::CreateNics,
            CloudErrorKind::Retryable,
            FaultPoint::After,
        );
        block_on(async {
            let e = cloud
                .create_nics(&VxnetId::new("vxnet-sim1"), 2, "hostnic_i")
                .await
                .unwrap_err();
            assert!(e.is_retryable());
        });
        assert_eq!(
            cloud
                .nics()
                .iter()
                .filter(|n| n.name == "hostnic_i")
                .count(),
            2
        );
        assert_eq!(cloud.requests(CloudAction::CreateNics), 1);
    }
}
