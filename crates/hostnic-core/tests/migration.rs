//! What the reconcile does with NICs it did not create (docs/migrate-from-hostnic-cni.md):
//! the original hostnic-cni names its NICs `hostnic_<instance-id>` as hostnic does,
//! and the reconcile cannot tell them apart. A NIC named after this node, attached to
//! it or to nothing, is adopted into the pool and handed to a pod; a NIC named after
//! another node, and the primary NIC, are never touched. The migration guide's order
//! (drain, delete the old NICs, then start the agent) rests on exactly this.

mod common;

use std::time::Duration;

use common::{World, pod};
use futures::executor::block_on;
use hostnic_core::config::PoolConfig;
use hostnic_core::ports::CloudNics;
use hostnic_core::types::{CloudNicStatus, InstanceId};

#[test]
fn nics_named_after_the_node_are_adopted_and_reused_and_no_other_is_touched() {
    // No pool of its own: whatever it uses comes from what it found.
    let world = World::new(PoolConfig {
        min_free: 0,
        max_free: 4,
        ip_cooldown: Duration::ZERO,
        min_lifetime: Duration::ZERO,
        ..PoolConfig::default()
    });
    let vxnet = world.vxnets[0].id.clone();
    let node = world.instance.clone();
    // What the original left: two NICs named after this node (one attached), one
    // named after another node.
    let theirs = block_on(world.cloud.create_nics(&vxnet, 2, "hostnic_i-sim00001")).unwrap();
    let elsewhere = block_on(world.cloud.create_nics(&vxnet, 1, "hostnic_i-sim00002")).unwrap();
    let job = block_on(world.cloud.attach_nics(&node, &[theirs[0].id.clone()])).unwrap();
    block_on(world.cloud.wait_job(&job, Duration::from_secs(60))).unwrap();
    let primary = world.cloud.primary_nic(&node).unwrap();

    let report = block_on(world.engine.reconcile(None, true)).unwrap();
    let mut adopted = report.adopted.clone();
    adopted.sort();
    let mut expected = vec![theirs[0].id.clone(), theirs[1].id.clone()];
    expected.sort();
    assert_eq!(
        adopted, expected,
        "both NICs named after the node are adopted"
    );

    // The attached one is prepared and given to the first pod that asks.
    world.settle();
    let (nic, ip) = world.add(&pod(0)).unwrap();
    assert!(
        theirs.iter().any(|t| t.id == nic && t.ip == ip),
        "pod 0 got {nic} {ip}, not one of the adopted NICs"
    );

    // Never touched: the other node's NIC (still there, unattached) and the primary.
    world.settle();
    let all = world.cloud.nics();
    let other = all.iter().find(|n| n.id == elsewhere[0].id).unwrap();
    assert_eq!(other.status, CloudNicStatus::Available);
    assert_eq!(other.instance, None::<InstanceId>);
    let p = all.iter().find(|n| n.id == primary.id).unwrap();
    assert_eq!(p.instance.as_ref(), Some(&node));
    assert!(
        !world
            .engine
            .with_state(|s| s.nics().contains_key(&elsewhere[0].id)),
        "another node's NIC entered the pool"
    );
}
