//! The recovery property (issue 20): a checkpoint that is lost, rolled back to any
//! earlier generation, or corrupted at any byte never cuts a live pod off and never
//! gives an address a live pod holds to another pod. The node rebuilds from its
//! witnesses: the host's plumbing, the pod source and the cloud.
//!
//! Cases: 256 by default, `PROPTEST_CASES` to change.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use common::World;
use futures::executor::block_on;
use hostnic_core::checkpoint::RecoveryReason;
use hostnic_core::config::PoolConfig;
use hostnic_core::engine::EngineError;
use hostnic_core::testing::FakePods;
use hostnic_core::types::{NicId, PodInfo, PodKey};
use proptest::prelude::*;

const PODS: usize = 8;

#[derive(Debug, Clone)]
enum Op {
    Add(usize),
    Del(usize),
    Tick(u64),
}

#[derive(Debug, Clone)]
enum Fault {
    /// The state directory was deleted.
    Lost,
    /// The checkpoint is one written earlier (index into every one written, modulo).
    RolledBack(usize),
    /// One bit of one byte of the checkpoint changed (byte index modulo its length).
    Corrupted { at: usize, bit: u8 },
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            6 => (0..PODS).prop_map(Op::Add),
            3 => (0..PODS).prop_map(Op::Del),
            2 => (0u64..90).prop_map(Op::Tick),
        ],
        1..30,
    )
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        Just(Fault::Lost),
        any::<usize>().prop_map(Fault::RolledBack),
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Fault::Corrupted { at, bit }),
    ]
}

fn pool_config() -> impl Strategy<Value = PoolConfig> {
    (0u32..4, 0u32..4, 3u32..12, 1u32..6).prop_map(|(min_free, extra, max_nics, batch)| {
        PoolConfig {
            min_free,
            max_free: min_free + extra,
            max_nics,
            batch_size: batch,
            job_timeout: Duration::from_secs(30),
            ..Default::default()
        }
    })
}

/// A live pod: its key, NIC, address and host veth.
#[derive(Debug, Clone)]
struct Live {
    key: PodKey,
    nic: NicId,
    ip: Ipv4Addr,
}

fn key(i: usize, generation: u32) -> PodKey {
    let mut p = common::pod(i);
    p.container_id = format!("container-{i}-{generation}");
    p
}

fn netns(p: &PodKey) -> String {
    format!("/run/netns/{}", p.container_id)
}

fn run(
    config: PoolConfig,
    ops: Vec<Op>,
    fault: Fault,
    with_source: bool,
) -> Result<(), TestCaseError> {
    let mut world = World::new(config);
    let source = FakePods::new();
    let mut live: BTreeMap<usize, Live> = BTreeMap::new();
    let mut generation = [0u32; PODS];

    // A node at work: pods come and go; the runtime destroys a sandbox after its DEL,
    // and the pod source follows (the kubelet reports each pod's address).
    for op in ops {
        match op {
            Op::Add(i) => {
                let p = key(i, generation[i]);
                if let Ok((nic, ip)) = world.add(&p) {
                    if with_source {
                        source.upsert(PodInfo {
                            namespace: p.namespace.clone(),
                            name: p.name.clone(),
                            pending: false,
                            ip: Some(ip),
                        });
                    }
                    live.insert(i, Live { key: p, nic, ip });
                }
            }
            Op::Del(i) => {
                let p = key(i, generation[i]);
                world
                    .del(&p)
                    .map_err(|e| TestCaseError::fail(format!("DEL before the fault: {e}")))?;
                world.host.remove_netns(&netns(&p));
                source.delete(&p.namespace, &p.name);
                if live.remove(&i).is_some() {
                    generation[i] += 1;
                }
            }
            Op::Tick(secs) => world.tick(secs),
        }
    }
    let plumbed_before = world.host.plumbed();
    for l in live.values() {
        prop_assert!(
            plumbed_before.contains_key(&l.ip),
            "pod at {} not plumbed",
            l.ip
        );
    }

    // The fault, then the agent starts again.
    let written = world.store.bytes().is_some();
    match fault {
        Fault::Lost => world.store.lose(),
        Fault::RolledBack(k) => {
            let n = world.store.history_len();
            if n > 0 {
                world.store.roll_back(k % n);
            }
        }
        Fault::Corrupted { at, bit } => world.store.corrupt(at, 1 << bit),
    }
    let listed = block_on(hostnic_core::ports::PodSource::pods(&source)).unwrap();
    world.restart_with_pods(with_source.then_some(&listed[..]));
    let recovery = world.engine.recovery();
    if written && matches!(fault, Fault::Corrupted { .. }) {
        // Every changed byte is found: never taken for another checkpoint.
        prop_assert!(
            matches!(
                recovery.as_ref().map(|r| r.reason),
                Some(RecoveryReason::Corrupt | RecoveryReason::Torn)
            ),
            "corruption not reported: {:?}",
            recovery
        );
    }

    // 1. Nothing a live pod uses was unplumbed: its veth still carries its address.
    let plumbed = world.host.plumbed();
    for (i, l) in &live {
        prop_assert_eq!(
            plumbed.get(&l.ip),
            plumbed_before.get(&l.ip),
            "live pod {} at {} was unplumbed ({:?})",
            i,
            l.ip,
            recovery
        );
    }
    // 2. The state holds every live pod at its address on its NIC, nothing twice.
    world.engine.with_state(|s| {
        s.check_invariants()
            .map_err(|e| TestCaseError::fail(format!("state invariant: {e}")))?;
        for (i, l) in &live {
            let held = s.attachments().values().find(|a| a.ip == l.ip);
            prop_assert!(held.is_some(), "live pod {} at {} not held", i, l.ip);
            prop_assert_eq!(&held.unwrap().nic, &l.nic);
        }
        Ok(())
    })?;
    let live_ips: BTreeSet<Ipv4Addr> = live.values().map(|l| l.ip).collect();

    // 3. New pods never get a live pod's address (the fake host would also refuse to
    //    plumb an address twice).
    let mut fresh = BTreeMap::new();
    for j in 0..3 {
        let p = key(PODS + j, 0);
        match world.add(&p) {
            Ok((nic, ip)) => {
                prop_assert!(!live_ips.contains(&ip), "{} given to a new pod", ip);
                fresh.insert(PODS + j, (nic, ip));
            }
            Err(EngineError::Alloc(_)) => {}
            Err(e) => return Err(TestCaseError::fail(format!("new ADD: {e}"))),
        }
    }
    let fresh_ips: BTreeSet<Ipv4Addr> = fresh.values().map(|(_, ip)| *ip).collect();
    prop_assert_eq!(fresh_ips.len(), fresh.len(), "an address given twice");

    // 4. The runtime's CHECK and DEL of the live pods work by their own keys (a pod
    //    rebuilt from the host is found by its veth), and the node settles clean.
    for _ in 0..4 {
        world.tick(70);
    }
    for (i, l) in &live {
        block_on(world.engine.check_pod(&l.key, &netns(&l.key)))
            .map_err(|e| TestCaseError::fail(format!("CHECK of live pod {i}: {e}")))?;
    }
    for (i, l) in &live {
        world
            .del(&l.key)
            .map_err(|e| TestCaseError::fail(format!("DEL of live pod {i}: {e}")))?;
        prop_assert!(
            !world.host.plumbed().contains_key(&l.ip),
            "pod {} still plumbed after DEL",
            i
        );
        world.host.remove_netns(&netns(&l.key));
    }
    world.settle();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        world.assert_settled_without_keys(&fresh)
    }));
    if let Err(panic) = result {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        return Err(TestCaseError::fail(msg));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() })]

    /// For any sequence of ADD and DEL, and a checkpoint lost, rolled back to any
    /// earlier generation, or corrupted at any byte (with or without a pod source):
    /// the restarted node holds every pod the witnesses show alive at its address,
    /// unplumbs nothing a live pod uses, never assigns an address twice, answers the
    /// runtime's CHECK and DEL of those pods, and settles without a leak.
    #[test]
    fn a_lost_rolled_back_or_corrupted_checkpoint_cuts_no_pod_off_and_gives_no_address_twice(
        config in pool_config(),
        ops in ops(),
        fault in fault(),
        with_source in any::<bool>(),
    ) {
        run(config, ops, fault, with_source)?;
    }
}

/// The probe, replayed exactly: five pods up, the checkpoint lost; the next
/// ADD must not get any of their addresses.
#[test]
fn five_pods_survive_a_deleted_state_directory_and_keep_their_addresses() {
    let mut world = World::new(PoolConfig::default());
    let pods: Vec<PodKey> = (1..=5).map(|i| key(i, 0)).collect();
    let ips: BTreeSet<Ipv4Addr> = pods.iter().map(|p| world.add(p).unwrap().1).collect();
    world.store.lose();
    world.restart_with_pods(None);
    let recovery = world.engine.recovery().expect("reported");
    assert_eq!(recovery.reason, RecoveryReason::Missing);
    assert_eq!(recovery.pods.len(), 5, "{recovery}");
    assert_eq!(
        world
            .host
            .plumbed()
            .keys()
            .copied()
            .collect::<BTreeSet<_>>(),
        ips
    );
    for _ in 0..3 {
        world.tick(70);
    }
    let (_, ip) = world.add(&key(6, 0)).unwrap();
    assert!(!ips.contains(&ip), "{ip} given out twice");
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}
