//! State-machine property tests: random sequences of CNI requests, pool ticks, cloud
//! faults, vanishing NICs, crashes and reboots, driven against the engine and the
//! fakes, with the invariants checked after every step and after settling.
//!
//! Cases per property: 256 by default, `PROPTEST_CASES` to change.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use common::World;
use futures::executor::block_on;
use hostnic_core::config::PoolConfig;
use hostnic_core::engine::EngineError;
use hostnic_core::ports::{CloudErrorKind, HostErrorKind};
use hostnic_core::testing::{CloudAction, FaultPoint, HostOp};
use hostnic_core::types::{NicId, PodKey};
use proptest::prelude::*;

const PODS: usize = 10;

#[derive(Debug, Clone)]
enum Op {
    Add(usize),
    Del(usize),
    DelTwice(usize),
    Check(usize),
    Gc(Vec<bool>),
    Tick(u64),
    CloudFault(CloudAction, CloudErrorKind, bool),
    FaultRate(u8),
    FailJobs(u32),
    SlowJobs(bool),
    HostFault(HostOp, HostErrorKind),
    VanishLink(usize),
    VanishNic(usize),
    Crash,
    Reboot,
}

fn cloud_action() -> impl Strategy<Value = CloudAction> {
    prop_oneof![
        Just(CloudAction::DescribeNics),
        Just(CloudAction::CreateNics),
        Just(CloudAction::AttachNics),
        Just(CloudAction::DetachNics),
        Just(CloudAction::DeleteNics),
        Just(CloudAction::WaitJob),
    ]
}

fn cloud_kind() -> impl Strategy<Value = CloudErrorKind> {
    prop_oneof![
        4 => Just(CloudErrorKind::Retryable),
        1 => Just(CloudErrorKind::QuotaExceeded),
        1 => Just(CloudErrorKind::Permanent),
        1 => Just(CloudErrorKind::NotFound),
    ]
}

fn host_fault() -> impl Strategy<Value = (HostOp, HostErrorKind)> {
    (
        prop_oneof![
            Just(HostOp::PrepareNic),
            Just(HostOp::PlumbPod),
            Just(HostOp::UnplumbPod),
            Just(HostOp::ReleaseNic),
            Just(HostOp::Inventory),
        ],
        prop_oneof![
            Just(HostErrorKind::Retryable),
            Just(HostErrorKind::Permanent)
        ],
    )
}

fn requests() -> BoxedStrategy<Op> {
    prop_oneof![
        6 => (0..PODS).prop_map(Op::Add),
        4 => (0..PODS).prop_map(Op::Del),
        1 => (0..PODS).prop_map(Op::Check),
        3 => (0u64..90).prop_map(Op::Tick),
    ]
    .boxed()
}

fn faults() -> BoxedStrategy<Op> {
    prop_oneof![
        8 => requests(),
        // An answer lost after its effect is a transport failure (retryable); the
        // cloud refuses (quota, permission, not found) before acting, as the API
        // documents, so a refusal is never injected after the effect.
        2 => (cloud_action(), cloud_kind(), any::<bool>()).prop_map(|(a, k, after)| {
            Op::CloudFault(a, k, after && k == CloudErrorKind::Retryable)
        }),
        1 => (0u8..30).prop_map(Op::FaultRate),
        1 => (1u32..3).prop_map(Op::FailJobs),
        1 => any::<bool>().prop_map(Op::SlowJobs),
        1 => (0usize..16).prop_map(Op::VanishLink),
        1 => (0usize..16).prop_map(Op::VanishNic),
    ]
    .boxed()
}

fn crashes() -> BoxedStrategy<Op> {
    prop_oneof![
        8 => faults(),
        2 => host_fault().prop_map(|(op, k)| Op::HostFault(op, k)),
        2 => Just(Op::Crash),
        1 => Just(Op::Reboot),
    ]
    .boxed()
}

fn idempotency() -> BoxedStrategy<Op> {
    prop_oneof![
        5 => (0..PODS).prop_map(Op::Add),
        2 => (0..PODS).prop_map(Op::Del),
        3 => (0..PODS).prop_map(Op::DelTwice),
        2 => proptest::collection::vec(any::<bool>(), PODS).prop_map(Op::Gc),
        2 => (0u64..40).prop_map(Op::Tick),
        1 => Just(Op::Crash),
    ]
    .boxed()
}

fn pool_config() -> impl Strategy<Value = PoolConfig> {
    (0u32..4, 0u32..4, 2u32..12, 1u32..6).prop_map(|(min_free, extra, max_nics, batch)| {
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

/// The model: which pods hold which NIC, and the generation of each pod slot (a pod
/// whose NIC vanished or that was deleted comes back as a new sandbox).
struct Model {
    live: BTreeMap<usize, (NicId, Ipv4Addr)>,
    generation: [u32; PODS],
    /// The healthy-cloud property also checks that CHECK passes for every live pod.
    strict_check: bool,
}

impl Model {
    fn pod(&self, i: usize) -> PodKey {
        let mut p = common::pod(i);
        p.container_id = format!("container-{i}-{}", self.generation[i]);
        p
    }

    /// Live pods keyed by the slot, under the names the world uses.
    fn live_for_world(&self) -> BTreeMap<usize, (NicId, Ipv4Addr)> {
        self.live.clone()
    }
}

fn run(config: PoolConfig, ops: Vec<Op>, strict_check: bool) -> Result<(), TestCaseError> {
    let mut world = World::new(config);
    let mut model = Model {
        live: BTreeMap::new(),
        generation: [0; PODS],
        strict_check,
    };
    // The world's helpers name pods by slot only; keep a view keyed by the real key.
    let check_step = |world: &World, model: &Model| {
        world.engine.with_state(|s| {
            s.check_invariants()
                .map_err(|e| TestCaseError::fail(format!("state invariant: {e}")))?;
            for (i, (nic, ip)) in &model.live {
                let att = s
                    .attachment(&model.pod(*i).attachment())
                    .ok_or_else(|| TestCaseError::fail(format!("pod {i} lost its attachment")))?;
                prop_assert_eq!(&att.nic, nic, "pod {} changed NIC", i);
                prop_assert_eq!(&att.ip, ip);
            }
            let attached: BTreeSet<_> = s.attachments().keys().cloned().collect();
            let expected: BTreeSet<_> = model
                .live
                .keys()
                .map(|i| model.pod(*i).attachment())
                .collect();
            prop_assert_eq!(
                attached,
                expected,
                "attachments differ from the pods that got ADD success"
            );
            Ok(())
        })?;
        let nics: BTreeSet<_> = model.live.values().map(|(n, _)| n).collect();
        prop_assert_eq!(nics.len(), model.live.len(), "a NIC was given to two pods");
        let max = world.cloud.max_attached(&world.instance);
        prop_assert!(
            max <= world.config.max_nics + 1,
            "{} NICs requested on the instance",
            max
        );
        // Batches follow demand: a CreateNics never asks for more than the node may
        // hold; the others carry what the round has (adopted leftovers over the cap
        // included), never beyond the API's limit.
        let created = world.cloud.max_batch(CloudAction::CreateNics);
        prop_assert!(
            created <= world.config.max_nics as usize,
            "CreateNics batch of {}",
            created
        );
        for action in [
            CloudAction::AttachNics,
            CloudAction::DetachNics,
            CloudAction::DeleteNics,
        ] {
            let batch = world.cloud.max_batch(action);
            prop_assert!(
                batch <= hostnic_core::pool::MAX_CREATE as usize,
                "{:?} batch of {}",
                action,
                batch
            );
        }
        Ok(())
    };

    for op in ops {
        match op {
            Op::Add(i) => {
                let p = model.pod(i);
                match world.add(&p) {
                    Ok((nic, ip)) => {
                        if let Some((old_nic, old_ip)) = model.live.get(&i) {
                            prop_assert_eq!(
                                (old_nic, old_ip),
                                (&nic, &ip),
                                "repeated ADD changed the NIC"
                            );
                        }
                        model.live.insert(i, (nic, ip));
                    }
                    Err(e) => {
                        prop_assert!(
                            !model.live.contains_key(&i),
                            "ADD of a live pod failed: {}",
                            e
                        );
                    }
                }
            }
            Op::Del(i) | Op::DelTwice(i) => {
                let p = model.pod(i);
                match world_del(&world, &p) {
                    Ok(()) => {
                        if model.live.remove(&i).is_some() {
                            model.generation[i] += 1;
                        }
                        if matches!(op, Op::DelTwice(_)) {
                            let before = world.engine.with_state(|s| s.attachments().clone());
                            world_del(&world, &p).map_err(|e| {
                                TestCaseError::fail(format!("second DEL failed: {e}"))
                            })?;
                            let after = world.engine.with_state(|s| s.attachments().clone());
                            prop_assert_eq!(before, after, "a repeated DEL changed the state");
                        }
                    }
                    Err(e) => prop_assert!(
                        e.is_retryable() || matches!(e, EngineError::Host(_)),
                        "DEL failed: {}",
                        e
                    ),
                }
            }
            Op::Check(i) => {
                let p = model.pod(i);
                let r = block_on(world.engine.check(&p.attachment()));
                if model.live.contains_key(&i) {
                    if model.strict_check {
                        r.map_err(|e| TestCaseError::fail(format!("CHECK of live pod {i}: {e}")))?;
                    }
                } else {
                    prop_assert!(
                        matches!(r, Err(EngineError::UnknownAttachment(_))),
                        "CHECK of unknown pod: {:?}",
                        r
                    );
                }
            }
            Op::Gc(keep) => {
                let valid: BTreeSet<_> = model
                    .live
                    .keys()
                    .filter(|i| keep[**i])
                    .map(|i| model.pod(*i).attachment())
                    .collect();
                let first = block_on(world.engine.gc(&valid));
                let remaining: BTreeSet<_> = world
                    .engine
                    .with_state(|s| s.attachments().keys().cloned().collect());
                for v in &valid {
                    prop_assert!(remaining.contains(v), "GC released a valid attachment");
                }
                let gone: Vec<usize> = model
                    .live
                    .keys()
                    .copied()
                    .filter(|i| !remaining.contains(&model.pod(*i).attachment()))
                    .collect();
                for i in gone {
                    model.live.remove(&i);
                    model.generation[i] += 1;
                }
                if first.is_ok() {
                    let second = block_on(world.engine.gc(&valid))
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert!(second.is_empty(), "a repeated GC released {:?}", second);
                }
            }
            Op::Tick(secs) => world.tick(secs),
            Op::CloudFault(action, kind, after) => {
                let point = if after {
                    FaultPoint::After
                } else {
                    FaultPoint::Before
                };
                world.cloud.fail_next(action, kind, point);
            }
            Op::FaultRate(pct) => world.cloud.set_fault_rate(f64::from(pct) / 100.0),
            Op::FailJobs(n) => world.cloud.fail_next_jobs(n),
            Op::SlowJobs(slow) => {
                world
                    .cloud
                    .set_attach_latency(Duration::from_secs(if slow { 45 } else { 2 }))
            }
            Op::HostFault(op, kind) => world.host.fail_next(op, kind),
            Op::VanishLink(k) => {
                if let Some(nic) = world.host.links().into_iter().nth(k) {
                    world.host.remove_link(&nic);
                }
            }
            Op::VanishNic(k) => {
                let ids: Vec<NicId> = world.cloud_nics().into_keys().collect();
                if let Some(nic) = ids.get(k) {
                    world.cloud.vanish(nic);
                    // The periodic reconcile notices; the pod on it (if any) loses its address.
                    let rate = 0.0;
                    world.cloud.set_fault_rate(rate);
                    // The node notices: the NIC's link vanished from the host, so the
                    // reconcile asks the cloud (a failed ask backs off, so time passes
                    // between tries); a NIC the pool was already re-attaching is found
                    // gone by its detach, and the next reconcile asks the cloud.
                    let mut done = false;
                    for _ in 0..10 {
                        let r = block_on(world.engine.reconcile(None, false));
                        if r.is_ok() && world.engine.with_state(|s| !s.nics().contains_key(nic)) {
                            done = true;
                            break;
                        }
                        if matches!(r, Ok(ref r) if r.cloud.is_none() && r.cloud_error.is_none()) {
                            // Nothing local disagreed (the pool is re-attaching it).
                            block_on(world.engine.run_pool());
                        }
                        world.clock.advance(Duration::from_secs(61));
                    }
                    prop_assert!(done, "reconcile kept failing");
                    let victims: Vec<usize> = model
                        .live
                        .iter()
                        .filter(|(_, (n, _))| n == nic)
                        .map(|(i, _)| *i)
                        .collect();
                    for i in victims {
                        model.live.remove(&i);
                        model.generation[i] += 1;
                    }
                }
            }
            Op::Crash => world.crash_and_restart(),
            Op::Reboot => {
                // Sandboxes die with the node; the runtime recreates pods as new sandboxes.
                world.host.reboot();
                world.crash_and_restart();
                // The runtime DELs the dead sandboxes (retrying until DEL succeeds).
                for i in std::mem::take(&mut model.live).into_keys() {
                    let p = model.pod(i);
                    let deleted = (0..10).any(|_| world_del(&world, &p).is_ok());
                    prop_assert!(deleted, "DEL of a dead sandbox kept failing");
                    model.generation[i] += 1;
                }
            }
        }
        check_step(&world, &model)?;
    }

    world.settle();
    check_step(&world, &model)?;
    // Settled: no leaks, pool within bounds, host exactly as the pods.
    let live = model.live_for_world();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_settled_keys(&world, &model, &live)
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

fn world_del(world: &World, p: &PodKey) -> Result<(), EngineError> {
    block_on(world.engine.del(
        &p.attachment(),
        Some(&format!("/run/netns/{}", p.container_id)),
    ))
    .map(|_| ())
}

fn assert_settled_keys(world: &World, _model: &Model, live: &BTreeMap<usize, (NicId, Ipv4Addr)>) {
    // `assert_settled` looks pods up by their addresses and NICs only, so slot keys suffice.
    world.assert_settled_without_keys(live);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() })]

    /// With a healthy cloud: no NIC is ever given to two pods, every ADD success keeps its
    /// NIC until DEL, CHECK passes for live pods, and the node settles with no leaked NIC
    /// and a warm pool within [min_free, max_free].
    #[test]
    fn allocation_never_double_assigns_and_settles_without_leaks(
        config in pool_config(),
        ops in proptest::collection::vec(requests(), 1..40),
    ) {
        run(config, ops, true)?;
    }

    /// Cloud faults (errors before or after the effect, failed and slow jobs, random
    /// fault rates, NICs or links vanishing) are retried or reported and never leak a NIC.
    #[test]
    fn cloud_faults_are_retried_or_reported_and_never_leak(
        config in pool_config(),
        ops in proptest::collection::vec(faults(), 1..40),
    ) {
        run(config, ops, false)?;
    }

    /// The agent crashing (or the node rebooting) at any step loses no pod's NIC and never
    /// hands a NIC out twice; the restarted agent converges to the same guarantees.
    #[test]
    fn crash_or_reboot_at_any_step_loses_no_pod_and_hands_out_no_nic_twice(
        config in pool_config(),
        ops in proptest::collection::vec(crashes(), 1..40),
    ) {
        run(config, ops, false)?;
    }

    /// DEL and GC are idempotent: repeating them changes nothing, GC keeps every valid
    /// attachment, across crashes.
    #[test]
    fn del_and_gc_are_idempotent(
        config in pool_config(),
        ops in proptest::collection::vec(idempotency(), 1..40),
    ) {
        run(config, ops, true)?;
    }

    /// A cold start of `n` pods is served with one CreateNics and one AttachNics, whatever
    /// `batch_size` (the smallest refill) is, and without overshooting a batch.
    #[test]
    fn cold_start_batches_cloud_calls(n in 1u32..62, batch in 1u32..8) {
        let config = PoolConfig { min_free: 0, max_free: 62, batch_size: batch, ..Default::default() };
        let world = World::new(config);
        world.engine.set_demand(n);
        block_on(world.engine.settle(10));
        prop_assert_eq!(world.cloud.requests(CloudAction::CreateNics), 1);
        prop_assert_eq!(world.cloud.requests(CloudAction::AttachNics), 1);
        let ready = world.engine.with_state(|s| s.assignable(world.now())) as u32;
        prop_assert!(ready >= n && ready <= n.max(batch), "{} ready for {} pods", ready, n);
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}
