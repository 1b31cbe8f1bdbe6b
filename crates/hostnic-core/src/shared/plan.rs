//! The block planner: which blocks of which vxnet each node holds, and the
//! reservations and releases that get it there.
//!
//! The planner is level-triggered. Each round it is told what the cloud holds
//! ([`BlockPlanner::observe`], a `DescribeVips` listing), what each node uses
//! ([`NodeReport`], from its agent) and which nodes are in the cluster; it answers
//! with the cloud calls to make ([`BlockIntent`]) and the problems to report
//! ([`PlanProblem`]). The outcomes of the calls come back through
//! [`BlockPlanner::reserved`] and [`BlockPlanner::released`]; an answer that was
//! lost is settled by the next listing.
//!
//! A block's life: *reserving* (the `AllocateVips` is out) → *active* (the node
//! allocates in it) → *retiring* (empty for the grace period; the node stops
//! allocating in it and confirms) → *releasing* (`ReleaseVips`, only once the node
//! reported it retired and empty) → gone. A retiring block is made active again
//! when its node needs room, which costs no call.
//!
//! Reports must be newer than the status the planner last published
//! ([`BlockPlanner::assigned`]): the release of a block rests on its node saying it
//! holds nothing there and allocates nothing there any more.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::alloc::BlockUse;
use super::config::{SharedConfig, SharedConfigError};
use super::range::{AddrRange, Block, MIN_BLOCK, windows};
use crate::fleet::NodeName;
use crate::types::{Timestamp, Vxnet, VxnetId};

/// A cloud call the planner wants made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockIntent {
    /// `AllocateVips(vxnet_id, vip_range = block.range, vip_name = block.vip_name(node))`.
    Reserve {
        /// The node the block is for.
        node: NodeName,
        /// The vxnet.
        vxnet: VxnetId,
        /// The block.
        block: Block,
    },
    /// `ReleaseVips` of every VIP of the block (an id no longer found counts as released).
    Release {
        /// The node the block was for.
        node: NodeName,
        /// The vxnet.
        vxnet: VxnetId,
        /// The block.
        block: Block,
    },
}

/// Something the controller reports (condition, event, metric); nothing of it
/// was half-applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanProblem {
    /// The configured first block is larger than the vxnet.
    #[error("a block of {size} addresses does not fit vxnet {vxnet} ({cidr}) of node {node}")]
    BlockDoesNotFit {
        /// The node.
        node: NodeName,
        /// The vxnet.
        vxnet: VxnetId,
        /// The block size asked for.
        size: u32,
        /// The vxnet's network.
        cidr: Ipv4Net,
    },
    /// No free aligned window of even [`MIN_BLOCK`] addresses is left.
    #[error(
        "vxnet {vxnet} has no room for another block of node {node} (wanted {wanted} addresses, none of {MIN_BLOCK} free)"
    )]
    NoRoom {
        /// The node.
        node: NodeName,
        /// The vxnet.
        vxnet: VxnetId,
        /// The block size it would have liked.
        wanted: u32,
    },
    /// The cloud refused a reservation: addresses of the range are held by
    /// something outside hostnic (a VIP or NIC). They are avoided from now on.
    #[error("range {range} of vxnet {vxnet} for node {node} is taken outside hostnic ({taken:?})")]
    RangeTaken {
        /// The node.
        node: NodeName,
        /// The vxnet.
        vxnet: VxnetId,
        /// The range asked for.
        range: AddrRange,
        /// The addresses the cloud named as taken (may be empty if it named none).
        taken: Vec<Ipv4Addr>,
    },
    /// A node reported a vxnet the planner has no listing of yet.
    #[error("node {node} uses vxnet {vxnet}, which has not been listed yet")]
    UnknownVxnet {
        /// The node.
        node: NodeName,
        /// The vxnet.
        vxnet: VxnetId,
    },
    /// Some VIPs of a block are missing (released by hand?): the block takes no
    /// new pods and is released once empty.
    #[error("block {block} of node {node} in vxnet {vxnet} misses {missing} of its VIPs")]
    IncompleteBlock {
        /// The node.
        node: NodeName,
        /// The vxnet.
        vxnet: VxnetId,
        /// The block.
        block: Block,
        /// How many of its addresses no VIP holds.
        missing: u32,
    },
}

/// Why a reservation did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveError {
    /// Addresses of the range are taken (error 1400 naming them).
    Taken(Vec<Ipv4Addr>),
    /// The call failed and had no effect (retried in a later round).
    Failed,
    /// No answer: it may or may not have happened; the next listing says.
    Lost,
}

/// What one node says of its blocks in one vxnet (its agent's allocator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// The node.
    pub node: NodeName,
    /// The vxnet of its shared NIC.
    pub vxnet: VxnetId,
    /// The most pods it runs (kubelet's `--max-pods`).
    pub max_pods: u32,
    /// Pods waiting for an address now.
    pub waiting: u32,
    /// Its use of each block it holds.
    pub blocks: Vec<BlockUse>,
}

/// A VIP as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedVip {
    /// Its `vip_name`.
    pub name: String,
    /// Its address.
    pub addr: Ipv4Addr,
}

/// What the cloud holds in one vxnet: every VIP (hostnic's are recognised by
/// [`Block::vip_name`]) and every other address taken (NICs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockListing {
    /// The vxnet.
    pub vxnet: Vxnet,
    /// When the listing was taken.
    pub at: Timestamp,
    /// Every VIP of the vxnet.
    pub vips: Vec<ListedVip>,
    /// Addresses held by NICs.
    pub nic_addrs: Vec<Ipv4Addr>,
}

/// A block as a node's status carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AssignedBlock {
    /// The block.
    pub block: Block,
    /// True: take no new pod in it (it is being given back).
    pub retiring: bool,
}

/// One round's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedPlan {
    /// The cloud calls to make.
    pub intents: Vec<BlockIntent>,
    /// What to report.
    pub problems: Vec<PlanProblem>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Reserving { since: Timestamp },
    Active,
    Retiring,
    Releasing { since: Timestamp },
}

#[derive(Debug, Clone)]
struct Held {
    node: NodeName,
    block: Block,
    phase: Phase,
    empty_since: Option<Timestamp>,
    incomplete: bool,
}

#[derive(Debug, Clone)]
struct VxnetBlocks {
    vxnet: Vxnet,
    foreign: BTreeSet<Ipv4Addr>,
    blocks: BTreeMap<Ipv4Net, Held>,
    /// Windows released lately and when they may be reserved again: an address
    /// rests for the cooldown between its last pod (on one node) and its next (on
    /// any node), also when its node left.
    resting: BTreeMap<Ipv4Net, Timestamp>,
}

impl VxnetBlocks {
    /// Forgets a block; one that was being released rests from then on.
    fn forget(&mut self, window: Ipv4Net, cooldown: std::time::Duration) {
        if let Some(Held {
            phase: Phase::Releasing { since },
            ..
        }) = self.blocks.remove(&window)
        {
            self.resting.insert(window, since.plus(cooldown));
        }
    }
}

/// The controller's block planner (see the [module](self) docs).
#[derive(Debug, Clone)]
pub struct BlockPlanner {
    config: SharedConfig,
    vxnets: BTreeMap<VxnetId, VxnetBlocks>,
    pending_problems: Vec<PlanProblem>,
}

impl BlockPlanner {
    /// A planner that knows nothing yet: it learns the blocks from listings.
    pub fn new(config: SharedConfig) -> Result<Self, SharedConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            vxnets: BTreeMap::new(),
            pending_problems: Vec::new(),
        })
    }

    /// Its settings.
    pub fn config(&self) -> &SharedConfig {
        &self.config
    }

    /// Learns what the cloud holds in a vxnet. The listing is the truth for
    /// everything but reservations younger than the reserve timeout (their effect
    /// may come after it was taken).
    pub fn observe(&mut self, listing: BlockListing) {
        let id = listing.vxnet.id.clone();
        let cidr = listing.vxnet.cidr;
        let entry = self
            .vxnets
            .entry(id.clone())
            .or_insert_with(|| VxnetBlocks {
                vxnet: listing.vxnet.clone(),
                foreign: BTreeSet::new(),
                blocks: BTreeMap::new(),
                resting: BTreeMap::new(),
            });
        entry.vxnet = listing.vxnet;
        let mut foreign: BTreeSet<Ipv4Addr> = listing.nic_addrs.iter().copied().collect();
        let mut listed: BTreeMap<Ipv4Net, (NodeName, u32)> = BTreeMap::new();
        for vip in &listing.vips {
            let ours = Block::parse_vip_name(&vip.name)
                .and_then(|(node, window)| Some((node, Block::in_vxnet(cidr, window)?)))
                .filter(|(_, block)| block.range.contains(vip.addr));
            match ours {
                Some((node, block)) => {
                    listed
                        .entry(block.window)
                        .or_insert_with(|| (NodeName::new(node), 0))
                        .1 += 1;
                }
                None => {
                    foreign.insert(vip.addr);
                }
            }
        }
        entry.foreign = foreign;
        let timeout = self.config.reserve_timeout;
        let gone: Vec<Ipv4Net> = entry
            .blocks
            .iter()
            .filter(|(window, held)| {
                !listed.contains_key(*window)
                    && !matches!(held.phase, Phase::Reserving { since } if listing.at < since.plus(timeout))
            })
            .map(|(window, _)| *window)
            .collect();
        for window in gone {
            entry.forget(window, self.config.cooldown);
        }
        for (window, (node, count)) in listed {
            let Some(block) = Block::in_vxnet(cidr, window) else {
                continue;
            };
            let held = entry.blocks.entry(window).or_insert_with(|| Held {
                node: node.clone(),
                block,
                phase: Phase::Active,
                empty_since: None,
                incomplete: false,
            });
            if held.node != node {
                // Another name now holds the window: believe the cloud.
                *held = Held {
                    node: node.clone(),
                    block,
                    phase: Phase::Active,
                    empty_since: None,
                    incomplete: false,
                };
            }
            if let Phase::Reserving { .. } = held.phase {
                held.phase = Phase::Active;
            }
            let missing = block.capacity().saturating_sub(count);
            if missing > 0 && !held.incomplete {
                held.incomplete = true;
                self.pending_problems.push(PlanProblem::IncompleteBlock {
                    node,
                    vxnet: id.clone(),
                    block,
                    missing,
                });
            }
            if held.incomplete && held.phase == Phase::Active {
                held.phase = Phase::Retiring;
            }
        }
    }

    /// Learns the outcome of a [`BlockIntent::Reserve`]. A refusal because the
    /// range is taken is returned (and reported by the next plan too).
    pub fn reserved(
        &mut self,
        vxnet: &VxnetId,
        block: &Block,
        outcome: Result<(), ReserveError>,
    ) -> Option<PlanProblem> {
        let entry = self.vxnets.get_mut(vxnet)?;
        let held = entry.blocks.get_mut(&block.window)?;
        if !matches!(held.phase, Phase::Reserving { .. }) {
            return None;
        }
        match outcome {
            Ok(()) => {
                held.phase = Phase::Active;
                None
            }
            Err(ReserveError::Lost) => None,
            Err(ReserveError::Failed) => {
                entry.blocks.remove(&block.window);
                None
            }
            Err(ReserveError::Taken(addrs)) => {
                let node = held.node.clone();
                entry.blocks.remove(&block.window);
                entry
                    .foreign
                    .extend(addrs.iter().copied().filter(|a| block.range.contains(*a)));
                if addrs.is_empty() {
                    // The cloud did not say which: avoid the whole window.
                    entry.foreign.extend(block.range.addrs());
                }
                let problem = PlanProblem::RangeTaken {
                    node,
                    vxnet: vxnet.clone(),
                    range: block.range,
                    taken: addrs,
                };
                self.pending_problems.push(problem.clone());
                Some(problem)
            }
        }
    }

    /// Learns the outcome of a [`BlockIntent::Release`]: `true` when it is gone
    /// (an id no longer found included); otherwise it is asked again next round.
    pub fn released(&mut self, vxnet: &VxnetId, block: &Block, gone: bool) {
        if !gone {
            return;
        }
        if let Some(entry) = self.vxnets.get_mut(vxnet)
            && entry
                .blocks
                .get(&block.window)
                .is_some_and(|h| matches!(h.phase, Phase::Releasing { .. }))
        {
            entry.forget(block.window, self.config.cooldown);
        }
    }

    /// The blocks a node's status carries in a vxnet (reservations not yet
    /// confirmed excluded), lowest first.
    pub fn assigned(&self, node: &NodeName, vxnet: &VxnetId) -> Vec<AssignedBlock> {
        let Some(entry) = self.vxnets.get(vxnet) else {
            return Vec::new();
        };
        entry
            .blocks
            .values()
            .filter(|h| &h.node == node)
            .filter_map(|h| match h.phase {
                Phase::Reserving { .. } => None,
                Phase::Active => Some(AssignedBlock {
                    block: h.block,
                    retiring: false,
                }),
                Phase::Retiring | Phase::Releasing { .. } => Some(AssignedBlock {
                    block: h.block,
                    retiring: true,
                }),
            })
            .collect()
    }

    /// Every block the planner knows (reservations in flight included), with its
    /// node: for status, metrics and tests.
    pub fn blocks(&self) -> impl Iterator<Item = (&VxnetId, &NodeName, &Block)> + '_ {
        self.vxnets
            .iter()
            .flat_map(|(id, e)| e.blocks.values().map(move |h| (id, &h.node, &h.block)))
    }

    /// Addresses of a node's active blocks it may still hand out: its pod
    /// capacity in the vxnet (for the node's annotation and metric).
    pub fn capacity(&self, node: &NodeName, vxnet: &VxnetId) -> u32 {
        self.assigned(node, vxnet)
            .iter()
            .filter(|a| !a.retiring)
            .map(|a| a.block.capacity())
            .sum()
    }

    /// Plans one round. `present`: the nodes of the cluster (the blocks of any
    /// other node are released); `reports`: one per (node, vxnet) in shared mode.
    pub fn plan(
        &mut self,
        reports: &[NodeReport],
        present: &BTreeSet<NodeName>,
        now: Timestamp,
    ) -> SharedPlan {
        let mut plan = SharedPlan {
            intents: Vec::new(),
            problems: std::mem::take(&mut self.pending_problems),
        };
        // Nodes that left: everything they hold goes (a reservation in flight
        // first settles, then goes next round).
        for (id, entry) in &mut self.vxnets {
            for held in entry.blocks.values_mut() {
                if !present.contains(&held.node)
                    && matches!(held.phase, Phase::Active | Phase::Retiring)
                {
                    held.phase = Phase::Releasing { since: now };
                }
            }
            entry.resting.retain(|_, until| *until > now);
            let _ = id;
        }
        for report in reports {
            if !self.vxnets.contains_key(&report.vxnet) {
                plan.problems.push(PlanProblem::UnknownVxnet {
                    node: report.node.clone(),
                    vxnet: report.vxnet.clone(),
                });
                continue;
            }
            if present.contains(&report.node) {
                self.plan_node(report, now, &mut plan);
            }
        }
        for (id, entry) in &self.vxnets {
            for held in entry
                .blocks
                .values()
                .filter(|h| matches!(h.phase, Phase::Releasing { .. }))
            {
                plan.intents.push(BlockIntent::Release {
                    node: held.node.clone(),
                    vxnet: id.clone(),
                    block: held.block,
                });
            }
        }
        plan
    }

    fn plan_node(&mut self, report: &NodeReport, now: Timestamp, plan: &mut SharedPlan) {
        let grace = self.config.release_grace;
        let headroom = self.config.headroom;
        let entry = self.vxnets.get_mut(&report.vxnet).expect("checked by plan");
        let uses: BTreeMap<Ipv4Net, &BlockUse> =
            report.blocks.iter().map(|u| (u.window, u)).collect();
        let in_use: u32 = report.blocks.iter().map(|u| u.in_use).sum();
        let mine = |h: &Held| h.node == report.node;

        // How long each active block has been empty (cooling addresses count
        // as used: they are not free to go to another node yet).
        for held in entry
            .blocks
            .values_mut()
            .filter(|h| mine(h) && h.phase == Phase::Active)
        {
            let empty = uses
                .get(&held.block.window)
                .is_some_and(|u| u.in_use + u.cooling == 0);
            held.empty_since = empty.then(|| held.empty_since.unwrap_or(now));
        }

        let need = report
            .waiting
            .max(headroom.min(report.max_pods.saturating_sub(in_use)));
        let free = |entry: &VxnetBlocks| -> (u32, u32) {
            let (mut cap, mut used) = (0, 0);
            for h in entry
                .blocks
                .values()
                .filter(|h| mine(h) && h.phase == Phase::Active)
            {
                cap += h.block.capacity();
                used += uses
                    .get(&h.block.window)
                    .map_or(0, |u| (u.in_use + u.cooling).min(h.block.capacity()));
            }
            (cap, used)
        };

        let (cap, used) = free(entry);
        let short = cap - used < need;
        if short {
            // Room first from a retiring block (no call).
            if let Some(held) = entry
                .blocks
                .values_mut()
                .find(|h| mine(h) && h.phase == Phase::Retiring && !h.incomplete)
            {
                held.phase = Phase::Active;
                held.empty_since = None;
            }
        }

        // Retiring blocks the node says it drained are released.
        for held in entry
            .blocks
            .values_mut()
            .filter(|h| mine(h) && h.phase == Phase::Retiring)
        {
            let used = uses.get(&held.block.window);
            if used.is_some_and(|u| u.retired && u.in_use + u.cooling == 0) {
                held.phase = Phase::Releasing { since: now };
            }
        }

        let (cap, used) = free(entry);
        if cap - used < need {
            // One reservation at a time.
            if !entry
                .blocks
                .values()
                .any(|h| mine(h) && matches!(h.phase, Phase::Reserving { .. }))
            {
                self.reserve(report, now, plan);
            }
            return;
        }

        // Give back one empty block past its grace, if what stays is enough and
        // the node keeps at least one block.
        let active: Vec<&Held> = entry
            .blocks
            .values()
            .filter(|h| mine(h) && h.phase == Phase::Active)
            .collect();
        if active.len() < 2 {
            return;
        }
        let retire = active
            .iter()
            .rev()
            .find(|h| {
                h.empty_since.is_some_and(|t| now >= t.plus(grace))
                    && cap - h.block.capacity() >= used + need
            })
            .map(|h| h.block.window);
        if let Some(window) = retire
            && let Some(held) = entry.blocks.get_mut(&window)
        {
            held.phase = Phase::Retiring;
        }
    }

    fn reserve(&mut self, report: &NodeReport, now: Timestamp, plan: &mut SharedPlan) {
        let entry = self.vxnets.get_mut(&report.vxnet).expect("checked by plan");
        let cidr = entry.vxnet.cidr;
        let vxnet_size = 1u64 << (32 - u32::from(cidr.prefix_len()));
        let largest = entry
            .blocks
            .values()
            .filter(|h| h.node == report.node)
            .map(|h| h.block.size())
            .max();
        let wanted = match largest {
            Some(size) => size.saturating_mul(2),
            None => {
                let size = self.config.first_block_size(report.max_pods);
                if self.config.first_block.is_some() && u64::from(size) > vxnet_size {
                    plan.problems.push(PlanProblem::BlockDoesNotFit {
                        node: report.node.clone(),
                        vxnet: report.vxnet.clone(),
                        size,
                        cidr,
                    });
                    return;
                }
                size
            }
        };
        let mut size = u64::from(wanted).min(vxnet_size) as u32;
        while size >= MIN_BLOCK {
            let found = windows(cidr, size).find_map(|window| {
                let block = Block::in_vxnet(cidr, window)?;
                let clear =
                    !entry.blocks.values().any(|h| {
                        h.block.window.contains(&window) || window.contains(&h.block.window)
                    }) && !entry
                        .resting
                        .keys()
                        .any(|r| r.contains(&window) || window.contains(r))
                        && !entry.foreign.iter().any(|a| block.range.contains(*a));
                clear.then_some(block)
            });
            if let Some(block) = found {
                entry.blocks.insert(
                    block.window,
                    Held {
                        node: report.node.clone(),
                        block,
                        phase: Phase::Reserving { since: now },
                        empty_since: None,
                        incomplete: false,
                    },
                );
                plan.intents.push(BlockIntent::Reserve {
                    node: report.node.clone(),
                    vxnet: report.vxnet.clone(),
                    block,
                });
                return;
            }
            size /= 2;
        }
        plan.problems.push(PlanProblem::NoRoom {
            node: report.node.clone(),
            vxnet: report.vxnet.clone(),
            wanted,
        });
    }
}
