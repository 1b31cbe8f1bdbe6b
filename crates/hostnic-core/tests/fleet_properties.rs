//! Property tests of the fleet planner: random nodes and demands, cloud faults,
//! slow, failed and lost jobs (lost: DescribeJobs never knows them, their effect
//! is final when the planner looks), vanishing NICs, nodes leaving, the breaker, and
//! leader changes (a fresh planner resuming from the recorded jobs, sometimes in
//! the middle of a round), against `FleetCloudSim`.
//!
//! After every round (`fleet_world::FleetWorld::check` and `check_round`):
//! - never over budget: no round costs more than the quota window has left, and
//!   the cloud never saw a request over its quota; nothing but the probe while
//!   the breaker is open;
//! - every batch within the API's limits (a page of ids, `count` ≤ 252, one
//!   `AttachNics` per node and one `CreateNics` per vxnet in a round, no NIC in
//!   two calls);
//! - no NIC attached to two instances as far as the nodes are told: a NIC is in
//!   at most one node's view, and one shown attached is attached to that node;
//! - no node above its `max_nics` (attached and attaching, in the cloud).
//!
//! After settling (faults off, time passing): every node's demand met, no NIC of
//! the cluster left over (stock deleted, NICs of nodes that left freed), no job
//! running.
//!
//! Cases per property: 256 by default, `PROPTEST_CASES` to change.

mod fleet_world;

use std::time::Duration;

use fleet_world::FleetWorld;
use hostnic_core::fleet::{Breaker, FleetConfig, NicPhase};
use hostnic_core::ports::CloudErrorKind;
use hostnic_core::testing::{FaultPoint, FleetSimConfig};
use proptest::prelude::*;

const NODES: u32 = 6;

#[derive(Debug, Clone)]
enum Op {
    Want(u32, u32),
    Release(u32, usize),
    Waiting(u32, u32),
    Leave(u32),
    Join(u32),
    Tick(u64),
    Fault(&'static str, CloudErrorKind, bool),
    FaultRate(u8),
    FailJobs(u32),
    LoseJobs(u32),
    SlowJobs(bool),
    Vanish(u32),
    Breaker(bool),
    LeaderChange,
    Crash(usize),
}

fn action() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("CreateNics"),
        Just("AttachNics"),
        Just("DetachNics"),
        Just("DeleteNics"),
        Just("DescribeJobs"),
        Just("DescribeNics"),
        Just("DescribeInstances"),
    ]
}

fn kind() -> impl Strategy<Value = CloudErrorKind> {
    prop_oneof![
        4 => Just(CloudErrorKind::Retryable),
        1 => Just(CloudErrorKind::QuotaExceeded),
        1 => Just(CloudErrorKind::Permanent),
        1 => Just(CloudErrorKind::NotFound),
        1 => Just(CloudErrorKind::Throttled),
    ]
}

fn node() -> impl Strategy<Value = u32> {
    1..=NODES
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        6 => (node(), 0u32..=10).prop_map(|(n, w)| Op::Want(n, w)),
        3 => (node(), 1usize..4).prop_map(|(n, k)| Op::Release(n, k)),
        2 => (node(), 0u32..3).prop_map(|(n, w)| Op::Waiting(n, w)),
        1 => node().prop_map(Op::Leave),
        1 => node().prop_map(Op::Join),
        6 => (1u64..40).prop_map(Op::Tick),
        3 => (action(), kind(), any::<bool>()).prop_map(|(a, k, after)| Op::Fault(a, k, after)),
        1 => (0u8..30).prop_map(Op::FaultRate),
        1 => (1u32..3).prop_map(Op::FailJobs),
        1 => (1u32..3).prop_map(Op::LoseJobs),
        1 => any::<bool>().prop_map(Op::SlowJobs),
        1 => node().prop_map(Op::Vanish),
        1 => any::<bool>().prop_map(Op::Breaker),
        2 => Just(Op::LeaderChange),
        2 => (0usize..6).prop_map(Op::Crash),
    ];
    proptest::collection::vec(op, 1..40)
}

fn world(max_nics: &[u32]) -> FleetWorld {
    let sim = FleetSimConfig {
        vxnets: 2,
        instances: NODES,
        quota: Some((300, Duration::from_secs(3600))),
        job_latency: Duration::from_secs(3),
        ..FleetSimConfig::default()
    };
    // Full inventories every two hours, so that settling (which may need one: NICs
    // on the instance of a node that left while leadership changed) stays short.
    let config = FleetConfig {
        full_inventory_interval: Duration::from_secs(2 * 3600),
        ..FleetConfig::default()
    };
    let mut w = FleetWorld::new(sim, config);
    for n in 1..=NODES {
        let name = w.add_node(n, 0);
        w.demand(&name).max_nics = max_nics[(n - 1) as usize];
    }
    w
}

fn apply(
    w: &mut FleetWorld,
    op: &Op,
    gone: &mut std::collections::BTreeMap<u32, hostnic_core::fleet::NodeDemand>,
) {
    let name = |n: u32| FleetWorld::node_name(n);
    match op {
        Op::Want(n, want) => {
            if let Some(d) = w.demands.get_mut(&name(*n)) {
                d.want = (*want).min(d.max_nics);
            }
        }
        Op::Release(n, k) => {
            if w.demands.contains_key(&name(*n)) {
                w.release(&name(*n), *k);
            }
        }
        Op::Waiting(n, waiting) => {
            if let Some(d) = w.demands.get_mut(&name(*n)) {
                d.waiting = *waiting;
            }
        }
        Op::Leave(n) => {
            if let Some(d) = w.demands.remove(&name(*n)) {
                gone.insert(*n, d);
            }
        }
        Op::Join(n) => {
            if let Some(mut d) = gone.remove(n) {
                d.release.clear();
                d.missing.clear();
                w.demands.insert(name(*n), d);
            }
        }
        Op::Tick(s) => w.tick(Duration::from_secs(*s)),
        Op::Fault(action, kind, after) => w.cloud.fail_next(
            action,
            *kind,
            if *after {
                FaultPoint::After
            } else {
                FaultPoint::Before
            },
        ),
        Op::FaultRate(p) => w.cloud.set_fault_rate(f64::from(*p) / 100.0),
        Op::FailJobs(k) => w.cloud.fail_next_jobs(*k),
        Op::LoseJobs(k) => w.cloud.lose_next_jobs(*k),
        // Slow, but within the planner's job timeout (what it assumes of the
        // cloud: no job runs longer).
        Op::SlowJobs(slow) => {
            w.cloud
                .set_job_latency(Duration::from_secs(if *slow { 200 } else { 3 }))
        }
        Op::Vanish(n) => {
            // The NIC disappears from the cloud; the node's host sees its link go.
            let victim = w.views.get(&name(*n)).and_then(|v| {
                v.nics
                    .iter()
                    .find(|nic| nic.phase == NicPhase::Attached)
                    .map(|nic| nic.id.clone())
            });
            if let Some(id) = victim
                && w.cloud.vanish(&id)
                && let Some(d) = w.demands.get_mut(&name(*n))
            {
                d.missing.insert(id);
            }
        }
        Op::Breaker(open) => {
            w.breaker = if *open {
                Breaker::Open { probe_due: false }
            } else {
                Breaker::Closed
            }
        }
        Op::LeaderChange => w.leader_change(),
        Op::Crash(k) => {
            w.round_then_crash(*k);
            return;
        }
    }
    w.round();
}

fn run(max_nics: Vec<u32>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut w = world(&max_nics);
    let mut gone = std::collections::BTreeMap::new();
    for op in &ops {
        apply(&mut w, op, &mut gone);
    }
    // The cloud behaves again, the breaker closes, agents stop asking for more.
    w.cloud.clear_faults();
    w.cloud.set_job_latency(Duration::from_secs(3));
    w.breaker = Breaker::Closed;
    if let Err(e) = w.settle(3000, Duration::from_secs(5)) {
        return Err(TestCaseError::fail(format!(
            "{e}\nafter {} rounds, {} leader changes",
            w.rounds, w.leader_changes
        )));
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Within budget and the API's limits at every round, no NIC given to two
    /// nodes, no node above max_nics; after settling every demand met and nothing
    /// leaked.
    #[test]
    fn the_fleet_stays_within_limits_and_settles_without_leaks(
        max_nics in proptest::collection::vec(1u32..=10, NODES as usize),
        ops in ops(),
    ) {
        run(max_nics, ops)?;
    }
}
