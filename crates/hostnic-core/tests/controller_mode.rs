//! The engine in controller mode: over a [`SuppliedCloud`] (no credentials, no
//! cloud call), its NICs supplied by a fake controller. The startup reconcile
//! reads the supply, pool rounds publish the node's request and prepare what was
//! supplied, ADD and DEL are served from the pool and keep being served while
//! the supplier is down, surplus is given back and forgotten once taken.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::executor::block_on;
use futures::stream::BoxStream;
use hostnic_core::config::PoolConfig;
use hostnic_core::engine::Engine;
use hostnic_core::fleet::{NicPhase, NodeDemand, NodeNic};
use hostnic_core::identity::NodeIdentity;
use hostnic_core::ports::{
    CloudErrorKind, CloudNics as _, NicSupply, Supplied, SupplyError, SupplyErrorKind,
};
use hostnic_core::supply::SuppliedCloud;
use hostnic_core::testing::{AttachHook as _, FakeHost, ManualClock, MemoryStore};
use hostnic_core::types::{Instance, InstanceId, NicId, PodKey, Timestamp, VxnetId};

/// A controller and an API server in one: the last request, a status, an outage.
#[derive(Default)]
struct FakeSupply {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    requests: Vec<NodeDemand>,
    status: Option<BTreeMap<NicId, NodeNic>>,
    down: bool,
}

impl FakeSupply {
    fn last(&self) -> NodeDemand {
        self.inner
            .lock()
            .unwrap()
            .requests
            .last()
            .cloned()
            .expect("a request")
    }
    fn requests(&self) -> usize {
        self.inner.lock().unwrap().requests.len()
    }
    fn set_down(&self, down: bool) {
        self.inner.lock().unwrap().down = down;
    }
    /// Answers the last request as the controller would: attaches what is
    /// wanted (on `host` too), takes back what is released.
    fn serve(&self, host: &FakeHost, instance: &InstanceId) {
        let mut inner = self.inner.lock().unwrap();
        let want = inner.requests.last().cloned().expect("a request");
        let status = inner.status.get_or_insert_with(BTreeMap::new);
        for id in &want.release {
            if status.remove(id).is_some() {
                host.detached(id, instance);
            }
        }
        let mut next = status.len() as u8;
        while (status.len() as u32) < want.want {
            next += 1;
            let id = NicId::from_mac([0x52, 0x54, 0, 0, 9, next]);
            if status.contains_key(&id) {
                continue;
            }
            host.attached(&id, instance);
            status.insert(
                id.clone(),
                NodeNic {
                    id,
                    ip: Ipv4Addr::new(172, 16, 2, 10 + next),
                    vxnet: VxnetId::new("vxnet-pods"),
                    cidr: Some("172.16.2.0/24".parse().unwrap()),
                    gateway: Some(Ipv4Addr::new(172, 16, 2, 1)),
                    phase: NicPhase::Attached,
                },
            );
        }
    }
}

#[async_trait]
impl NicSupply for FakeSupply {
    async fn request(&self, request: &NodeDemand) -> Result<(), SupplyError> {
        let mut inner = self.inner.lock().unwrap();
        if inner.down {
            return Err(SupplyError::new(
                SupplyErrorKind::Retryable,
                "API server down",
            ));
        }
        inner.requests.push(request.clone());
        Ok(())
    }
    async fn supplied(&self) -> Result<Supplied, SupplyError> {
        let inner = self.inner.lock().unwrap();
        if inner.down {
            return Err(SupplyError::new(
                SupplyErrorKind::Retryable,
                "API server down",
            ));
        }
        Ok(match &inner.status {
            None => Supplied::default(),
            Some(s) => Supplied {
                answered: true,
                nics: s.values().cloned().collect(),
                refusal: None,
                ready: true,
            },
        })
    }
    fn changes(&self) -> BoxStream<'static, Supplied> {
        Box::pin(futures::stream::pending())
    }
}

fn pod(i: usize) -> PodKey {
    PodKey {
        namespace: "default".into(),
        name: format!("pod-{i}"),
        container_id: format!("container-{i}"),
        ifname: "eth0".into(),
    }
}

struct World {
    supply: Arc<FakeSupply>,
    host: FakeHost,
    instance: InstanceId,
    engine: Engine<SuppliedCloud, FakeHost, ManualClock, MemoryStore>,
    clock: ManualClock,
}

fn world(config: PoolConfig) -> World {
    let instance = InstanceId::new("i-node1");
    let supply = Arc::new(FakeSupply::default());
    let cloud = SuppliedCloud::new(
        supply.clone(),
        Instance {
            id: instance.clone(),
            primary_nic: NicId::from_mac([0x52, 0x54, 0, 0, 0, 1]),
            primary_ip: Ipv4Addr::new(172, 16, 1, 5),
            primary_vxnet: VxnetId::new("primary"),
        },
        "172.16.1.0/24".parse().unwrap(),
        Ipv4Addr::new(172, 16, 1, 1),
        vec![VxnetId::new("vxnet-pods")],
        vec!["172.16.0.0/16".parse().unwrap()],
    );
    let identity = block_on(NodeIdentity::resolve(&cloud, &instance, &[], &[], false))
        .expect("the identity needs no cloud call");
    assert_eq!(identity.vxnets[0].cidr, "172.16.1.0/24".parse().unwrap());
    assert_eq!(
        identity.node.vpc_cidrs,
        vec!["172.16.0.0/16".parse().unwrap()]
    );
    let clock = ManualClock::new(Timestamp(1_700_000_000_000));
    let host = FakeHost::new(instance.clone(), &config.veth_prefix);
    let engine = Engine::open(
        cloud,
        host.clone(),
        clock.clone(),
        MemoryStore::new(),
        config,
        instance.clone(),
        identity.vxnets,
    )
    .unwrap();
    World {
        supply,
        host,
        instance,
        engine,
        clock,
    }
}

impl World {
    fn round(&self) {
        let round = block_on(self.engine.run_pool());
        assert!(round.failures.is_empty(), "{:?}", round.failures);
    }
    fn serve(&self) {
        self.supply.serve(&self.host, &self.instance);
    }
}

#[test]
fn a_node_asks_for_its_pool_prepares_what_it_is_supplied_and_serves_adds() {
    let w = world(PoolConfig::default());
    block_on(w.engine.reconcile(None, true)).expect("startup reads the supply, no cloud");
    w.round();
    let asked = w.supply.last();
    assert_eq!(asked.want, 5, "min_free");
    assert_eq!(asked.instance, w.instance);
    assert_eq!(
        asked.vxnets,
        vec![VxnetId::new("vxnet-pods")],
        "the configured vxnets"
    );
    w.serve();
    w.round();
    w.round();
    assert_eq!(w.host.prepared().len(), 5, "every supplied NIC prepared");
    let added = block_on(w.engine.add(&pod(1), "/ns/1")).expect("served from the pool");
    assert_eq!(
        added.nic_gateway,
        Ipv4Addr::new(172, 16, 2, 1),
        "the vxnet learned from the status"
    );
    assert!(w.host.plumbed().contains_key(&added.attachment.ip));
    // At rest the request does not change (the adapter writes nothing).
    w.round();
    w.serve();
    w.round();
    let at_rest = w.supply.last();
    w.round();
    assert_eq!(w.supply.last(), at_rest);
    assert_eq!(
        at_rest.want, 10,
        "one pod, four free: below min_free, refilled by a whole batch"
    );
}

#[test]
fn adds_and_dels_are_served_while_the_supplier_is_down() {
    let w = world(PoolConfig::default());
    block_on(w.engine.reconcile(None, true)).unwrap();
    w.round();
    w.serve();
    w.round();
    w.supply.set_down(true);
    let before = w.supply.requests();
    for i in 0..5 {
        block_on(w.engine.add(&pod(i), &format!("/ns/{i}"))).expect("ADD never waits");
        w.round();
    }
    for i in 0..5 {
        block_on(w.engine.del_pod(&pod(i), None)).expect("DEL never waits");
        w.round();
    }
    assert_eq!(w.supply.requests(), before, "nothing got through");
    w.clock.advance(std::time::Duration::from_secs(31));
    w.round();
    assert!(
        block_on(w.engine.add(&pod(9), "/ns/9")).is_ok(),
        "a cooled NIC is reused"
    );
    w.supply.set_down(false);
    w.round();
    assert!(w.supply.requests() > before, "asks again once it is back");
}

#[test]
fn surplus_is_released_on_the_host_given_back_and_forgotten() {
    let w = world(PoolConfig {
        min_free: 1,
        max_free: 2,
        batch_size: 1,
        min_lifetime: std::time::Duration::ZERO,
        ip_cooldown: std::time::Duration::ZERO,
        ..Default::default()
    });
    block_on(w.engine.reconcile(None, true)).unwrap();
    w.engine.set_demand(4);
    w.round();
    w.serve();
    w.round();
    assert_eq!(w.host.prepared().len(), 5);
    w.engine.set_demand(0);
    w.clock.advance(std::time::Duration::from_secs(1));
    w.round();
    let asked = w.supply.last();
    assert_eq!(asked.release.len(), 3, "{asked:?}");
    assert_eq!(asked.want, 2);
    assert_eq!(w.host.prepared().len(), 2, "released on the host first");
    w.serve();
    w.round();
    assert_eq!(w.engine.with_state(|s| s.nics().len()), 2);
    w.round();
    assert!(w.supply.last().release.is_empty());
}

#[test]
fn the_supplied_cloud_refuses_every_mutating_call() {
    let w = world(PoolConfig::default());
    let cloud = w.engine.cloud();
    let e = block_on(cloud.create_nics(&VxnetId::new("vxnet-pods"), 1, "x")).unwrap_err();
    assert_eq!(e.kind, CloudErrorKind::Permanent);
    assert!(block_on(cloud.attach_nics(&w.instance, &[])).is_err());
    assert!(block_on(cloud.detach_nics(&[])).is_err());
    assert!(block_on(cloud.delete_nics(&[])).is_err());
}
