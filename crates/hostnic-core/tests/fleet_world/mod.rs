//! A fleet planner driven round by round against `FleetCloudSim`, with agents
//! that write demands and read their views, persisted records (the `HostnicNode`
//! status of controller mode) and leader changes. Every round is checked against
//! the cloud's truth. `FLEET_TRACE=1` prints every round's calls and the nodes' NICs.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::executor::block_on;
use hostnic_core::fleet::{
    Breaker, Fleet, FleetCall, FleetConfig, FleetRound, NicPhase, NodeDemand, NodeName, NodeRecord,
    NodeView, RoundBudget, execute,
};
use hostnic_core::ports::Clock;
use hostnic_core::testing::{FleetCloudSim, FleetSimConfig, ManualClock, sim_instance, sim_vxnet};
use hostnic_core::types::{InstanceId, NicId, Timestamp};

pub struct FleetWorld {
    pub clock: ManualClock,
    pub cloud: FleetCloudSim,
    pub fleet: Fleet,
    pub config: FleetConfig,
    pub sim: FleetSimConfig,
    /// What each node's agent asks (its `HostnicNode` spec).
    pub demands: BTreeMap<NodeName, NodeDemand>,
    /// What was persisted after the last complete round (its status).
    pub records: BTreeMap<NodeName, NodeRecord>,
    /// The views after the last round.
    pub views: BTreeMap<NodeName, NodeView>,
    pub rounds: u64,
    pub leader_changes: u32,
    /// Every round's requests and the budget it was planned under.
    pub spent: Vec<(u32, u32)>,
    /// The breaker the next rounds are planned under (tests of the open breaker).
    pub breaker: Breaker,
}

impl FleetWorld {
    pub fn new(sim: FleetSimConfig, config: FleetConfig) -> Self {
        let clock = ManualClock::new(Timestamp(1_000_000));
        let cloud = FleetCloudSim::new(sim.clone(), clock.clone());
        let fleet = Fleet::new(config.clone(), clock.now());
        Self {
            clock,
            cloud,
            fleet,
            config,
            sim,
            demands: BTreeMap::new(),
            records: BTreeMap::new(),
            views: BTreeMap::new(),
            rounds: 0,
            leader_changes: 0,
            spent: Vec::new(),
            breaker: Breaker::Closed,
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn node_name(n: u32) -> NodeName {
        NodeName::new(format!("node-{n}"))
    }

    /// Node `n` on instance `i-n`, wanting `want` NICs from its instance's
    /// vxnet first, then the next ones.
    pub fn add_node(&mut self, n: u32, want: u32) -> NodeName {
        let name = Self::node_name(n);
        let mut d = NodeDemand::new(name.clone(), sim_instance(n), want);
        let vxnets = self.sim.vxnets.max(1);
        let first = (n - 1) % vxnets;
        d.vxnets = (0..vxnets.min(3))
            .map(|k| sim_vxnet(1 + (first + k) % vxnets))
            .collect();
        self.demands.insert(name.clone(), d);
        name
    }

    pub fn demand(&mut self, name: &NodeName) -> &mut NodeDemand {
        self.demands.get_mut(name).expect("a node of the world")
    }

    pub fn tick(&mut self, d: Duration) {
        self.clock.advance(d);
    }

    fn budget(&self) -> RoundBudget {
        RoundBudget {
            available: self.cloud.quota_remaining(),
            breaker: self.breaker,
        }
    }

    /// Plans a round, checks it against the truth, runs it, learns from it,
    /// persists the records and lets the agents read their views.
    pub fn round(&mut self) -> FleetRound {
        let (round, budget) = self.plan();
        // What the round is about to do is recorded first (reservations: the
        // attaches about to be made), as the controller writes status before calling.
        self.persist();
        let results = block_on(execute(&self.cloud, &round));
        let now = self.now();
        for (call, outcome) in results {
            self.fleet.complete(now, &call, outcome);
        }
        self.spent.push((round.requests(), budget.available));
        self.persist();
        self.check()
            .unwrap_or_else(|e| panic!("after round {}: {e}", self.rounds));
        round
    }

    /// The leader dies after making the first `k` calls of a round; a new planner
    /// resumes from the records of the last complete round.
    pub fn round_then_crash(&mut self, k: usize) {
        let (mut round, _) = self.plan();
        self.persist();
        round.calls.truncate(k);
        let _ = block_on(execute(&self.cloud, &round));
        self.leader_change();
    }

    /// A new leader resumes from the persisted records.
    pub fn leader_change(&mut self) {
        let records: Vec<NodeRecord> = self.records.values().cloned().collect();
        self.fleet = Fleet::resume(self.config.clone(), self.now(), &records);
        self.leader_changes += 1;
    }

    fn plan(&mut self) -> (FleetRound, RoundBudget) {
        self.rounds += 1;
        let budget = self.budget();
        let demands: Vec<NodeDemand> = self.demands.values().cloned().collect();
        let now = self.now();
        let round = self.fleet.plan(now, &demands, budget);
        if std::env::var_os("FLEET_TRACE").is_some() {
            eprintln!(
                "round {} at {} ms: counts {:?} jobs {}: {:?}",
                self.rounds,
                now.0,
                self.fleet.nic_counts(),
                self.fleet.jobs_in_flight(),
                round.calls.iter().map(|c| &c.call).collect::<Vec<_>>()
            );
            for v in self.views.values().filter(|v| !v.nics.is_empty()) {
                eprintln!(
                    "   {} {:?}",
                    v.node,
                    v.nics
                        .iter()
                        .map(|n| (n.id.to_string(), n.phase))
                        .collect::<Vec<_>>()
                );
            }
        }
        self.check_round(&round, budget)
            .unwrap_or_else(|e| panic!("round {}: {e}\n{round:#?}", self.rounds));
        (round, budget)
    }

    fn persist(&mut self) {
        self.records.clear();
        self.views.clear();
        for view in self.fleet.views() {
            self.records.insert(view.node.clone(), view.record());
            self.views.insert(view.node.clone(), view);
        }
        // Agents forget NICs they gave back (or reported missing) once their view
        // no longer shows them attached.
        for (name, d) in self.demands.iter_mut() {
            let shown: BTreeSet<NicId> = self
                .views
                .get(name)
                .map(|v| {
                    v.nics
                        .iter()
                        .filter(|n| n.phase == NicPhase::Attached)
                        .map(|n| n.id.clone())
                        .collect()
                })
                .unwrap_or_default();
            d.release.retain(|n| shown.contains(n));
            d.missing.retain(|n| shown.contains(n));
            // NICs beyond what it wants (one that arrived after it stopped asking)
            // are free NICs of its pool: it gives them back, as an agent does.
            let kept: Vec<&NicId> = shown.iter().filter(|n| !d.release.contains(*n)).collect();
            let excess = kept.len().saturating_sub(d.want as usize);
            let extra: Vec<NicId> = kept.into_iter().rev().take(excess).cloned().collect();
            d.release.extend(extra);
        }
    }

    /// The node gives back `k` of its attached NICs and wants that many fewer.
    pub fn release(&mut self, name: &NodeName, k: usize) {
        let Some(view) = self.views.get(name) else {
            return;
        };
        let d = self.demands.get_mut(name).expect("node");
        let ids: Vec<NicId> = view
            .nics
            .iter()
            .filter(|n| n.phase == NicPhase::Attached && !d.release.contains(&n.id))
            .map(|n| n.id.clone())
            .take(k)
            .collect();
        d.want = d.want.saturating_sub(ids.len() as u32);
        d.release.extend(ids);
    }

    /// What a round may do, checked before it runs.
    fn check_round(&self, round: &FleetRound, budget: RoundBudget) -> Result<(), String> {
        match budget.breaker {
            Breaker::Closed if round.requests() > budget.available => {
                return Err(format!(
                    "over budget: {} requests with {} available",
                    round.requests(),
                    budget.available
                ));
            }
            Breaker::Open { probe_due: false } if !round.is_empty() => {
                return Err("calls planned while the breaker is open".into());
            }
            Breaker::Open { probe_due: true } if round.calls.len() > 1 => {
                return Err("more than the probe while the breaker is open".into());
            }
            _ => {}
        }
        let on = self.cloud.on_instances();
        let on_instance = |i: &InstanceId| on.get(i).copied().unwrap_or(0);
        let mut attach_nodes = BTreeSet::new();
        let mut create_vxnets = BTreeSet::new();
        let mut touched: BTreeSet<NicId> = BTreeSet::new();
        let truth = self.cloud.nics();
        for c in &round.calls {
            let nics: Vec<NicId> = match &c.call {
                FleetCall::CreateNics { vxnet, count, .. } => {
                    if !create_vxnets.insert(vxnet.clone()) {
                        return Err(format!("two CreateNics in {vxnet}"));
                    }
                    if *count == 0 || *count > 252 {
                        return Err(format!("CreateNics count {count}"));
                    }
                    Vec::new()
                }
                FleetCall::AttachNics {
                    node,
                    instance,
                    nics,
                } => {
                    if !attach_nodes.insert(node.clone()) {
                        return Err(format!("two AttachNics for {node}"));
                    }
                    let max = self.demands.get(node).map_or(0, |d| d.max_nics);
                    let new = nics
                        .iter()
                        .filter(|n| {
                            truth.get(*n).is_none_or(|t| {
                                t.instance.as_ref() != Some(instance) && t.busy.is_none()
                            })
                        })
                        .count() as u32;
                    if on_instance(instance) + new > max {
                        return Err(format!(
                            "{node} would exceed max_nics {max}: {} on it, {new} more",
                            on_instance(instance)
                        ));
                    }
                    nics.clone()
                }
                FleetCall::DetachNics { nics, .. } | FleetCall::DeleteNics { nics } => nics.clone(),
                _ => Vec::new(),
            };
            if nics.len() > 100 {
                return Err(format!("{} of {} NICs", c.call.action(), nics.len()));
            }
            for n in nics {
                if !touched.insert(n.clone()) {
                    return Err(format!("NIC {n} in two calls of one round"));
                }
            }
        }
        Ok(())
    }

    /// What must hold after every round.
    pub fn check(&self) -> Result<(), String> {
        if self.cloud.over_quota() > 0 {
            return Err(format!(
                "{} requests over the quota",
                self.cloud.over_quota()
            ));
        }
        let v = self.cloud.limit_violations();
        if !v.is_empty() {
            return Err(format!("API limits broken: {v:?}"));
        }
        let truth = self.cloud.nics();
        let mut owner: BTreeMap<NicId, NodeName> = BTreeMap::new();
        for view in self.views.values() {
            for nic in &view.nics {
                if let Some(other) = owner.insert(nic.id.clone(), view.node.clone()) {
                    return Err(format!("NIC {} shown to {other} and {}", nic.id, view.node));
                }
                // Never attached to another instance than the one its node is told.
                // (Detached behind the planner's back — a job nobody recorded — is
                // possible; the node's host then reports it missing.)
                if nic.phase == NicPhase::Attached
                    && let Some(t) = truth.get(&nic.id)
                    && t.instance.as_ref().is_some_and(|i| i != &view.instance)
                {
                    return Err(format!(
                        "{} is told NIC {} is attached, the cloud has it on {:?}",
                        view.node, nic.id, t.instance
                    ));
                }
            }
        }
        let per_instance = self.cloud.on_instances();
        for d in self.demands.values() {
            let on = per_instance.get(&d.instance).copied().unwrap_or(0);
            if on > d.max_nics {
                return Err(format!("{} holds {on} NICs", d.node));
            }
        }
        Ok(())
    }

    /// True when every valid node has what it wants, nothing runs and nothing of
    /// the cluster is left over in the cloud.
    pub fn settled(&self) -> Result<(), String> {
        let truth = self.cloud.nics();
        let name = self.config.nic_name();
        let mut valid: BTreeMap<InstanceId, &NodeDemand> = BTreeMap::new();
        for d in self.demands.values() {
            let view = self
                .views
                .get(&d.node)
                .ok_or(format!("no view of {}", d.node))?;
            if view.refusal.is_none() {
                valid.insert(d.instance.clone(), d);
            }
        }
        let mut ours_on: BTreeMap<&InstanceId, u32> = BTreeMap::new();
        for n in truth.values().filter(|n| n.name == name) {
            if let Some(i) = &n.instance {
                *ours_on.entry(i).or_default() += 1;
            }
        }
        for d in valid.values() {
            let have = ours_on.get(&d.instance).copied().unwrap_or(0);
            if have != d.want {
                return Err(format!("{} has {have} NICs, wants {}", d.node, d.want));
            }
            let view = &self.views[&d.node];
            if !view.ready || view.attached != d.want {
                return Err(format!("{} not ready: {view:?}", d.node));
            }
        }
        let refused: BTreeSet<&InstanceId> = self
            .demands
            .values()
            .filter(|d| !valid.contains_key(&d.instance))
            .map(|d| &d.instance)
            .collect();
        for (id, n) in &truth {
            if n.name != name {
                continue;
            }
            match &n.instance {
                Some(i) if valid.contains_key(i) || refused.contains(i) => {}
                other => return Err(format!("NIC {id} left over (on {other:?})")),
            }
        }
        if self.cloud.jobs_running() > 0 || self.fleet.jobs_in_flight() > 0 {
            return Err("jobs still running".into());
        }
        Ok(())
    }

    /// Runs rounds, jumping the clock to the planner's next wake-up (at least
    /// `step`), until settled or `max_rounds` ran.
    pub fn settle(&mut self, max_rounds: u32, step: Duration) -> Result<u32, String> {
        let mut last = String::new();
        for i in 0..max_rounds {
            let round = self.round();
            match self.settled() {
                Ok(()) => return Ok(i + 1),
                Err(e) => last = e,
            }
            let now = self.now();
            let wake = self
                .fleet
                .next_wakeup(now)
                .unwrap_or(now.plus(Duration::from_secs(3600)));
            let jump = if round.is_empty() {
                wake.since(now).max(step)
            } else {
                step
            };
            self.tick(jump);
        }
        Err(format!("not settled after {max_rounds} rounds: {last}"))
    }
}
