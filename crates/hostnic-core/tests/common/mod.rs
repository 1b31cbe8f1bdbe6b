//! A node world made of the core's fakes, shared by the scenario and property tests.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::executor::block_on;
use hostnic_core::config::PoolConfig;
use hostnic_core::engine::{Engine, EngineError};
use hostnic_core::pool::{AllocError, Usage};
use hostnic_core::ports::Clock;
use hostnic_core::reconcile::PodsSeen;
use hostnic_core::testing::{FakeCloud, FakeCloudConfig, FakeHost, ManualClock, MemoryStore};
use hostnic_core::types::{
    CloudNicStatus, InstanceId, NicId, PodInfo, PodKey, Timestamp, Vxnet, managed_nic_name,
};

pub type TestEngine = Engine<FakeCloud, FakeHost, ManualClock, MemoryStore>;

pub struct World {
    pub clock: ManualClock,
    pub cloud: FakeCloud,
    pub host: FakeHost,
    pub store: MemoryStore,
    pub config: PoolConfig,
    pub instance: InstanceId,
    pub vxnets: Vec<Vxnet>,
    pub engine: TestEngine,
    pub restarts: u32,
}

pub fn pod(i: usize) -> PodKey {
    PodKey {
        namespace: "default".into(),
        name: format!("pod-{i}"),
        container_id: format!("container-{i}"),
        ifname: "eth0".into(),
    }
}

impl World {
    pub fn new(config: PoolConfig) -> Self {
        Self::with_cloud(config, FakeCloudConfig::default())
    }

    pub fn with_cloud(config: PoolConfig, cloud_config: FakeCloudConfig) -> Self {
        let clock = ManualClock::new(Timestamp(1_700_000_000_000));
        let instance = cloud_config.instances[0].0.clone();
        let vxnets = cloud_config.vxnets.clone();
        let cloud = FakeCloud::new(cloud_config, clock.clone());
        let host = FakeHost::new(instance.clone(), &config.veth_prefix);
        cloud.set_hook(Arc::new(host.clone()));
        let store = MemoryStore::new();
        let engine = Self::open(&cloud, &host, &clock, &store, &config, &instance, &vxnets);
        World {
            clock,
            cloud,
            host,
            store,
            config,
            instance,
            vxnets,
            engine,
            restarts: 0,
        }
    }

    fn open(
        cloud: &FakeCloud,
        host: &FakeHost,
        clock: &ManualClock,
        store: &MemoryStore,
        config: &PoolConfig,
        instance: &InstanceId,
        vxnets: &[Vxnet],
    ) -> TestEngine {
        Engine::open(
            cloud.clone(),
            host.clone(),
            clock.clone(),
            store.clone(),
            config.clone(),
            instance.clone(),
            vxnets.to_vec(),
        )
        .expect("the checkpoint written by the engine can always be read back")
    }

    /// The agent dies (no cleanup at all) and starts again from its checkpoint.
    pub fn crash_and_restart(&mut self) {
        self.store.revive();
        self.engine = Self::open(
            &self.cloud,
            &self.host,
            &self.clock,
            &self.store,
            &self.config,
            &self.instance,
            &self.vxnets,
        );
        self.restarts += 1;
        // A failing reconcile (injected faults) is retried by the agent's periodic loop.
        for _ in 0..5 {
            if block_on(self.engine.reconcile(None, true)).is_ok() {
                break;
            }
            self.clock.advance(Duration::from_secs(1));
        }
    }

    /// ADD as the agent serves it: when the pool is empty, grow it and try again (a few times).
    pub fn add(&self, p: &PodKey) -> Result<(NicId, Ipv4Addr), EngineError> {
        let netns = format!("/run/netns/{}", p.container_id);
        let mut last = None;
        for _ in 0..4 {
            match block_on(self.engine.add(p, &netns)) {
                Ok(added) => {
                    self.engine.set_demand(0);
                    return Ok((added.attachment.nic, added.attachment.ip));
                }
                Err(EngineError::Alloc(e @ AllocError::PoolEmpty { .. })) => {
                    self.engine.set_demand(1);
                    block_on(self.engine.run_pool());
                    self.clock.advance(Duration::from_secs(1));
                    last = Some(EngineError::Alloc(e));
                }
                Err(e) => {
                    self.engine.set_demand(0);
                    return Err(e);
                }
            }
        }
        self.engine.set_demand(0);
        Err(last.expect("loop ran"))
    }

    pub fn del(&self, p: &PodKey) -> Result<(), EngineError> {
        block_on(
            self.engine
                .del_pod(p, Some(&format!("/run/netns/{}", p.container_id))),
        )
        .map(|_| ())
    }

    /// The agent dies and starts again from whatever the store now holds, reconciling
    /// with the pod source's `pods` (`None`: no pod source).
    pub fn restart_with_pods(&mut self, pods: Option<&[PodInfo]>) {
        self.store.revive();
        self.engine = Self::open(
            &self.cloud,
            &self.host,
            &self.clock,
            &self.store,
            &self.config,
            &self.instance,
            &self.vxnets,
        );
        self.restarts += 1;
        let seen = PodsSeen::from_option(pods);
        for _ in 0..5 {
            if block_on(self.engine.reconcile_witnessed(seen, true, async {})).is_ok() {
                break;
            }
            self.clock.advance(Duration::from_secs(1));
        }
    }

    pub fn tick(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
        block_on(self.engine.run_pool());
    }

    /// Lets the node converge with a healthy cloud: reconcile and pool rounds, with time
    /// passing beyond every cooldown, lifetime and backoff, and beyond one cloud resync
    /// (a NIC the cloud made behind a lying answer is found at the latest there).
    pub fn settle(&self) {
        self.cloud.set_fault_rate(0.0);
        for i in 0..36 {
            if i == 30 {
                // Past the longest resync interval since any cloud call of the rounds before.
                self.clock.advance(self.config.cloud_resync.mul_f64(1.3));
            }
            let _ = block_on(self.engine.reconcile(None, false));
            block_on(self.engine.settle(20));
            self.clock.advance(Duration::from_secs(70));
        }
        let _ = block_on(self.engine.reconcile(None, false));
        block_on(self.engine.settle(20));
    }

    /// NICs named after this node in the cloud.
    pub fn cloud_nics(&self) -> BTreeMap<NicId, (CloudNicStatus, Option<InstanceId>, Ipv4Addr)> {
        let ours = managed_nic_name(&self.instance);
        self.cloud
            .nics()
            .into_iter()
            .filter(|n| n.name == ours)
            .map(|n| (n.id, (n.status, n.instance, n.ip)))
            .collect()
    }

    pub fn now(&self) -> Timestamp {
        self.engine.clock().now()
    }

    /// The invariants that must hold after every step.
    pub fn assert_step_invariants(&self, live: &BTreeMap<usize, (NicId, Ipv4Addr)>) {
        self.engine.with_state(|s| {
            if let Err(e) = s.check_invariants() {
                panic!("state invariant broken: {e}");
            }
            for (i, (nic, ip)) in live {
                let att = s
                    .attachment(&pod(*i).attachment())
                    .unwrap_or_else(|| panic!("pod {i} got ADD success but lost its attachment"));
                assert_eq!(&att.nic, nic, "pod {i} changed NIC");
                assert_eq!(&att.ip, ip, "pod {i} changed address");
            }
        });
        let nics: BTreeSet<_> = live.values().map(|(n, _)| n).collect();
        assert_eq!(nics.len(), live.len(), "a NIC was given to two live pods");
        let max_attached = self.cloud.max_attached(&self.instance);
        assert!(
            max_attached <= self.config.max_nics + 1,
            "cloud asked for {max_attached} NICs on the instance (max_nics {} + primary)",
            self.config.max_nics
        );
    }

    /// The invariants that must hold once the node has settled with a healthy cloud.
    pub fn assert_settled(&self, live: &BTreeMap<usize, (NicId, Ipv4Addr)>) {
        self.assert_step_invariants(live);
        self.assert_settled_without_keys(live);
    }

    /// [`World::assert_settled`] without looking attachments up by pod key.
    pub fn assert_settled_without_keys(&self, live: &BTreeMap<usize, (NicId, Ipv4Addr)>) {
        let cloud = self.cloud_nics();
        let now = self.now();
        let (state_nics, free, assigned) = self.engine.with_state(|s| {
            let free = s.nics().values().filter(|n| n.assignable(now)).count() as u32;
            let assigned = s
                .nics()
                .values()
                .filter(|n| matches!(n.usage, Usage::Assigned { .. }))
                .count() as u32;
            (
                s.nics().keys().cloned().collect::<BTreeSet<_>>(),
                free,
                assigned,
            )
        });
        assert_eq!(
            self.cloud.running_jobs(),
            0,
            "jobs still running after settling"
        );
        // No leak: every NIC of this node in the cloud is known, attached here, and used.
        let cloud_ids: BTreeSet<_> = cloud.keys().cloned().collect();
        assert_eq!(
            cloud_ids, state_nics,
            "cloud and node disagree on the node's NICs"
        );
        for (id, (status, instance, _)) in &cloud {
            assert_eq!(*status, CloudNicStatus::InUse, "NIC {id} left unattached");
            assert_eq!(
                instance.as_ref(),
                Some(&self.instance),
                "NIC {id} attached elsewhere"
            );
        }
        assert_eq!(
            assigned as usize,
            live.len(),
            "attachments beyond the live pods"
        );
        let room = self.config.max_nics - assigned;
        let min = self.config.min_free.min(room);
        let max = self.config.max_free;
        assert!(
            free >= min && free <= max,
            "free {free} outside [{min}, {max}] ({assigned} assigned)"
        );
        assert_eq!(
            free + assigned,
            cloud.len() as u32,
            "NICs neither free nor assigned"
        );
        // The host has exactly the live pods plumbed, and every NIC prepared.
        let plumbed: BTreeSet<Ipv4Addr> = self.host.plumbed().keys().copied().collect();
        let expected: BTreeSet<Ipv4Addr> = live.values().map(|(_, ip)| *ip).collect();
        assert_eq!(
            plumbed, expected,
            "host plumbing differs from the live pods"
        );
        assert_eq!(
            self.host.prepared(),
            cloud_ids,
            "host NIC preparation differs from the node's NICs"
        );
    }
}
