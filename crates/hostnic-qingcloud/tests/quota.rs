//! The account's economics over real HTTP: the simulator's request quota (with
//! its time scale) against the client's breaker, the 100-item page cap, the
//! admin endpoints, and a resource-quota 2500 that moves allocation to the next
//! vxnet instead of tripping anything.

use std::time::Duration;

use hostnic_core::config::PoolConfig;
use hostnic_core::pool::{NodeState, PoolAction};
use hostnic_core::ports::{CloudErrorKind, CloudNetwork, CloudNics, NicFilter};
use hostnic_core::types::{InstanceId, Timestamp, VxnetId, managed_nic_name};
use hostnic_qingcloud::signer::Params;
use hostnic_qingcloud::sim::{SimConfig, SimHandle, Simulator, WindowLimit};
use hostnic_qingcloud::vips::{VipAddresses, VipFilter};
use hostnic_qingcloud::{BreakerStatus, ClientOptions, QingCloudClient, Secret};
use serde_json::{Value, json};

const KEY: &str = "QUOTAKEY";
const SECRET: &str = "QUOTASECRET";

fn client(sim: &SimHandle, options: ClientOptions) -> QingCloudClient {
    QingCloudClient::for_url(&sim.url(), KEY, Secret::new(SECRET), "pek3a", options).unwrap()
}

fn fast() -> SimConfig {
    SimConfig {
        job_latency: Duration::from_millis(5),
        attach_latency: Duration::from_millis(10),
        ..SimConfig::new(KEY, SECRET)
    }
}

async fn admin(sim: &SimHandle, what: &str, body: Value) -> (u16, Value) {
    hostnic_qingcloud::transport::install_crypto_provider();
    let resp = reqwest::Client::new()
        .post(format!("http://{}/_sim/{what}", sim.addr()))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn the_quota_window_runs_on_the_time_scale_and_the_breaker_does_not_hammer_it() {
    // Five requests per simulated hour, an hour lived in a real second.
    let sim = Simulator::start(
        SimConfig {
            quota: Some("5/3600".parse().unwrap()),
            time_scale: 3600.0,
            ..fast()
        },
        None,
    )
    .await
    .unwrap();
    let cloud = client(
        &sim,
        ClientOptions {
            budget: None,
            breaker_probe_interval: Duration::from_millis(300),
            ..ClientOptions::default()
        },
    );
    for _ in 0..5 {
        cloud.call("DescribeVxnets", Params::new()).await.unwrap();
    }
    let err = cloud
        .call("DescribeVxnets", Params::new())
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind, err.code),
        (CloudErrorKind::Throttled, Some(2500))
    );
    assert!(err.message.contains("request quota"), "{err}");
    assert_eq!(cloud.breaker().status, BreakerStatus::Open);
    // Twenty more calls at once: all refused by the client, none reaches the API.
    for _ in 0..20 {
        let err = cloud.call("DescribeNics", Params::new()).await.unwrap_err();
        assert_eq!((err.kind, err.code), (CloudErrorKind::Throttled, None));
    }
    let quota = sim.quota();
    assert_eq!(quota.rejections_total, 1, "{quota:?}");
    assert_eq!(quota.keys[KEY].used, 6);
    assert!(quota.keys[KEY].frees_in_secs > 3000.0, "{quota:?}");
    assert_eq!(quota.rejections[0].action, "DescribeVxnets");
    assert_eq!(sim.counters_by_key()[KEY].requests, 6);

    // A real second later the simulated hour has passed; the next probe closes the breaker.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let wait = cloud.breaker().next_probe_in().unwrap_or_default();
    tokio::time::sleep(wait).await;
    cloud.call("DescribeVxnets", Params::new()).await.unwrap();
    assert_eq!(cloud.breaker().status, BreakerStatus::Closed);
    assert_eq!(sim.quota().rejections_total, 1);
}

#[tokio::test]
async fn every_request_counts_against_the_quota_even_unsigned_and_failed_ones() {
    let sim = Simulator::start(
        SimConfig {
            quota: Some(WindowLimit::new(3, Duration::from_secs(3600))),
            ..fast()
        },
        None,
    )
    .await
    .unwrap();
    hostnic_qingcloud::transport::install_crypto_provider();
    let http = reqwest::Client::new();
    // Unsigned, then a wrong signature, then an unknown action (signed).
    let unsigned = format!(
        "{}?action=DescribeNics&zone=pek3a&access_key_id={KEY}",
        sim.url()
    );
    let body: Value = http
        .get(&unsigned)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["ret_code"], 1100);
    let wrong = QingCloudClient::for_url(
        &sim.url(),
        KEY,
        Secret::new("WRONG"),
        "pek3a",
        ClientOptions::default(),
    )
    .unwrap();
    assert_eq!(
        wrong
            .call("DescribeNics", Params::new())
            .await
            .unwrap_err()
            .code,
        Some(1200)
    );
    let cloud = client(&sim, ClientOptions::default());
    assert_eq!(
        cloud
            .call("LaunchRockets", Params::new())
            .await
            .unwrap_err()
            .code,
        Some(1101)
    );
    // The fourth request of the key is over the quota, however well signed.
    let err = cloud.call("DescribeNics", Params::new()).await.unwrap_err();
    assert_eq!(
        (err.kind, err.code),
        (CloudErrorKind::Throttled, Some(2500))
    );
    let by_key = sim.counters_by_key();
    assert_eq!(by_key[KEY].requests, 4);
    assert_eq!(by_key[KEY].errors.get(&2500), Some(&1));
    assert_eq!(by_key[KEY].actions["DescribeNics"], 3);

    // The admin endpoint reads, changes and frees the quota at run time.
    let (status, q) = admin(&sim, "quota", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(q["quota"], "3/3600");
    assert_eq!(q["keys"][KEY]["used"], 4);
    assert_eq!(q["keys"][KEY]["remaining"], 0);
    assert_eq!(q["rejections"][0]["access_key_id"], KEY);
    let (status, q) = admin(&sim, "quota", json!({"quota": "off"})).await;
    assert_eq!((status, q["quota"].as_str()), (200, Some("off")));
    let fresh = client(&sim, ClientOptions::default());
    fresh.call("DescribeNics", Params::new()).await.unwrap();
    let (status, q) = admin(&sim, "quota", json!({"quota": "2000/3600", "reset": true})).await;
    assert_eq!((status, q["limit"].as_u64()), (200, Some(2000)));
    for bad in ["2000", "0/3600", "lots", "-5/60"] {
        let (status, body) = admin(&sim, "quota", json!({ "quota": bad })).await;
        assert_eq!(
            (status, body["ret_code"].as_i64()),
            (400, Some(1100)),
            "{bad}: {body}"
        );
    }
    assert_eq!(
        sim.quota().quota,
        "2000/3600",
        "a bad string changes nothing"
    );
    let (_, by_key) = admin(&sim, "counters?by=access_key", json!({})).await;
    assert_eq!(by_key[KEY]["requests"], 5);
    let (_, by_action) = admin(&sim, "counters", json!({})).await;
    assert_eq!(by_action["DescribeNics"]["requests"], 4);
}

#[tokio::test]
async fn lists_answer_at_most_100_items_and_the_client_pages_through_them() {
    let sim = Simulator::start(fast(), None).await.unwrap();
    let cloud = client(&sim, ClientOptions::default());
    let vxnet = VxnetId::new("vxnet-sim2");
    cloud.create_nics(&vxnet, 150, "many").await.unwrap();
    // Whatever `limit` says, a page has at most 100 items.
    let mut params = Params::new();
    params.set("limit", 1000);
    let page = cloud.call("DescribeNics", params).await.unwrap();
    assert_eq!(page["nic_set"].as_array().unwrap().len(), 100);
    assert_eq!(page["total_count"], 153);
    let mut params = Params::new();
    params.set("limit", 100).set("offset", 100);
    let page = cloud.call("DescribeNics", params).await.unwrap();
    assert_eq!(page["nic_set"].as_array().unwrap().len(), 53);
    for (k, v) in [("limit", "0"), ("offset", "-1"), ("limit", "-5")] {
        let mut params = Params::new();
        params.set(k, v);
        let err = cloud.call("DescribeNics", params).await.unwrap_err();
        assert_eq!(
            (err.code, err.kind),
            (Some(1100), CloudErrorKind::Permanent),
            "{k}={v}"
        );
    }
    let before = sim.counters()["DescribeNics"].requests;
    let all = CloudNics::describe_nics(&cloud, &NicFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 153);
    assert_eq!(
        sim.counters()["DescribeNics"].requests - before,
        2,
        "two pages of 100"
    );
    let named = CloudNics::describe_nics(
        &cloud,
        &NicFilter {
            name: Some("many".into()),
            vxnets: vec![vxnet],
            ..NicFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(named.len(), 150);
}

#[tokio::test]
async fn vips_round_trip_through_the_client_and_hold_their_addresses() {
    let sim = Simulator::start(fast(), None).await.unwrap();
    let cloud = client(&sim, ClientOptions::default());
    let vxnet = VxnetId::new("vxnet-sim2");
    let block = cloud
        .allocate_vips(
            &vxnet,
            "hostnic-block",
            &VipAddresses::Range {
                first: "172.16.2.64".parse().unwrap(),
                last: "172.16.2.127".parse().unwrap(),
                count: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(block.vips.len(), 64);
    cloud
        .wait_job(&block.job, Duration::from_secs(5))
        .await
        .unwrap();
    let listed = cloud
        .describe_vips(&VipFilter {
            vxnets: vec![vxnet.clone()],
            ..VipFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 64);
    assert!(
        listed
            .iter()
            .all(|v| v.name == "hostnic-block" && v.instance.is_none())
    );
    // NICs skip the block.
    let nics = cloud.create_nics(&vxnet, 70, "around").await.unwrap();
    assert!(nics.iter().all(|n| !(64..=127).contains(&n.ip.octets()[3])));
    let err = cloud
        .allocate_vips(
            &vxnet,
            "x",
            &VipAddresses::Exact(vec!["172.16.2.70".parse().unwrap()]),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (err.code, err.kind),
        (Some(1400), CloudErrorKind::Permanent)
    );
    let err = cloud
        .allocate_vips(
            &vxnet,
            "x",
            &VipAddresses::Range {
                first: "172.16.2.200".parse().unwrap(),
                last: "172.16.2.100".parse().unwrap(),
                count: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, Some(1100), "reversed range");
    let job = cloud.release_vips(&block.vips).await.unwrap();
    cloud.wait_job(&job, Duration::from_secs(5)).await.unwrap();
    assert!(
        cloud
            .describe_vips(&VipFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!cloud.breaker().is_open());
}

#[tokio::test]
async fn a_resource_quota_2500_moves_allocation_to_the_next_vxnet_and_trips_nothing() {
    let sim = Simulator::start(fast(), None).await.unwrap();
    let cloud = client(&sim, ClientOptions::default());
    let full = VxnetId::new("vxnet-sim1");
    let spare = VxnetId::new("vxnet-sim2");
    // Someone else took every address of vxnet-sim1 the primary NICs left.
    cloud.create_nics(&full, 249, "someone-else").await.unwrap();

    let instance = InstanceId::new("i-sim00001");
    let vxnets = CloudNetwork::describe_vxnets(&cloud, &[full.clone(), spare.clone()])
        .await
        .unwrap();
    let mut pool = NodeState::new(PoolConfig::default(), instance.clone(), vxnets);
    let now = Timestamp(0);
    let Some(PoolAction::Create { vxnet, count }) = pool.plan(now).into_iter().next() else {
        panic!("an empty pool creates NICs first");
    };
    assert_eq!(vxnet, full, "the first vxnet is tried first");
    let result = CloudNics::create_nics(&cloud, &vxnet, count, &managed_nic_name(&instance)).await;
    let err = result.as_ref().unwrap_err().clone();
    // The kind the engine moves on with: QuotaExceeded, not Throttled.
    assert_eq!(
        (err.kind, err.code),
        (CloudErrorKind::QuotaExceeded, Some(2500))
    );
    assert_eq!(cloud.breaker().status, BreakerStatus::Closed);
    pool.create_done(&vxnet, count, result, now);
    let Some(PoolAction::Create { vxnet: next, .. }) = pool.plan(now).into_iter().next() else {
        panic!("the pool goes on at once with the next vxnet");
    };
    assert_eq!(next, spare);
    let created = CloudNics::create_nics(&cloud, &next, count, &managed_nic_name(&instance))
        .await
        .unwrap();
    assert_eq!(created.len(), count as usize);
}
