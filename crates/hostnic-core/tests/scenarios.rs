//! Scenario tests of the engine on the fakes, through the public API only: the field
//! problems of the original hostnic, each replayed and checked.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::{World, pod};
use futures::executor::block_on;
use hostnic_core::config::PoolConfig;
use hostnic_core::engine::EngineError;
use hostnic_core::pool::AllocError;
use hostnic_core::ports::{CloudErrorKind, HostErrorKind};
use hostnic_core::testing::{CloudAction, FakeCloudConfig, FaultPoint};
use hostnic_core::types::{NicId, PodInfo, Vxnet, VxnetId};

fn live(world: &World, pods: &[usize]) -> BTreeMap<usize, (NicId, Ipv4Addr)> {
    world.engine.with_state(|s| {
        pods.iter()
            .map(|i| {
                let a = s.attachment(&pod(*i).attachment()).expect("attached");
                (*i, (a.nic.clone(), a.ip))
            })
            .collect()
    })
}

#[test]
fn cold_start_of_40_pods_is_served_in_batches() {
    let world = World::new(PoolConfig::default());
    world.cloud.set_attach_latency(Duration::from_secs(1));
    let start = world.now();
    // 40 pods arrive at once: the agent raises the demand, runs the pool, and serves.
    world.engine.set_demand(40);
    block_on(world.engine.settle(10));
    for i in 0..40 {
        world.add(&pod(i)).expect("every pod is served");
    }
    let elapsed = world.now().since(start);
    let calls: u64 = [
        CloudAction::CreateNics,
        CloudAction::AttachNics,
        CloudAction::WaitJob,
    ]
    .iter()
    .map(|a| world.cloud.requests(*a))
    .sum();
    // 45 NICs (40 + min_free 5) in one batch: one CreateNics, one AttachNics, one wait
    // (batches follow demand; `batch_size` is the smallest refill).
    assert_eq!(world.cloud.requests(CloudAction::CreateNics), 1);
    assert_eq!(world.cloud.requests(CloudAction::AttachNics), 1);
    assert_eq!(calls, 3);
    assert_eq!(world.cloud.max_batch(CloudAction::AttachNics), 45);
    // The fake advances its clock to the job's end: one attach latency.
    assert!(elapsed <= Duration::from_secs(1), "took {elapsed:?}");
    world.assert_settled(&live(&world, &(0..40).collect::<Vec<_>>()));
}

#[test]
fn lost_create_answer_is_adopted_after_a_crash_not_leaked() {
    let mut world = World::new(PoolConfig::default());
    world.cloud.fail_next(
        CloudAction::CreateNics,
        CloudErrorKind::Retryable,
        FaultPoint::After,
    );
    block_on(world.engine.run_pool());
    assert_eq!(
        world.cloud_nics().len(),
        5,
        "the cloud created NICs the node does not know"
    );
    assert!(world.engine.with_state(|s| s.nics().is_empty()));
    world.crash_and_restart();
    assert_eq!(
        world.engine.with_state(|s| s.nics().len()),
        5,
        "adopted at startup"
    );
    world.settle();
    world.assert_settled(&BTreeMap::new());
}

#[test]
fn reboot_reprepares_nics_and_releases_dead_sandboxes() {
    let mut world = World::new(PoolConfig::default());
    world.add(&pod(1)).unwrap();
    world.add(&pod(2)).unwrap();
    world.host.reboot();
    world.crash_and_restart();
    // The sandboxes died with the node: the reconcile could not re-plumb them and released them.
    assert!(world.engine.with_state(|s| s.attachments().is_empty()));
    world.settle();
    world.assert_settled(&BTreeMap::new());
    assert_eq!(world.host.prepared().len(), world.cloud_nics().len());
}

#[test]
fn agent_restart_keeps_live_pods_on_their_nics() {
    let mut world = World::new(PoolConfig::default());
    for i in 0..3 {
        world.add(&pod(i)).unwrap();
    }
    let before = live(&world, &[0, 1, 2]);
    world.crash_and_restart();
    world.crash_and_restart();
    assert_eq!(live(&world, &[0, 1, 2]), before);
    block_on(world.engine.check(&pod(1).attachment())).expect("CHECK after restart");
    world.settle();
    world.assert_settled(&before);
}

#[test]
fn nic_missing_on_the_host_is_detached_and_attached_again_keeping_the_pod() {
    let world = World::new(PoolConfig::default());
    let (nic, ip) = world.add(&pod(7)).unwrap();
    world.host.remove_link(&nic);
    assert!(
        block_on(world.engine.check(&pod(7).attachment())).is_err(),
        "CHECK sees the table gone"
    );
    world.settle();
    let after = live(&world, &[7]);
    assert_eq!(after[&7], (nic, ip), "the pod keeps its NIC and address");
    assert!(world.cloud.requests(CloudAction::DetachNics) >= 1);
    block_on(world.engine.check(&pod(7).attachment())).expect("repaired");
    world.assert_settled(&after);
}

#[test]
fn pods_deleted_while_the_agent_was_down_are_released() {
    let mut world = World::new(PoolConfig::default());
    for i in 0..3 {
        world.add(&pod(i)).unwrap();
    }
    world.crash_and_restart();
    world.clock.advance(Duration::from_secs(61));
    let pods = vec![PodInfo {
        namespace: "default".into(),
        name: "pod-1".into(),
        pending: false,
        ip: None,
    }];
    block_on(world.engine.reconcile(Some(&pods), false)).unwrap();
    let remaining: Vec<_> = world
        .engine
        .with_state(|s| s.attachments().keys().cloned().collect());
    assert_eq!(remaining, vec![pod(1).attachment()]);
    world.settle();
    world.assert_settled(&live(&world, &[1]));
}

#[test]
fn exhausted_vxnet_falls_over_to_the_next_one() {
    let second = Vxnet {
        id: VxnetId::new("vxnet-sim2"),
        cidr: "172.16.2.0/24".parse().unwrap(),
        gateway: Ipv4Addr::new(172, 16, 2, 1),
        router: None,
    };
    // vxnet-sim1 has 4 addresses left after the primary NIC, too few for a batch of 5.
    let mut cloud = FakeCloudConfig {
        vxnet_capacity: Some(5),
        ..Default::default()
    };
    cloud.vxnets.push(second);
    let world = World::with_cloud(
        PoolConfig {
            min_free: 5,
            ..Default::default()
        },
        cloud,
    );
    world.settle();
    let vxnets: std::collections::BTreeSet<_> = world
        .engine
        .with_state(|s| s.nics().values().map(|n| n.vxnet.clone()).collect());
    assert!(vxnets.contains(&VxnetId::new("vxnet-sim2")), "{vxnets:?}");
    world.assert_settled(&BTreeMap::new());
}

#[test]
fn full_node_is_refused_without_asking_the_cloud_for_more() {
    let world = World::new(PoolConfig {
        max_nics: 3,
        min_free: 1,
        max_free: 3,
        ..Default::default()
    });
    for i in 0..3 {
        world.add(&pod(i)).unwrap();
    }
    let creates = world.cloud.requests(CloudAction::CreateNics);
    let err = world.add(&pod(9)).unwrap_err();
    assert_eq!(
        err,
        EngineError::Alloc(AllocError::NodeFull { max_nics: 3 })
    );
    assert!(!err.is_retryable());
    world.tick(60);
    assert_eq!(world.cloud.requests(CloudAction::CreateNics), creates);
    assert!(world.cloud.max_attached(&world.instance) <= 4);
}

#[test]
fn failed_plumbing_gives_the_nic_back_at_once() {
    let world = World::new(PoolConfig::default());
    world.settle();
    world.host.fail_next(
        hostnic_core::testing::HostOp::PlumbPod,
        HostErrorKind::Permanent,
    );
    assert!(matches!(world.add(&pod(1)), Err(EngineError::Host(_))));
    assert!(world.engine.with_state(|s| s.attachments().is_empty()));
    world.add(&pod(1)).expect("the next ADD works");
}

#[test]
fn a_crash_while_the_host_plumbs_restarts_with_the_pod_recorded_and_plumbs_it_again() {
    let mut world = World::new(PoolConfig::default());
    world.settle();
    // The checkpoint saying "plumbed" is written while the host plumbs; the agent
    // dies right after it, before the plumbing (made to fail here) is done.
    world.store.die_after(1);
    world.host.fail_next(
        hostnic_core::testing::HostOp::PlumbPod,
        HostErrorKind::Permanent,
    );
    assert!(world.add(&pod(1)).is_err());
    world.crash_and_restart();
    // The pod is known, and the startup reconcile plumbed it: CHECK passes.
    let att = world
        .engine
        .with_state(|s| s.attachment(&pod(1).attachment()).cloned())
        .expect("the attachment was recorded before the crash");
    let recorded = att.plumbed.expect("recorded as plumbed");
    assert_eq!(
        world.host.plumbed().get(&att.ip),
        Some(&recorded.host_veth),
        "re-plumbed as recorded"
    );
    block_on(world.engine.check(&pod(1).attachment())).expect("CHECK after restart");
    world.settle();
    world.assert_settled(&live(&world, &[1]));
}

#[test]
fn reconcile_keeps_add_and_del_out_only_once_the_cloud_has_answered() {
    let world = World::new(PoolConfig::default());
    world.settle();
    let taken = std::sync::atomic::AtomicBool::new(false);
    let exclusive = || async { taken.store(true, std::sync::atomic::Ordering::SeqCst) };
    // A start whose cloud does not answer: the host was never locked.
    world.cloud.fail_next(
        CloudAction::DescribeNics,
        CloudErrorKind::Retryable,
        FaultPoint::Before,
    );
    assert!(block_on(world.engine.reconcile_exclusive(None, true, exclusive())).is_err());
    assert!(!taken.load(std::sync::atomic::Ordering::SeqCst));
    // It answers: the host is compared under the caller's exclusivity.
    block_on(world.engine.reconcile_exclusive(None, true, exclusive())).unwrap();
    assert!(taken.load(std::sync::atomic::Ordering::SeqCst));
}

#[test]
fn checkpoint_write_failure_fails_the_add_and_keeps_nothing() {
    let world = World::new(PoolConfig::default());
    world.settle();
    world.store.fail_next(1);
    let err = world.add(&pod(1)).unwrap_err();
    assert!(matches!(err, EngineError::Store(_)), "{err}");
    assert!(world.engine.with_state(|s| s.attachments().is_empty()));
    assert!(world.host.plumbed().is_empty(), "plumbing undone");
}

#[test]
fn churn_does_not_stall_adds_behind_cooling_nics() {
    // Found by the lab: serial ADD+DEL pairs left 1 free + 9 cooling NICs, and the next
    // ADD waited for a cooldown to end because cooling NICs counted as pool supply.
    let world = World::new(PoolConfig::default());
    world.settle();
    for i in 0..10 {
        world.add(&pod(i)).unwrap();
        world.del(&pod(i)).unwrap();
        block_on(world.engine.run_pool());
    }
    let free = world
        .engine
        .with_state(|s| s.usage_counts(world.now()).free);
    assert!(
        free >= 5,
        "only {free} NICs ready after churn: the pool did not refill"
    );
    let start = world.now();
    world.add(&pod(99)).expect("served");
    assert_eq!(world.now(), start, "the ADD had to wait for the pool");
}

#[test]
fn a_full_disk_fails_the_add_naming_it_but_not_the_del_and_the_next_write_records_the_del() {
    let mut world = World::new(PoolConfig::default());
    world.settle();
    world.add(&pod(1)).unwrap();
    world.store.fail_next(1);
    let err = world.add(&pod(2)).unwrap_err();
    assert!(err.to_string().contains("disk"), "{err}");
    assert!(world.engine.store_failure().is_some());
    // DEL goes on in memory: a deleted pod must not hold its address.
    world.store.fail_next(1);
    world.del(&pod(1)).expect("DEL on a full disk");
    assert!(world.engine.store_failure().is_some(), "its write failed");
    assert!(world.engine.with_state(|s| s.attachments().is_empty()));
    assert!(world.host.plumbed().is_empty());
    // Room again: the next write (a pool round) records the DEL.
    world.tick(1);
    assert!(world.engine.store_failure().is_none());
    world.crash_and_restart();
    assert!(world.engine.with_state(|s| s.attachments().is_empty()));
}
