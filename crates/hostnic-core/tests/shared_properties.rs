//! Property tests of the shared-NIC mode's pure part: the controller's
//! [`BlockPlanner`] and the agents' [`NodeAllocator`]s, run together against a
//! VIP cloud (a map of address → VIP name) with faults.
//!
//! The world: one vxnet, a few nodes of random max-pods, addresses taken by NICs
//! and VIPs outside hostnic. Random operations: pods added and deleted, time
//! passing, controller rounds whose `AllocateVips`/`ReleaseVips` fail, lose their
//! answer (done or not), or find their range grabbed by someone else first;
//! agent crashes (rebuilt from the checkpoint, from a stale checkpoint, or from
//! the live pods only), node reboots (every pod dies and is re-created), nodes
//! leaving and joining.
//!
//! After every operation:
//! - **no address given twice on a node**: the node's live pods carry distinct addresses;
//! - **no address in two nodes' blocks**: the planner's blocks and the blocks the
//!   agents hold are pairwise disjoint across nodes;
//! - **every address inside a reserved block**: every live pod's address is a VIP
//!   of the cloud named after a block of its own node;
//! - **blocks released only when empty**: no `ReleaseVips` is made of a block in
//!   which any live pod of any node has its address.
//!
//! After settling (faults off, every pod deleted, time past the cooldown and the
//! grace period): **nothing leaked** — every VIP of hostnic is the one block each
//! present node keeps, nodes that left hold none, and the planner knows exactly
//! what the cloud holds; and it stays quiet: another hour of rounds makes no call.
//! Before deleting the pods, every waiting pod got an address (unless the vxnet
//! ran out of room).
//!
//! Cases per property: 256 by default, `PROPTEST_CASES` to change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use hostnic_core::fleet::NodeName;
use hostnic_core::shared::{
    Block, BlockIntent, BlockListing, BlockPlanner, ListedVip, NodeAllocator, NodeReport,
    PlanProblem, ReserveError, SharedConfig,
};
use hostnic_core::types::{PodKey, Timestamp, Vxnet, VxnetId};
use proptest::prelude::*;

const NODES: usize = 3;
const COOLDOWN: Duration = Duration::from_secs(10);

/// What happens to a cloud call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Refused, no effect.
    Fail,
    /// Done, answer lost.
    LostDone,
    /// Not done, answer lost.
    LostNotDone,
    /// Someone outside hostnic takes an address of the range just before.
    Grabbed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    /// From the checkpoint written after the last change.
    Checkpoint,
    /// From a checkpoint written some changes ago.
    Stale,
    /// The checkpoint is lost: from the live pods only.
    LivePods,
}

#[derive(Debug, Clone)]
enum Op {
    Add(usize, u32),
    Del(usize, usize),
    Tick(u64),
    Round(Fault),
    Crash(usize, Restart),
    Reboot(usize),
    Leave(usize),
    Join(usize),
    Snapshot(usize),
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        4 => Just(Fault::None),
        1 => Just(Fault::Fail),
        1 => Just(Fault::LostDone),
        1 => Just(Fault::LostNotDone),
        1 => Just(Fault::Grabbed),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let node = 0..NODES;
    prop_oneof![
        6 => (node.clone(), 1u32..40).prop_map(|(n, k)| Op::Add(n, k)),
        5 => (node.clone(), any::<usize>()).prop_map(|(n, i)| Op::Del(n, i)),
        2 => (1u64..20).prop_map(Op::Tick),
        2 => (20u64..400).prop_map(Op::Tick),
        8 => fault().prop_map(Op::Round),
        2 => (node.clone(), prop_oneof![Just(Restart::Checkpoint), Just(Restart::Stale), Just(Restart::LivePods)])
            .prop_map(|(n, r)| Op::Crash(n, r)),
        1 => node.clone().prop_map(Op::Reboot),
        1 => node.clone().prop_map(Op::Leave),
        1 => node.clone().prop_map(Op::Join),
        2 => node.prop_map(Op::Snapshot),
    ]
}

struct Agent {
    alloc: NodeAllocator,
    checkpoint: Option<String>,
    stale: Option<String>,
    /// The datapath: pods plumbed with their address.
    live: BTreeMap<PodKey, Ipv4Addr>,
    /// Pods whose ADD waits for an address.
    waiting: Vec<PodKey>,
    max_pods: u32,
}

struct World {
    now: Timestamp,
    vxnet: Vxnet,
    /// The cloud's VIPs: address → name.
    vips: BTreeMap<Ipv4Addr, String>,
    nic_addrs: Vec<Ipv4Addr>,
    planner: BlockPlanner,
    agents: Vec<Option<Agent>>,
    names: Vec<NodeName>,
    next_pod: u64,
    no_room: bool,
    /// When each address was last freed by a pod's end (DEL or death).
    freed: BTreeMap<Ipv4Addr, Timestamp>,
}

impl World {
    fn new(max_pods: &[u32], foreign: &[u8], first_block: Option<u32>) -> World {
        let vxnet = Vxnet {
            id: VxnetId::new("vxnet-shared"),
            cidr: "10.0.0.0/23".parse().unwrap(),
            gateway: "10.0.0.1".parse().unwrap(),
            router: None,
        };
        let config = SharedConfig {
            headroom: 4,
            release_grace: Duration::from_secs(120),
            reserve_timeout: Duration::from_secs(30),
            cooldown: COOLDOWN,
            first_block,
        };
        let mut vips = BTreeMap::new();
        let mut nic_addrs = Vec::new();
        for (i, f) in foreign.iter().enumerate() {
            let addr = Ipv4Addr::new(10, 0, f % 2, (*f).clamp(2, 253));
            if i % 2 == 0 {
                vips.insert(addr, "someone-else".to_string());
            } else {
                nic_addrs.push(addr);
            }
        }
        let names = (0..NODES)
            .map(|n| NodeName::new(format!("node-{n}")))
            .collect();
        let agents = max_pods.iter().map(|&m| Some(Agent::new(m))).collect();
        World {
            now: Timestamp(1_000_000),
            vxnet,
            vips,
            nic_addrs,
            planner: BlockPlanner::new(config).unwrap(),
            agents,
            names,
            next_pod: 0,
            no_room: false,
            freed: BTreeMap::new(),
        }
    }

    fn pod(&mut self) -> PodKey {
        self.next_pod += 1;
        PodKey {
            namespace: "default".into(),
            name: format!("p{}", self.next_pod),
            container_id: format!("c{}", self.next_pod),
            ifname: "eth0".into(),
        }
    }

    fn listing(&self) -> BlockListing {
        BlockListing {
            vxnet: self.vxnet.clone(),
            at: self.now,
            vips: self
                .vips
                .iter()
                .map(|(a, n)| ListedVip {
                    name: n.clone(),
                    addr: *a,
                })
                .collect(),
            nic_addrs: self.nic_addrs.clone(),
        }
    }

    fn present(&self) -> BTreeSet<NodeName> {
        (0..NODES)
            .filter(|n| self.agents[*n].is_some())
            .map(|n| self.names[n].clone())
            .collect()
    }

    /// The agents follow their status, serve waiting pods, and report.
    fn agents_step(&mut self) -> Vec<NodeReport> {
        let mut reports = Vec::new();
        for n in 0..NODES {
            let assigned = self.planner.assigned(&self.names[n], &self.vxnet.id);
            let now = self.now;
            let Some(agent) = self.agents[n].as_mut() else {
                continue;
            };
            agent.alloc.sync_blocks(&assigned);
            agent.serve(now);
            reports.push(NodeReport {
                node: self.names[n].clone(),
                vxnet: self.vxnet.id.clone(),
                max_pods: agent.max_pods,
                waiting: agent.waiting.len() as u32,
                blocks: agent.alloc.usage(now),
            });
        }
        reports
    }

    /// One controller round; returns how many cloud calls it made.
    fn round(&mut self, fault: Fault) -> Result<usize, TestCaseError> {
        self.planner.observe(self.listing());
        let reports = self.agents_step();
        let plan = self.planner.plan(&reports, &self.present(), self.now);
        self.no_room |= plan
            .problems
            .iter()
            .any(|p| matches!(p, PlanProblem::NoRoom { .. }));
        let calls = plan.intents.len();
        for intent in plan.intents {
            match intent {
                BlockIntent::Reserve { node, vxnet, block } => {
                    let outcome = self.allocate_vips(&node, &block, fault);
                    self.planner.reserved(&vxnet, &block, outcome);
                }
                BlockIntent::Release { vxnet, block, .. } => {
                    // Blocks are released only when empty.
                    for (n, agent) in self.agents.iter().enumerate() {
                        for (pod, addr) in agent.iter().flat_map(|a| a.live.iter()) {
                            prop_assert!(
                                !block.range.contains(*addr),
                                "block {block} released while pod {pod:?} of node-{n} holds {addr}"
                            );
                        }
                    }
                    let done = !matches!(fault, Fault::Fail | Fault::LostNotDone);
                    if done {
                        self.vips.retain(|a, name| {
                            !(block.range.contains(*a) && name.starts_with("hostnic:"))
                        });
                    }
                    let answered = matches!(fault, Fault::None | Fault::Grabbed);
                    self.planner.released(&vxnet, &block, done && answered);
                }
            }
        }
        self.agents_step();
        Ok(calls)
    }

    fn allocate_vips(
        &mut self,
        node: &NodeName,
        block: &Block,
        fault: Fault,
    ) -> Result<(), ReserveError> {
        if fault == Fault::Grabbed {
            let addr = block.range.last;
            self.vips
                .entry(addr)
                .or_insert_with(|| "grabbed".to_string());
        }
        let taken: Vec<Ipv4Addr> = block
            .range
            .addrs()
            .filter(|a| self.vips.contains_key(a) || self.nic_addrs.contains(a))
            .collect();
        let own: Vec<&String> = taken
            .iter()
            .filter_map(|a| self.vips.get(a))
            .filter(|n| n.starts_with("hostnic:"))
            .collect();
        assert!(
            own.is_empty(),
            "{node} asked for {block}, which overlaps hostnic's {own:?}"
        );
        if !taken.is_empty() {
            return Err(ReserveError::Taken(taken));
        }
        match fault {
            Fault::Fail => return Err(ReserveError::Failed),
            Fault::LostNotDone => return Err(ReserveError::Lost),
            _ => {}
        }
        for addr in block.range.addrs() {
            self.vips.insert(addr, block.vip_name(node.as_str()));
        }
        if fault == Fault::LostDone {
            Err(ReserveError::Lost)
        } else {
            Ok(())
        }
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        let before = self.live();
        self.apply_op(op)?;
        // No address reused (on any node) less than the cooldown after its pod
        // ended (by DEL, by a reboot, or with its node).
        let after = self.live();
        for (pod, (_, addr)) in &before {
            if !after.contains_key(pod) {
                self.freed.insert(*addr, self.now);
            }
        }
        for (pod, (n, addr)) in &after {
            if before.contains_key(pod) {
                continue;
            }
            if let Some(freed) = self.freed.get(addr) {
                prop_assert!(
                    self.now >= freed.plus(COOLDOWN),
                    "node-{} gave {} to {:?} {:?} after it was freed",
                    n,
                    addr,
                    pod.name,
                    self.now.since(*freed)
                );
            }
        }
        self.check()
    }

    fn live(&self) -> BTreeMap<PodKey, (usize, Ipv4Addr)> {
        self.agents
            .iter()
            .enumerate()
            .flat_map(|(n, a)| {
                a.iter()
                    .flat_map(move |a| a.live.iter().map(move |(p, addr)| (p.clone(), (n, *addr))))
            })
            .collect()
    }

    fn apply_op(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Add(n, k) => {
                for _ in 0..k {
                    let pod = self.pod();
                    let now = self.now;
                    if let Some(agent) = self.agents[n].as_mut()
                        && (agent.live.len() + agent.waiting.len()) < agent.max_pods as usize
                    {
                        agent.waiting.push(pod);
                        agent.serve(now);
                    }
                }
            }
            Op::Del(n, i) => {
                let now = self.now;
                if let Some(agent) = self.agents[n].as_mut() {
                    let pods: Vec<PodKey> = agent
                        .live
                        .keys()
                        .chain(agent.waiting.iter())
                        .cloned()
                        .collect();
                    if !pods.is_empty() {
                        agent.delete(&pods[i % pods.len()], now);
                    }
                }
            }
            Op::Tick(s) => self.now = self.now.plus(Duration::from_secs(s)),
            Op::Round(fault) => {
                self.round(fault)?;
            }
            Op::Crash(n, how) => {
                let assigned = self.planner.assigned(&self.names[n], &self.vxnet.id);
                let now = self.now;
                if let Some(agent) = self.agents[n].as_mut() {
                    let saved = match how {
                        Restart::Checkpoint => agent.checkpoint.clone(),
                        Restart::Stale => agent.stale.clone().or_else(|| agent.checkpoint.clone()),
                        Restart::LivePods => None,
                    };
                    agent.restart(saved, &assigned, now);
                }
            }
            Op::Reboot(n) => {
                let assigned = self.planner.assigned(&self.names[n], &self.vxnet.id);
                let now = self.now;
                let count = self.agents[n].as_ref().map_or(0, |a| a.live.len());
                let fresh: Vec<PodKey> = (0..count).map(|_| self.pod()).collect();
                if let Some(agent) = self.agents[n].as_mut() {
                    // Every sandbox died with the host; kubelet makes new ones.
                    agent.live.clear();
                    agent.restart(agent.checkpoint.clone(), &assigned, now);
                    agent.waiting.extend(fresh);
                    agent.serve(now);
                }
            }
            Op::Leave(n) => self.agents[n] = None,
            Op::Join(n) => {
                if self.agents[n].is_none() {
                    // An agent always starts by recovering (here from nothing):
                    // the status may still carry blocks of its previous life.
                    let assigned = self.planner.assigned(&self.names[n], &self.vxnet.id);
                    let mut agent = Agent::new(16 + 13 * n as u32);
                    agent.restart(None, &assigned, self.now);
                    self.agents[n] = Some(agent);
                }
            }
            Op::Snapshot(n) => {
                if let Some(agent) = self.agents[n].as_mut() {
                    agent.stale = agent.checkpoint.clone();
                }
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        // No address in two nodes' blocks: the planner's, then the agents'.
        let planned: Vec<(NodeName, Block)> = self
            .planner
            .blocks()
            .map(|(_, node, b)| (node.clone(), *b))
            .collect();
        for (i, (na, a)) in planned.iter().enumerate() {
            for (nb, b) in &planned[i + 1..] {
                prop_assert!(
                    !a.range.overlaps(&b.range),
                    "planner: {a} of {na} overlaps {b} of {nb}"
                );
            }
        }
        let held: Vec<(usize, Block)> = self
            .agents
            .iter()
            .enumerate()
            .flat_map(|(n, a)| {
                a.iter()
                    .flat_map(move |a| a.alloc.blocks().map(move |(b, _)| (n, *b)))
            })
            .collect();
        for (i, (na, a)) in held.iter().enumerate() {
            for (nb, b) in &held[i + 1..] {
                prop_assert!(
                    na == nb || !a.range.overlaps(&b.range),
                    "agents: {a} of node-{na} overlaps {b} of node-{nb}"
                );
            }
        }
        for (n, agent) in self.agents.iter().enumerate() {
            let Some(agent) = agent else { continue };
            // No address given twice on a node.
            let addrs: BTreeSet<Ipv4Addr> = agent.live.values().copied().collect();
            prop_assert_eq!(
                addrs.len(),
                agent.live.len(),
                "node-{} gave an address twice: {:?}",
                n,
                agent.live
            );
            // Every address inside a block reserved for the node.
            for (pod, addr) in &agent.live {
                let name = self.vips.get(addr);
                let ours = name
                    .and_then(|name| Block::parse_vip_name(name))
                    .is_some_and(|(node, window)| {
                        node == self.names[n].as_str() && window.contains(addr)
                    });
                prop_assert!(
                    ours,
                    "pod {:?} of node-{} has {} whose VIP is {:?}",
                    pod,
                    n,
                    addr,
                    name
                );
                prop_assert_eq!(agent.alloc.address_of(pod), Some(*addr));
            }
        }
        Ok(())
    }

    /// Faults off, time passing, rounds until nothing changes.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..12 {
            self.now = self.now.plus(Duration::from_secs(15));
            self.round(Fault::None)?;
            self.check()?;
        }
        Ok(())
    }
}

impl Agent {
    fn new(max_pods: u32) -> Agent {
        Agent {
            alloc: NodeAllocator::new(COOLDOWN),
            checkpoint: None,
            stale: None,
            live: BTreeMap::new(),
            waiting: Vec::new(),
            max_pods,
        }
    }

    fn save(&mut self) {
        self.checkpoint = Some(serde_json::to_string(&self.alloc).unwrap());
    }

    fn serve(&mut self, now: Timestamp) {
        let mut still = Vec::new();
        for pod in std::mem::take(&mut self.waiting) {
            match self.alloc.allocate(&pod, now) {
                Ok(addr) => {
                    self.save();
                    self.live.insert(pod, addr);
                }
                Err(_) => still.push(pod),
            }
        }
        self.waiting = still;
        self.save();
    }

    fn delete(&mut self, pod: &PodKey, now: Timestamp) {
        self.waiting.retain(|p| p != pod);
        self.live.remove(pod);
        self.alloc.release(pod, now);
        self.save();
    }

    fn restart(
        &mut self,
        saved: Option<String>,
        assigned: &[hostnic_core::shared::AssignedBlock],
        now: Timestamp,
    ) {
        let checkpoint = saved.map(|s| serde_json::from_str::<NodeAllocator>(&s).unwrap());
        let live: Vec<(PodKey, Ipv4Addr)> =
            self.live.iter().map(|(p, a)| (p.clone(), *a)).collect();
        let (alloc, recovery) = NodeAllocator::recover(checkpoint, COOLDOWN, assigned, &live, now);
        // Pods the node may not keep lose their sandbox (their ADD is retried).
        for (pod, _) in recovery.outside.iter().chain(&recovery.conflicts) {
            self.live.remove(pod);
            self.waiting.push(pod.clone());
        }
        self.alloc = alloc;
        self.save();
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    /// The invariants of the module docs hold after every operation, and after
    /// settling nothing is leaked.
    #[test]
    fn blocks_stay_disjoint_addresses_unique_and_nothing_leaks(
        max_pods in proptest::collection::vec(8u32..120, NODES),
        foreign in proptest::collection::vec(any::<u8>(), 0..6),
        first_block in prop_oneof![Just(None), Just(Some(16)), Just(Some(32))],
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let mut world = World::new(&max_pods, &foreign, first_block);
        for op in ops {
            world.apply(op)?;
        }
        world.settle()?;
        // Every waiting pod got an address, unless the vxnet ran out of room.
        if !world.no_room {
            for (n, agent) in world.agents.iter().enumerate() {
                let Some(agent) = agent else { continue };
                prop_assert!(agent.waiting.is_empty(), "node-{} still has {} pods waiting", n, agent.waiting.len());
            }
        }
        // Delete every pod, let cooldown and grace pass.
        for agent in world.agents.iter_mut().flatten() {
            let pods: Vec<PodKey> = agent.live.keys().chain(agent.waiting.iter()).cloned().collect();
            for pod in pods {
                agent.delete(&pod, world.now);
            }
        }
        for _ in 0..4 {
            world.now = world.now.plus(Duration::from_secs(120));
            world.settle()?;
        }
        let present = world.present();
        let mut cloud: BTreeMap<String, usize> = BTreeMap::new();
        for name in world.vips.values().filter(|n| n.starts_with("hostnic:")) {
            *cloud.entry(name.clone()).or_default() += 1;
        }
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for name in cloud.keys() {
            let (node, _) = Block::parse_vip_name(name).unwrap();
            prop_assert!(present.contains(&NodeName::new(node)), "{} left but still holds {}", node, name);
            *per_node.entry(node.to_string()).or_default() += 1;
        }
        for node in &present {
            prop_assert_eq!(per_node.get(node.as_str()).copied().unwrap_or(0), 1, "{} keeps exactly one block: {:?}", node, cloud);
        }
        // Quiet at rest: an hour more of rounds makes no call.
        for _ in 0..12 {
            world.now = world.now.plus(Duration::from_secs(300));
            let calls = world.round(Fault::None)?;
            prop_assert_eq!(calls, 0, "a settled cluster still calls the cloud");
        }
        let planned: BTreeSet<String> = world.planner.blocks().map(|(_, n, b)| b.vip_name(n.as_str())).collect();
        prop_assert_eq!(planned, cloud.keys().cloned().collect::<BTreeSet<_>>());
    }
}
