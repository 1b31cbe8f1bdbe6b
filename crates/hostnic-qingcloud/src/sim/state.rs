//! The simulated cloud's state and the actions on it. Pure and synchronous: the
//! server locks the state, calls an action, and schedules the jobs it returns.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::SystemTime;

use hostnic_core::types::NicId;
use ipnet::Ipv4Net;
use serde::Serialize;
use serde_json::{Value, json};

use super::topology::Topology;
use crate::errors::{ACCESS_DENIED, MALFORMED_REQUEST, NOT_FOUND, QUOTA_EXCEEDED, UNKNOWN_ACTION};
use crate::signer::format_time_stamp;

/// An API error answer: `ret_code` and a message like the real API's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The `ret_code`.
    pub code: i64,
    /// The `message`.
    pub message: String,
}

impl ApiError {
    /// A new error answer.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn missing(param: &str) -> Self {
        Self::new(
            MALFORMED_REQUEST,
            format!("MissingParameter, parameter [{param}] is required"),
        )
    }

    fn invalid(param: &str, why: &str) -> Self {
        Self::new(
            MALFORMED_REQUEST,
            format!("InvalidParameter, parameter [{param}] {why}"),
        )
    }

    fn not_found(kind: &str, id: &str) -> Self {
        Self::new(
            NOT_FOUND,
            format!("ResourceNotFound, {kind} [{id}] not found"),
        )
    }

    fn wrong_state(nic: &str, status: &str, action: &str) -> Self {
        Self::new(
            ACCESS_DENIED,
            format!(
                "PermissionDenied, the status of nic [{nic}] is [{status}], cannot perform [{action}]"
            ),
        )
    }
}

/// Attached or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NicStatus {
    /// Not attached.
    Available,
    /// Attached to an instance.
    InUse,
}

impl NicStatus {
    fn as_str(self) -> &'static str {
        match self {
            NicStatus::Available => "available",
            NicStatus::InUse => "in-use",
        }
    }
}

/// A simulated NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimNic {
    /// The id: the MAC, lower case.
    pub nic_id: String,
    /// Its name.
    pub nic_name: String,
    /// Its vxnet.
    pub vxnet_id: String,
    /// Its one address.
    pub private_ip: Ipv4Addr,
    /// The instance it is attached to.
    pub instance_id: Option<String>,
    /// `available` or `in-use`.
    pub status: NicStatus,
    /// 1 for an instance's primary NIC, 0 otherwise.
    pub role: u8,
    /// Creation order.
    pub sequence: u64,
    /// Creation time.
    pub create_time: String,
    /// The attach/detach job working on it.
    pub busy_job: Option<String>,
    /// Tag ids attached to it.
    pub tags: BTreeSet<String>,
}

/// A simulated instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimInstance {
    /// The id.
    pub instance_id: String,
    /// Its primary NIC's id.
    pub primary_nic: String,
}

/// A simulated vxnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimVxnet {
    /// The id.
    pub vxnet_id: String,
    /// The network.
    pub ip_network: Ipv4Net,
    /// The router it is joined to.
    pub router_id: Option<String>,
}

impl SimVxnet {
    /// The gateway, `.1`.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.ip_network.network()) + 1)
    }

    /// First and last usable address (`.2` to broadcast-2, as the real cloud).
    pub fn usable(&self) -> (Ipv4Addr, Ipv4Addr) {
        (
            Ipv4Addr::from(u32::from(self.ip_network.network()) + 2),
            Ipv4Addr::from(u32::from(self.ip_network.broadcast()) - 2),
        )
    }
}

/// A simulated router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimRouter {
    /// The id.
    pub router_id: String,
    /// The VPC network.
    pub vpc_network: Ipv4Net,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    /// Queued.
    Pending,
    /// Running.
    Working,
    /// Done.
    Successful,
    /// Failed; the NICs stay as they were.
    Failed,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Working => "working",
            JobState::Successful => "successful",
            JobState::Failed => "failed",
        }
    }
}

/// A simulated asynchronous job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimJob {
    /// The id.
    pub job_id: String,
    /// `AttachNics` or `DetachNics`.
    pub job_action: String,
    /// Its state.
    pub status: JobState,
    /// The NICs it works on.
    pub nics: Vec<String>,
    /// The instance (attach: the target; detach: where the NICs were).
    pub instance_id: Option<String>,
    /// Creation time.
    pub create_time: String,
    /// Last status change.
    pub status_time: String,
}

/// A simulated tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimTag {
    /// The id.
    pub tag_id: String,
    /// The name.
    pub tag_name: String,
}

/// Requests and answers per action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ActionCounter {
    /// Requests received for the action.
    pub requests: u64,
    /// Answered with `ret_code` 0.
    pub ok: u64,
    /// Error answers by `ret_code`.
    pub errors: BTreeMap<i64, u64>,
}

/// What happened to a NIC, for the [`AttachHook`](super::AttachHook).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NicEventKind {
    /// Now attached to `instance`.
    Attached,
    /// No longer attached to `instance`.
    Detached,
    /// Disappeared while attached to `instance` (admin endpoint).
    Vanished,
}

/// A NIC changed attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NicEvent {
    /// What happened.
    pub kind: NicEventKind,
    /// The NIC (its MAC).
    pub nic: NicId,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its vxnet.
    pub vxnet: String,
    /// The instance it was attached to / detached from.
    pub instance: String,
}

/// The whole simulated zone. `Serialize` gives the JSON state dump.
#[derive(Debug, Clone, Serialize)]
pub struct SimState {
    /// The zone.
    pub zone: String,
    /// NICs an instance may have, primary included.
    pub max_nics_per_instance: usize,
    /// Routers by id.
    pub routers: BTreeMap<String, SimRouter>,
    /// Vxnets by id.
    pub vxnets: BTreeMap<String, SimVxnet>,
    /// Instances by id.
    pub instances: BTreeMap<String, SimInstance>,
    /// NICs by id.
    pub nics: BTreeMap<String, SimNic>,
    /// Jobs by id.
    pub jobs: BTreeMap<String, SimJob>,
    /// Tags by id.
    pub tags: BTreeMap<String, SimTag>,
    /// Per-action counters.
    pub counters: BTreeMap<String, ActionCounter>,
    /// How many of the next jobs will fail.
    pub fail_next_jobs: u32,
    next_mac: u32,
    next_seq: u64,
}

/// Request parameters, decoded.
pub type Params = BTreeMap<String, String>;

fn now() -> String {
    format_time_stamp(SystemTime::now())
}

/// `key.1`, `key.2`, … in index order.
fn list(params: &Params, key: &str) -> Vec<String> {
    let prefix = format!("{key}.");
    let mut items: Vec<(u32, String)> = params
        .iter()
        .filter_map(|(k, v)| {
            let n = k.strip_prefix(&prefix)?.parse::<u32>().ok()?;
            Some((n, v.clone()))
        })
        .filter(|(_, v)| !v.is_empty())
        .collect();
    items.sort();
    items.into_iter().map(|(_, v)| v).collect()
}

fn opt<'a>(params: &'a Params, key: &str) -> Option<&'a str> {
    params
        .get(key)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

fn required<'a>(params: &'a Params, key: &str) -> Result<&'a str, ApiError> {
    opt(params, key).ok_or_else(|| ApiError::missing(key))
}

fn int(params: &Params, key: &str, default: u64) -> Result<u64, ApiError> {
    match opt(params, key) {
        None => Ok(default),
        Some(s) => s
            .parse()
            .map_err(|_| ApiError::invalid(key, "should be a non-negative integer")),
    }
}

/// `offset`/`limit` paging over `items`, as the API answers lists.
fn page(params: &Params, set_key: &str, items: Vec<Value>) -> Result<Value, ApiError> {
    let offset = int(params, "offset", 0)? as usize;
    let limit = int(params, "limit", 20)?.clamp(1, 100) as usize;
    let total = items.len();
    let set: Vec<Value> = items.into_iter().skip(offset).take(limit).collect();
    Ok(json!({ set_key: set, "total_count": total, "offset": offset, "limit": limit }))
}

/// Normalises an id given in a request to the stored form of a NIC id.
fn nic_key(id: &str) -> String {
    NicId::new(id)
        .map(|n| n.as_str().to_string())
        .unwrap_or_else(|_| id.to_string())
}

/// What an action asks the server to do after answering.
#[derive(Debug, Default)]
pub struct Effects {
    /// Jobs to run.
    pub jobs: Vec<String>,
}

impl SimState {
    /// The state at start for `topology`.
    pub fn new(topology: &Topology) -> Self {
        let mut state = Self {
            zone: topology.zone.clone(),
            max_nics_per_instance: topology.max_nics_per_instance,
            routers: BTreeMap::new(),
            vxnets: BTreeMap::new(),
            instances: BTreeMap::new(),
            nics: BTreeMap::new(),
            jobs: BTreeMap::new(),
            tags: BTreeMap::new(),
            counters: BTreeMap::new(),
            fail_next_jobs: 0,
            next_mac: 1,
            next_seq: 1,
        };
        for r in &topology.routers {
            state.routers.insert(
                r.id.clone(),
                SimRouter {
                    router_id: r.id.clone(),
                    vpc_network: r.vpc_network,
                },
            );
        }
        for v in &topology.vxnets {
            state.vxnets.insert(
                v.id.clone(),
                SimVxnet {
                    vxnet_id: v.id.clone(),
                    ip_network: v.cidr.trunc(),
                    router_id: v.router.clone(),
                },
            );
        }
        for i in &topology.instances {
            let ip = state
                .free_ips(&i.vxnet, 1)
                .ok()
                .and_then(|ips| ips.first().copied());
            let Some(ip) = ip else { continue };
            let nic = state.new_nic(&i.vxnet, ip, "");
            let nic_id = nic.nic_id.clone();
            state.nics.insert(
                nic_id.clone(),
                SimNic {
                    instance_id: Some(i.id.clone()),
                    status: NicStatus::InUse,
                    role: 1,
                    ..nic
                },
            );
            state.instances.insert(
                i.id.clone(),
                SimInstance {
                    instance_id: i.id.clone(),
                    primary_nic: nic_id,
                },
            );
        }
        state
    }

    fn new_nic(&mut self, vxnet: &str, ip: Ipv4Addr, name: &str) -> SimNic {
        let n = self.next_mac;
        self.next_mac += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        let mac = [0x52, 0x54, 0x9e, (n >> 16) as u8, (n >> 8) as u8, n as u8];
        SimNic {
            nic_id: NicId::from_mac(mac).as_str().to_string(),
            nic_name: name.to_string(),
            vxnet_id: vxnet.to_string(),
            private_ip: ip,
            instance_id: None,
            status: NicStatus::Available,
            role: 0,
            sequence: seq,
            create_time: now(),
            busy_job: None,
            tags: BTreeSet::new(),
        }
    }

    /// The lowest `count` free addresses of `vxnet`.
    fn free_ips(&self, vxnet: &str, count: usize) -> Result<Vec<Ipv4Addr>, ApiError> {
        let vx = self
            .vxnets
            .get(vxnet)
            .ok_or_else(|| ApiError::not_found("vxnet", vxnet))?;
        let used: BTreeSet<Ipv4Addr> = self
            .nics
            .values()
            .filter(|n| n.vxnet_id == vxnet)
            .map(|n| n.private_ip)
            .collect();
        let (first, last) = vx.usable();
        let free: Vec<Ipv4Addr> = (u32::from(first)..=u32::from(last))
            .map(Ipv4Addr::from)
            .filter(|ip| !used.contains(ip))
            .take(count)
            .collect();
        if free.len() < count {
            return Err(ApiError::new(
                QUOTA_EXCEEDED,
                format!(
                    "QuotaExceeded, vxnet [{vxnet}] does not have enough available IP addresses: requested [{count}], available [{}]",
                    free.len()
                ),
            ));
        }
        Ok(free)
    }

    /// Records the answer to a request for `action`.
    pub fn count(&mut self, action: &str, ret_code: i64) {
        let c = self.counters.entry(action.to_string()).or_default();
        c.requests += 1;
        if ret_code == 0 {
            c.ok += 1;
        } else {
            *c.errors.entry(ret_code).or_default() += 1;
        }
    }

    /// Runs `action`; on success returns the answer (without `action`/`ret_code`) and effects.
    pub fn dispatch(&mut self, action: &str, p: &Params) -> Result<(Value, Effects), ApiError> {
        let plain = |v: Value| (v, Effects::default());
        match action {
            "DescribeNics" => self.describe_nics(p).map(plain),
            "CreateNics" => self.create_nics(p).map(plain),
            "AttachNics" => self.attach_nics(p),
            "DetachNics" => self.detach_nics(p),
            "DeleteNics" => self.delete_nics(p).map(plain),
            "DescribeJobs" => self.describe_jobs(p).map(plain),
            "DescribeVxnets" => self.describe_vxnets(p).map(plain),
            "DescribeInstances" => self.describe_instances(p).map(plain),
            "DescribeRouters" => self.describe_routers(p).map(plain),
            "DescribeRouterVxnets" => self.describe_router_vxnets(p).map(plain),
            "CreateTag" => self.create_tag(p).map(plain),
            "DescribeTags" => self.describe_tags(p).map(plain),
            "AttachTags" => self.attach_tags(p).map(plain),
            other => Err(ApiError::new(
                UNKNOWN_ACTION,
                format!("InvalidAction, action [{other}] is not supported"),
            )),
        }
    }

    fn nic_json(&self, n: &SimNic) -> Value {
        let tags: Vec<Value> = n
            .tags
            .iter()
            .filter_map(|t| self.tags.get(t))
            .map(|t| json!({"tag_id": t.tag_id, "tag_name": t.tag_name}))
            .collect();
        json!({
            "nic_id": n.nic_id,
            "nic_name": n.nic_name,
            "vxnet_id": n.vxnet_id,
            "private_ip": n.private_ip.to_string(),
            "instance_id": n.instance_id.clone().unwrap_or_default(),
            "status": n.status.as_str(),
            "role": n.role,
            "sequence": n.sequence,
            "create_time": n.create_time,
            "tags": tags,
        })
    }

    fn describe_nics(&self, p: &Params) -> Result<Value, ApiError> {
        let ids: BTreeSet<String> = list(p, "nics").iter().map(|s| nic_key(s)).collect();
        let vxnets: BTreeSet<String> = list(p, "vxnets").into_iter().collect();
        let instances: BTreeSet<String> = list(p, "instances").into_iter().collect();
        let name = opt(p, "nic_name");
        let status = opt(p, "status");
        let items = self
            .nics
            .values()
            .filter(|n| ids.is_empty() || ids.contains(&n.nic_id))
            .filter(|n| vxnets.is_empty() || vxnets.contains(&n.vxnet_id))
            .filter(|n| {
                instances.is_empty()
                    || n.instance_id
                        .as_ref()
                        .is_some_and(|i| instances.contains(i))
            })
            .filter(|n| name.is_none_or(|want| n.nic_name == want))
            .filter(|n| status.is_none_or(|want| n.status.as_str() == want))
            .map(|n| self.nic_json(n))
            .collect();
        page(p, "nic_set", items)
    }

    fn create_nics(&mut self, p: &Params) -> Result<Value, ApiError> {
        let vxnet = required(p, "vxnet")?.to_string();
        let count = int(p, "count", 1)?;
        if count == 0 {
            return Err(ApiError::invalid("count", "should be a positive integer"));
        }
        let name = opt(p, "nic_name").unwrap_or_default().to_string();
        let ips = self.free_ips(&vxnet, count as usize)?;
        let mut out = Vec::new();
        for ip in ips {
            let nic = self.new_nic(&vxnet, ip, &name);
            out.push(json!({"nic_id": nic.nic_id, "private_ip": ip.to_string()}));
            self.nics.insert(nic.nic_id.clone(), nic);
        }
        Ok(json!({ "nics": out }))
    }

    /// The NICs named in `nics.N`, all of which must exist.
    fn named_nics(&self, p: &Params) -> Result<Vec<String>, ApiError> {
        let ids = list(p, "nics");
        if ids.is_empty() {
            return Err(ApiError::missing("nics"));
        }
        let mut keys = Vec::new();
        for id in ids {
            let key = nic_key(&id);
            if !self.nics.contains_key(&key) {
                return Err(ApiError::not_found("nic", &id));
            }
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    fn check_not_busy(&self, nic: &SimNic, action: &str) -> Result<(), ApiError> {
        match &nic.busy_job {
            Some(job) => Err(ApiError::new(
                ACCESS_DENIED,
                format!(
                    "PermissionDenied, nic [{}] is being processed by job [{job}], cannot perform [{action}]",
                    nic.nic_id
                ),
            )),
            None => Ok(()),
        }
    }

    fn new_job(&mut self, action: &str, nics: Vec<String>, instance: Option<String>) -> String {
        let n = self.jobs.len() as u64 + 1;
        let job_id = format!("j-sim{n:07}");
        for key in &nics {
            if let Some(nic) = self.nics.get_mut(key) {
                nic.busy_job = Some(job_id.clone());
            }
        }
        let t = now();
        self.jobs.insert(
            job_id.clone(),
            SimJob {
                job_id: job_id.clone(),
                job_action: action.to_string(),
                status: JobState::Pending,
                nics,
                instance_id: instance,
                create_time: t.clone(),
                status_time: t,
            },
        );
        job_id
    }

    fn attach_nics(&mut self, p: &Params) -> Result<(Value, Effects), ApiError> {
        const ACTION: &str = "AttachNics";
        let nics = self.named_nics(p)?;
        let instance = required(p, "instance")?.to_string();
        if !self.instances.contains_key(&instance) {
            return Err(ApiError::not_found("instance", &instance));
        }
        for key in &nics {
            let nic = &self.nics[key];
            if nic.status != NicStatus::Available {
                return Err(ApiError::wrong_state(key, nic.status.as_str(), ACTION));
            }
            self.check_not_busy(nic, ACTION)?;
        }
        let attached_or_coming = self
            .nics
            .values()
            .filter(|n| {
                n.instance_id.as_deref() == Some(instance.as_str())
                    || n.busy_job.as_ref().is_some_and(|j| {
                        self.jobs.get(j).is_some_and(|job| {
                            job.job_action == ACTION
                                && job.instance_id.as_deref() == Some(instance.as_str())
                        })
                    })
            })
            .count();
        if attached_or_coming + nics.len() > self.max_nics_per_instance {
            return Err(ApiError::new(
                QUOTA_EXCEEDED,
                format!(
                    "QuotaExceeded, instance [{instance}] can have at most [{}] NICs, it has [{attached_or_coming}] and [{}] more were requested",
                    self.max_nics_per_instance,
                    nics.len()
                ),
            ));
        }
        let job = self.new_job(ACTION, nics, Some(instance));
        Ok((json!({ "job_id": job }), Effects { jobs: vec![job] }))
    }

    fn detach_nics(&mut self, p: &Params) -> Result<(Value, Effects), ApiError> {
        const ACTION: &str = "DetachNics";
        let nics = self.named_nics(p)?;
        let mut instance = None;
        for key in &nics {
            let nic = &self.nics[key];
            if nic.status != NicStatus::InUse {
                return Err(ApiError::wrong_state(key, nic.status.as_str(), ACTION));
            }
            if nic.role == 1 {
                return Err(ApiError::new(
                    ACCESS_DENIED,
                    format!(
                        "PermissionDenied, nic [{key}] is the primary NIC of instance [{}], cannot perform [{ACTION}]",
                        nic.instance_id.clone().unwrap_or_default()
                    ),
                ));
            }
            self.check_not_busy(nic, ACTION)?;
            instance = instance.or(nic.instance_id.clone());
        }
        let job = self.new_job(ACTION, nics, instance);
        Ok((json!({ "job_id": job }), Effects { jobs: vec![job] }))
    }

    fn delete_nics(&mut self, p: &Params) -> Result<Value, ApiError> {
        const ACTION: &str = "DeleteNics";
        let nics = self.named_nics(p)?;
        for key in &nics {
            let nic = &self.nics[key];
            if nic.status != NicStatus::Available || nic.role == 1 {
                return Err(ApiError::wrong_state(key, nic.status.as_str(), ACTION));
            }
            self.check_not_busy(nic, ACTION)?;
        }
        for key in &nics {
            self.nics.remove(key);
        }
        Ok(json!({ "nics": nics }))
    }

    /// Moves a job to `working`.
    pub fn start_job(&mut self, job_id: &str) {
        if let Some(job) = self.jobs.get_mut(job_id)
            && job.status == JobState::Pending
        {
            job.status = JobState::Working;
            job.status_time = now();
        }
    }

    /// Applies a job's effect (unless it is set to fail) and returns the hook events.
    /// The job stays `working` until [`SimState::finish_job`].
    pub fn apply_job(&mut self, job_id: &str) -> (bool, Vec<NicEvent>) {
        let Some(job) = self.jobs.get(job_id).cloned() else {
            return (false, Vec::new());
        };
        let fail = self.fail_next_jobs > 0;
        if fail {
            self.fail_next_jobs -= 1;
        }
        let mut events = Vec::new();
        for key in &job.nics {
            // The NIC may have vanished meanwhile.
            let Some(nic) = self.nics.get_mut(key) else {
                continue;
            };
            nic.busy_job = None;
            if fail {
                continue;
            }
            let kind = if job.job_action == "AttachNics" {
                nic.status = NicStatus::InUse;
                nic.instance_id = job.instance_id.clone();
                NicEventKind::Attached
            } else {
                nic.status = NicStatus::Available;
                NicEventKind::Detached
            };
            let instance = match kind {
                NicEventKind::Detached => nic.instance_id.take(),
                _ => nic.instance_id.clone(),
            };
            if let (Ok(id), Some(instance)) = (NicId::new(&nic.nic_id), instance) {
                events.push(NicEvent {
                    kind,
                    nic: id,
                    ip: nic.private_ip,
                    vxnet: nic.vxnet_id.clone(),
                    instance,
                });
            }
        }
        (!fail, events)
    }

    /// Marks a job `successful` or `failed`.
    pub fn finish_job(&mut self, job_id: &str, ok: bool) {
        if let Some(job) = self.jobs.get_mut(job_id) {
            job.status = if ok {
                JobState::Successful
            } else {
                JobState::Failed
            };
            job.status_time = now();
        }
    }

    /// Removes a NIC as if someone else deleted it; the event if it was attached.
    pub fn vanish_nic(&mut self, id: &str) -> Result<Option<NicEvent>, ApiError> {
        let key = nic_key(id);
        let nic = self
            .nics
            .remove(&key)
            .ok_or_else(|| ApiError::not_found("nic", id))?;
        Ok(match (NicId::new(&nic.nic_id), nic.instance_id) {
            (Ok(id), Some(instance)) => Some(NicEvent {
                kind: NicEventKind::Vanished,
                nic: id,
                ip: nic.private_ip,
                vxnet: nic.vxnet_id,
                instance,
            }),
            _ => None,
        })
    }

    fn describe_jobs(&self, p: &Params) -> Result<Value, ApiError> {
        let ids: BTreeSet<String> = list(p, "jobs").into_iter().collect();
        let mut statuses: BTreeSet<String> = list(p, "status").into_iter().collect();
        if let Some(s) = opt(p, "status") {
            statuses.insert(s.to_string());
        }
        let action = opt(p, "job_action");
        let items = self
            .jobs
            .values()
            .rev()
            .filter(|j| ids.is_empty() || ids.contains(&j.job_id))
            .filter(|j| statuses.is_empty() || statuses.contains(j.status.as_str()))
            .filter(|j| action.is_none_or(|a| j.job_action == a))
            .map(|j| {
                json!({
                    "job_id": j.job_id,
                    "job_action": j.job_action,
                    "status": j.status.as_str(),
                    "create_time": j.create_time,
                    "status_time": j.status_time,
                    "resource_ids": j.nics.join(","),
                    "directive": json!({"nics": j.nics, "instance": j.instance_id}).to_string(),
                })
            })
            .collect();
        page(p, "job_set", items)
    }

    fn describe_vxnets(&self, p: &Params) -> Result<Value, ApiError> {
        let ids: BTreeSet<String> = list(p, "vxnets").into_iter().collect();
        let items = self
            .vxnets
            .values()
            .filter(|v| ids.is_empty() || ids.contains(&v.vxnet_id))
            .map(|v| {
                let (start, end) = v.usable();
                let router = v.router_id.as_ref().map(|r| {
                    json!({
                        "router_id": r,
                        "ip_network": v.ip_network.to_string(),
                        "manager_ip": v.gateway().to_string(),
                        "dyn_ip_start": start.to_string(),
                        "dyn_ip_end": end.to_string(),
                    })
                });
                json!({
                    "vxnet_id": v.vxnet_id,
                    "vxnet_name": v.vxnet_id,
                    "vxnet_type": 1,
                    "vpc_router_id": v.router_id.clone().unwrap_or_default(),
                    "router": router,
                })
            })
            .collect();
        page(p, "vxnet_set", items)
    }

    fn describe_instances(&self, p: &Params) -> Result<Value, ApiError> {
        let ids: BTreeSet<String> = list(p, "instances").into_iter().collect();
        let items = self
            .instances
            .values()
            .filter(|i| ids.is_empty() || ids.contains(&i.instance_id))
            .map(|i| {
                let mut nics: Vec<&SimNic> = self
                    .nics
                    .values()
                    .filter(|n| n.instance_id.as_deref() == Some(i.instance_id.as_str()))
                    .collect();
                nics.sort_by_key(|n| (std::cmp::Reverse(n.role), n.sequence));
                let vxnets: Vec<Value> = nics
                    .iter()
                    .map(|n| {
                        json!({
                            "vxnet_id": n.vxnet_id,
                            "vxnet_name": n.vxnet_id,
                            "vxnet_type": 1,
                            "nic_id": n.nic_id,
                            "private_ip": n.private_ip.to_string(),
                            "role": n.role,
                        })
                    })
                    .collect();
                json!({
                    "instance_id": i.instance_id,
                    "instance_name": i.instance_id,
                    "status": "running",
                    "vxnets": vxnets,
                })
            })
            .collect();
        page(p, "instance_set", items)
    }

    fn describe_routers(&self, p: &Params) -> Result<Value, ApiError> {
        let ids: BTreeSet<String> = list(p, "routers").into_iter().collect();
        let items = self
            .routers
            .values()
            .filter(|r| ids.is_empty() || ids.contains(&r.router_id))
            .map(|r| {
                json!({
                    "router_id": r.router_id,
                    "router_name": r.router_id,
                    "status": "active",
                    "vpc_network": r.vpc_network.to_string(),
                })
            })
            .collect();
        page(p, "router_set", items)
    }

    fn describe_router_vxnets(&self, p: &Params) -> Result<Value, ApiError> {
        let router = required(p, "router")?;
        if !self.routers.contains_key(router) {
            return Err(ApiError::not_found("router", router));
        }
        let items = self
            .vxnets
            .values()
            .filter(|v| v.router_id.as_deref() == Some(router))
            .map(|v| {
                json!({
                    "router_id": router,
                    "vxnet_id": v.vxnet_id,
                    "ip_network": v.ip_network.to_string(),
                    "manager_ip": v.gateway().to_string(),
                })
            })
            .collect();
        page(p, "router_vxnet_set", items)
    }

    fn create_tag(&mut self, p: &Params) -> Result<Value, ApiError> {
        let name = opt(p, "tag_name").unwrap_or_default().to_string();
        let tag_id = format!("tag-sim{:05}", self.tags.len() + 1);
        self.tags.insert(
            tag_id.clone(),
            SimTag {
                tag_id: tag_id.clone(),
                tag_name: name,
            },
        );
        Ok(json!({ "tag_id": tag_id }))
    }

    fn describe_tags(&self, p: &Params) -> Result<Value, ApiError> {
        let ids: BTreeSet<String> = list(p, "tags").into_iter().collect();
        let word = opt(p, "search_word");
        let items = self
            .tags
            .values()
            .filter(|t| ids.is_empty() || ids.contains(&t.tag_id))
            .filter(|t| word.is_none_or(|w| t.tag_name.contains(w) || t.tag_id == w))
            .map(|t| {
                let count = self
                    .nics
                    .values()
                    .filter(|n| n.tags.contains(&t.tag_id))
                    .count();
                json!({"tag_id": t.tag_id, "tag_name": t.tag_name, "resource_count": count})
            })
            .collect();
        page(p, "tag_set", items)
    }

    fn attach_tags(&mut self, p: &Params) -> Result<Value, ApiError> {
        let mut pairs = Vec::new();
        for n in 1.. {
            let key = |field: &str| format!("resource_tag_pairs.{n}.{field}");
            let Some(tag) = opt(p, &key("tag_id")) else {
                break;
            };
            let kind = opt(p, &key("resource_type"))
                .ok_or_else(|| ApiError::missing(&key("resource_type")))?;
            let id = opt(p, &key("resource_id"))
                .ok_or_else(|| ApiError::missing(&key("resource_id")))?;
            if !self.tags.contains_key(tag) {
                return Err(ApiError::not_found("tag", tag));
            }
            if kind != "nic" {
                return Err(ApiError::invalid(
                    &key("resource_type"),
                    "is not supported by the simulator",
                ));
            }
            let nic = nic_key(id);
            if !self.nics.contains_key(&nic) {
                return Err(ApiError::not_found("nic", id));
            }
            pairs.push((tag.to_string(), nic));
        }
        if pairs.is_empty() {
            return Err(ApiError::missing("resource_tag_pairs.1.tag_id"));
        }
        for (tag, nic) in pairs {
            if let Some(n) = self.nics.get_mut(&nic) {
                n.tags.insert(tag);
            }
        }
        Ok(json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn default_topology_has_three_instances_with_primary_nics() {
        let s = SimState::new(&Topology::default());
        assert_eq!(s.instances.len(), 3);
        let primaries: Vec<_> = s.nics.values().filter(|n| n.role == 1).collect();
        assert_eq!(primaries.len(), 3);
        assert!(
            primaries
                .iter()
                .all(|n| n.vxnet_id == "vxnet-sim1" && n.nic_id.starts_with("52:54:"))
        );
        assert_eq!(primaries[0].private_ip, Ipv4Addr::new(172, 16, 1, 2));
    }

    #[test]
    fn a_vxnet_has_252_usable_addresses_then_2500() {
        let mut s = SimState::new(&Topology::default());
        // .2 to .253 of vxnet-sim2.
        let (v, _) = s
            .dispatch(
                "CreateNics",
                &params(&[("vxnet", "vxnet-sim2"), ("count", "252")]),
            )
            .unwrap();
        assert_eq!(v["nics"].as_array().unwrap().len(), 252);
        let err = s
            .dispatch("CreateNics", &params(&[("vxnet", "vxnet-sim2")]))
            .unwrap_err();
        assert_eq!(err.code, 2500);
    }

    #[test]
    fn wrong_state_missing_and_unknown_give_their_codes() {
        let mut s = SimState::new(&Topology::default());
        let primary = s.instances["i-sim00001"].primary_nic.clone();
        assert_eq!(
            s.dispatch("DeleteNics", &params(&[("nics.1", &primary)]))
                .unwrap_err()
                .code,
            1400
        );
        assert_eq!(
            s.dispatch("CreateNics", &params(&[])).unwrap_err().code,
            1100
        );
        assert_eq!(
            s.dispatch("DeleteNics", &params(&[("nics.1", "52:54:00:00:00:99")]))
                .unwrap_err()
                .code,
            2100
        );
        assert_eq!(s.dispatch("Nope", &params(&[])).unwrap_err().code, 1101);
    }
}
