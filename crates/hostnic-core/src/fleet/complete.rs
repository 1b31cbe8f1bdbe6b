//! Learning from the outcome of each call of a round.
//!
//! The rule for failures: an error the API answered (bad request, wrong state,
//! not found, a resource quota) had no effect; a request-quota refusal or a call
//! the client withheld had none either; a retryable failure (no answer, 5000,
//! 5100) may or may not have had its effect, so the NICs it touched become
//! uncertain and are checked with the cloud before anything else is done with them.

use crate::fleet::call::{AfterDetach, FleetCall, Outcome, PlannedCall};
use crate::fleet::model::Lane;
use crate::fleet::model::{JobAction, JobPage, JobProgress, JobQuery, NodeName};
use crate::fleet::state::{Fleet, JobTrack, NicEntry, NicState, VxnetInfo, VxnetTrack};
use crate::ports::{CloudError, CloudErrorKind};
use crate::types::{CloudNic, InstanceId, JobId, NicId, Timestamp, VxnetId};

impl Fleet {
    /// Reports the outcome of one call of the last round at `now`.
    pub fn complete(&mut self, now: Timestamp, planned: &PlannedCall, outcome: Outcome) {
        if let Some(e) = outcome.error() {
            tracing::debug!(action = planned.call.action(), lane = %planned.lane, error = %e, "fleet call failed");
        }
        match (&planned.call, outcome) {
            (FleetCall::DescribeJobs { query }, Outcome::Jobs(r)) => match query {
                JobQuery::Ids(jobs) => self.jobs_done(now, jobs, r),
                JobQuery::Running { offset } => self.running_jobs_listed(now, *offset, r),
            },
            (FleetCall::DescribeInstances { instances }, Outcome::Instances(r)) => {
                self.instances_done(now, instances, r)
            }
            (FleetCall::DescribeVxnets { vxnets }, Outcome::Vxnets(r)) => {
                self.vxnets_done(now, vxnets, r)
            }
            (FleetCall::DescribeNics { query }, Outcome::Nics(r)) => self.nics_done(now, query, r),
            (
                FleetCall::CreateNics {
                    vxnet,
                    count,
                    name,
                    for_nodes,
                },
                Outcome::Created(r),
            ) => self.created(now, vxnet, *count, name, for_nodes, r),
            (
                FleetCall::AttachNics {
                    node,
                    instance,
                    nics,
                },
                Outcome::Job(r),
            ) => self.attach_started(now, planned, node, instance, nics, r),
            (FleetCall::DetachNics { nics, then }, Outcome::Job(r)) => {
                self.detach_started(now, planned, nics, *then, r)
            }
            (FleetCall::DeleteNics { nics }, Outcome::Deleted(r)) => self.deleted(now, nics, r),
            (call, outcome) => {
                tracing::error!(
                    action = call.action(),
                    ?outcome,
                    "outcome does not match the call; ignored"
                );
            }
        }
    }

    pub(super) fn action_result(
        &mut self,
        action: &'static str,
        now: Timestamp,
        error: Option<&CloudError>,
    ) {
        match error {
            None => {
                self.backoffs.remove(action);
            }
            Some(e) if e.kind == CloudErrorKind::Throttled => {}
            Some(_) => {
                let (base, max, seed) =
                    (self.config.backoff_base, self.config.backoff_max, self.seed);
                self.backoffs
                    .entry(action)
                    .or_default()
                    .fail(now, base, max, seed);
            }
        }
    }

    /// The NIC may be anywhere: check it with the cloud before using it.
    pub(super) fn uncertain(&mut self, id: &NicId, instance: Option<InstanceId>, now: Timestamp) {
        let (base, max) = (self.config.backoff_base, self.config.backoff_max);
        if let Some(e) = self.nics.get_mut(id) {
            e.state = NicState::Uncertain { instance };
            e.since = now;
            e.strikes = e.strikes.saturating_add(1);
            // Checked at once the first time, then later and later.
            let wait = match e.strikes {
                0 | 1 => std::time::Duration::ZERO,
                n => base.saturating_mul(1 << (n - 2).min(16)).min(max),
            };
            e.verify_at = Some(now.plus(wait));
        }
    }

    pub(crate) fn lose_job(&mut self, id: &JobId, now: Timestamp) {
        let Some(job) = self.jobs.remove(id) else {
            return;
        };
        for nic in &job.nics {
            let on = match self.nics.get(nic).map(|e| &e.state) {
                Some(
                    NicState::Attaching { instance, job }
                    | NicState::Detaching { instance, job, .. },
                ) if job == id => Some(instance.clone()),
                _ => continue,
            };
            self.uncertain(nic, on, now);
        }
    }

    fn jobs_done(&mut self, now: Timestamp, ids: &[JobId], result: Result<JobPage, CloudError>) {
        self.action_result("DescribeJobs", now, result.as_ref().err());
        let max = self.config.job_poll_max;
        for id in ids {
            let progress = match &result {
                Ok(page) => page.jobs.iter().find(|j| &j.id == id).map(|j| j.progress),
                Err(_) => Some(JobProgress::Running),
            };
            match progress {
                Some(JobProgress::Running) => {
                    if let Some(job) = self.jobs.get_mut(id) {
                        job.delay = (job.delay * 2).min(max);
                        job.next_poll = now.plus(job.delay);
                        if result.is_ok() {
                            job.confirmed = now;
                            job.failed_polls = 0;
                        } else {
                            job.failed_polls = job.failed_polls.saturating_add(1);
                        }
                    }
                }
                Some(p) => self.finish_job(id, p == JobProgress::Succeeded, now),
                // The API does not know the job: whatever it did, its NICs are checked.
                None => self.lose_job(id, now),
            }
        }
    }

    /// A page of the account's running NIC jobs: each one not followed yet is
    /// adopted, its NICs marked as moving (NICs the planner does not know are
    /// described; they are the cluster's or not).
    fn running_jobs_listed(
        &mut self,
        now: Timestamp,
        offset: u32,
        result: Result<JobPage, CloudError>,
    ) {
        self.action_result("DescribeJobs", now, result.as_ref().err());
        let Ok(page) = result else {
            return;
        };
        for job in &page.jobs {
            let Some(action) = job.action else { continue };
            if job.progress != JobProgress::Running || self.jobs.contains_key(&job.id) {
                continue;
            }
            tracing::info!(job = %job.id, ?action, nics = job.nics.len(), "adopting a running job");
            self.jobs.insert(
                job.id.clone(),
                JobTrack {
                    action,
                    instance: job.instance.clone(),
                    nics: job.nics.clone(),
                    confirmed: now,
                    failed_polls: 0,
                    next_poll: now.plus(self.config.job_poll_initial),
                    delay: self.config.job_poll_initial,
                    lane: Lane::Repair,
                },
            );
            for nic in &job.nics {
                match self.nics.get(nic).map(|e| e.state.clone()) {
                    Some(state) => {
                        if let Some(next) =
                            Self::moving(action, &job.id, job.instance.as_ref(), &state)
                            && let Some(e) = self.nics.get_mut(nic)
                        {
                            e.state = next;
                            e.since = now;
                            e.verify_at = None;
                        }
                    }
                    None => {
                        if let Some(i) = job
                            .instance
                            .as_ref()
                            .and_then(|i| self.instances.get_mut(i))
                        {
                            i.unknown.insert(nic.clone());
                        }
                        self.adopting.insert(nic.clone());
                    }
                }
            }
        }
        let next = offset + page.jobs.len() as u32;
        if page.jobs.is_empty() || next >= page.total {
            self.jobs_listed = true;
            self.jobs_offset = 0;
        } else {
            self.jobs_offset = next;
        }
    }

    /// The state of a NIC a running `action` job moves, from its state before.
    pub(super) fn moving(
        action: JobAction,
        job: &JobId,
        instance: Option<&InstanceId>,
        state: &NicState,
    ) -> Option<NicState> {
        let on = instance.or(state.instance()).cloned()?;
        Some(match action {
            JobAction::Attach => NicState::Attaching {
                instance: on,
                job: job.clone(),
            },
            JobAction::Detach => NicState::Detaching {
                instance: state.instance().cloned().unwrap_or(on),
                job: job.clone(),
                then: AfterDetach::Keep,
            },
        })
    }

    fn finish_job(&mut self, id: &JobId, ok: bool, now: Timestamp) {
        let Some(job) = self.jobs.remove(id) else {
            return;
        };
        let (cooldown, linger) = (self.config.stock_cooldown, self.config.stock_linger);
        let mut failed_nodes: Vec<NodeName> = Vec::new();
        for nic in &job.nics {
            let Some(state) = self.nics.get(nic).map(|e| e.state.clone()) else {
                continue;
            };
            let next = match state {
                NicState::Attaching { instance, job } if &job == id => {
                    if ok {
                        NicState::Attached { instance }
                    } else {
                        failed_nodes.extend(self.claimant(&instance).cloned());
                        NicState::Stock {
                            reserved_for: self.claimant(&instance).cloned(),
                            usable_at: now,
                            delete_after: now.plus(linger),
                        }
                    }
                }
                NicState::Detaching {
                    instance,
                    job,
                    then,
                } if &job == id => {
                    if !ok {
                        NicState::Attached { instance }
                    } else {
                        if let Some(e) = self.nics.get_mut(nic) {
                            e.last_instance = Some(instance.clone());
                            e.reattach = false;
                        }
                        match then {
                            AfterDetach::Keep => NicState::Stock {
                                reserved_for: None,
                                usable_at: now.plus(cooldown),
                                delete_after: now.plus(linger),
                            },
                            AfterDetach::Delete => NicState::Stock {
                                reserved_for: None,
                                usable_at: now.plus(cooldown),
                                delete_after: now,
                            },
                            AfterDetach::Reattach => NicState::Stock {
                                reserved_for: self.claimant(&instance).cloned(),
                                usable_at: now,
                                delete_after: now.plus(linger),
                            },
                        }
                    }
                }
                _ => continue,
            };
            if let Some(e) = self.nics.get_mut(nic) {
                e.state = next;
                e.since = now;
                if ok {
                    e.strikes = 0;
                }
            }
        }
        if !ok {
            let action = match job.action {
                JobAction::Attach => "AttachNics",
                JobAction::Detach => "DetachNics",
            };
            tracing::warn!(job = %id, action, nics = job.nics.len(), "job failed");
            if job.action == JobAction::Detach {
                self.action_result(
                    "DetachNics",
                    now,
                    Some(&CloudError::new(
                        CloudErrorKind::Retryable,
                        action,
                        "job failed",
                    )),
                );
            }
            let (base, max, seed) = (self.config.backoff_base, self.config.backoff_max, self.seed);
            for n in failed_nodes {
                if let Some(t) = self.nodes.get_mut(&n) {
                    t.backoff
                        .fail(now, base, max, seed ^ n.as_str().len() as u64);
                    t.last_error = Some(format!("attach job {id} failed"));
                }
            }
        }
    }

    fn created(
        &mut self,
        now: Timestamp,
        vxnet: &VxnetId,
        count: u32,
        name: &str,
        for_nodes: &[(NodeName, u32)],
        result: Result<Vec<CloudNic>, CloudError>,
    ) {
        let linger = self.config.stock_linger;
        let (base, max, seed) = (self.config.backoff_base, self.config.backoff_max, self.seed);
        let vxnet_backoff = self.config.vxnet_backoff;
        let t = self
            .vxnets
            .entry(vxnet.clone())
            .or_insert_with(VxnetTrack::unknown);
        match result {
            Ok(nics) => {
                t.create_backoff.succeed();
                // Bisecting the vxnet's room: what is left of the bound is tried next.
                if let Some(max) = t.room_max.as_mut() {
                    *max = max.saturating_sub(nics.len() as u32);
                    t.ceiling = Some(*max);
                    if *max == 0 {
                        t.exhausted_until = Some(now.plus(vxnet_backoff));
                    }
                }
                let mut owners = for_nodes
                    .iter()
                    .flat_map(|(n, c)| std::iter::repeat_n(n.clone(), *c as usize));
                for nic in nics {
                    let owner = owners
                        .next()
                        .filter(|n| self.nodes.get(n).is_some_and(|t| t.refusal.is_none()));
                    let state = NicState::Stock {
                        reserved_for: owner,
                        usable_at: now,
                        delete_after: now.plus(linger),
                    };
                    self.nics.insert(
                        nic.id.clone(),
                        NicEntry::new(name.to_string(), vxnet.clone(), nic.ip, state, now),
                    );
                }
            }
            Err(e) => {
                match e.kind {
                    CloudErrorKind::Throttled => return,
                    // Not enough room: half as many next time, and none for a while
                    // once even one does not fit.
                    CloudErrorKind::QuotaExceeded => {
                        if count > 1 {
                            t.room_max = Some(t.room_max.map_or(count - 1, |m| m.min(count - 1)));
                            t.ceiling = Some(count / 2);
                        } else {
                            tracing::warn!(%vxnet, "vxnet out of addresses or NICs");
                            t.exhausted_until = Some(now.plus(vxnet_backoff));
                            t.ceiling = None;
                            t.room_max = None;
                        }
                    }
                    // The vxnet may be gone: described again.
                    CloudErrorKind::NotFound => t.info = VxnetInfo::Unknown,
                    CloudErrorKind::Retryable => {
                        // The NICs may exist without the planner knowing their ids: the
                        // next listing of the cluster's detached NICs finds them.
                        t.create_backoff.fail(now, base, max, seed);
                        if self.scans.stock.is_none() {
                            self.scans.next_stock = now;
                        }
                    }
                    CloudErrorKind::Permanent => t.create_backoff.fail(now, base, max, seed),
                }
                for (n, _) in for_nodes {
                    if let Some(t) = self.nodes.get_mut(n) {
                        t.last_error = Some(e.to_string());
                    }
                }
            }
        }
    }

    fn attach_started(
        &mut self,
        now: Timestamp,
        planned: &PlannedCall,
        node: &NodeName,
        instance: &InstanceId,
        nics: &[NicId],
        result: Result<JobId, CloudError>,
    ) {
        let (base, max, seed) = (self.config.backoff_base, self.config.backoff_max, self.seed);
        match result {
            Ok(job) => {
                for id in nics {
                    if let Some(e) = self.nics.get_mut(id)
                        && matches!(e.state, NicState::Stock { .. })
                    {
                        e.state = NicState::Attaching {
                            instance: instance.clone(),
                            job: job.clone(),
                        };
                        e.since = now;
                    }
                }
                self.jobs.insert(
                    job,
                    JobTrack {
                        action: JobAction::Attach,
                        instance: Some(instance.clone()),
                        nics: nics.to_vec(),
                        confirmed: now,
                        failed_polls: 0,
                        next_poll: now.plus(self.config.job_poll_initial),
                        delay: self.config.job_poll_initial,
                        lane: planned.lane,
                    },
                );
                if let Some(t) = self.nodes.get_mut(node) {
                    t.last_served = now;
                    t.backoff.succeed();
                    t.last_error = None;
                }
            }
            Err(e) => {
                if e.kind == CloudErrorKind::Throttled {
                    return;
                }
                match e.kind {
                    // The instance takes no more NICs: described again (someone else's
                    // NICs may count), the node waits.
                    CloudErrorKind::QuotaExceeded => {
                        if let Some(i) = self.instances.get_mut(instance) {
                            i.stale = true;
                        }
                    }
                    // It may have started: the NICs are checked.
                    CloudErrorKind::Retryable => {
                        for id in nics {
                            self.uncertain(id, Some(instance.clone()), now);
                        }
                    }
                    // A NIC busy (a job nobody recorded may be attaching it here) or
                    // gone, or the instance gone: check both.
                    _ => {
                        for id in nics {
                            self.uncertain(id, Some(instance.clone()), now);
                        }
                        if let Some(i) = self.instances.get_mut(instance) {
                            i.stale = true;
                        }
                    }
                }
                if let Some(t) = self.nodes.get_mut(node) {
                    t.backoff
                        .fail(now, base, max, seed ^ node.as_str().len() as u64);
                    t.last_error = Some(e.to_string());
                    t.instance_full = e.kind == CloudErrorKind::QuotaExceeded;
                }
            }
        }
    }

    fn detach_started(
        &mut self,
        now: Timestamp,
        planned: &PlannedCall,
        nics: &[NicId],
        then: AfterDetach,
        result: Result<JobId, CloudError>,
    ) {
        self.action_result("DetachNics", now, result.as_ref().err());
        match result {
            Ok(job) => {
                for id in nics {
                    if let Some(e) = self.nics.get_mut(id)
                        && let NicState::Attached { instance } = &e.state
                    {
                        e.state = NicState::Detaching {
                            instance: instance.clone(),
                            job: job.clone(),
                            then,
                        };
                        e.since = now;
                    }
                }
                self.jobs.insert(
                    job,
                    JobTrack {
                        action: JobAction::Detach,
                        instance: None,
                        nics: nics.to_vec(),
                        confirmed: now,
                        failed_polls: 0,
                        next_poll: now.plus(self.config.job_poll_initial),
                        delay: self.config.job_poll_initial,
                        lane: planned.lane,
                    },
                );
            }
            Err(e) if e.kind == CloudErrorKind::Throttled => {}
            Err(_) => {
                for id in nics {
                    let on = self.nics.get(id).and_then(|e| e.state.instance().cloned());
                    self.uncertain(id, on, now);
                }
            }
        }
    }

    fn deleted(&mut self, now: Timestamp, nics: &[NicId], result: Result<(), CloudError>) {
        self.action_result("DeleteNics", now, result.as_ref().err());
        match result {
            Ok(()) => {
                for id in nics {
                    self.nics.remove(id);
                }
            }
            Err(e) if e.kind == CloudErrorKind::Throttled => {}
            // Not found (one of them is gone: the call did nothing), no answer (it
            // may have deleted them), wrong state: each NIC is checked.
            Err(_) => {
                for id in nics {
                    self.uncertain(id, None, now);
                }
            }
        }
    }
}
