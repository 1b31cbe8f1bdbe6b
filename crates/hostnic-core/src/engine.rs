//! The engine: the node's state machine wired to the ports.
//!
//! The engine owns a [`NodeState`] behind a short-lived lock and executes what the
//! state decides through [`CloudNics`] and [`HostNetwork`], persisting a checkpoint
//! after every change. The lock is never held across an `await`: an ADD that finds a
//! ready NIC takes it in a few microseconds and plumbs the host while other ADDs and
//! the pool's cloud calls proceed. Everything here is runtime-agnostic (plain
//! futures); the agent drives it from tokio, tests from `futures::executor`.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::join_all;

use crate::checkpoint::{Checkpoint, CheckpointDamage, CheckpointError, Loaded, RecoveryReason};
use crate::config::PoolConfig;
use crate::pool::{
    ActionKind, AllocError, CloudLink, CloudReason, NodeState, PodAttachment, PoolAction,
};
use crate::ports::{
    CheckpointStore, Clock, CloudError, CloudErrorKind, CloudNics, HostError, HostErrorKind,
    HostNetwork, NicFilter, StoreError,
};
use crate::reconcile::{JobStatuses, Observed, PodsSeen, ReconcileAction, ReconcileReport};
use crate::recovery::{LoadState, Recovery};
use crate::types::{
    AttachmentId, InstanceId, JobId, JobOutcome, JobStatus, NicId, NicPlumbing, PlumbedPod,
    PodInfo, PodKey, PodPlumbing, Vxnet, managed_nic_name,
};

/// Why an engine operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// No NIC could be assigned.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// The cloud failed.
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// The host datapath failed.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The checkpoint could not be written or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The checkpoint could not be used.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// CHECK for an attachment the node does not have.
    #[error("no attachment {0} on this node")]
    UnknownAttachment(AttachmentId),
    /// Several failures (GC, reconcile), all reported.
    #[error("{} failures: {}", .0.len(), .0.join("; "))]
    Many(Vec<String>),
}

impl EngineError {
    /// True when the runtime should simply try again later (CNI code 11).
    pub fn is_retryable(&self) -> bool {
        match self {
            EngineError::Alloc(AllocError::PoolEmpty { .. }) => true,
            EngineError::Alloc(AllocError::NodeFull { .. }) => false,
            // The account's request quota frees with time: a later try can succeed.
            EngineError::Cloud(e) => e.is_retryable() || e.kind == CloudErrorKind::Throttled,
            EngineError::Host(e) => e.is_retryable(),
            EngineError::Store(_) => true,
            _ => false,
        }
    }
}

/// The result of a successful ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// The attachment (pod, NIC, address, table).
    pub attachment: PodAttachment,
    /// What the host created.
    pub plumbed: PlumbedPod,
    /// The vxnet gateway of the pod's NIC (informational; the pod's own gateway is 169.254.1.1).
    pub nic_gateway: std::net::Ipv4Addr,
}

/// What one pool round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolRound {
    /// Actions executed.
    pub actions: usize,
    /// Failures, each saying whether a retry can help ([`EngineError::is_retryable`]).
    pub failures: Vec<EngineError>,
}

/// The node's state machine wired to its ports.
pub struct Engine<C, H, K, S> {
    cloud: C,
    /// Controller mode: where the node's NICs come from ([`CloudNics::supplier`]).
    supplier: Option<std::sync::Arc<dyn crate::ports::NicSupply>>,
    /// Controller mode: the supply last taken (an unchanged one is not taken again).
    last_supplied: Mutex<Option<crate::ports::Supplied>>,
    host: H,
    clock: K,
    store: S,
    state: Mutex<NodeState>,
    generation: AtomicU64,
    saved_generation: Mutex<u64>,
    pool_running: futures::lock::Mutex<()>,
    /// How the checkpoint loaded, until the first startup reconcile judges it.
    load_state: Mutex<Option<LoadState>>,
    /// What the startup reconcile rebuilt because the checkpoint could not be trusted.
    recovery: Mutex<Option<Recovery>>,
    /// The last checkpoint write failed (cleared by the next that succeeds).
    store_failure: Mutex<Option<StoreError>>,
}

impl<C, H, K, S> Engine<C, H, K, S>
where
    C: CloudNics,
    H: HostNetwork,
    K: Clock,
    S: CheckpointStore,
{
    /// Builds the engine from the last checkpoint in `store`, or empty if there is none.
    /// A checkpoint that is damaged or cannot be used does not stop the node: the engine
    /// starts from what the store could salvage (or empty), the store keeps the damaged
    /// files aside, and the startup reconcile rebuilds from the witnesses and reports a
    /// [`Recovery`] ([`Engine::recovery`]). Run [`Engine::reconcile`] with
    /// `startup = true` before serving requests.
    pub fn open(
        cloud: C,
        host: H,
        clock: K,
        store: S,
        config: PoolConfig,
        instance: InstanceId,
        vxnets: Vec<Vxnet>,
    ) -> Result<Self, EngineError> {
        let loaded = store.load_verified().unwrap_or_else(|e| Loaded {
            checkpoint: None,
            damage: Some(CheckpointDamage {
                reason: RecoveryReason::Unreadable,
                detail: e.to_string(),
            }),
            generation: 0,
        });
        let mut damage = loaded.damage;
        let mut generation = loaded.generation;
        let mut restored = false;
        let state = match loaded.checkpoint {
            Some(cp) => {
                generation = generation.max(cp.generation);
                match NodeState::restore(config.clone(), instance.clone(), vxnets.clone(), cp) {
                    Ok(state) => {
                        restored = true;
                        state
                    }
                    Err(e) => {
                        damage = Some(Self::unusable(&store, &e, damage));
                        NodeState::new(config, instance, vxnets)
                    }
                }
            }
            None => NodeState::new(config, instance, vxnets),
        };
        let supplier = cloud.supplier();
        let mut state = state;
        state.set_supplied_mode(supplier.is_some());
        let load_state = match damage {
            Some(d) => LoadState::Damaged(d),
            None if restored => LoadState::Clean,
            None => LoadState::Empty,
        };
        Ok(Self {
            cloud,
            supplier,
            last_supplied: Mutex::new(None),
            host,
            clock,
            store,
            state: Mutex::new(state),
            generation: AtomicU64::new(generation),
            saved_generation: Mutex::new(generation),
            pool_running: futures::lock::Mutex::new(()),
            load_state: Mutex::new(Some(load_state)),
            recovery: Mutex::new(None),
            store_failure: Mutex::new(None),
        })
    }

    /// A checkpoint the engine cannot use (`e`): the store keeps it aside.
    fn unusable(
        store: &S,
        e: &CheckpointError,
        found: Option<CheckpointDamage>,
    ) -> CheckpointDamage {
        let mut detail = found.map(|d| format!("{}; ", d.detail)).unwrap_or_default();
        detail.push_str(&e.to_string());
        match store.set_aside(&e.to_string()) {
            Ok(Some(kept)) => detail.push_str(&format!("; kept as {kept}")),
            Ok(None) => {}
            Err(err) => detail.push_str(&format!("; not kept aside: {err}")),
        }
        CheckpointDamage {
            reason: e.reason(),
            detail,
        }
    }

    /// What the startup reconcile rebuilt from the witnesses because the checkpoint
    /// could not be trusted (missing, torn, corrupt, foreign, or older than the host);
    /// `None` when it could be.
    pub fn recovery(&self) -> Option<Recovery> {
        self.recovery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The last checkpoint write's failure, while no later write succeeded: ADDs fail
    /// (their answer must be durable) until room is made; DELs and repairs go on in
    /// memory and are written by the next write that succeeds.
    pub fn store_failure(&self) -> Option<StoreError> {
        self.store_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn note_store(&self, result: &Result<(), StoreError>) {
        let mut failure = self.store_failure.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => *failure = None,
            Err(e) => *failure = Some(e.clone()),
        }
    }

    /// The cloud port.
    pub fn cloud(&self) -> &C {
        &self.cloud
    }

    /// The host port.
    pub fn host(&self) -> &H {
        &self.host
    }

    /// The clock.
    pub fn clock(&self) -> &K {
        &self.clock
    }

    /// Runs `f` on the state under the lock (for status, metrics, tests).
    pub fn with_state<R>(&self, f: impl FnOnce(&NodeState) -> R) -> R {
        f(&self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NodeState> {
        // A panic while holding the lock leaves a state that is still consistent
        // (transitions are single assignments), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the state with `f` and writes a checkpoint. The change stays in memory
    /// when the write fails; the error comes with `f`'s result.
    fn mutate<R>(&self, f: impl FnOnce(&mut NodeState) -> R) -> Result<R, (R, StoreError)> {
        let (r, cp) = {
            let mut state = self.lock();
            let r = f(&mut state);
            let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
            (r, state.checkpoint(generation, self.clock.now()))
        };
        match self.persist(&cp) {
            Ok(()) => Ok(r),
            Err(e) => Err((r, e)),
        }
    }

    /// [`Engine::mutate`] for callers that fail when the change is not durable.
    fn mutate_durably<R>(&self, f: impl FnOnce(&mut NodeState) -> R) -> Result<R, StoreError> {
        self.mutate(f).map_err(|(_, e)| e)
    }

    /// Changes the state with `f` and writes a checkpoint; a failed write leaves the
    /// change in memory for the next write (each checkpoint holds the whole state):
    /// for what must go on when the disk is full (DEL, reconcile, the pool's plan).
    fn mutate_later<R>(&self, f: impl FnOnce(&mut NodeState) -> R) -> R {
        match self.mutate(f) {
            Ok(r) => r,
            Err((r, e)) => {
                tracing::warn!(error = %e, "checkpoint not written; the next change writes it");
                r
            }
        }
    }

    /// Saves `cp` unless a newer checkpoint was saved already.
    fn persist(&self, cp: &Checkpoint) -> Result<(), StoreError> {
        let mut saved = self
            .saved_generation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if cp.generation > *saved {
            let result = self.store.save(cp);
            self.note_store(&result);
            result?;
            *saved = cp.generation;
        }
        Ok(())
    }

    /// Saves the state as it will be once `id`'s plumbing is done, without
    /// changing it in memory: the write runs while the host plumbs (in the
    /// background when the store can), and the confirmation afterwards finds it
    /// on disk already (the store may skip a checkpoint identical to the last
    /// one; the confirmation is what makes the answer durable in any case). A
    /// crash in between restarts with a pod recorded as plumbed whose plumbing
    /// may be missing: the startup reconcile plumbs it again (or releases it when
    /// its sandbox is gone).
    async fn persist_ahead(
        &self,
        id: &AttachmentId,
        planned: &PlumbedPod,
    ) -> Result<(), StoreError> {
        let cp = {
            let mut state = self.lock();
            let before = state.attachment(id).and_then(|a| a.plumbed.clone());
            if !state.confirm_plumbed(id, planned.clone()) {
                return Ok(());
            }
            let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
            let cp = state.checkpoint(generation, self.clock.now());
            state.set_plumbed(id, before);
            cp
        };
        match self.store.save_in_background(&cp) {
            Some(saving) => {
                let result = saving.await;
                self.note_store(&result);
                result
            }
            None => self.persist(&cp),
        }
    }

    /// The host MAC the host would give `pod`'s sandbox, if it derives it from the pod.
    fn planned_mac(&self, pod: &PodKey) -> Option<[u8; 6]> {
        let nic = NicPlumbing {
            nic: NicId::from_mac([0; 6]),
            ip: std::net::Ipv4Addr::UNSPECIFIED,
            cidr: ipnet::Ipv4Net::default(),
            gateway: std::net::Ipv4Addr::UNSPECIFIED,
            table: 0,
        };
        self.host
            .plan_pod(&PodPlumbing {
                pod: pod.clone(),
                netns: String::new(),
                nic,
            })
            .and_then(|p| p.host_mac)
    }

    /// A recovered pod that is `pod`'s ([`NodeState::recovered_for`]), one the host
    /// showed plumbed first; `None` when `pod` is known or nothing was recovered.
    fn recovered_of(&self, pod: &PodKey) -> Option<Vec<AttachmentId>> {
        {
            let state = self.lock();
            if state.attachment(&pod.attachment()).is_some() || !state.has_recovered() {
                return None;
            }
        }
        let mac = self.planned_mac(pod);
        let state = self.lock();
        let mut found = state.recovered_for(pod, mac);
        found.sort_by_key(|id| state.attachment(id).is_none_or(|a| a.plumbed.is_none()));
        (!found.is_empty()).then_some(found)
    }

    /// Sets the extra NICs wanted soon (pods pending on the node, ADDs waiting).
    pub fn set_demand(&self, demand: u32) {
        self.lock().set_demand(demand);
    }

    /// CNI ADD: gives the pod a NIC and plumbs it. Idempotent for the same container id
    /// and ifname. Fails with [`AllocError::PoolEmpty`] (retryable) when no NIC is ready:
    /// the caller runs the pool and tries again, within its own deadline.
    pub async fn add(&self, pod: &PodKey, netns: &str) -> Result<Added, EngineError> {
        let now = self.clock.now();
        // A pod the node rebuilt from the witnesses keeps its address: the ADD claims it
        // and plumbs its sandbox again.
        let recovered = self.recovered_of(pod);
        let (assignment, plumbing) = {
            let mut state = self.lock();
            if let Some(first) = recovered.as_ref().and_then(|r| r.first()) {
                state.claim_recovered(first, pod, netns, true);
            }
            let assignment = state.assign(pod, netns, now)?;
            let plumbing = state
                .pod_plumbing(&assignment.attachment)
                .expect("an assigned NIC is in the table");
            (assignment, plumbing)
        };
        let id = pod.attachment();
        if let (true, Some(plumbed)) = (assignment.existing, &assignment.attachment.plumbed) {
            // A repeated ADD: answer what was done (CHECK is the verb that verifies).
            return Ok(Added {
                attachment: assignment.attachment.clone(),
                plumbed: plumbed.clone(),
                nic_gateway: plumbing.nic.gateway,
            });
        }
        // The assignment is not persisted before plumbing starts. If the host can
        // tell what the plumbing will be, the checkpoint saying so is written while
        // the host plumbs (see `persist_ahead`); else after. If the agent dies before
        // that write, the checkpoint still shows the NIC free, and the startup
        // reconcile removes any plumbing the host has for it. Either way the
        // runtime sees the ADD fail and retries.
        let planned = self.host.plan_pod(&plumbing);
        let (plumbed, ahead) = futures::join!(self.host.plumb_pod(&plumbing), async {
            match &planned {
                Some(planned) => self.persist_ahead(&id, planned).await,
                None => Ok(()),
            }
        });
        if let (Ok(plumbed), Err(e)) = (&plumbed, ahead) {
            // Not durable: undo, so that a crash cannot leave an unrecorded pod.
            let _ = self.host.unplumb_pod(plumbed, Some(netns)).await;
            self.lock().abort_assign(&id, self.clock.now());
            return Err(e.into());
        }
        match plumbed {
            Ok(plumbed) => {
                let gateway = plumbing.nic.gateway;
                let stored = self.mutate_durably(|s| s.confirm_plumbed(&id, plumbed.clone()));
                match stored {
                    Ok(true) => {
                        let mut attachment = assignment.attachment;
                        attachment.plumbed = Some(plumbed.clone());
                        Ok(Added {
                            attachment,
                            plumbed,
                            nic_gateway: gateway,
                        })
                    }
                    Ok(false) => Err(EngineError::UnknownAttachment(id)),
                    Err(e) => {
                        // Not durable: undo, so that a crash cannot leave an unrecorded pod.
                        let _ = self.host.unplumb_pod(&plumbed, Some(netns)).await;
                        self.lock().abort_assign(&id, self.clock.now());
                        Err(e.into())
                    }
                }
            }
            Err(err) => {
                if !assignment.existing {
                    let expected = self.lock().expected_plumbed(&assignment.attachment);
                    if let Err(undo) = self.host.unplumb_pod(&expected, Some(netns)).await {
                        tracing::warn!(pod = %pod.display_name(), error = %undo, "cleanup after failed plumbing");
                    }
                    self.mutate_later(|s| s.abort_assign(&id, self.clock.now()));
                }
                Err(err.into())
            }
        }
    }

    /// CNI DEL of `pod`: [`Engine::del`] of its attachment or, when the node does not
    /// know its container id, of the pods rebuilt from the witnesses that are its.
    pub async fn del_pod(
        &self,
        pod: &PodKey,
        netns: Option<&str>,
    ) -> Result<Option<PodAttachment>, EngineError> {
        let Some(recovered) = self.recovered_of(pod) else {
            return self.del(&pod.attachment(), netns).await;
        };
        let mut released = None;
        for id in &recovered {
            if let Some(att) = self.del(id, netns).await? {
                tracing::info!(pod = %pod.display_name(), ip = %att.ip, "DEL released a recovered pod");
                released.get_or_insert(att);
            }
        }
        Ok(released)
    }

    /// CNI DEL: removes the pod's plumbing and releases its NIC into cooldown.
    /// Idempotent: an unknown attachment succeeds with `None`. The release is kept
    /// when the checkpoint cannot be written (a full disk): a deleted pod must not
    /// hold its address, and the next write that succeeds records it.
    pub async fn del(
        &self,
        id: &AttachmentId,
        netns: Option<&str>,
    ) -> Result<Option<PodAttachment>, EngineError> {
        let Some((att, plumbed)) = ({
            let state = self.lock();
            state
                .attachment(id)
                .map(|a| (a.clone(), state.expected_plumbed(a)))
        }) else {
            return Ok(None);
        };
        let netns = netns
            .filter(|n| !n.is_empty())
            .or(Some(att.netns.as_str()))
            .filter(|n| !n.is_empty());
        // A pod held for the pod source has no plumbing: nothing on the host is its
        // (the veth its name gives may be a newer sandbox's).
        let held_only = id.is_recovered() && att.plumbed.is_none();
        if !held_only {
            match self.host.unplumb_pod(&plumbed, netns).await {
                Ok(()) => {}
                Err(e) if e.kind == HostErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        let now = self.clock.now();
        Ok(self.mutate_later(|s| s.release(id, now)))
    }

    /// CNI CHECK of `pod`: [`Engine::check`] of its attachment, which claims a pod
    /// rebuilt from the witnesses on the host that is `pod`'s.
    pub async fn check_pod(&self, pod: &PodKey, netns: &str) -> Result<PodAttachment, EngineError> {
        if let Some(recovered) = self.recovered_of(pod) {
            let plumbed = {
                let s = self.lock();
                recovered
                    .into_iter()
                    .find(|r| s.attachment(r).is_some_and(|a| a.plumbed.is_some()))
            };
            if let Some(r) = plumbed {
                self.mutate_later(|s| s.claim_recovered(&r, pod, netns, false));
            }
        }
        self.check(&pod.attachment()).await
    }

    /// CNI CHECK: verifies the attachment's plumbing on the host.
    pub async fn check(&self, id: &AttachmentId) -> Result<PodAttachment, EngineError> {
        let (att, plumbing, plumbed) = {
            let state = self.lock();
            let att = state
                .attachment(id)
                .cloned()
                .ok_or_else(|| EngineError::UnknownAttachment(id.clone()))?;
            let plumbing = state
                .pod_plumbing(&att)
                .ok_or_else(|| EngineError::UnknownAttachment(id.clone()))?;
            let plumbed = state.expected_plumbed(&att);
            (att, plumbing, plumbed)
        };
        if att.plumbed.is_none() {
            return Err(
                HostError::new(HostErrorKind::Mismatch, "plumbing was never completed").into(),
            );
        }
        self.host.verify_pod(&plumbing, &plumbed).await?;
        Ok(att)
    }

    /// CNI GC: releases every attachment not in `valid`. All failures are collected.
    pub async fn gc(
        &self,
        valid: &BTreeSet<AttachmentId>,
    ) -> Result<Vec<AttachmentId>, EngineError> {
        let stale = self.lock().stale_attachments(valid);
        let mut errors = Vec::new();
        for id in &stale {
            if let Err(e) = self.del(id, None).await {
                errors.push(format!("{id}: {e}"));
            }
        }
        if errors.is_empty() {
            Ok(stale)
        } else {
            Err(EngineError::Many(errors))
        }
    }

    /// One pool round: plan, execute every action concurrently, record the outcomes.
    /// Rounds do not overlap; a second caller waits for the first round to end.
    pub async fn run_pool(&self) -> PoolRound {
        let _running = self.pool_running.lock().await;
        if let Some(supplier) = &self.supplier {
            return self.run_supplied_pool(supplier.as_ref()).await;
        }
        self.settle_uncertain().await;
        let actions = self.mutate_later(|s| s.plan(self.clock.now()));
        let count = actions.len();
        if count > 0 {
            tracing::debug!(
                actions = ?actions.iter().map(|a| match a {
                    PoolAction::Create { count, .. } => format!("create {count}"),
                    PoolAction::Attach { nics } => format!("attach {}", nics.len()),
                    PoolAction::Prepare { .. } => "prepare".to_string(),
                    PoolAction::Detach { nics } => format!("detach {}", nics.len()),
                    PoolAction::Delete { nics } => format!("delete {}", nics.len()),
                    PoolAction::Release { nics } => format!("release {}", nics.len()),
                }).filter(|a| a != "prepare").collect::<Vec<_>>(),
                demand = self.lock().demand,
                "pool round"
            );
        }
        let results = join_all(actions.into_iter().map(|a| self.execute(a))).await;
        PoolRound {
            actions: count,
            failures: results.into_iter().filter_map(Result::err).collect(),
        }
    }

    /// Controller mode's pool round: takes what the supplier says the node has,
    /// runs the host actions (prepare, release), then publishes the node's
    /// request. A supplier that cannot be reached changes nothing: the node
    /// serves from what it has and asks again next round.
    async fn run_supplied_pool(&self, supplier: &dyn crate::ports::NicSupply) -> PoolRound {
        let mut failures = Vec::new();
        match supplier.supplied().await {
            Ok(supplied) => {
                let mut last = self.last_supplied.lock().unwrap_or_else(|p| p.into_inner());
                if last.as_ref() != Some(&supplied) {
                    if let Some(refusal) = &supplied.refusal {
                        tracing::warn!(%refusal, "the controller refuses the node's request");
                    }
                    match self.supplied(&supplied) {
                        Ok(_) => *last = Some(supplied),
                        Err(e) => failures.push(e.into()),
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "reading what the node was supplied"),
        }
        let actions = self.mutate_later(|s| s.plan(self.clock.now()));
        let count = actions.len();
        let results = join_all(actions.into_iter().map(|a| self.execute(a))).await;
        failures.extend(results.into_iter().filter_map(Result::err));
        let request = {
            let mut s = self.lock();
            let now = self.clock.now();
            let waiting = s.demand.saturating_sub(s.assignable(now) as u32);
            let node = crate::fleet::NodeName::new(s.instance().as_str());
            s.supply_request(&node, waiting)
        };
        if let Err(e) = supplier.request(&request).await {
            tracing::debug!(error = %e, "publishing the node's request");
        }
        PoolRound {
            actions: count,
            failures,
        }
    }

    /// Asks the cloud about NICs whose last job's end was not seen, so that a slow job
    /// does not keep them out of the pool until the next cloud reconcile: first where
    /// their jobs are (one DescribeJobs), then, for those whose job ended or is not
    /// known, the NICs themselves (one DescribeNics). Paced by the `Describe` backoff:
    /// a job still running is asked about again after 1 s, 2 s, 4 s … up to
    /// `backoff_max`, and a failure backs off the same way.
    async fn settle_uncertain(&self) {
        let now = self.clock.now();
        let (uncertain, jobs, instance) = {
            let s = self.lock();
            if !s.cloud_ready(ActionKind::Describe, now) {
                return;
            }
            let uncertain: Vec<(NicId, Option<JobId>)> = s
                .nics()
                .values()
                .filter(|n| matches!(n.link, CloudLink::Uncertain { .. }))
                .map(|n| (n.id.clone(), n.job.clone()))
                .collect();
            let mut jobs: Vec<JobId> = uncertain.iter().filter_map(|(_, j)| j.clone()).collect();
            jobs.sort();
            jobs.dedup();
            (uncertain, jobs, s.instance().clone())
        };
        if uncertain.is_empty() {
            return;
        }
        let statuses = if jobs.is_empty() {
            JobStatuses::new()
        } else {
            match self.cloud.job_statuses(&jobs).await {
                Ok(statuses) => statuses,
                Err(e) => {
                    tracing::debug!(error = %e, "asking where the unseen jobs are");
                    self.mutate_later(|s| s.cloud_failed(ActionKind::Describe, &e, now));
                    return;
                }
            }
        };
        let ask: Vec<NicId> = uncertain
            .iter()
            .filter(|(_, job)| {
                job.as_ref()
                    .and_then(|j| statuses.get(j))
                    .is_none_or(|s| *s != JobStatus::Running)
            })
            .map(|(id, _)| id.clone())
            .collect();
        if ask.is_empty() {
            // Every job still runs: ask again after the next delay.
            self.mutate_later(|s| s.describe_later(now));
            return;
        }
        let filter = NicFilter {
            nics: ask,
            name: Some(managed_nic_name(&instance)),
            ..Default::default()
        };
        match self.cloud.describe_nics(&filter).await {
            Ok(nics) => {
                let now = self.clock.now();
                self.mutate_later(|s| {
                    s.settle_uncertain(&filter.nics, &nics, &statuses, now);
                    let left = s
                        .nics()
                        .values()
                        .any(|n| matches!(n.link, CloudLink::Uncertain { .. }));
                    if left {
                        s.describe_later(now);
                    } else {
                        s.cloud_succeeded(ActionKind::Describe);
                    }
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "describing NICs with unknown job outcome");
                self.mutate_later(|s| s.cloud_failed(ActionKind::Describe, &e, now));
            }
        }
    }

    /// The credentials the cloud client signs with changed (a Secret update): what
    /// the API refused may succeed now, so the pool's holds and backoffs end.
    pub fn credentials_changed(&self) {
        self.lock().credentials_changed();
    }

    /// Switches the engine's pool to controller mode: no cloud call from pool
    /// rounds; NICs come from [`Engine::supplied`] and the node's need goes out
    /// through [`Engine::supply_request`].
    pub fn set_supplied_mode(&self, on: bool) {
        self.lock().set_supplied_mode(on);
    }

    /// Controller mode: what to ask the supplier for now
    /// ([`NodeState::supply_request`]).
    pub fn supply_request(
        &self,
        node: &crate::fleet::NodeName,
        waiting: u32,
    ) -> crate::fleet::NodeDemand {
        self.lock().supply_request(node, waiting)
    }

    /// Controller mode: what the supplier says the node has
    /// ([`NodeState::supplied`]); written to the checkpoint.
    pub fn supplied(&self, supplied: &crate::ports::Supplied) -> Result<Vec<Vxnet>, StoreError> {
        let now = self.clock.now();
        self.mutate_durably(|s| s.supplied(supplied, now))
    }

    /// Runs pool rounds until one has nothing to do (or `max_rounds`); returns the rounds run.
    pub async fn settle(&self, max_rounds: usize) -> usize {
        for round in 0..max_rounds {
            if self.run_pool().await.actions == 0 {
                return round;
            }
        }
        max_rounds
    }

    async fn execute(&self, action: PoolAction) -> Result<(), EngineError> {
        let instance = self.lock().instance().clone();
        match action {
            PoolAction::Create { vxnet, count } => {
                let result = self
                    .cloud
                    .create_nics(&vxnet, count, &managed_nic_name(&instance))
                    .await;
                let err = result.as_ref().err().cloned();
                self.mutate_durably(|s| s.create_done(&vxnet, count, result, self.clock.now()))?;
                err.map_or(Ok(()), |e| Err(e.into()))
            }
            PoolAction::Attach { nics } => {
                let job = match self.cloud.attach_nics(&instance, &nics).await {
                    Ok(job) => {
                        // Recorded, so a restart can ask where the job is.
                        self.mutate_later(|s| s.job_started(&nics, &job));
                        Ok(job)
                    }
                    Err(e) if e.kind == CloudErrorKind::Retryable => {
                        // The answer may have been lost after the job started.
                        self.mutate_durably(|s| s.job_lost(&nics, true, &e, self.clock.now()))?;
                        return Err(e.into());
                    }
                    Err(e) => Err(e),
                };
                let result = match job {
                    Ok(job) => match self.wait(&job, "AttachNics").await {
                        Err(e) if e.kind != CloudErrorKind::Permanent => {
                            self.mutate_durably(|s| s.job_lost(&nics, true, &e, self.clock.now()))?;
                            return Err(e.into());
                        }
                        other => other,
                    },
                    Err(e) => Err(e),
                };
                let err = result.as_ref().err().cloned();
                let attached = result.is_ok();
                self.mutate_durably(|s| s.attach_done(&nics, result, self.clock.now()))?;
                if attached {
                    // Prepare at once: the link usually appears together with the job's end.
                    let plumbing: Vec<_> = {
                        let s = self.lock();
                        nics.iter()
                            .filter_map(|id| s.nics().get(id).map(|e| s.nic_plumbing(e)))
                            .collect()
                    };
                    for nic in plumbing {
                        let r = self.host.prepare_nic(&nic).await;
                        self.mutate_durably(|s| s.prepare_done(&nic.nic, r, self.clock.now()))?;
                    }
                }
                err.map_or(Ok(()), |e| Err(e.into()))
            }
            PoolAction::Prepare { nic } => {
                let result = self.host.prepare_nic(&nic).await;
                let err = result.as_ref().err().cloned();
                self.mutate_durably(|s| s.prepare_done(&nic.nic, result, self.clock.now()))?;
                err.map_or(Ok(()), |e| Err(e.into()))
            }
            PoolAction::Detach { nics } => {
                for nic in &nics {
                    if let Err(e) = self.host.release_nic(nic).await {
                        tracing::warn!(nic = %nic.nic, error = %e, "host release before detach");
                    }
                }
                let ids: Vec<NicId> = nics.iter().map(|n| n.nic.clone()).collect();
                let result = match self.cloud.detach_nics(&ids).await {
                    Ok(job) => {
                        self.mutate_later(|s| s.job_started(&ids, &job));
                        match self.wait(&job, "DetachNics").await {
                            Err(e) if e.kind != CloudErrorKind::Permanent => {
                                self.mutate_durably(|s| {
                                    s.job_lost(&ids, false, &e, self.clock.now())
                                })?;
                                return Err(e.into());
                            }
                            other => other,
                        }
                    }
                    Err(e) if e.kind == CloudErrorKind::Retryable => {
                        self.mutate_durably(|s| s.job_lost(&ids, false, &e, self.clock.now()))?;
                        return Err(e.into());
                    }
                    Err(e) => Err(e),
                };
                let err = result.as_ref().err().cloned();
                self.mutate_durably(|s| s.detach_done(&ids, result, self.clock.now()))?;
                err.map_or(Ok(()), |e| Err(e.into()))
            }
            PoolAction::Release { nics } => {
                let mut released = Vec::new();
                let mut errors = Vec::new();
                for nic in &nics {
                    match self.host.release_nic(nic).await {
                        Ok(()) => released.push(nic.nic.clone()),
                        Err(e) if e.kind == HostErrorKind::NotFound => {
                            released.push(nic.nic.clone())
                        }
                        Err(e) => errors.push(format!("{}: {e}", nic.nic)),
                    }
                }
                let failed: Vec<NicId> = nics
                    .iter()
                    .map(|n| n.nic.clone())
                    .filter(|id| !released.contains(id))
                    .collect();
                self.mutate_durably(|s| {
                    s.released_on_host(&released);
                    // Not released: tried again by the next plan.
                    s.release_failed(&failed);
                })?;
                if errors.is_empty() {
                    Ok(())
                } else {
                    Err(EngineError::Many(errors))
                }
            }
            PoolAction::Delete { nics } => {
                let result = self.cloud.delete_nics(&nics).await;
                let err = result.as_ref().err().cloned();
                self.mutate_durably(|s| s.delete_done(&nics, result, self.clock.now()))?;
                err.map_or(Ok(()), |e| Err(e.into()))
            }
        }
    }

    async fn wait(&self, job: &crate::types::JobId, action: &str) -> Result<(), CloudError> {
        let timeout = self.lock().config().job_timeout;
        let outcome = self.cloud.wait_job(job, timeout).await.map_err(|e| {
            // Asking about the job failed, whatever the reason: the job itself may
            // still run and take effect, so its NICs are uncertain (retryable), never
            // settled as if it had failed (the pool would attach more meanwhile). A
            // poll the request quota refused says so (the shortage's cause).
            let kind = if e.kind == CloudErrorKind::Throttled {
                CloudErrorKind::Throttled
            } else {
                CloudErrorKind::Retryable
            };
            CloudError::new(kind, action, format!("job {job}: outcome unknown: {e}"))
        })?;
        match outcome {
            JobOutcome::Successful => Ok(()),
            // A failed job had no effect: the NICs are where they were.
            JobOutcome::Failed => Err(CloudError::new(
                CloudErrorKind::Permanent,
                action,
                format!("job {job} failed"),
            )),
        }
    }

    /// Reconciles with the cloud, the host and (if authoritative) the pods, then does the
    /// host and pod work found. With `startup`, in-flight operations are settled too.
    ///
    /// Do not run it concurrently with [`Engine::add`] or [`Engine::del`]: an ADD plumbs
    /// the host before it records the attachment, so a reconcile in between would take
    /// the fresh plumbing for an orphan and remove it. The agent serialises them with a
    /// reader-writer lock (requests shared, reconcile exclusive), taken through
    /// [`Engine::reconcile_exclusive`].
    pub async fn reconcile(
        &self,
        pods: Option<&[PodInfo]>,
        startup: bool,
    ) -> Result<ReconcileReport, EngineError> {
        self.reconcile_exclusive(pods, startup, async {}).await
    }

    /// [`Engine::reconcile_exclusive`] with `pods` listed when `Some`, and no pod
    /// source when `None`.
    pub async fn reconcile_exclusive<G>(
        &self,
        pods: Option<&[PodInfo]>,
        startup: bool,
        exclusive: impl std::future::Future<Output = G>,
    ) -> Result<ReconcileReport, EngineError> {
        self.reconcile_witnessed(PodsSeen::from_option(pods), startup, exclusive)
            .await
    }

    /// [`Engine::reconcile`] with what the pod source said, and with `exclusive`
    /// awaited once the pool is idle and the cloud has answered, and held until the
    /// actions are applied: the caller's way to keep ADD and DEL off the host while the
    /// host is compared and repaired, without holding them up behind a pool round's
    /// cloud jobs or the cloud's answer (ADD and DEL never call the cloud). The first
    /// startup reconcile judges the checkpoint ([`Engine::recovery`], and the report's
    /// `recovery`).
    ///
    /// The cloud is asked (where the unseen jobs are, then one DescribeNics of the
    /// node's NICs) at `startup`, and otherwise only when
    /// [`NodeState::needs_cloud`] finds a reason and the `Describe` backoff allows:
    /// the periodic reconcile of a node at rest makes no API call. A startup whose
    /// cloud call fails returns the error (nothing may be served before the cloud
    /// was seen); a periodic one goes on locally, records the failure in the report
    /// and backs off.
    pub async fn reconcile_witnessed<G>(
        &self,
        pods: PodsSeen<'_>,
        startup: bool,
        exclusive: impl std::future::Future<Output = G>,
    ) -> Result<ReconcileReport, EngineError> {
        let _running = self.pool_running.lock().await;
        let now = self.clock.now();
        let reason = if startup {
            Some(CloudReason::Startup)
        } else {
            // A look at the host before ADD and DEL are held: enough to decide
            // whether the cloud must be asked (the repair looks again, held).
            let peek = self.host.inventory().await?;
            self.lock().needs_cloud(&peek, now)
        };
        let mut cloud_error = None;
        let mut described = None;
        if let Some(reason) = &reason {
            let ready = startup || self.lock().cloud_ready(ActionKind::Describe, now);
            if ready {
                match self.describe_node().await {
                    Ok(found) => {
                        self.mutate_later(|s| s.cloud_succeeded(ActionKind::Describe));
                        described = Some(found);
                    }
                    Err(e) if startup => return Err(e.into()),
                    Err(e) => {
                        tracing::warn!(%reason, error = %e, "the cloud did not answer; reconciling locally");
                        self.mutate_later(|s| s.cloud_failed(ActionKind::Describe, &e, now));
                        cloud_error = Some(e.to_string());
                    }
                }
            } else {
                cloud_error = Some(format!(
                    "{reason}: the cloud is asked again after its backoff"
                ));
            }
        }
        let _exclusive = exclusive.await;
        let host = self.host.inventory().await?;
        let now = self.clock.now();
        let mut report = match &described {
            Some((cloud, jobs)) => self.mutate_later(|s| {
                s.reconcile(
                    Observed {
                        cloud,
                        host: &host,
                        pods,
                        jobs,
                    },
                    startup,
                    now,
                )
            }),
            None => self.mutate_later(|s| s.reconcile_local(&host, pods, now)),
        };
        report.cloud = described.is_some().then(|| reason.clone()).flatten();
        report.cloud_error = cloud_error;
        let loaded = if startup {
            self.load_state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
        } else {
            None
        };
        if let Some(loaded) = loaded {
            report.recovery = Recovery::judge(&loaded, &report);
            *self.recovery.lock().unwrap_or_else(|p| p.into_inner()) = report.recovery.clone();
        }
        drop(_running);
        let mut errors = Vec::new();
        for action in &report.actions {
            if let Err(e) = self.apply(action).await {
                errors.push(e.to_string());
            }
        }
        if errors.is_empty() {
            Ok(report)
        } else {
            Err(EngineError::Many(errors))
        }
    }

    /// Where the jobs of NICs whose job's end was unseen are (one DescribeJobs, when
    /// any), then the node's NICs (one DescribeNics by name, all pages).
    async fn describe_node(
        &self,
    ) -> Result<(Vec<crate::types::CloudNic>, JobStatuses), CloudError> {
        let (instance, mut jobs) = {
            let s = self.lock();
            let jobs: Vec<JobId> = s
                .nics()
                .values()
                .filter(|n| {
                    matches!(
                        n.link,
                        CloudLink::Attaching | CloudLink::Detaching | CloudLink::Uncertain { .. }
                    )
                })
                .filter_map(|n| n.job.clone())
                .collect();
            (s.instance().clone(), jobs)
        };
        jobs.sort();
        jobs.dedup();
        let statuses = if jobs.is_empty() {
            JobStatuses::new()
        } else {
            self.cloud.job_statuses(&jobs).await?
        };
        let filter = NicFilter {
            name: Some(managed_nic_name(&instance)),
            ..Default::default()
        };
        let nics = self.cloud.describe_nics(&filter).await?;
        Ok((nics, statuses))
    }

    async fn apply(&self, action: &ReconcileAction) -> Result<(), EngineError> {
        match action {
            ReconcileAction::Unplumb { plumbed } => {
                match self.host.unplumb_pod(plumbed, None).await {
                    Err(e) if e.kind != HostErrorKind::NotFound => Err(e.into()),
                    _ => Ok(()),
                }
            }
            ReconcileAction::Release { attachment, reason } => {
                tracing::info!(%attachment, reason, "releasing attachment");
                self.del(attachment, None).await.map(|_| ())
            }
            ReconcileAction::Replumb { attachment } => {
                let plumbing = {
                    let s = self.lock();
                    s.attachment(attachment).and_then(|a| s.pod_plumbing(a))
                };
                let Some(plumbing) = plumbing else {
                    return Ok(());
                };
                match self.host.plumb_pod(&plumbing).await {
                    Ok(plumbed) => {
                        self.mutate_later(|s| s.confirm_plumbed(attachment, plumbed));
                        Ok(())
                    }
                    Err(e) if e.kind == HostErrorKind::NotFound => {
                        // The sandbox is gone (a reboot): nobody can use this attachment again.
                        self.del(attachment, None).await.map(|_| ())
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_trait::async_trait;
    use futures::executor::block_on;
    use ipnet::Ipv4Net;
    use mockall::mock;

    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::types::{
        CloudNic, HostInventory, JobId, NicPlumbing, NodePlumbing, NodeReport, PodPlumbing,
        Timestamp, VxnetId,
    };

    mock! {
        Cloud {}
        #[async_trait]
        impl CloudNics for Cloud {
            async fn describe_nics(&self, filter: &NicFilter) -> Result<Vec<CloudNic>, CloudError>;
            async fn create_nics(&self, vxnet: &VxnetId, count: u32, name: &str) -> Result<Vec<CloudNic>, CloudError>;
            async fn attach_nics(&self, instance: &InstanceId, nics: &[NicId]) -> Result<JobId, CloudError>;
            async fn detach_nics(&self, nics: &[NicId]) -> Result<JobId, CloudError>;
            async fn delete_nics(&self, nics: &[NicId]) -> Result<(), CloudError>;
            async fn wait_job(&self, job: &JobId, timeout: Duration) -> Result<JobOutcome, CloudError>;
        }
    }

    /// A host that must not be touched: every call fails the test.
    struct UntouchableHost;

    #[async_trait]
    impl HostNetwork for UntouchableHost {
        async fn ensure_node(&self, _: &NodePlumbing) -> Result<NodeReport, HostError> {
            panic!("ensure_node called")
        }
        async fn prepare_nic(&self, _: &NicPlumbing) -> Result<(), HostError> {
            panic!("prepare_nic called")
        }
        async fn release_nic(&self, _: &NicPlumbing) -> Result<(), HostError> {
            panic!("release_nic called")
        }
        async fn plumb_pod(&self, _: &PodPlumbing) -> Result<PlumbedPod, HostError> {
            panic!("plumb_pod called")
        }
        async fn unplumb_pod(&self, _: &PlumbedPod, _: Option<&str>) -> Result<(), HostError> {
            panic!("unplumb_pod called")
        }
        async fn verify_pod(&self, _: &PodPlumbing, _: &PlumbedPod) -> Result<(), HostError> {
            panic!("verify_pod called")
        }
        async fn inventory(&self) -> Result<HostInventory, HostError> {
            panic!("inventory called")
        }
    }

    struct NoStore;
    impl CheckpointStore for NoStore {
        fn load(&self) -> Result<Option<Checkpoint>, StoreError> {
            Ok(None)
        }
        fn save(&self, _: &Checkpoint) -> Result<(), StoreError> {
            Ok(())
        }
    }

    struct Fixed;
    impl Clock for Fixed {
        fn now(&self) -> Timestamp {
            Timestamp(0)
        }
    }

    fn engine(cloud: MockCloud) -> Engine<MockCloud, UntouchableHost, Fixed, NoStore> {
        let vxnet = Vxnet {
            id: VxnetId::new("vxnet-1"),
            cidr: "172.16.1.0/24".parse::<Ipv4Net>().unwrap(),
            gateway: "172.16.1.1".parse().unwrap(),
            router: None,
        };
        Engine::open(
            cloud,
            UntouchableHost,
            Fixed,
            NoStore,
            PoolConfig::default(),
            InstanceId::new("i-1"),
            vec![vxnet],
        )
        .unwrap()
    }

    #[test]
    fn del_and_check_of_an_unknown_pod_touch_neither_host_nor_cloud() {
        // No expectations set: any call to the mocks fails the test.
        let e = engine(MockCloud::new());
        let id = AttachmentId {
            container_id: "nope".into(),
            ifname: "eth0".into(),
        };
        assert_eq!(block_on(e.del(&id, None)), Ok(None));
        assert_eq!(
            block_on(e.check(&id)),
            Err(EngineError::UnknownAttachment(id))
        );
    }

    #[test]
    fn add_on_an_empty_pool_fails_fast_without_calling_the_cloud() {
        // The ADD path never calls the cloud: growing the pool is the pool loop's job.
        let e = engine(MockCloud::new());
        let pod = PodKey {
            namespace: "a".into(),
            name: "b".into(),
            container_id: "c".into(),
            ifname: "eth0".into(),
        };
        let err = block_on(e.add(&pod, "/run/netns/c")).unwrap_err();
        assert!(matches!(
            err,
            EngineError::Alloc(AllocError::PoolEmpty { .. })
        ));
        assert!(err.is_retryable());
    }

    #[test]
    fn pool_round_creates_one_batch_with_the_managed_name() {
        let mut cloud = MockCloud::new();
        cloud
            .expect_create_nics()
            .withf(|vxnet, count, name| {
                vxnet.as_str() == "vxnet-1" && *count == 5 && name == "hostnic_i-1"
            })
            .times(1)
            .returning(|_, _, _| {
                Err(CloudError::new(
                    crate::ports::CloudErrorKind::Retryable,
                    "CreateNics",
                    "busy",
                ))
            });
        let e = engine(cloud);
        let round = block_on(e.run_pool());
        assert_eq!(round.actions, 1);
        assert_eq!(round.failures.len(), 1);
        // Backing off: the next round (same instant) asks nothing.
        assert_eq!(block_on(e.run_pool()).actions, 0);
    }
}
