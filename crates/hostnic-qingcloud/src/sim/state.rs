//! The simulated cloud's state and the actions on it. Pure and synchronous: the
//! server locks the state, calls an action, and schedules the jobs it returns.
//! This file has the types, the dispatch and the jobs; the NIC actions are in
//! `nics.rs`, the VIP actions in `vips.rs`, the others in `describe.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::SystemTime;

use hostnic_core::types::NicId;
use ipnet::Ipv4Net;
use serde::Serialize;
use serde_json::Value;

use super::index::{Holder, Index};
pub use super::params::Params;
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

    pub(crate) fn missing(param: &str) -> Self {
        Self::new(
            MALFORMED_REQUEST,
            format!("MissingParameter, parameter [{param}] is required"),
        )
    }

    pub(crate) fn invalid(param: &str, why: &str) -> Self {
        Self::new(
            MALFORMED_REQUEST,
            format!("InvalidParameter, parameter [{param}] {why}"),
        )
    }

    pub(crate) fn not_found(kind: &str, id: &str) -> Self {
        Self::new(
            NOT_FOUND,
            format!("ResourceNotFound, {kind} [{id}] not found"),
        )
    }

    pub(crate) fn wrong_state(kind: &str, id: &str, status: &str, action: &str) -> Self {
        Self::new(
            ACCESS_DENIED,
            format!(
                "PermissionDenied, the status of {kind} [{id}] is [{status}], cannot perform [{action}]"
            ),
        )
    }

    /// A resource quota (never the request quota): addresses, NICs per vxnet or instance.
    pub(crate) fn resource_quota(message: impl Into<String>) -> Self {
        Self::new(QUOTA_EXCEEDED, message)
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
    pub(crate) fn as_str(self) -> &'static str {
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
    /// Its one address; `0.0.0.0` for a NIC created with `disable_ip` (answered as `""`).
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

impl SimNic {
    /// Its address, unless it was created without one.
    pub fn ip(&self) -> Option<Ipv4Addr> {
        (!self.private_ip.is_unspecified()).then_some(self.private_ip)
    }
}

/// A simulated VIP: an address of a vxnet reserved without a NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimVip {
    /// The id, e.g. `vip-sim0000001`.
    pub vip_id: String,
    /// Its name.
    pub vip_name: String,
    /// The address it holds.
    pub vip_addr: Ipv4Addr,
    /// Its vxnet.
    pub vxnet_id: String,
    /// The instance answering ARP for it (the simulator has no ARP: always none).
    pub instance_id: Option<String>,
    /// The NIC answering ARP for it.
    pub nic_id: Option<String>,
    /// Creation time.
    pub create_time: String,
    /// The allocate/release job working on it.
    pub busy_job: Option<String>,
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

    /// True when `ip` is one of the usable addresses.
    pub fn is_usable(&self, ip: Ipv4Addr) -> bool {
        let (first, last) = self.usable();
        (first..=last).contains(&ip)
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
    /// Failed; the resources stay as they were.
    Failed,
}

impl JobState {
    pub(crate) fn as_str(self) -> &'static str {
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
    /// `AttachNics`, `DetachNics`, `AllocateVips` or `ReleaseVips`.
    pub job_action: String,
    /// Its state.
    pub status: JobState,
    /// The NICs it works on.
    pub nics: Vec<String>,
    /// The VIPs it works on.
    pub vips: Vec<String>,
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

/// Requests and answers of one access key (as the request named it, signed or not).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeyCounter {
    /// Requests received.
    pub requests: u64,
    /// Answered with `ret_code` 0.
    pub ok: u64,
    /// Error answers by `ret_code`.
    pub errors: BTreeMap<i64, u64>,
    /// Requests by action.
    pub actions: BTreeMap<String, u64>,
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
    /// Its address (`0.0.0.0` for a NIC without one).
    pub ip: Ipv4Addr,
    /// Its vxnet.
    pub vxnet: String,
    /// The instance it was attached to / detached from.
    pub instance: String,
}

/// The whole simulated zone. `Serialize` gives the JSON state dump. The maps are a
/// read-only view: change the state through [`SimState::dispatch`] (the indexes
/// behind it are kept in step there).
#[derive(Debug, Clone, Serialize)]
pub struct SimState {
    /// The zone.
    pub zone: String,
    /// NICs an instance may have, primary included.
    pub max_nics_per_instance: usize,
    /// NICs a vxnet may have.
    pub max_nics_per_vxnet: usize,
    /// Routers by id.
    pub routers: BTreeMap<String, SimRouter>,
    /// Vxnets by id.
    pub vxnets: BTreeMap<String, SimVxnet>,
    /// Instances by id.
    pub instances: BTreeMap<String, SimInstance>,
    /// NICs by id.
    pub nics: BTreeMap<String, SimNic>,
    /// VIPs by id.
    pub vips: BTreeMap<String, SimVip>,
    /// Jobs by id.
    pub jobs: BTreeMap<String, SimJob>,
    /// Tags by id.
    pub tags: BTreeMap<String, SimTag>,
    /// Per-action counters.
    pub counters: BTreeMap<String, ActionCounter>,
    /// Per-access-key counters.
    pub counters_by_key: BTreeMap<String, KeyCounter>,
    /// How many of the next jobs will fail.
    pub fail_next_jobs: u32,
    next_mac: u32,
    next_seq: u64,
    next_vip: u64,
    #[serde(skip)]
    pub(crate) index: Index,
}

pub(crate) fn now() -> String {
    format_time_stamp(SystemTime::now())
}

/// Normalises an id given in a request to the stored form of a NIC id.
pub(crate) fn nic_key(id: &str) -> String {
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

impl Effects {
    pub(crate) fn job(job: String) -> Self {
        Self { jobs: vec![job] }
    }
}

impl SimState {
    /// The state at start for `topology`.
    pub fn new(topology: &Topology) -> Self {
        let mut state = Self {
            zone: topology.zone.clone(),
            max_nics_per_instance: topology.max_nics_per_instance,
            max_nics_per_vxnet: topology.max_nics_per_vxnet,
            routers: BTreeMap::new(),
            vxnets: BTreeMap::new(),
            instances: BTreeMap::new(),
            nics: BTreeMap::new(),
            vips: BTreeMap::new(),
            jobs: BTreeMap::new(),
            tags: BTreeMap::new(),
            counters: BTreeMap::new(),
            counters_by_key: BTreeMap::new(),
            fail_next_jobs: 0,
            next_mac: 1,
            next_seq: 1,
            next_vip: 1,
            index: Index::default(),
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
            let Some(ip) = state
                .free_ips(&i.vxnet, 1)
                .ok()
                .and_then(|ips| ips.first().copied())
            else {
                continue;
            };
            let nic = state.new_nic(&i.vxnet, Some(ip), "");
            let nic_id = nic.nic_id.clone();
            state.insert_nic(SimNic {
                instance_id: Some(i.id.clone()),
                status: NicStatus::InUse,
                role: 1,
                ..nic
            });
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

    /// A new NIC (not stored yet).
    pub(crate) fn new_nic(&mut self, vxnet: &str, ip: Option<Ipv4Addr>, name: &str) -> SimNic {
        let n = self.next_mac;
        self.next_mac += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        let mac = [0x52, 0x54, 0x9e, (n >> 16) as u8, (n >> 8) as u8, n as u8];
        SimNic {
            nic_id: NicId::from_mac(mac).as_str().to_string(),
            nic_name: name.to_string(),
            vxnet_id: vxnet.to_string(),
            private_ip: ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            instance_id: None,
            status: NicStatus::Available,
            role: 0,
            sequence: seq,
            create_time: now(),
            busy_job: None,
            tags: BTreeSet::new(),
        }
    }

    /// Stores a NIC and indexes it.
    pub(crate) fn insert_nic(&mut self, nic: SimNic) {
        self.index
            .add_nic(&nic.nic_id, &nic.vxnet_id, &nic.nic_name, nic.ip());
        if let Some(instance) = &nic.instance_id {
            self.index.attach(&nic.nic_id, instance);
        }
        self.nics.insert(nic.nic_id.clone(), nic);
    }

    /// Removes a NIC and its index entries.
    pub(crate) fn remove_nic(&mut self, id: &str) -> Option<SimNic> {
        let nic = self.nics.remove(id)?;
        self.index.remove_nic(
            &nic.nic_id,
            &nic.vxnet_id,
            &nic.nic_name,
            nic.ip(),
            nic.instance_id.as_deref(),
        );
        Some(nic)
    }

    /// A new VIP id.
    pub(crate) fn new_vip_id(&mut self) -> String {
        let n = self.next_vip;
        self.next_vip += 1;
        format!("vip-sim{n:07}")
    }

    /// Stores a VIP and holds its address.
    pub(crate) fn insert_vip(&mut self, vip: SimVip) {
        self.index
            .hold(&vip.vxnet_id, vip.vip_addr, Holder::Vip(vip.vip_id.clone()));
        self.vips.insert(vip.vip_id.clone(), vip);
    }

    /// Removes a VIP and frees its address.
    pub(crate) fn remove_vip(&mut self, id: &str) -> Option<SimVip> {
        let vip = self.vips.remove(id)?;
        self.index.release(&vip.vxnet_id, vip.vip_addr);
        Some(vip)
    }

    /// The vxnet `id` (2100 when unknown).
    pub(crate) fn vxnet(&self, id: &str) -> Result<&SimVxnet, ApiError> {
        self.vxnets
            .get(id)
            .ok_or_else(|| ApiError::not_found("vxnet", id))
    }

    /// The lowest `count` free addresses of `vxnet` (a resource-quota 2500 if there are not that many).
    pub(crate) fn free_ips(&self, vxnet: &str, count: usize) -> Result<Vec<Ipv4Addr>, ApiError> {
        let (first, last) = self.vxnet(vxnet)?.usable();
        let free = self.index.free_in(vxnet, first, last, count);
        if free.len() < count {
            return Err(ApiError::resource_quota(format!(
                "QuotaExceeded, vxnet [{vxnet}] does not have enough available IP addresses: requested [{count}], available [{}]",
                free.len()
            )));
        }
        Ok(free)
    }

    /// Who holds `ip` in `vxnet`, if anyone.
    pub(crate) fn holder(&self, vxnet: &str, ip: Ipv4Addr) -> Option<&Holder> {
        self.index.holder(vxnet, ip)
    }

    /// Records the answer to a request for `action` made with `access_key`.
    pub fn count(&mut self, action: &str, access_key: &str, ret_code: i64) {
        let c = self.counters.entry(action.to_string()).or_default();
        c.requests += 1;
        let k = self
            .counters_by_key
            .entry(access_key.to_string())
            .or_default();
        k.requests += 1;
        *k.actions.entry(action.to_string()).or_default() += 1;
        if ret_code == 0 {
            c.ok += 1;
            k.ok += 1;
        } else {
            *c.errors.entry(ret_code).or_default() += 1;
            *k.errors.entry(ret_code).or_default() += 1;
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
            "AllocateVips" => self.allocate_vips(p),
            "DescribeVips" => self.describe_vips(p).map(plain),
            "ReleaseVips" => self.release_vips(p),
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

    /// A new pending job on `nics` or `vips`; marks them busy.
    pub(crate) fn new_job(
        &mut self,
        action: &str,
        nics: Vec<String>,
        vips: Vec<String>,
        instance: Option<String>,
    ) -> String {
        let n = self.jobs.len() as u64 + 1;
        let job_id = format!("j-sim{n:07}");
        for key in &nics {
            if let Some(nic) = self.nics.get_mut(key) {
                nic.busy_job = Some(job_id.clone());
            }
        }
        for key in &vips {
            if let Some(vip) = self.vips.get_mut(key) {
                vip.busy_job = Some(job_id.clone());
            }
        }
        if action == "AttachNics"
            && let Some(instance) = &instance
        {
            self.index.attaching_started(instance, nics.len());
        }
        let t = now();
        self.jobs.insert(
            job_id.clone(),
            SimJob {
                job_id: job_id.clone(),
                job_action: action.to_string(),
                status: JobState::Pending,
                nics,
                vips,
                instance_id: instance,
                create_time: t.clone(),
                status_time: t,
            },
        );
        job_id
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
        let events = match job.job_action.as_str() {
            "AttachNics" | "DetachNics" => self.apply_nic_job(&job, fail),
            _ => {
                self.apply_vip_job(&job, fail);
                Vec::new()
            }
        };
        (!fail, events)
    }

    fn apply_nic_job(&mut self, job: &SimJob, fail: bool) -> Vec<NicEvent> {
        let attach = job.job_action == "AttachNics";
        if attach && let Some(instance) = &job.instance_id {
            self.index.attaching_ended(instance, job.nics.len());
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
            let (kind, instance) = if attach {
                nic.status = NicStatus::InUse;
                nic.instance_id = job.instance_id.clone();
                (NicEventKind::Attached, nic.instance_id.clone())
            } else {
                nic.status = NicStatus::Available;
                (NicEventKind::Detached, nic.instance_id.take())
            };
            let (id, ip, vxnet) = (nic.nic_id.clone(), nic.private_ip, nic.vxnet_id.clone());
            if let Some(instance) = instance {
                match kind {
                    NicEventKind::Attached => self.index.attach(&id, &instance),
                    _ => self.index.detach(&id, &instance),
                }
                if let Ok(nic) = NicId::new(&id) {
                    events.push(NicEvent {
                        kind,
                        nic,
                        ip,
                        vxnet,
                        instance,
                    });
                }
            }
        }
        events
    }

    fn apply_vip_job(&mut self, job: &SimJob, fail: bool) {
        let allocate = job.job_action == "AllocateVips";
        for id in &job.vips {
            // A failed allocation gives the addresses back; a successful release too.
            if allocate == fail {
                self.remove_vip(id);
            } else if let Some(vip) = self.vips.get_mut(id) {
                vip.busy_job = None;
            }
        }
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
            .remove_nic(&key)
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
}
