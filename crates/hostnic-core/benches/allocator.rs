//! Allocator throughput: CNI ADD + DEL pairs through the engine on the in-memory fakes,
//! with a warm pool. `cargo bench -p hostnic-core --features testing --bench allocator`.
//!
//! Two variants: with a store that only counts (the allocator itself), and with the
//! `MemoryStore` that serialises the JSON checkpoint on every change (what the agent does
//! before it writes the file).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::executor::block_on;
use hostnic_core::checkpoint::Checkpoint;
use hostnic_core::config::PoolConfig;
use hostnic_core::engine::Engine;
use hostnic_core::ports::{CheckpointStore, CloudNics, HostNetwork, StoreError};
use hostnic_core::testing::{FakeCloud, FakeCloudConfig, FakeHost, ManualClock, MemoryStore};
use hostnic_core::types::{PodKey, Timestamp};

#[derive(Default)]
struct CountingStore(AtomicU64);

impl CheckpointStore for CountingStore {
    fn load(&self) -> Result<Option<Checkpoint>, StoreError> {
        Ok(None)
    }
    fn save(&self, _: &Checkpoint) -> Result<(), StoreError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn warm_engine<S: CheckpointStore>(
    store: S,
    free: u32,
) -> Engine<FakeCloud, FakeHost, ManualClock, S> {
    let clock = ManualClock::new(Timestamp(0));
    let cloud_config = FakeCloudConfig::default();
    let instance = cloud_config.instances[0].0.clone();
    let vxnets = cloud_config.vxnets.clone();
    let cloud = FakeCloud::new(cloud_config, clock.clone());
    let host = FakeHost::new(instance.clone(), "nic");
    cloud.set_hook(Arc::new(host.clone()));
    // No cooldown, so one NIC can serve pod after pod; `free` NICs warm.
    let config = PoolConfig {
        min_free: free,
        max_free: free.max(10),
        ip_cooldown: Duration::ZERO,
        ..Default::default()
    };
    let engine =
        Engine::open(cloud, host, clock, store, config, instance, vxnets).expect("empty store");
    block_on(engine.settle(20));
    engine
}

fn add_del<C: CloudNics, H: HostNetwork, S: CheckpointStore>(
    engine: &Engine<C, H, ManualClock, S>,
    pods: &[PodKey],
    i: &mut usize,
) {
    let pod = &pods[*i % pods.len()];
    *i += 1;
    block_on(async {
        engine
            .add(pod, "/run/netns/bench")
            .await
            .expect("warm pool");
        engine.del(&pod.attachment(), None).await.expect("del");
    });
}

fn bench(c: &mut Criterion) {
    let pods: Vec<PodKey> = (0..1000)
        .map(|i| PodKey {
            namespace: "bench".into(),
            name: format!("pod-{i}"),
            container_id: format!("c-{i}"),
            ifname: "eth0".into(),
        })
        .collect();
    let mut group = c.benchmark_group("allocator");
    group.throughput(Throughput::Elements(1));
    // The default warm pool (5 to 10 NICs) and a full node (62 NICs): every change
    // snapshots every NIC into the checkpoint, so the node's size shows.
    for (label, free) in [("default pool", 5), ("62 NICs", 62)] {
        let engine = warm_engine(CountingStore::default(), free);
        let mut i = 0;
        group.bench_function(format!("add+del pair, {label}"), |b| {
            b.iter(|| add_del(&engine, &pods, &mut i))
        });
    }
    let engine = warm_engine(MemoryStore::new(), 5);
    let mut i = 0;
    group.bench_function("add+del pair, default pool, JSON checkpoint", |b| {
        b.iter(|| add_del(&engine, &pods, &mut i))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
