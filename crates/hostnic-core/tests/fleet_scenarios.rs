//! The fleet planner in scenarios, against `FleetCloudSim`: batching, fairness,
//! the budget and the breaker, refusals, take-over, garbage collection, repairs.

mod fleet_world;

use std::collections::BTreeSet;
use std::time::Duration;

use fleet_world::FleetWorld;
use hostnic_core::fleet::{Breaker, FleetCall, FleetConfig, Lane, NicPhase, Refusal};
use hostnic_core::ports::CloudErrorKind;
use hostnic_core::testing::{FaultPoint, FleetSimConfig, SIM_OTHER_VXNET, sim_instance, sim_vxnet};
use hostnic_core::types::{InstanceId, VxnetId};

fn sim(vxnets: u32, instances: u32) -> FleetSimConfig {
    FleetSimConfig {
        vxnets,
        instances,
        ..FleetSimConfig::default()
    }
}

const STEP: Duration = Duration::from_secs(1);

#[test]
fn a_cold_start_batches_creates_per_vxnet_and_attaches_once_per_node() {
    // 100 nodes × 30 NICs: 3,000 NICs and 100 primaries need 13 vxnets of 252.
    let mut w = FleetWorld::new(sim(16, 100), FleetConfig::default());
    for n in 1..=100 {
        w.add_node(n, 30);
    }
    let rounds = w.settle(200, STEP).unwrap();
    let calls = w.cloud.requests();
    let total = w.cloud.requests_total();
    eprintln!("100 nodes x 30 NICs: {total} requests in {rounds} rounds: {calls:?}");
    // Every node's 30 NICs in one AttachNics; creates shared per vxnet (each
    // costs the call and its AttachTags).
    assert_eq!(calls["AttachNics"], 100);
    assert!(calls["CreateNics"] <= 2 * 16, "{calls:?}");
    assert_eq!(w.cloud.over_quota(), 0);
    // Half the account's hourly quota would be 1,000; this is far below.
    assert!(total <= 300, "{total} requests: {calls:?}");
}

#[test]
fn a_node_asking_for_one_nic_is_not_starved_by_nodes_asking_for_sixty() {
    // One vxnet with room for 20 NICs besides the four primaries.
    let mut w = FleetWorld::new(
        FleetSimConfig {
            vxnet_nic_limit: 24,
            ..sim(1, 4)
        },
        FleetConfig::default(),
    );
    let big: Vec<_> = (1..=3).map(|n| w.add_node(n, 60)).collect();
    let small = w.add_node(4, 1);
    for _ in 0..20 {
        w.round();
        w.tick(STEP);
    }
    let view = &w.views[&small];
    assert_eq!(view.attached, 1, "{view:?}");
    assert!(view.ready);
    // The room was shared, not given to the first asker: 19 NICs among three.
    let got: Vec<u32> = big.iter().map(|b| w.views[b].attached).collect();
    assert_eq!(got.iter().sum::<u32>(), 19, "{got:?}");
    assert!(
        got.iter().max().unwrap() - got.iter().min().unwrap() <= 2,
        "{got:?}"
    );
    for b in &big {
        assert!(w.views[b].vxnet_full, "{:?}", w.views[b]);
    }
}

#[test]
fn under_a_small_quota_every_round_stays_within_it_and_demand_is_met_eventually() {
    let mut w = FleetWorld::new(
        FleetSimConfig {
            quota: Some((20, Duration::from_secs(3600))),
            ..sim(2, 10)
        },
        FleetConfig::default(),
    );
    for n in 1..=10 {
        w.add_node(n, 5);
    }
    // 10 attaches, creates, polls, describes: more than 20 requests, so it takes
    // more than one window; never a request over the quota.
    w.settle(2000, Duration::from_secs(10)).unwrap();
    assert_eq!(w.cloud.over_quota(), 0);
    assert!(w.now().0 - 1_000_000 > 3_600_000, "needed a second window");
    for (spent, available) in &w.spent {
        assert!(spent <= available);
    }
}

#[test]
fn nodes_with_pods_waiting_go_first_when_the_budget_is_short() {
    let mut w = FleetWorld::new(sim(2, 6), FleetConfig::default());
    for n in 1..=6 {
        w.add_node(n, 3);
    }
    // Instances and vxnets described, NICs created.
    w.round();
    w.round();
    w.round();
    let waiting = FleetWorld::node_name(5);
    w.demand(&waiting).waiting = 2;
    // Room for one call besides the reserve.
    let reserve = w.config.reserve;
    let before = w.fleet.clone();
    let round = {
        let demands: Vec<_> = w.demands.values().cloned().collect();
        let mut f = before;
        f.plan(
            w.now(),
            &demands,
            hostnic_core::fleet::RoundBudget::open(reserve + 1),
        )
    };
    assert_eq!(round.calls.len(), 1, "{round:#?}");
    assert_eq!(round.calls[0].lane, Lane::Waiting);
    assert!(
        matches!(&round.calls[0].call, FleetCall::AttachNics { node, .. } if node == &waiting),
        "{round:#?}"
    );
    assert!(round.deferred.values().sum::<u32>() >= 1);
}

#[test]
fn while_the_breaker_is_open_nothing_is_planned_but_the_probe() {
    let mut w = FleetWorld::new(sim(1, 3), FleetConfig::default());
    for n in 1..=3 {
        w.add_node(n, 2);
    }
    w.breaker = Breaker::Open { probe_due: false };
    for _ in 0..5 {
        assert!(w.round().is_empty());
        w.tick(STEP);
    }
    assert_eq!(w.cloud.requests_total(), 0);
    w.breaker = Breaker::Open { probe_due: true };
    let round = w.round();
    assert_eq!(round.calls.len(), 1, "{round:#?}");
    assert_eq!(w.cloud.requests_total(), 1);
    let waiting_nodes = w.views.values().filter(|v| v.quota_exhausted).count();
    assert!(waiting_nodes > 0 || w.views.is_empty() || !w.views.values().any(|v| v.verified));
    w.breaker = Breaker::Closed;
    w.settle(100, STEP).unwrap();
}

#[test]
fn bad_requests_are_refused_and_change_nothing_in_the_cloud() {
    let mut w = FleetWorld::new(sim(2, 8), FleetConfig::default());
    let good = w.add_node(1, 2);
    // An instance the cloud does not know.
    let ghost = w.add_node(2, 2);
    w.demand(&ghost).instance = InstanceId::new("i-nosuch");
    // A vxnet of another VPC.
    let foreign = w.add_node(3, 2);
    w.demand(&foreign).vxnets = vec![VxnetId::new(SIM_OTHER_VXNET)];
    // A vxnet that does not exist.
    let unknown_vx = w.add_node(4, 2);
    w.demand(&unknown_vx).vxnets = vec![VxnetId::new("vxnet-nosuch")];
    // More than its max_nics, and a max_nics beyond the instance's.
    let greedy = w.add_node(5, 2);
    w.demand(&greedy).max_nics = 1;
    let huge = w.add_node(6, 2);
    w.demand(&huge).max_nics = 500;
    // A request its agent could not read (a negative count).
    let garbled = w.add_node(7, 0);
    w.demand(&garbled).invalid = Some("spec.wantNics is -3".into());
    // Two nodes on one instance.
    let twin = w.add_node(8, 2);
    w.demand(&twin).instance = sim_instance(1);
    for _ in 0..20 {
        w.round();
        w.tick(STEP);
    }
    let reasons = |n| w.views[n].refusal.clone().map(|r: Refusal| r.reason());
    assert_eq!(reasons(&ghost), Some("UnknownInstance"));
    assert_eq!(reasons(&foreign), Some("ForeignVxnet"));
    assert_eq!(reasons(&unknown_vx), Some("UnknownVxnet"));
    assert_eq!(reasons(&greedy), Some("InvalidRequest"));
    assert_eq!(reasons(&huge), Some("InvalidRequest"));
    assert_eq!(reasons(&garbled), Some("InvalidRequest"));
    assert_eq!(reasons(&twin), Some("InstanceConflict"));
    assert_eq!(reasons(&good), Some("InstanceConflict"));
    for n in 2..=8 {
        assert_eq!(
            w.cloud.touched(&sim_instance(n)),
            0,
            "instance {n} was touched"
        );
    }
    // The conflict resolved, the good node is served.
    w.demands.remove(&twin);
    w.settle(100, STEP).unwrap();
    assert!(w.views[&good].ready, "{:?}", w.views[&good]);
    assert_eq!(w.views[&good].attached, 2);
}

#[test]
fn giving_back_a_nic_of_another_node_is_refused_and_detaches_nothing() {
    let mut w = FleetWorld::new(sim(1, 2), FleetConfig::default());
    let a = w.add_node(1, 2);
    let b = w.add_node(2, 2);
    w.settle(100, STEP).unwrap();
    let theirs = w.views[&b].nics[0].id.clone();
    let touched = w.cloud.touched(&sim_instance(2));
    w.demand(&a).release.insert(theirs.clone());
    w.round();
    let r = w.views[&a].refusal.clone().expect("refused");
    assert_eq!(
        r,
        Refusal::ForeignNic {
            nic: theirs.clone(),
            owner: Some(b.clone())
        }
    );
    assert!(r.to_string().contains("belongs to node node-2"), "{r}");
    for _ in 0..10 {
        w.round();
        w.tick(STEP);
    }
    assert_eq!(w.cloud.touched(&sim_instance(2)), touched);
    assert!(
        w.views[&b]
            .nics
            .iter()
            .any(|n| n.id == theirs && n.phase == NicPhase::Attached)
    );
}

#[test]
fn a_new_leader_adopts_the_jobs_in_flight_and_duplicates_nothing() {
    let mut w = FleetWorld::new(sim(2, 10), FleetConfig::default());
    for n in 1..=10 {
        w.add_node(n, 4);
    }
    // Until the attach jobs run (describes, creates, attaches).
    while w.fleet.jobs_in_flight() == 0 {
        w.round();
    }
    let recorded: usize = w.records.values().map(|r| r.jobs.len()).sum();
    assert_eq!(recorded, w.fleet.jobs_in_flight());
    // The leader dies; the next follows the recorded jobs.
    w.leader_change();
    assert_eq!(w.fleet.jobs_in_flight(), recorded);
    let attaches = w.cloud.requests()["AttachNics"];
    let creates = w.cloud.requests()["CreateNics"];
    w.settle(200, STEP).unwrap();
    let calls = w.cloud.requests();
    assert_eq!(
        calls["AttachNics"], attaches,
        "nothing attached twice: {calls:?}"
    );
    assert_eq!(
        calls["CreateNics"], creates,
        "nothing created twice: {calls:?}"
    );
}

#[test]
fn a_leader_killed_in_the_middle_of_a_round_loses_nothing() {
    for k in 0..6 {
        let mut w = FleetWorld::new(sim(2, 6), FleetConfig::default());
        for n in 1..=6 {
            w.add_node(n, 3);
        }
        w.round();
        w.round();
        // The round with creates; then the one with attaches.
        w.round_then_crash(k);
        w.round();
        w.round_then_crash(k);
        w.settle(500, STEP)
            .unwrap_or_else(|e| panic!("crash after {k} calls: {e}"));
    }
}

#[test]
fn the_nics_of_a_node_that_left_are_freed_after_the_grace_period() {
    let mut w = FleetWorld::new(sim(1, 3), FleetConfig::default());
    for n in 1..=3 {
        w.add_node(n, 4);
    }
    w.settle(100, STEP).unwrap();
    let gone = FleetWorld::node_name(3);
    w.demands.remove(&gone);
    let left_at = w.now();
    w.settle(500, STEP).unwrap();
    let freed_after = w.now().since(left_at);
    assert!(freed_after >= w.config.node_gone_grace, "{freed_after:?}");
    assert_eq!(w.cloud.on_instance(&sim_instance(3)), 0);
    let name = w.config.nic_name();
    assert_eq!(
        w.cloud.nics().values().filter(|n| n.name == name).count(),
        8
    );
}

#[test]
fn nics_given_back_go_to_nodes_that_need_them_before_any_is_created() {
    let mut w = FleetWorld::new(sim(1, 2), FleetConfig::default());
    let a = w.add_node(1, 6);
    let b = w.add_node(2, 0);
    w.settle(100, STEP).unwrap();
    let creates = w.cloud.requests()["CreateNics"];
    w.release(&a, 4);
    w.demand(&b).want = 4;
    w.settle(200, STEP).unwrap();
    assert_eq!(
        w.cloud.requests()["CreateNics"],
        creates,
        "reused, not created"
    );
    assert_eq!(w.views[&b].attached, 4);
    assert_eq!(w.views[&a].attached, 2);
}

#[test]
fn nics_nobody_needs_are_deleted_after_the_linger_time() {
    let mut w = FleetWorld::new(sim(1, 1), FleetConfig::default());
    let a = w.add_node(1, 5);
    w.settle(100, STEP).unwrap();
    w.release(&a, 5);
    let released = w.now();
    w.settle(500, STEP).unwrap();
    assert!(w.now().since(released) >= w.config.stock_linger);
    assert_eq!(w.cloud.requests()["DeleteNics"], 1, "one batch");
}

#[test]
fn a_vanished_nic_is_replaced_in_the_repair_lane() {
    let mut w = FleetWorld::new(sim(1, 2), FleetConfig::default());
    let a = w.add_node(1, 3);
    w.add_node(2, 3);
    w.settle(100, STEP).unwrap();
    let lost = w.views[&a].nics[0].id.clone();
    assert!(w.cloud.vanish(&lost));
    // The agent sees the link gone and reports it.
    w.demand(&a).missing.insert(lost.clone());
    let round = w.round();
    assert!(
        round.calls.iter().any(|c| c.lane == Lane::Repair),
        "{round:#?}"
    );
    w.settle(100, STEP).unwrap();
    assert_eq!(w.views[&a].attached, 3);
    assert!(!w.views[&a].nics.iter().any(|n| n.id == lost));
}

#[test]
fn a_nic_attached_but_missing_on_its_host_is_detached_and_attached_again() {
    let mut w = FleetWorld::new(sim(1, 1), FleetConfig::default());
    let a = w.add_node(1, 2);
    w.settle(100, STEP).unwrap();
    let broken = w.views[&a].nics[0].id.clone();
    w.demand(&a).missing.insert(broken.clone());
    let detaches = w.cloud.requests().get("DetachNics").copied().unwrap_or(0);
    for _ in 0..30 {
        w.round();
        w.tick(STEP);
    }
    assert_eq!(w.cloud.requests()["DetachNics"], detaches + 1);
    assert!(
        w.views[&a]
            .nics
            .iter()
            .any(|n| n.id == broken && n.phase == NicPhase::Attached)
    );
    assert_eq!(w.views[&a].attached, 2);
}

#[test]
fn a_full_vxnet_moves_creation_to_the_next_one() {
    let mut w = FleetWorld::new(
        FleetSimConfig {
            vxnet_nic_limit: 12,
            ..sim(2, 2)
        },
        FleetConfig::default(),
    );
    let a = w.add_node(1, 15);
    w.demand(&a).vxnets = vec![sim_vxnet(1), sim_vxnet(2)];
    w.settle(200, STEP).unwrap();
    let v = &w.views[&a];
    let in_first = v.nics.iter().filter(|n| n.vxnet == sim_vxnet(1)).count();
    // vxnet-1 holds 12 NICs, one is a primary: what did not fit went to vxnet-2.
    assert!((1..=11).contains(&in_first), "{v:?}");
    assert_eq!(v.attached, 15);
}

#[test]
fn cloud_faults_leak_nothing_once_they_stop() {
    let mut w = FleetWorld::new(sim(2, 4), FleetConfig::default());
    for n in 1..=4 {
        w.add_node(n, 3);
    }
    for (action, point) in [
        ("CreateNics", FaultPoint::After),
        ("AttachNics", FaultPoint::After),
        ("DescribeJobs", FaultPoint::Before),
    ] {
        w.cloud.fail_next(action, CloudErrorKind::Retryable, point);
    }
    w.cloud.lose_next_jobs(1);
    w.cloud.fail_next_jobs(1);
    w.settle(500, STEP).unwrap();
    let ours: BTreeSet<_> = w
        .cloud
        .nics()
        .into_iter()
        .filter(|(_, n)| n.name == w.config.nic_name())
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ours.len(), 12);
}

#[test]
fn at_rest_the_fleet_costs_a_few_calls_an_hour() {
    let mut w = FleetWorld::new(sim(16, 100), FleetConfig::default());
    for n in 1..=100 {
        w.add_node(n, 30);
    }
    w.settle(200, STEP).unwrap();
    // A day at rest.
    let before = w.cloud.requests_total();
    let start = w.now();
    while w.now().since(start) < Duration::from_secs(24 * 3600) {
        w.round();
        let now = w.now();
        let wake = w
            .fleet
            .next_wakeup(now)
            .unwrap_or(now.plus(Duration::from_secs(3600)));
        w.tick(wake.since(now).max(STEP));
    }
    let per_hour = (w.cloud.requests_total() - before) as f64 / 24.0;
    eprintln!(
        "100 nodes x 30 NICs at rest: {per_hour:.1} requests/hour: {:?}",
        w.cloud.requests()
    );
    // Checks of 100 instances every 2 h (1 page), the detached NICs every 30 min,
    // every NIC once a day (31 pages).
    assert!(per_hour <= 5.0, "{per_hour}");
}

#[test]
fn the_nics_of_a_terminated_instance_are_deleted_once_it_is_gone() {
    let mut w = FleetWorld::new(sim(1, 3), FleetConfig::default());
    for n in 1..=3 {
        w.add_node(n, 3);
    }
    w.settle(100, STEP).unwrap();
    // The VM is terminated (the cloud detaches its NICs) and the node leaves.
    w.cloud.terminate(&sim_instance(3));
    w.demands.remove(&FleetWorld::node_name(3));
    w.settle(2000, Duration::from_secs(10)).unwrap();
    let name = w.config.nic_name();
    let left: Vec<_> = w
        .cloud
        .nics()
        .into_iter()
        .filter(|(_, n)| n.name == name && n.instance.is_none())
        .collect();
    assert!(
        left.is_empty(),
        "detached NICs of the terminated instance remain: {left:?}"
    );
}

#[test]
fn a_node_whose_instance_is_terminated_is_refused_and_its_nics_freed() {
    let mut w = FleetWorld::new(sim(1, 2), FleetConfig::default());
    let a = w.add_node(1, 2);
    let b = w.add_node(2, 2);
    w.settle(100, STEP).unwrap();
    // The VM is gone but its Node object stays (a broken node).
    w.cloud.terminate(&sim_instance(2));
    let start = w.now();
    while w.now().since(start) < Duration::from_secs(4 * 3600) {
        w.round();
        let now = w.now();
        let wake = w
            .fleet
            .next_wakeup(now)
            .unwrap_or(now.plus(Duration::from_secs(600)));
        w.tick(wake.since(now).max(STEP));
    }
    assert_eq!(
        w.views[&b].refusal.as_ref().map(|r| r.reason()),
        Some("UnknownInstance")
    );
    let name = w.config.nic_name();
    assert_eq!(
        w.cloud.nics().values().filter(|n| n.name == name).count(),
        2,
        "only node-1's NICs remain"
    );
    assert!(w.views[&a].ready);
}
