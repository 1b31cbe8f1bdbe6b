//! Properties of the pool in controller mode (its NICs supplied by the
//! controller through `supply_request` / `supplied`), against a supplier that
//! attaches part of what is asked, late, takes releases late, and whose answers
//! may be lost (the node keeps what it has).
//!
//! After every step: no cloud action is ever planned, the state's invariants
//! hold, a request never asks past `max_nics` nor gives back a NIC the supplier
//! did not give. After settling (the supplier answers everything): the request
//! is stable (the same twice; `want` equals what the node holds, so nothing is
//! written at rest), the warm pool is within `min_free..=max_free` plus demand,
//! and an ADD is served from it without the supplier.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use hostnic_core::config::PoolConfig;
use hostnic_core::fleet::{NicPhase, NodeName, NodeNic};
use hostnic_core::pool::{NodeState, PoolAction, Usage};
use hostnic_core::ports::Supplied;
use hostnic_core::types::{InstanceId, NicId, PodKey, Timestamp, Vxnet, VxnetId};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Add,
    Del(usize),
    Demand(u32),
    /// The supplier attaches up to this many of the NICs asked for.
    Supply(u32),
    /// The supplier takes the NICs given back.
    TakeBack,
    /// A status the node never receives (the API server is down).
    Lost,
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Add),
        2 => (0usize..64).prop_map(Op::Del),
        1 => (0u32..20).prop_map(Op::Demand),
        3 => (0u32..8).prop_map(Op::Supply),
        1 => Just(Op::TakeBack),
        1 => Just(Op::Lost),
        2 => (1u64..120).prop_map(Op::Tick),
    ]
}

struct World {
    state: NodeState,
    node: NodeName,
    /// The supplier's view of the node: its NICs and their phase.
    status: BTreeMap<NicId, NodeNic>,
    /// Every NIC the supplier ever gave.
    given: BTreeSet<NicId>,
    next: u32,
    now: u64,
    pods: Vec<PodKey>,
    serial: u32,
    want: u32,
    release: BTreeSet<NicId>,
}

impl World {
    fn new(cfg: PoolConfig) -> Self {
        let vxnet = Vxnet {
            id: VxnetId::new("vxnet-1"),
            cidr: "172.16.0.0/16".parse().unwrap(),
            gateway: Ipv4Addr::new(172, 16, 0, 1),
            router: None,
        };
        let mut state = NodeState::new(cfg, InstanceId::new("i-1"), vec![vxnet]);
        state.set_supplied_mode(true);
        Self {
            state,
            node: NodeName::new("node-1"),
            status: BTreeMap::new(),
            given: BTreeSet::new(),
            next: 0,
            now: 0,
            pods: Vec::new(),
            serial: 0,
            want: 0,
            release: BTreeSet::new(),
        }
    }

    fn ts(&self) -> Timestamp {
        Timestamp(self.now * 1000)
    }

    fn supplied(&self) -> Supplied {
        Supplied {
            answered: true,
            nics: self.status.values().cloned().collect(),
            refusal: None,
            ready: false,
        }
    }

    /// A pool round: every action is host-only and succeeds.
    fn round(&mut self) -> Result<(), TestCaseError> {
        let now = self.ts();
        for a in self.state.plan(now) {
            match a {
                PoolAction::Prepare { nic } => self.state.prepare_done(&nic.nic, Ok(()), now),
                PoolAction::Release { nics } => {
                    let ids: Vec<NicId> = nics.into_iter().map(|n| n.nic).collect();
                    self.state.released_on_host(&ids);
                }
                other => {
                    return Err(TestCaseError::fail(format!(
                        "cloud action in controller mode: {other:?}"
                    )));
                }
            }
        }
        self.ask()?;
        self.state.check_invariants().map_err(TestCaseError::fail)?;
        Ok(())
    }

    fn ask(&mut self) -> Result<(), TestCaseError> {
        let d = self.state.supply_request(&self.node, 0);
        prop_assert!(d.want <= d.max_nics, "want {} over max", d.want);
        for id in &d.release {
            prop_assert!(self.given.contains(id), "gives back {id} it never got");
        }
        self.want = d.want;
        self.release = d.release;
        Ok(())
    }

    /// The supplier attaches up to `n` of the NICs asked for.
    fn supply(&mut self, n: u32) {
        let kept = self
            .status
            .keys()
            .filter(|id| !self.release.contains(*id))
            .count() as u32;
        for _ in 0..self.want.saturating_sub(kept).min(n) {
            self.next += 1;
            let id = NicId::from_mac([
                0x52,
                0x54,
                0,
                (self.next >> 16) as u8,
                (self.next >> 8) as u8,
                self.next as u8,
            ]);
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 1, 0)) + self.next);
            self.status.insert(
                id.clone(),
                NodeNic {
                    id: id.clone(),
                    ip,
                    vxnet: VxnetId::new("vxnet-1"),
                    cidr: None,
                    gateway: None,
                    phase: NicPhase::Attached,
                },
            );
            self.given.insert(id);
        }
        self.deliver();
    }

    fn take_back(&mut self) {
        for id in &self.release {
            self.status.remove(id);
        }
        self.deliver();
    }

    fn deliver(&mut self) {
        let s = self.supplied();
        let now = self.ts();
        self.state.supplied(&s, now);
    }

    fn add(&mut self) {
        self.serial += 1;
        let pod = PodKey {
            namespace: "default".into(),
            name: format!("p{}", self.serial),
            container_id: format!("c{}", self.serial),
            ifname: "eth0".into(),
        };
        let now = self.ts();
        if self.state.assign(&pod, "/ns", now).is_ok() {
            self.pods.push(pod);
        }
    }

    fn del(&mut self, i: usize) {
        if self.pods.is_empty() {
            return;
        }
        let pod = self.pods.remove(i % self.pods.len());
        let now = self.ts();
        self.state.release(&pod.attachment(), now);
    }
}

fn config() -> impl Strategy<Value = PoolConfig> {
    (0u32..6, 0u32..8, 1u32..6, 4u32..40).prop_map(|(min_free, extra, batch, max_nics)| {
        PoolConfig {
            min_free,
            max_free: min_free + extra,
            batch_size: batch,
            max_nics,
            min_lifetime: Duration::from_secs(30),
            ip_cooldown: Duration::from_secs(10),
            ..Default::default()
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_supplied_pool_never_calls_the_cloud_and_settles_quiet(
        cfg in config(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut w = World::new(cfg.clone());
        w.round()?;
        for op in ops {
            match op {
                Op::Add => w.add(),
                Op::Del(i) => w.del(i),
                Op::Demand(d) => w.state.set_demand(d),
                Op::Supply(n) => w.supply(n),
                Op::TakeBack => w.take_back(),
                Op::Lost => {}
                Op::Tick(s) => w.now += s,
            }
            w.round()?;
        }
        // Settle: demand gone, time passes, the supplier answers everything.
        w.state.set_demand(0);
        for _ in 0..20 {
            w.now += 60;
            w.round()?;
            w.take_back();
            w.round()?;
            w.supply(u32::MAX);
            w.round()?;
        }
        let first = w.state.supply_request(&w.node, 0);
        let second = w.state.supply_request(&w.node, 0);
        prop_assert_eq!(&first, &second, "a request at rest is stable");
        let held = w.state.nics().values().filter(|n| n.usage != Usage::Retiring).count() as u32;
        prop_assert_eq!(first.want, held, "at rest the node asks for what it holds");
        prop_assert!(first.release.is_empty(), "nothing left to give back: {:?}", first.release);
        let free = w.state.nics().values().filter(|n| matches!(n.usage, Usage::Free { .. })).count() as u32;
        let room = cfg.max_nics.saturating_sub(w.pods.len() as u32);
        prop_assert!(free >= cfg.min_free.min(room), "free {free} below min_free {} (room {room})", cfg.min_free);
        prop_assert!(free <= cfg.max_free.max(cfg.batch_size), "free {free} above max_free {}", cfg.max_free);
        if free > 0 {
            let before = w.pods.len();
            w.add();
            prop_assert_eq!(w.pods.len(), before + 1, "an ADD is served from the warm pool");
        }
        w.state.check_invariants().map_err(TestCaseError::fail)?;
    }
}
