//! The fleet planner's port on the client, against the simulator over HTTP: the
//! batched describes, one-page listings, the running-jobs listing a new leader
//! adopts from, and a few nodes served end to end by the planner.

use std::time::Duration;

use hostnic_core::fleet::{
    Fleet, FleetCloud, FleetConfig, JobAction, JobProgress, JobQuery, NicQuery, NodeDemand,
    RoundBudget, execute,
};
use hostnic_core::ports::{Clock, SystemClock};
use hostnic_core::types::{InstanceId, VxnetId};
use hostnic_qingcloud::sim::{SimConfig, SimHandle, Simulator};
use hostnic_qingcloud::{ClientOptions, QingCloudClient, Secret};

const KEY: &str = "FLEETKEY";
const SECRET: &str = "FLEETSECRET";

fn client(sim: &SimHandle) -> QingCloudClient {
    QingCloudClient::for_url(
        &sim.url(),
        KEY,
        Secret::new(SECRET),
        "pek3a",
        ClientOptions {
            budget: None,
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

async fn sim(attach_latency: Duration) -> SimHandle {
    Simulator::start(
        SimConfig {
            job_latency: Duration::from_millis(5),
            attach_latency,
            ..SimConfig::new(KEY, SECRET)
        },
        None,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn describes_answer_what_exists_in_one_call_each() {
    let sim = sim(Duration::from_millis(10)).await;
    let cloud = client(&sim);
    let found = cloud
        .describe_instances(&[InstanceId::new("i-sim00001"), InstanceId::new("i-nosuch")])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].primary_vxnet, VxnetId::new("vxnet-sim1"));
    assert!(found[0].nics.is_empty(), "{found:?}");
    // The trait's methods (the client has inherent ones of the same names).
    let vxnets = FleetCloud::describe_vxnets(
        &cloud,
        &[VxnetId::new("vxnet-sim2"), VxnetId::new("vxnet-nosuch")],
    )
    .await
    .unwrap();
    assert_eq!(vxnets.len(), 1);
    assert_eq!(vxnets[0].cidr, "172.16.2.0/24".parse().unwrap());
    assert_eq!(vxnets[0].router.as_ref().unwrap().as_str(), "rtr-sim1");
    let created = cloud
        .create_nics(&VxnetId::new("vxnet-sim1"), 3, "hostnic_port")
        .await
        .unwrap();
    let page = FleetCloud::describe_nics(
        &cloud,
        &NicQuery::Named {
            name: "hostnic_port".into(),
            available_only: true,
            offset: 0,
        },
    )
    .await
    .unwrap();
    assert_eq!((page.nics.len(), page.total), (3, 3));
    let ids: Vec<_> = created.iter().map(|n| n.id.clone()).collect();
    let page = FleetCloud::describe_nics(&cloud, &NicQuery::Ids(ids[..2].to_vec()))
        .await
        .unwrap();
    assert_eq!(page.nics.len(), 2);
    let counters = sim.counters();
    assert_eq!(counters["DescribeInstances"].requests, 1);
    assert_eq!(counters["DescribeNics"].requests, 2);
}

#[tokio::test]
async fn running_nic_jobs_are_listed_with_their_nics_and_instance() {
    let sim = sim(Duration::from_secs(3)).await;
    let cloud = client(&sim);
    let nics = cloud
        .create_nics(&VxnetId::new("vxnet-sim1"), 2, "hostnic_port")
        .await
        .unwrap();
    let ids: Vec<_> = nics.iter().map(|n| n.id.clone()).collect();
    let instance = InstanceId::new("i-sim00002");
    let job = cloud.attach_nics(&instance, &ids).await.unwrap();
    let page = cloud
        .describe_jobs(&JobQuery::Running { offset: 0 })
        .await
        .unwrap();
    let found = page.jobs.iter().find(|j| j.id == job).expect("listed");
    assert_eq!(found.action, Some(JobAction::Attach));
    assert_eq!(found.progress, JobProgress::Running);
    assert_eq!(found.instance.as_ref(), Some(&instance));
    let mut listed = found.nics.clone();
    listed.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(listed, want);
    let by_id = cloud
        .describe_jobs(&JobQuery::Ids(vec![job.clone()]))
        .await
        .unwrap();
    assert_eq!(by_id.jobs.len(), 1);
}

#[tokio::test]
async fn the_planner_serves_nodes_through_the_port() {
    let sim = sim(Duration::from_millis(20)).await;
    let cloud = client(&sim);
    let config = FleetConfig {
        cluster: "port".into(),
        job_poll_initial: Duration::from_millis(20),
        job_poll_max: Duration::from_millis(50),
        ..FleetConfig::default()
    };
    let clock = SystemClock;
    let mut fleet = Fleet::new(config.clone(), clock.now());
    let demands: Vec<NodeDemand> = (1..=3)
        .map(|i| {
            NodeDemand::new(
                format!("node-{i}").as_str(),
                InstanceId::new(format!("i-sim{i:05}")),
                4,
            )
        })
        .collect();
    let mut ready = false;
    for _ in 0..200 {
        let round = fleet.plan(clock.now(), &demands, RoundBudget::open(1000));
        for (call, outcome) in execute(&cloud, &round).await {
            fleet.complete(clock.now(), &call, outcome);
        }
        if fleet.views().iter().all(|v| v.ready) {
            ready = true;
            break;
        }
        if round.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert!(ready, "{:#?}", fleet.views());
    let state = sim.state();
    for i in 1..=3 {
        let on = state
            .nics
            .values()
            .filter(|n| {
                n.instance_id.as_deref() == Some(&format!("i-sim{i:05}"))
                    && n.nic_name == "hostnic_port"
            })
            .count();
        assert_eq!(on, 4, "i-sim{i:05}");
    }
    // One CreateNics for the three nodes (one vxnet), one AttachNics per node.
    let counters = sim.counters();
    assert_eq!(counters["CreateNics"].requests, 1);
    assert_eq!(counters["AttachNics"].requests, 3);
}
