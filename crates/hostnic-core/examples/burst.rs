//! Embedding hostnic's allocation logic as a library: a node made of the core's
//! in-memory fakes serves a burst of pods, deletes them, and reports what it asked
//! the cloud. Run with `cargo run -p hostnic-core --features testing --example burst`.

use std::sync::Arc;
use std::time::Duration;

use futures::executor::block_on;
use hostnic_core::config::PoolConfig;
use hostnic_core::engine::{Engine, EngineError};
use hostnic_core::pool::AllocError;
use hostnic_core::ports::Clock;
use hostnic_core::testing::{
    CloudAction, FakeCloud, FakeCloudConfig, FakeHost, ManualClock, MemoryStore,
};
use hostnic_core::types::{PodKey, Timestamp};

fn main() -> Result<(), EngineError> {
    let clock = ManualClock::new(Timestamp(0));
    let cloud_config = FakeCloudConfig {
        attach_latency: Duration::from_secs(1),
        ..Default::default()
    };
    let instance = cloud_config.instances[0].0.clone();
    let vxnets = cloud_config.vxnets.clone();
    let cloud = FakeCloud::new(cloud_config, clock.clone());
    let host = FakeHost::new(instance.clone(), "nic");
    cloud.set_hook(Arc::new(host.clone()));
    let config = PoolConfig::default();
    let engine = Engine::open(
        cloud.clone(),
        host,
        clock.clone(),
        MemoryStore::new(),
        config,
        instance,
        vxnets,
    )?;

    let pods: Vec<PodKey> = (0..50)
        .map(|i| PodKey {
            namespace: "demo".into(),
            name: format!("web-{i}"),
            container_id: format!("sandbox-{i}"),
            ifname: "eth0".into(),
        })
        .collect();

    block_on(async {
        engine.reconcile(None, true).await?;
        let mut served = 0;
        let mut full = 0;
        for pod in &pods {
            loop {
                match engine
                    .add(pod, &format!("/run/netns/{}", pod.container_id))
                    .await
                {
                    Ok(added) => {
                        served += 1;
                        println!(
                            "{:<12} -> {} on NIC {} (table {})",
                            pod.name,
                            added.attachment.ip,
                            added.attachment.nic,
                            added.attachment.table
                        );
                        break;
                    }
                    Err(EngineError::Alloc(AllocError::PoolEmpty { .. })) => {
                        engine.set_demand(1);
                        engine.run_pool().await;
                    }
                    Err(EngineError::Alloc(AllocError::NodeFull { max_nics })) => {
                        println!(
                            "{:<12} -> refused: the node holds at most {max_nics} pod NICs",
                            pod.name
                        );
                        full += 1;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        engine.set_demand(0);
        for pod in &pods {
            engine.del(&pod.attachment(), None).await?;
        }
        clock.advance(Duration::from_secs(3600));
        engine.settle(20).await;
        println!();
        println!(
            "served {served} pods, refused {full}, in {:?} of simulated time",
            Duration::from_millis(clock.now().0)
        );
        for action in [
            CloudAction::CreateNics,
            CloudAction::AttachNics,
            CloudAction::DetachNics,
            CloudAction::DeleteNics,
        ] {
            println!("{action:?}: {} calls", cloud.requests(action));
        }
        let counts = engine.with_state(|s| s.usage_counts(clock.now()));
        println!("pool after the burst: {counts:?}");
        Ok(())
    })
}
