//! The node's allocator: pod addresses inside the node's blocks.
//!
//! The agent holds one per shared vxnet. It never calls anything: the blocks come
//! from the node's status ([`NodeAllocator::sync_blocks`]), ADD and DEL are
//! [`NodeAllocator::allocate`] and [`NodeAllocator::release`], and the whole
//! allocator is its own checkpoint (serde). A freed address rests for the
//! cooldown before another pod of the node gets it; blocks never move between
//! nodes, so no other node gets it either while the block is held.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::plan::AssignedBlock;
use super::range::Block;
use crate::types::{PodKey, Timestamp};

/// One block's use, as the node reports it to the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockUse {
    /// The block's window.
    pub window: Ipv4Net,
    /// Addresses held by pods.
    pub in_use: u32,
    /// Addresses freed less than the cooldown ago.
    pub cooling: u32,
    /// True: the node takes no new pod in it (the status said it is retiring, or
    /// no longer lists it).
    pub retired: bool,
}

/// Why an address could not be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// Every address of the node's active blocks is taken or cooling down: the
    /// pod waits for another block (the node reports it as waiting).
    #[error("no free address in the node's blocks ({held} held, {cooling} cooling down)")]
    Exhausted {
        /// Addresses held by pods.
        held: u32,
        /// Addresses cooling down.
        cooling: u32,
    },
}

/// What [`NodeAllocator::recover`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Live pods whose address the allocator now records.
    pub kept: usize,
    /// Pods the checkpoint held that are not alive any more: their addresses cool down.
    pub released: Vec<(PodKey, Ipv4Addr)>,
    /// Live pods whose address is in none of the node's blocks: their sandboxes
    /// must be torn down (the address is not the node's to claim).
    pub outside: Vec<(PodKey, Ipv4Addr)>,
    /// Live pods that carry an address another live pod carries too: the second
    /// one is not recorded and must be torn down.
    pub conflicts: Vec<(PodKey, Ipv4Addr)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HeldBlock {
    block: Block,
    retired: bool,
}

/// The node's allocator (see the [module](self) docs). Serialize it to checkpoint it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAllocator {
    cooldown_ms: u64,
    blocks: BTreeMap<Ipv4Net, HeldBlock>,
    owners: BTreeMap<Ipv4Addr, PodKey>,
    /// Freed addresses and when they may be given again.
    cooling: BTreeMap<Ipv4Addr, Timestamp>,
}

impl NodeAllocator {
    /// An allocator with no blocks.
    pub fn new(cooldown: Duration) -> Self {
        Self {
            cooldown_ms: cooldown.as_millis() as u64,
            blocks: BTreeMap::new(),
            owners: BTreeMap::new(),
            cooling: BTreeMap::new(),
        }
    }

    /// Follows the node's status: new blocks are taken in, retiring ones take no
    /// new pod, blocks the status no longer lists are dropped once empty (kept
    /// retired until then). Returns the windows dropped.
    pub fn sync_blocks(&mut self, assigned: &[AssignedBlock]) -> Vec<Ipv4Net> {
        let listed: BTreeMap<Ipv4Net, &AssignedBlock> =
            assigned.iter().map(|a| (a.block.window, a)).collect();
        for a in assigned {
            self.blocks
                .entry(a.block.window)
                .and_modify(|h| h.retired = a.retiring)
                .or_insert(HeldBlock {
                    block: a.block,
                    retired: a.retiring,
                });
        }
        let mut dropped = Vec::new();
        for (window, held) in &mut self.blocks {
            if listed.contains_key(window) {
                continue;
            }
            held.retired = true;
            if !self.owners.keys().any(|a| held.block.range.contains(*a)) {
                dropped.push(*window);
            }
        }
        for window in &dropped {
            if let Some(held) = self.blocks.remove(window) {
                self.cooling.retain(|a, _| !held.block.range.contains(*a));
            }
        }
        dropped
    }

    /// The address of `pod`: the one it has (ADD is idempotent), else the lowest
    /// free address of the lowest active block, so later blocks drain first.
    pub fn allocate(&mut self, pod: &PodKey, now: Timestamp) -> Result<Ipv4Addr, AllocError> {
        if let Some(addr) = self.address_of(pod) {
            return Ok(addr);
        }
        self.cooling.retain(|_, until| *until > now);
        let free = self
            .blocks
            .values()
            .filter(|h| !h.retired)
            .flat_map(|h| h.block.range.addrs())
            .find(|a| !self.owners.contains_key(a) && !self.cooling.contains_key(a));
        match free {
            Some(addr) => {
                self.owners.insert(addr, pod.clone());
                Ok(addr)
            }
            None => Err(AllocError::Exhausted {
                held: self.owners.len() as u32,
                cooling: self.cooling.len() as u32,
            }),
        }
    }

    /// Frees the address of `pod` (DEL); it cools down before reuse. `None` if
    /// the pod had none (DEL is idempotent).
    pub fn release(&mut self, pod: &PodKey, now: Timestamp) -> Option<Ipv4Addr> {
        let addr = self.address_of(pod)?;
        self.owners.remove(&addr);
        self.cooling
            .insert(addr, now.plus(Duration::from_millis(self.cooldown_ms)));
        Some(addr)
    }

    /// The address `pod` holds.
    pub fn address_of(&self, pod: &PodKey) -> Option<Ipv4Addr> {
        let attachment = pod.attachment();
        self.owners
            .iter()
            .find(|(_, p)| p.attachment() == attachment)
            .map(|(a, _)| *a)
    }

    /// Every pod and its address, by address.
    pub fn pods(&self) -> impl Iterator<Item = (Ipv4Addr, &PodKey)> + '_ {
        self.owners.iter().map(|(a, p)| (*a, p))
    }

    /// The blocks held (retired ones included).
    pub fn blocks(&self) -> impl Iterator<Item = (&Block, bool)> + '_ {
        self.blocks.values().map(|h| (&h.block, h.retired))
    }

    /// Addresses still free in active blocks now.
    pub fn free(&self, now: Timestamp) -> u32 {
        self.blocks
            .values()
            .filter(|h| !h.retired)
            .flat_map(|h| h.block.range.addrs())
            .filter(|a| {
                !self.owners.contains_key(a) && self.cooling.get(a).is_none_or(|u| *u <= now)
            })
            .count() as u32
    }

    /// The use of each block, for the node's report.
    pub fn usage(&self, now: Timestamp) -> Vec<BlockUse> {
        self.blocks
            .values()
            .map(|h| BlockUse {
                window: h.block.window,
                in_use: self
                    .owners
                    .keys()
                    .filter(|a| h.block.range.contains(**a))
                    .count() as u32,
                cooling: self
                    .cooling
                    .iter()
                    .filter(|(a, until)| h.block.range.contains(**a) && **until > now)
                    .count() as u32,
                retired: h.retired,
            })
            .collect()
    }

    /// Rebuilds the allocator after a restart or a reboot from what survives:
    /// the checkpoint if any, the node's status, and the pods alive on the node
    /// with their addresses (the datapath's inventory). Live pods win over the
    /// checkpoint; recorded pods that are not alive are released. Every address
    /// no live pod holds cools down from `now`: without a checkpoint, or with one
    /// older than the last DEL (a crash between the DEL and its write), nobody
    /// knows which addresses were freed recently. A restarted node so waits at
    /// most one cooldown before reusing an address, never less.
    pub fn recover(
        checkpoint: Option<NodeAllocator>,
        cooldown: Duration,
        assigned: &[AssignedBlock],
        live: &[(PodKey, Ipv4Addr)],
        now: Timestamp,
    ) -> (NodeAllocator, Recovery) {
        let mut alloc = checkpoint.unwrap_or_else(|| NodeAllocator::new(cooldown));
        alloc.cooldown_ms = cooldown.as_millis() as u64;
        let mut report = Recovery::default();
        let alive: BTreeMap<_, _> = live
            .iter()
            .map(|(p, a)| (p.attachment(), (p, *a)))
            .collect();

        // Recorded pods that died, or whose address differs from the live one.
        let gone: Vec<PodKey> = alloc
            .owners
            .iter()
            .filter(|(addr, pod)| alive.get(&pod.attachment()).is_none_or(|(_, a)| a != *addr))
            .map(|(_, pod)| pod.clone())
            .collect();
        for pod in gone {
            if let Some(addr) = alloc.release(&pod, now)
                && !alive.contains_key(&pod.attachment())
            {
                report.released.push((pod, addr));
            }
        }
        alloc.sync_blocks(assigned);
        for (pod, addr) in live {
            if !alloc.blocks.values().any(|h| h.block.range.contains(*addr)) {
                // Torn down now: should its block come (back) later, the address
                // still rests for the cooldown first.
                report.outside.push((pod.clone(), *addr));
                alloc.cooling.insert(*addr, now.plus(cooldown));
                continue;
            }
            match alloc.owners.get(addr) {
                Some(owner) if owner.attachment() == pod.attachment() => report.kept += 1,
                Some(_) => report.conflicts.push((pod.clone(), *addr)),
                None => {
                    alloc.cooling.remove(addr);
                    alloc.owners.insert(*addr, pod.clone());
                    report.kept += 1;
                }
            }
        }
        let until = now.plus(cooldown);
        let idle: Vec<Ipv4Addr> = alloc
            .blocks
            .values()
            .flat_map(|h| h.block.range.addrs())
            .filter(|a| !alloc.owners.contains_key(a))
            .collect();
        for addr in idle {
            let cooling = alloc.cooling.entry(addr).or_insert(until);
            *cooling = (*cooling).max(until);
        }
        (alloc, report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(n: u32) -> PodKey {
        PodKey {
            namespace: "ns".into(),
            name: format!("p{n}"),
            container_id: format!("c{n}"),
            ifname: "eth0".into(),
        }
    }

    fn block(window: &str) -> AssignedBlock {
        let block =
            Block::in_vxnet("10.0.0.0/24".parse().unwrap(), window.parse().unwrap()).unwrap();
        AssignedBlock {
            block,
            retiring: false,
        }
    }

    #[test]
    fn a_freed_address_cools_down_before_reuse_and_add_is_idempotent() {
        let mut a = NodeAllocator::new(Duration::from_secs(30));
        a.sync_blocks(&[block("10.0.0.16/28")]);
        let t0 = Timestamp(1_000);
        let first = a.allocate(&pod(1), t0).unwrap();
        assert_eq!(first, "10.0.0.16".parse::<Ipv4Addr>().unwrap());
        assert_eq!(a.allocate(&pod(1), t0).unwrap(), first);
        assert_eq!(a.release(&pod(1), t0), Some(first));
        assert_eq!(a.release(&pod(1), t0), None);
        assert_ne!(
            a.allocate(&pod(2), t0.plus(Duration::from_secs(29)))
                .unwrap(),
            first
        );
        assert_eq!(
            a.allocate(&pod(3), t0.plus(Duration::from_secs(30)))
                .unwrap(),
            first
        );
    }

    #[test]
    fn a_full_node_says_how_many_are_held_and_cooling() {
        let mut a = NodeAllocator::new(Duration::from_secs(30));
        a.sync_blocks(&[block("10.0.0.16/28")]);
        let now = Timestamp(0);
        for n in 0..16 {
            a.allocate(&pod(n), now).unwrap();
        }
        a.release(&pod(0), now);
        assert_eq!(
            a.allocate(&pod(99), now),
            Err(AllocError::Exhausted {
                held: 15,
                cooling: 1
            })
        );
        let json = serde_json::to_string(&a).unwrap();
        let back: NodeAllocator = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn recovery_trusts_live_pods_and_cools_every_idle_address() {
        let blocks = [block("10.0.0.16/28")];
        let live = [
            (pod(1), "10.0.0.20".parse().unwrap()),
            (pod(2), "10.0.0.20".parse().unwrap()),
            (pod(3), "10.0.0.99".parse().unwrap()),
        ];
        let now = Timestamp(5_000);
        let (mut a, r) = NodeAllocator::recover(None, Duration::from_secs(30), &blocks, &live, now);
        assert_eq!(r.kept, 1);
        assert_eq!(r.conflicts, vec![live[1].clone()]);
        assert_eq!(r.outside, vec![live[2].clone()]);
        assert_eq!(a.address_of(&pod(1)), Some(live[0].1));
        assert_eq!(a.free(now), 0, "every idle address cools down");
        assert!(
            a.allocate(&pod(4), now.plus(Duration::from_secs(30)))
                .is_ok()
        );
    }
}
