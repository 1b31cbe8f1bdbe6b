//! Scenarios of the shared mode's block planner and node allocator, through the
//! public API: sizing and doubling, the typed problems, the retire → release
//! handshake, and the blocks of a node that left.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use hostnic_core::fleet::NodeName;
use hostnic_core::shared::{
    Block, BlockIntent, BlockListing, BlockPlanner, ListedVip, NodeAllocator, NodeReport,
    PlanProblem, ReserveError, SharedConfig,
};
use hostnic_core::types::{PodKey, Timestamp, Vxnet, VxnetId};

fn vxnet(cidr: &str) -> Vxnet {
    let cidr: ipnet::Ipv4Net = cidr.parse().unwrap();
    Vxnet {
        id: VxnetId::new("vxnet-a"),
        gateway: Ipv4Addr::from(u32::from(cidr.network()) + 1),
        cidr,
        router: None,
    }
}

fn listing(vx: &Vxnet, at: Timestamp, vips: &[(String, Ipv4Addr)]) -> BlockListing {
    BlockListing {
        vxnet: vx.clone(),
        at,
        vips: vips
            .iter()
            .map(|(n, a)| ListedVip {
                name: n.clone(),
                addr: *a,
            })
            .collect(),
        nic_addrs: vec![],
    }
}

fn pod(n: u32) -> PodKey {
    PodKey {
        namespace: "ns".into(),
        name: format!("p{n}"),
        container_id: format!("c{n}"),
        ifname: "eth0".into(),
    }
}

fn report(
    node: &NodeName,
    vx: &Vxnet,
    max_pods: u32,
    waiting: u32,
    a: &NodeAllocator,
    now: Timestamp,
) -> NodeReport {
    NodeReport {
        node: node.clone(),
        vxnet: vx.id.clone(),
        max_pods,
        waiting,
        blocks: a.usage(now),
    }
}

fn reserves(intents: &[BlockIntent]) -> Vec<String> {
    intents
        .iter()
        .filter_map(|i| match i {
            BlockIntent::Reserve { block, .. } => Some(block.range.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_first_block_fits_max_pods_and_later_ones_double() {
    let vx = vxnet("10.0.0.0/22");
    let node = NodeName::new("n1");
    let present = BTreeSet::from([node.clone()]);
    let config = SharedConfig {
        first_block: Some(16),
        headroom: 4,
        ..SharedConfig::default()
    };
    let mut planner = BlockPlanner::new(config).unwrap();
    let mut alloc = NodeAllocator::new(Duration::from_secs(30));
    let now = Timestamp(0);
    planner.observe(listing(&vx, now, &[]));

    // 16, then 32, then 64: each reservation doubles the node's largest block.
    let mut sizes = Vec::new();
    let mut next = 0;
    for _ in 0..3 {
        let plan = planner.plan(&[report(&node, &vx, 110, 0, &alloc, now)], &present, now);
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        let Some(BlockIntent::Reserve { block, vxnet, .. }) = plan.intents.first().cloned() else {
            panic!("expected a reservation, got {:?}", plan.intents)
        };
        assert_eq!(plan.intents.len(), 1);
        sizes.push(block.size());
        planner.reserved(&vxnet, &block, Ok(()));
        alloc.sync_blocks(&planner.assigned(&node, &vx.id));
        // Fill it to the headroom.
        while alloc.free(now) >= 4 {
            alloc.allocate(&pod(next), now).unwrap();
            next += 1;
        }
    }
    assert_eq!(sizes, [16, 32, 64]);
    // Nothing more when the room left is all the node may still run (max-pods).
    let max_pods = next + alloc.free(now);
    let quiet = planner.plan(
        &[report(&node, &vx, max_pods, 0, &alloc, now)],
        &present,
        now,
    );
    assert!(quiet.intents.is_empty(), "{:?}", quiet.intents);
}

#[test]
fn a_node_with_max_pods_110_needs_one_reservation_of_128() {
    let vx = vxnet("172.16.1.0/24");
    let node = NodeName::new("n1");
    let mut planner = BlockPlanner::new(SharedConfig::default()).unwrap();
    planner.observe(listing(&vx, Timestamp(0), &[]));
    let alloc = NodeAllocator::new(Duration::from_secs(30));
    let plan = planner.plan(
        &[report(&node, &vx, 110, 0, &alloc, Timestamp(0))],
        &BTreeSet::from([node.clone()]),
        Timestamp(0),
    );
    assert_eq!(reserves(&plan.intents), ["172.16.1.2-172.16.1.127"]);
    let BlockIntent::Reserve { block, .. } = &plan.intents[0] else {
        unreachable!()
    };
    assert_eq!(block.vip_name("n1"), "hostnic:n1:172.16.1.0/25");
}

#[test]
fn the_problems_are_typed_and_nothing_is_half_planned() {
    let vx = vxnet("10.0.0.0/25");
    let (n1, n2) = (NodeName::new("n1"), NodeName::new("n2"));
    let present = BTreeSet::from([n1.clone(), n2.clone()]);
    let alloc = NodeAllocator::new(Duration::from_secs(30));
    let now = Timestamp(0);

    // A configured block larger than the vxnet.
    let config = SharedConfig {
        first_block: Some(256),
        ..SharedConfig::default()
    };
    let mut planner = BlockPlanner::new(config).unwrap();
    planner.observe(listing(&vx, now, &[]));
    let plan = planner.plan(&[report(&n1, &vx, 110, 0, &alloc, now)], &present, now);
    assert!(plan.intents.is_empty());
    assert!(
        matches!(
            &plan.problems[..],
            [PlanProblem::BlockDoesNotFit { size: 256, .. }]
        ),
        "{:?}",
        plan.problems
    );

    // Max-pods larger than the vxnet is capped to it; then no room for n2.
    let mut planner = BlockPlanner::new(SharedConfig::default()).unwrap();
    planner.observe(listing(&vx, now, &[]));
    let plan = planner.plan(
        &[
            report(&n1, &vx, 250, 0, &alloc, now),
            report(&n2, &vx, 110, 0, &alloc, now),
        ],
        &present,
        now,
    );
    assert_eq!(reserves(&plan.intents), ["10.0.0.2-10.0.0.125"]);
    assert!(
        matches!(
            &plan.problems[..],
            [PlanProblem::NoRoom { wanted: 128, .. }]
        ),
        "{:?}",
        plan.problems
    );

    // A range taken outside hostnic: reported, avoided afterwards.
    let mut planner = BlockPlanner::new(SharedConfig::default()).unwrap();
    planner.observe(listing(
        &vx,
        now,
        &[("someone".into(), "10.0.0.40".parse().unwrap())],
    ));
    let plan = planner.plan(&[report(&n1, &vx, 20, 0, &alloc, now)], &present, now);
    // .0/27 is free of the known VIP at .40.
    assert_eq!(reserves(&plan.intents), ["10.0.0.2-10.0.0.31"]);
    let BlockIntent::Reserve { block, vxnet, .. } = plan.intents[0].clone() else {
        unreachable!()
    };
    let grabbed: Ipv4Addr = "10.0.0.9".parse().unwrap();
    let problem = planner.reserved(&vxnet, &block, Err(ReserveError::Taken(vec![grabbed])));
    assert!(matches!(problem, Some(PlanProblem::RangeTaken { .. })));
    let plan = planner.plan(&[report(&n1, &vx, 20, 0, &alloc, now)], &present, now);
    assert!(
        plan.problems
            .iter()
            .any(|p| matches!(p, PlanProblem::RangeTaken { taken, .. } if taken == &vec![grabbed]))
    );
    // Neither .0/27 (holds .9) nor .32/27 (holds .40): the next free one.
    assert_eq!(reserves(&plan.intents), ["10.0.0.64-10.0.0.95"]);
}

#[test]
fn an_empty_block_is_retired_after_the_grace_then_released_once_drained() {
    let vx = vxnet("10.0.0.0/24");
    let node = NodeName::new("n1");
    let present = BTreeSet::from([node.clone()]);
    let grace = Duration::from_secs(600);
    let config = SharedConfig {
        first_block: Some(16),
        headroom: 2,
        release_grace: grace,
        ..SharedConfig::default()
    };
    let mut planner = BlockPlanner::new(config).unwrap();
    let mut alloc = NodeAllocator::new(Duration::from_secs(30));
    let mut now = Timestamp(0);
    planner.observe(listing(&vx, now, &[]));
    let mut held = Vec::new();
    for round in 0..2 {
        let plan = planner.plan(&[report(&node, &vx, 40, 0, &alloc, now)], &present, now);
        let BlockIntent::Reserve { block, vxnet, .. } = plan.intents[0].clone() else {
            panic!("{plan:?}")
        };
        planner.reserved(&vxnet, &block, Ok(()));
        held.push(block);
        alloc.sync_blocks(&planner.assigned(&node, &vx.id));
        // Fill the first block (.2-.15), put 15 pods in the second.
        for p in 0..[14, 15][round as usize] {
            alloc.allocate(&pod(round * 100 + p), now).unwrap();
        }
    }
    // Doubling: the second block is .32/27 (.16/28 is too small).
    let second: Block = held[1];
    assert_eq!(second.range.to_string(), "10.0.0.32-10.0.0.63");
    // Every pod of the second block goes, and 4 of the first.
    let pods: Vec<PodKey> = alloc
        .pods()
        .filter(|(a, _)| second.range.contains(*a))
        .map(|(_, p)| p.clone())
        .collect();
    assert_eq!(pods.len(), 15);
    for p in pods.iter().chain(&[pod(0), pod(1), pod(2), pod(3)]) {
        alloc.release(p, now);
    }
    // Cooling addresses keep it busy; then the grace runs; then it is retired.
    now = now.plus(Duration::from_secs(31));
    let plan = planner.plan(&[report(&node, &vx, 40, 0, &alloc, now)], &present, now);
    assert!(plan.intents.is_empty());
    now = now.plus(grace);
    planner.plan(&[report(&node, &vx, 40, 0, &alloc, now)], &present, now);
    let status = planner.assigned(&node, &vx.id);
    assert!(
        status.iter().any(|a| a.block == second && a.retiring),
        "{status:?}"
    );
    // Not released before the node says it stopped using it.
    let plan = planner.plan(&[report(&node, &vx, 40, 0, &alloc, now)], &present, now);
    assert!(plan.intents.is_empty(), "{:?}", plan.intents);
    alloc.sync_blocks(&status);
    // A retired block takes no new pod, even when the others are full.
    assert_eq!(alloc.free(now), 4);
    for p in 900..904 {
        assert!(!second.range.contains(alloc.allocate(&pod(p), now).unwrap()));
    }
    assert!(alloc.allocate(&pod(1000), now).is_err());
    let second_use = alloc
        .usage(now)
        .into_iter()
        .find(|u| u.window == second.window);
    assert_eq!(second_use.unwrap().in_use, 0);
    // Still short of room: the planner takes the block back rather than
    // releasing it and reserving another.
    let plan = planner.plan(&[report(&node, &vx, 40, 0, &alloc, now)], &present, now);
    assert!(plan.intents.is_empty(), "{:?}", plan.intents);
    assert!(planner.assigned(&node, &vx.id).iter().all(|a| !a.retiring));
    // Pods go again: the block retires, the node confirms, it is released.
    for p in 900..904 {
        alloc.release(&pod(p), now);
    }
    now = now.plus(Duration::from_secs(31));
    planner.plan(&[report(&node, &vx, 40, 0, &alloc, now)], &present, now);
    now = now.plus(grace);
    planner.plan(&[report(&node, &vx, 40, 0, &alloc, now)], &present, now);
    alloc.sync_blocks(&planner.assigned(&node, &vx.id));
    let plan = planner.plan(&[report(&node, &vx, 40, 0, &alloc, now)], &present, now);
    assert_eq!(
        plan.intents,
        vec![BlockIntent::Release {
            node: node.clone(),
            vxnet: vx.id.clone(),
            block: second
        }]
    );
    planner.released(&vx.id, &second, true);
    assert_eq!(planner.assigned(&node, &vx.id).len(), 1);
    assert_eq!(
        alloc.sync_blocks(&planner.assigned(&node, &vx.id)),
        vec![second.window]
    );
}

#[test]
fn a_retiring_block_comes_back_when_the_node_needs_room_without_a_call() {
    let vx = vxnet("10.0.0.0/24");
    let node = NodeName::new("n1");
    let present = BTreeSet::from([node.clone()]);
    let config = SharedConfig {
        first_block: Some(16),
        headroom: 2,
        release_grace: Duration::ZERO,
        ..SharedConfig::default()
    };
    let mut planner = BlockPlanner::new(config).unwrap();
    let mut alloc = NodeAllocator::new(Duration::ZERO);
    let now = Timestamp(0);
    planner.observe(listing(&vx, now, &[]));
    for _ in 0..2 {
        let plan = planner.plan(&[report(&node, &vx, 40, 30, &alloc, now)], &present, now);
        let BlockIntent::Reserve { block, vxnet, .. } = plan.intents[0].clone() else {
            panic!("{plan:?}")
        };
        planner.reserved(&vxnet, &block, Ok(()));
    }
    alloc.sync_blocks(&planner.assigned(&node, &vx.id));
    // Empty, no grace: the higher block retires.
    planner.plan(&[report(&node, &vx, 40, 0, &alloc, now)], &present, now);
    assert_eq!(
        planner
            .assigned(&node, &vx.id)
            .iter()
            .filter(|a| a.retiring)
            .count(),
        1
    );
    // Pods arrive, more than the first block holds: the retiring block is
    // active again, and no reservation is made.
    alloc.sync_blocks(&planner.assigned(&node, &vx.id));
    for p in 0..10 {
        alloc.allocate(&pod(p), now).unwrap();
    }
    let plan = planner.plan(&[report(&node, &vx, 40, 10, &alloc, now)], &present, now);
    assert!(plan.intents.is_empty());
    assert!(planner.assigned(&node, &vx.id).iter().all(|a| !a.retiring));
}

#[test]
fn the_blocks_of_a_node_that_left_are_released_and_rest_before_reuse() {
    let vx = vxnet("10.0.0.0/27");
    let (n1, n2) = (NodeName::new("n1"), NodeName::new("n2"));
    let config = SharedConfig {
        first_block: Some(32),
        cooldown: Duration::from_secs(30),
        ..SharedConfig::default()
    };
    let mut planner = BlockPlanner::new(config).unwrap();
    let alloc = NodeAllocator::new(Duration::from_secs(30));
    let mut now = Timestamp(0);
    planner.observe(listing(&vx, now, &[]));
    let plan = planner.plan(
        &[report(&n1, &vx, 10, 0, &alloc, now)],
        &BTreeSet::from([n1.clone()]),
        now,
    );
    let BlockIntent::Reserve { block, vxnet, .. } = plan.intents[0].clone() else {
        panic!()
    };
    planner.reserved(&vxnet, &block, Ok(()));
    // n1 leaves; n2 wants room in the same /27.
    let only_n2 = BTreeSet::from([n2.clone()]);
    let plan = planner.plan(&[report(&n2, &vx, 10, 0, &alloc, now)], &only_n2, now);
    assert!(plan.intents.contains(&BlockIntent::Release {
        node: n1.clone(),
        vxnet: vx.id.clone(),
        block
    }));
    assert!(
        plan.problems
            .iter()
            .any(|p| matches!(p, PlanProblem::NoRoom { .. }))
    );
    // The release answer is lost; the listing shows it done.
    now = now.plus(Duration::from_secs(5));
    planner.observe(listing(&vx, now, &[]));
    let plan = planner.plan(&[report(&n2, &vx, 10, 0, &alloc, now)], &only_n2, now);
    assert!(
        plan.intents.is_empty(),
        "the window rests: {:?}",
        plan.intents
    );
    now = now.plus(Duration::from_secs(30));
    let plan = planner.plan(&[report(&n2, &vx, 10, 0, &alloc, now)], &only_n2, now);
    assert_eq!(reserves(&plan.intents), ["10.0.0.2-10.0.0.29"]);
}
