use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::{FaultPoint, ManualClock, Rng};
use crate::fleet::{
    FleetCloud, InstanceNics, JobAction, JobInfo, JobPage, JobProgress, JobQuery, NicPage, NicQuery,
};
use crate::ports::{Clock, CloudError, CloudErrorKind};
use crate::types::{
    CloudNic, CloudNicStatus, InstanceId, JobId, NicId, RouterId, Timestamp, Vxnet, VxnetId,
};

/// The topology and behaviour of a [`FleetCloudSim`].
#[derive(Debug, Clone)]
pub struct FleetSimConfig {
    /// Vxnets: `vxnet-N` = `172.(16+N/256).(N%256).0/24` under router `rtr-1`,
    /// plus `vxnet-other` under `rtr-2` (another VPC).
    pub vxnets: u32,
    /// Instances `i-N`, their primary NICs round-robin over the vxnets.
    pub instances: u32,
    /// NICs per instance, primary included (QingCloud: 64).
    pub instance_nic_limit: u32,
    /// NICs per vxnet (QingCloud: 252).
    pub vxnet_nic_limit: u32,
    /// Time from AttachNics/DetachNics to the job's end.
    pub job_latency: Duration,
    /// The account's request quota: at most `.0` requests in any window of `.1`.
    pub quota: Option<(u32, Duration)>,
    /// Requests one CreateNics costs (the call and the AttachTags of its NICs).
    pub create_cost: u32,
    /// Seed of the random faults.
    pub seed: u64,
}

impl Default for FleetSimConfig {
    fn default() -> Self {
        Self {
            vxnets: 2,
            instances: 4,
            instance_nic_limit: 64,
            vxnet_nic_limit: 252,
            job_latency: Duration::from_secs(5),
            quota: Some((2000, Duration::from_secs(3600))),
            create_cost: 2,
            seed: 1,
        }
    }
}

/// A NIC as the fake cloud holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSimNic {
    /// Its name.
    pub name: String,
    /// Its vxnet.
    pub vxnet: VxnetId,
    /// Its address.
    pub ip: Ipv4Addr,
    /// The instance it is attached to.
    pub instance: Option<InstanceId>,
    /// A job runs on it.
    pub busy: Option<JobId>,
    /// An instance's primary NIC.
    pub primary: bool,
}

#[derive(Debug, Clone)]
struct SimJob {
    attach_to: Option<InstanceId>,
    nics: Vec<NicId>,
    done_at: Timestamp,
    fail: bool,
    /// DescribeJobs does not know it (its effect still happens).
    lost: bool,
    applied: bool,
}

#[derive(Debug)]
struct Inner {
    config: FleetSimConfig,
    vxnets: BTreeMap<VxnetId, Vxnet>,
    instances: BTreeMap<InstanceId, VxnetId>,
    nics: BTreeMap<NicId, FleetSimNic>,
    jobs: BTreeMap<JobId, SimJob>,
    next_mac: u32,
    next_job: u64,
    window: VecDeque<Timestamp>,
    requests: BTreeMap<&'static str, u64>,
    over_quota: u64,
    faults: BTreeMap<&'static str, VecDeque<(CloudErrorKind, FaultPoint)>>,
    fault_rate: f64,
    rng: Rng,
    failing_jobs: u32,
    losing_jobs: u32,
    /// Mutating calls per instance (attach, and detach of its NICs).
    touched: BTreeMap<InstanceId, u64>,
    /// Calls that broke an API limit (a batch too large, a page too long).
    limit_violations: Vec<String>,
}

/// A deterministic in-memory cloud for the fleet planner: vxnets of two VPCs,
/// instances with primary NICs, NICs, asynchronous jobs timed by a
/// [`ManualClock`], the NIC limits per instance and vxnet, the account's request
/// quota (a sliding window), 100-item pages, and fault injection: failures
/// before or after the effect, failed, lost and slow jobs, NICs that vanish,
/// instances that are terminated. It counts requests per action and records
/// every call that broke an API limit. Clones share the same cloud.
#[derive(Clone)]
pub struct FleetCloudSim {
    inner: Arc<Mutex<Inner>>,
    clock: ManualClock,
}

impl std::fmt::Debug for FleetCloudSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetCloudSim").finish_non_exhaustive()
    }
}

/// The router of the cluster's VPC in a [`FleetCloudSim`].
pub const SIM_ROUTER: &str = "rtr-1";
/// A vxnet of another VPC in a [`FleetCloudSim`].
pub const SIM_OTHER_VXNET: &str = "vxnet-other";

/// The id of vxnet `n` of a [`FleetCloudSim`].
pub fn sim_vxnet(n: u32) -> VxnetId {
    VxnetId::new(format!("vxnet-{n}"))
}

/// The id of instance `n` of a [`FleetCloudSim`].
pub fn sim_instance(n: u32) -> InstanceId {
    InstanceId::new(format!("i-{n:05}"))
}

fn err(kind: CloudErrorKind, action: &str, code: i64, message: impl Into<String>) -> CloudError {
    CloudError::new(kind, action, message).with_code(code)
}

const PAGE: usize = 100;

impl FleetCloudSim {
    /// A cloud as `config` says, timed by `clock`.
    pub fn new(config: FleetSimConfig, clock: ManualClock) -> Self {
        let mut vxnets = BTreeMap::new();
        for n in 1..=config.vxnets {
            let id = sim_vxnet(n);
            let (b, c) = (16 + (n / 256) as u8, (n % 256) as u8);
            vxnets.insert(
                id.clone(),
                Vxnet {
                    id,
                    cidr: format!("172.{b}.{c}.0/24").parse().expect("literal"),
                    gateway: Ipv4Addr::new(172, b, c, 1),
                    router: Some(RouterId::new(SIM_ROUTER)),
                },
            );
        }
        vxnets.insert(
            VxnetId::new(SIM_OTHER_VXNET),
            Vxnet {
                id: VxnetId::new(SIM_OTHER_VXNET),
                cidr: "10.99.0.0/24".parse().expect("literal"),
                gateway: Ipv4Addr::new(10, 99, 0, 1),
                router: Some(RouterId::new("rtr-2")),
            },
        );
        let mut inner = Inner {
            rng: Rng::new(config.seed),
            config,
            vxnets,
            instances: BTreeMap::new(),
            nics: BTreeMap::new(),
            jobs: BTreeMap::new(),
            next_mac: 0x1000,
            next_job: 1,
            window: VecDeque::new(),
            requests: BTreeMap::new(),
            over_quota: 0,
            faults: BTreeMap::new(),
            fault_rate: 0.0,
            failing_jobs: 0,
            losing_jobs: 0,
            touched: BTreeMap::new(),
            limit_violations: Vec::new(),
        };
        for n in 1..=inner.config.instances {
            let vxnet = sim_vxnet(1 + (n - 1) % inner.config.vxnets.max(1));
            let id = sim_instance(n);
            inner.instances.insert(id.clone(), vxnet.clone());
            let ip = inner.free_ip(&vxnet).expect("a fresh vxnet has room");
            let mac = inner.new_mac();
            inner.nics.insert(
                mac,
                FleetSimNic {
                    name: String::new(),
                    vxnet,
                    ip,
                    instance: Some(id),
                    busy: None,
                    primary: true,
                },
            );
        }
        Self {
            inner: Arc::new(Mutex::new(inner)),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests the quota window allows now (`u32::MAX` without a quota).
    pub fn quota_remaining(&self) -> u32 {
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.trim_window(now);
        match inner.config.quota {
            Some((limit, _)) => limit.saturating_sub(inner.window.len() as u32),
            None => u32::MAX,
        }
    }

    /// Requests that arrived while the quota was exhausted (each answered 2500).
    pub fn over_quota(&self) -> u64 {
        self.lock().over_quota
    }

    /// Requests per action so far.
    pub fn requests(&self) -> BTreeMap<&'static str, u64> {
        self.lock().requests.clone()
    }

    /// Requests in all so far.
    pub fn requests_total(&self) -> u64 {
        self.lock().requests.values().sum()
    }

    /// Calls that broke an API limit.
    pub fn limit_violations(&self) -> Vec<String> {
        self.lock().limit_violations.clone()
    }

    /// Mutating calls that touched `instance` (attaches to it, detaches of its NICs).
    pub fn touched(&self, instance: &InstanceId) -> u64 {
        self.lock().touched.get(instance).copied().unwrap_or(0)
    }

    /// The next call of `action` fails with `kind`, before or after its effect.
    pub fn fail_next(&self, action: &'static str, kind: CloudErrorKind, point: FaultPoint) {
        self.lock()
            .faults
            .entry(action)
            .or_default()
            .push_back((kind, point));
    }

    /// Probability of a random retryable failure (before or after the effect) of any call.
    pub fn set_fault_rate(&self, rate: f64) {
        self.lock().fault_rate = rate;
    }

    /// Forgets every injected fault and the fault rate.
    pub fn clear_faults(&self) {
        let mut inner = self.lock();
        inner.faults.clear();
        inner.fault_rate = 0.0;
        inner.failing_jobs = 0;
        inner.losing_jobs = 0;
    }

    /// The next `n` jobs fail (nothing changes).
    pub fn fail_next_jobs(&self, n: u32) {
        self.lock().failing_jobs += n;
    }

    /// The next `n` jobs are unknown to DescribeJobs: their answers are lost, their
    /// effect is final at once (a slow job is a visible one: [`FleetCloudSim::set_job_latency`]).
    pub fn lose_next_jobs(&self, n: u32) {
        self.lock().losing_jobs += n;
    }

    /// Sets how long jobs take from now on.
    pub fn set_job_latency(&self, latency: Duration) {
        self.lock().config.job_latency = latency;
    }

    /// A NIC disappears (someone deleted it in the console). False if unknown.
    pub fn vanish(&self, nic: &NicId) -> bool {
        let mut inner = self.lock();
        inner.apply_due(self.clock.now());
        inner
            .nics
            .get(nic)
            .is_some_and(|n| !n.primary && n.busy.is_none())
            && inner.nics.remove(nic).is_some()
    }

    /// The instance is terminated: it disappears, its other NICs are detached.
    pub fn terminate(&self, instance: &InstanceId) {
        let mut inner = self.lock();
        inner.apply_due(self.clock.now());
        inner.instances.remove(instance);
        inner
            .nics
            .retain(|_, n| !(n.primary && n.instance.as_ref() == Some(instance)));
        for n in inner.nics.values_mut() {
            if n.instance.as_ref() == Some(instance) {
                n.instance = None;
            }
        }
    }

    /// Applies every job whose time has come (the cloud moves on by itself).
    pub fn settle(&self) {
        let now = self.clock.now();
        self.lock().apply_due(now);
    }

    /// Every NIC that exists now.
    pub fn nics(&self) -> BTreeMap<NicId, FleetSimNic> {
        self.settle();
        self.lock().nics.clone()
    }

    /// NICs attached to `instance` or on their way (attach jobs running), primary excluded.
    pub fn on_instance(&self, instance: &InstanceId) -> u32 {
        self.settle();
        let inner = self.lock();
        let attached = inner
            .nics
            .values()
            .filter(|n| !n.primary && n.instance.as_ref() == Some(instance))
            .count();
        let coming: usize = inner
            .jobs
            .values()
            .filter(|j| !j.applied && j.attach_to.as_ref() == Some(instance))
            .map(|j| j.nics.len())
            .sum();
        (attached + coming) as u32
    }

    /// [`FleetCloudSim::on_instance`] of every instance at once.
    pub fn on_instances(&self) -> BTreeMap<InstanceId, u32> {
        self.settle();
        let inner = self.lock();
        let mut out: BTreeMap<InstanceId, u32> = BTreeMap::new();
        for n in inner.nics.values() {
            if let Some(i) = n.instance.as_ref().filter(|_| !n.primary) {
                *out.entry(i.clone()).or_default() += 1;
            }
        }
        for j in inner.jobs.values().filter(|j| !j.applied) {
            if let Some(i) = &j.attach_to {
                *out.entry(i.clone()).or_default() += j.nics.len() as u32;
            }
        }
        out
    }

    /// Jobs not finished yet.
    pub fn jobs_running(&self) -> usize {
        self.settle();
        self.lock().jobs.values().filter(|j| !j.applied).count()
    }

    /// Counts a request of `action`, then decides whether it fails: over the
    /// quota (2500), an injected fault, a random one. `Ok(after)`: run the
    /// action, and fail after it when `after` is `Some`.
    fn admit(
        &self,
        action: &'static str,
        requests: u32,
        mutating: bool,
    ) -> Result<Option<CloudError>, CloudError> {
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.apply_due(now);
        *inner.requests.entry(action).or_default() += u64::from(requests);
        inner.trim_window(now);
        for _ in 0..requests {
            inner.window.push_back(now);
        }
        if let Some((limit, window)) = inner.config.quota
            && inner.window.len() as u32 > limit
        {
            inner.over_quota += 1;
            return Err(err(
                CloudErrorKind::Throttled,
                action,
                2500,
                format!(
                    "QuotaExceeded, the API request quota is exceeded: at most [{limit}] requests in [{}] seconds",
                    window.as_secs()
                ),
            ));
        }
        let fault = inner.faults.get_mut(action).and_then(VecDeque::pop_front);
        let fault = fault.or_else(|| {
            let rate = inner.fault_rate;
            if inner.rng.chance(rate) {
                let after = mutating && inner.rng.chance(0.5);
                Some((
                    CloudErrorKind::Retryable,
                    if after {
                        FaultPoint::After
                    } else {
                        FaultPoint::Before
                    },
                ))
            } else {
                None
            }
        });
        let Some((kind, point)) = fault else {
            return Ok(None);
        };
        let code = match kind {
            CloudErrorKind::Retryable => 5000,
            CloudErrorKind::NotFound => 2100,
            CloudErrorKind::QuotaExceeded => 2500,
            CloudErrorKind::Throttled => 2500,
            CloudErrorKind::Permanent => 1400,
        };
        let e = err(kind, action, code, "injected fault");
        match point {
            FaultPoint::Before => Err(e),
            FaultPoint::After => Ok(Some(e)),
        }
    }

    fn check_batch(&self, action: &str, n: usize, max: usize) -> Result<(), CloudError> {
        if n == 0 || n > max {
            self.lock()
                .limit_violations
                .push(format!("{action} with {n} items (1 to {max} allowed)"));
            return Err(err(
                CloudErrorKind::Permanent,
                action,
                1100,
                format!("{action}: 1 to {max} items"),
            ));
        }
        Ok(())
    }
}

impl Inner {
    fn trim_window(&mut self, now: Timestamp) {
        if let Some((_, window)) = self.config.quota {
            while self.window.front().is_some_and(|t| now.since(*t) >= window) {
                self.window.pop_front();
            }
        }
    }

    fn new_mac(&mut self) -> NicId {
        self.next_mac += 1;
        let m = self.next_mac;
        NicId::from_mac([0x52, 0x54, 0xfe, (m >> 16) as u8, (m >> 8) as u8, m as u8])
    }

    fn free_ip(&self, vxnet: &VxnetId) -> Option<Ipv4Addr> {
        let v = self.vxnets.get(vxnet)?;
        let used: BTreeSet<Ipv4Addr> = self
            .nics
            .values()
            .filter(|n| &n.vxnet == vxnet)
            .map(|n| n.ip)
            .collect();
        let base = u32::from(v.cidr.network());
        (2..=254)
            .map(|i| Ipv4Addr::from(base + i))
            .find(|ip| !used.contains(ip))
    }

    fn apply_due(&mut self, now: Timestamp) {
        let due: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| !j.applied && j.done_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let job = self.jobs.get_mut(&id).expect("listed");
            job.applied = true;
            let job = job.clone();
            for nic in &job.nics {
                let Some(n) = self.nics.get_mut(nic) else {
                    continue;
                };
                n.busy = None;
                if !job.fail {
                    n.instance = job.attach_to.clone();
                }
            }
        }
    }

    fn new_job(&mut self, attach_to: Option<InstanceId>, nics: &[NicId], now: Timestamp) -> JobId {
        let id = JobId::new(format!("j-{:06}", self.next_job));
        self.next_job += 1;
        for nic in nics {
            if let Some(n) = self.nics.get_mut(nic) {
                n.busy = Some(id.clone());
            }
        }
        let fail = self.failing_jobs > 0;
        if fail {
            self.failing_jobs -= 1;
        }
        let lost = self.losing_jobs > 0;
        if lost {
            self.losing_jobs -= 1;
        }
        self.jobs.insert(
            id.clone(),
            SimJob {
                attach_to,
                nics: nics.to_vec(),
                // A lost job's answer is lost, not the job: the cloud's state is
                // final by the time anyone looks (slow jobs are `set_job_latency`).
                done_at: if lost {
                    now
                } else {
                    now.plus(self.config.job_latency)
                },
                fail,
                lost,
                applied: false,
            },
        );
        id
    }

    fn cloud_nic(&self, id: &NicId) -> Option<CloudNic> {
        let n = self.nics.get(id)?;
        Some(CloudNic {
            id: id.clone(),
            name: n.name.clone(),
            vxnet: n.vxnet.clone(),
            ip: n.ip,
            instance: n.instance.clone(),
            status: if n.instance.is_some() {
                CloudNicStatus::InUse
            } else {
                CloudNicStatus::Available
            },
            primary: n.primary,
        })
    }

    fn known_nics(&self, action: &str, nics: &[NicId]) -> Result<(), CloudError> {
        match nics.iter().find(|n| !self.nics.contains_key(*n)) {
            Some(n) => Err(err(
                CloudErrorKind::NotFound,
                action,
                2100,
                format!("ResourceNotFound, nic [{n}]"),
            )),
            None => Ok(()),
        }
    }
}

fn finish<T>(value: T, after: Option<CloudError>) -> Result<T, CloudError> {
    match after {
        Some(e) => Err(e),
        None => Ok(value),
    }
}

#[async_trait]
impl FleetCloud for FleetCloudSim {
    async fn describe_instances(
        &self,
        instances: &[InstanceId],
    ) -> Result<Vec<InstanceNics>, CloudError> {
        let after = self.admit("DescribeInstances", 1, false)?;
        self.check_batch("DescribeInstances", instances.len(), PAGE)?;
        let inner = self.lock();
        let mut out = Vec::new();
        for id in instances {
            let Some(primary_vxnet) = inner.instances.get(id) else {
                continue;
            };
            let nics = inner
                .nics
                .iter()
                .filter(|(_, n)| !n.primary && n.instance.as_ref() == Some(id))
                .map(|(nic, _)| nic.clone())
                .collect();
            out.push(InstanceNics {
                id: id.clone(),
                primary_vxnet: primary_vxnet.clone(),
                nics,
            });
        }
        finish(out, after)
    }

    async fn describe_vxnets(&self, vxnets: &[VxnetId]) -> Result<Vec<Vxnet>, CloudError> {
        let after = self.admit("DescribeVxnets", 1, false)?;
        self.check_batch("DescribeVxnets", vxnets.len(), PAGE)?;
        let inner = self.lock();
        let out = vxnets
            .iter()
            .filter_map(|v| inner.vxnets.get(v).cloned())
            .collect();
        finish(out, after)
    }

    async fn describe_nics(&self, query: &NicQuery) -> Result<NicPage, CloudError> {
        let after = self.admit("DescribeNics", 1, false)?;
        let inner = match query {
            NicQuery::Ids(ids) => {
                self.check_batch("DescribeNics", ids.len(), PAGE)?;
                let inner = self.lock();
                let nics: Vec<CloudNic> = ids.iter().filter_map(|id| inner.cloud_nic(id)).collect();
                let total = nics.len() as u32;
                return finish(NicPage { nics, total }, after);
            }
            NicQuery::Named { .. } => self.lock(),
        };
        let NicQuery::Named {
            name,
            available_only,
            offset,
        } = query
        else {
            unreachable!("handled above")
        };
        let all: Vec<CloudNic> = inner
            .nics
            .iter()
            .filter(|(_, n)| &n.name == name && (!available_only || n.instance.is_none()))
            .filter_map(|(id, _)| inner.cloud_nic(id))
            .collect();
        let total = all.len() as u32;
        let nics = all.into_iter().skip(*offset as usize).take(PAGE).collect();
        finish(NicPage { nics, total }, after)
    }

    async fn create_nics(
        &self,
        vxnet: &VxnetId,
        count: u32,
        name: &str,
    ) -> Result<Vec<CloudNic>, CloudError> {
        const ACTION: &str = "CreateNics";
        let cost = self.lock().config.create_cost;
        let after = self.admit(ACTION, cost, true)?;
        self.check_batch(ACTION, count as usize, 252)?;
        let mut inner = self.lock();
        if !inner.vxnets.contains_key(vxnet) {
            return Err(err(
                CloudErrorKind::NotFound,
                ACTION,
                2100,
                format!("vxnet [{vxnet}]"),
            ));
        }
        let existing = inner.nics.values().filter(|n| &n.vxnet == vxnet).count() as u32;
        if existing + count > inner.config.vxnet_nic_limit {
            return Err(err(
                CloudErrorKind::QuotaExceeded,
                ACTION,
                2500,
                format!(
                    "QuotaExceeded, vxnet [{vxnet}] can hold at most [{}] NICs",
                    inner.config.vxnet_nic_limit
                ),
            ));
        }
        let mut created = Vec::new();
        for _ in 0..count {
            let Some(ip) = inner.free_ip(vxnet) else {
                // Roll back: the API creates all or nothing.
                for id in &created {
                    inner.nics.remove(id);
                }
                return Err(err(
                    CloudErrorKind::QuotaExceeded,
                    ACTION,
                    2500,
                    format!(
                        "QuotaExceeded, vxnet [{vxnet}] does not have enough available IP addresses"
                    ),
                ));
            };
            let id = inner.new_mac();
            inner.nics.insert(
                id.clone(),
                FleetSimNic {
                    name: name.to_string(),
                    vxnet: vxnet.clone(),
                    ip,
                    instance: None,
                    busy: None,
                    primary: false,
                },
            );
            created.push(id);
        }
        let out = created
            .iter()
            .filter_map(|id| inner.cloud_nic(id))
            .collect();
        finish(out, after)
    }

    async fn attach_nics(
        &self,
        instance: &InstanceId,
        nics: &[NicId],
    ) -> Result<JobId, CloudError> {
        const ACTION: &str = "AttachNics";
        let after = self.admit(ACTION, 1, true)?;
        self.check_batch(ACTION, nics.len(), PAGE)?;
        let now = self.clock.now();
        let mut inner = self.lock();
        *inner.touched.entry(instance.clone()).or_default() += 1;
        if !inner.instances.contains_key(instance) {
            return Err(err(
                CloudErrorKind::NotFound,
                ACTION,
                2100,
                format!("instance [{instance}]"),
            ));
        }
        inner.known_nics(ACTION, nics)?;
        for id in nics {
            let n = &inner.nics[id];
            if n.instance.is_some() || n.busy.is_some() {
                return Err(err(
                    CloudErrorKind::Permanent,
                    ACTION,
                    1400,
                    format!("PermissionDenied, nic [{id}] is in use or busy"),
                ));
            }
        }
        let on: usize = inner
            .nics
            .values()
            .filter(|n| n.instance.as_ref() == Some(instance))
            .count()
            + inner
                .jobs
                .values()
                .filter(|j| !j.applied && j.attach_to.as_ref() == Some(instance))
                .map(|j| j.nics.len())
                .sum::<usize>();
        if on + nics.len() > inner.config.instance_nic_limit as usize {
            return Err(err(
                CloudErrorKind::QuotaExceeded,
                ACTION,
                2500,
                format!(
                    "QuotaExceeded, instance [{instance}] can have at most [{}] NICs",
                    inner.config.instance_nic_limit
                ),
            ));
        }
        let job = inner.new_job(Some(instance.clone()), nics, now);
        finish(job, after)
    }

    async fn detach_nics(&self, nics: &[NicId]) -> Result<JobId, CloudError> {
        const ACTION: &str = "DetachNics";
        let after = self.admit(ACTION, 1, true)?;
        self.check_batch(ACTION, nics.len(), PAGE)?;
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.known_nics(ACTION, nics)?;
        for id in nics {
            let n = &inner.nics[id];
            if n.instance.is_none() || n.busy.is_some() || n.primary {
                return Err(err(
                    CloudErrorKind::Permanent,
                    ACTION,
                    1400,
                    format!("PermissionDenied, nic [{id}] is not attached, busy or primary"),
                ));
            }
        }
        let instances: Vec<InstanceId> = nics
            .iter()
            .filter_map(|id| inner.nics[id].instance.clone())
            .collect();
        for i in instances {
            *inner.touched.entry(i).or_default() += 1;
        }
        let job = inner.new_job(None, nics, now);
        finish(job, after)
    }

    async fn delete_nics(&self, nics: &[NicId]) -> Result<(), CloudError> {
        const ACTION: &str = "DeleteNics";
        let after = self.admit(ACTION, 1, true)?;
        self.check_batch(ACTION, nics.len(), PAGE)?;
        let mut inner = self.lock();
        inner.known_nics(ACTION, nics)?;
        for id in nics {
            let n = &inner.nics[id];
            if n.instance.is_some() || n.busy.is_some() {
                return Err(err(
                    CloudErrorKind::Permanent,
                    ACTION,
                    1400,
                    format!("PermissionDenied, nic [{id}] is in use or busy"),
                ));
            }
        }
        for id in nics {
            inner.nics.remove(id);
        }
        finish((), after)
    }

    async fn describe_jobs(&self, query: &JobQuery) -> Result<JobPage, CloudError> {
        let after = self.admit("DescribeJobs", 1, false)?;
        let inner = self.lock();
        let info = |id: &JobId, j: &SimJob| JobInfo {
            id: id.clone(),
            progress: match (j.applied, j.fail) {
                (false, _) => JobProgress::Running,
                (true, false) => JobProgress::Succeeded,
                (true, true) => JobProgress::Failed,
            },
            action: Some(if j.attach_to.is_some() {
                JobAction::Attach
            } else {
                JobAction::Detach
            }),
            nics: j.nics.clone(),
            instance: j.attach_to.clone(),
        };
        let page = match query {
            JobQuery::Ids(ids) => {
                drop(inner);
                self.check_batch("DescribeJobs", ids.len(), PAGE)?;
                let inner = self.lock();
                let jobs: Vec<JobInfo> = ids
                    .iter()
                    .filter_map(|id| inner.jobs.get(id).filter(|j| !j.lost).map(|j| info(id, j)))
                    .collect();
                JobPage {
                    total: jobs.len() as u32,
                    jobs,
                }
            }
            JobQuery::Running { offset } => {
                let running: Vec<JobInfo> = inner
                    .jobs
                    .iter()
                    .filter(|(_, j)| !j.lost && !j.applied)
                    .map(|(id, j)| info(id, j))
                    .collect();
                JobPage {
                    total: running.len() as u32,
                    jobs: running
                        .into_iter()
                        .skip(*offset as usize)
                        .take(PAGE)
                        .collect(),
                }
            }
        };
        finish(page, after)
    }
}
