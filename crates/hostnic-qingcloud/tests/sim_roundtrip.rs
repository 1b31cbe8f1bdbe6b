//! Every action of the client against the in-process simulator, through the
//! core's ports where there is one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hostnic_core::ports::{CloudErrorKind, CloudNetwork, CloudNics, NicFilter};
use hostnic_core::types::{
    CloudNicStatus, InstanceId, JobOutcome, NicId, VxnetId, managed_nic_name,
};
use hostnic_qingcloud::limits::Backoff;
use hostnic_qingcloud::signer::Params;
use hostnic_qingcloud::sim::{AttachHook, NicEvent, NicEventKind, SimConfig, SimHandle, Simulator};
use hostnic_qingcloud::{ClientOptions, QingCloudClient, Secret};

const KEY: &str = "SIMKEY";
const SECRET: &str = "SIMSECRET";

#[derive(Default)]
struct Recorder(Mutex<Vec<NicEvent>>);

#[async_trait]
impl AttachHook for Recorder {
    async fn on_nic_event(&self, event: &NicEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

fn fast_config() -> SimConfig {
    SimConfig {
        job_latency: Duration::from_millis(5),
        attach_latency: Duration::from_millis(10),
        ..SimConfig::new(KEY, SECRET)
    }
}

fn fast_options() -> ClientOptions {
    ClientOptions {
        budget: None,
        backoff: Backoff::new(Duration::from_millis(5), Duration::from_millis(50)),
        job_poll_initial: Duration::from_millis(5),
        job_poll_max: Duration::from_millis(20),
        request_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    }
}

fn client(sim: &SimHandle) -> QingCloudClient {
    QingCloudClient::for_url(
        &sim.url(),
        KEY,
        Secret::new(SECRET),
        "pek3a",
        fast_options(),
    )
    .unwrap()
}

#[tokio::test]
async fn nic_lifecycle_round_trip_through_the_port() {
    let hook = Arc::new(Recorder::default());
    let sim = Simulator::start(fast_config(), Some(hook.clone()))
        .await
        .unwrap();
    let cloud = client(&sim);
    let instance = InstanceId::new("i-sim00002");
    let vxnet = VxnetId::new("vxnet-sim2");
    let name = managed_nic_name(&instance);

    let created = CloudNics::create_nics(&cloud, &vxnet, 3, &name)
        .await
        .unwrap();
    assert_eq!(created.len(), 3);
    for nic in &created {
        assert!(nic.id.as_str().starts_with("52:54:"));
        assert!(vxnet_sim2().contains(&nic.ip));
        assert_eq!(nic.status, CloudNicStatus::Available);
    }
    let ids: Vec<NicId> = created.iter().map(|n| n.id.clone()).collect();

    // Every created NIC carries the hostnic tag.
    let state = sim.state();
    let tag = state
        .tags
        .values()
        .find(|t| t.tag_name == "hostnic")
        .unwrap();
    for id in &ids {
        assert!(state.nics[id.as_str()].tags.contains(&tag.tag_id));
    }

    let job = cloud.attach_nics(&instance, &ids).await.unwrap();
    assert_eq!(
        cloud.wait_job(&job, Duration::from_secs(5)).await.unwrap(),
        JobOutcome::Successful
    );
    let attached = CloudNics::describe_nics(
        &cloud,
        &NicFilter {
            instance: Some(instance.clone()),
            ..NicFilter::default()
        },
    )
    .await
    .unwrap();
    // The primary NIC plus the three.
    assert_eq!(attached.len(), 4);
    assert_eq!(attached.iter().filter(|n| n.primary).count(), 1);
    assert!(attached.iter().all(|n| n.status == CloudNicStatus::InUse));

    let job = cloud.detach_nics(&ids).await.unwrap();
    assert_eq!(
        cloud.wait_job(&job, Duration::from_secs(5)).await.unwrap(),
        JobOutcome::Successful
    );
    cloud.delete_nics(&ids).await.unwrap();
    let left = CloudNics::describe_nics(
        &cloud,
        &NicFilter {
            name: Some(name),
            ..NicFilter::default()
        },
    )
    .await
    .unwrap();
    assert!(left.is_empty());

    let events = hook.0.lock().unwrap().clone();
    assert_eq!(events.len(), 6);
    assert!(
        events[..3]
            .iter()
            .all(|e| e.kind == NicEventKind::Attached && e.instance == "i-sim00002")
    );
    assert!(events[3..].iter().all(|e| e.kind == NicEventKind::Detached));
    sim.shutdown().await;
}

/// The usable addresses of `vxnet-sim2`: .2 to .253.
fn vxnet_sim2() -> std::ops::RangeInclusive<std::net::Ipv4Addr> {
    "172.16.2.2".parse().unwrap()..="172.16.2.253".parse().unwrap()
}

#[tokio::test]
async fn topology_round_trip_through_the_network_port() {
    let sim = Simulator::start(fast_config(), None).await.unwrap();
    let cloud = client(&sim);
    let inst = cloud
        .describe_instance(&InstanceId::new("i-sim00001"))
        .await
        .unwrap();
    assert_eq!(inst.primary_vxnet.as_str(), "vxnet-sim1");
    assert_eq!(inst.primary_ip.to_string(), "172.16.1.2");
    let vx = CloudNetwork::describe_vxnets(
        &cloud,
        &[VxnetId::new("vxnet-sim1"), VxnetId::new("vxnet-sim2")],
    )
    .await
    .unwrap();
    assert_eq!(vx.len(), 2);
    assert_eq!(vx[0].cidr.to_string(), "172.16.1.0/24");
    assert_eq!(vx[0].gateway.to_string(), "172.16.1.1");
    assert_eq!(vx[0].router.as_ref().unwrap().as_str(), "rtr-sim1");
    let cidrs = cloud.vpc_cidrs(&VxnetId::new("vxnet-sim1")).await.unwrap();
    let cidrs: Vec<String> = cidrs.iter().map(|c| c.to_string()).collect();
    assert_eq!(cidrs, ["172.16.0.0/16", "172.16.1.0/24", "172.16.2.0/24"]);
    let missing = cloud
        .describe_instance(&InstanceId::new("i-nope"))
        .await
        .unwrap_err();
    assert_eq!(missing.kind, CloudErrorKind::NotFound);
    let missing = CloudNetwork::describe_vxnets(&cloud, &[VxnetId::new("vxnet-nope")])
        .await
        .unwrap_err();
    assert_eq!(missing.kind, CloudErrorKind::NotFound);
}

#[tokio::test]
async fn describe_nics_reads_every_page() {
    let sim = Simulator::start(fast_config(), None).await.unwrap();
    let cloud = QingCloudClient::for_url(
        &sim.url(),
        KEY,
        Secret::new(SECRET),
        "pek3a",
        ClientOptions {
            page_size: 7,
            ..fast_options()
        },
    )
    .unwrap();
    cloud
        .create_nics(&VxnetId::new("vxnet-sim2"), 30, "many")
        .await
        .unwrap();
    let all = CloudNics::describe_nics(&cloud, &NicFilter::default())
        .await
        .unwrap();
    // 30 new NICs and 3 primaries, over 5 pages of 7.
    assert_eq!(all.len(), 33);
    assert_eq!(sim.counters()["DescribeNics"].requests, 5);
}

#[tokio::test]
async fn wrong_state_unknown_and_quota_errors_are_classified() {
    let sim = Simulator::start(fast_config(), None).await.unwrap();
    let cloud = client(&sim);
    let vxnet = VxnetId::new("vxnet-sim2");
    let nics = cloud.create_nics(&vxnet, 1, "x").await.unwrap();
    let id = nics[0].id.clone();
    // Detaching an available NIC: wrong state.
    let err = cloud
        .detach_nics(std::slice::from_ref(&id))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code, err.kind),
        (Some(1400), CloudErrorKind::Permanent)
    );
    // Deleting the primary NIC: wrong state.
    let primary = sim.state().instances["i-sim00001"].primary_nic.clone();
    let err = cloud
        .delete_nics(&[NicId::new(&primary).unwrap()])
        .await
        .unwrap_err();
    assert_eq!(err.code, Some(1400));
    // Unknown NIC and instance.
    let ghost = NicId::new("52:54:00:de:ad:00").unwrap();
    let err = cloud
        .delete_nics(std::slice::from_ref(&ghost))
        .await
        .unwrap_err();
    assert_eq!((err.code, err.kind), (Some(2100), CloudErrorKind::NotFound));
    let err = cloud
        .attach_nics(&InstanceId::new("i-nope"), std::slice::from_ref(&id))
        .await
        .unwrap_err();
    assert_eq!(err.kind, CloudErrorKind::NotFound);
    // Vxnet exhaustion: 252 usable addresses, one used.
    let err = cloud.create_nics(&vxnet, 252, "x").await.unwrap_err();
    assert_eq!(
        (err.code, err.kind),
        (Some(2500), CloudErrorKind::QuotaExceeded)
    );
    // Missing parameter.
    let err = cloud.call("CreateNics", Params::new()).await.unwrap_err();
    assert_eq!(err.code, Some(1100));
    let err = cloud
        .call("LaunchRockets", Params::new())
        .await
        .unwrap_err();
    assert_eq!(err.code, Some(1101));
}

#[tokio::test]
async fn at_most_64_nics_per_instance_primary_included() {
    let sim = Simulator::start(fast_config(), None).await.unwrap();
    let cloud = client(&sim);
    let instance = InstanceId::new("i-sim00003");
    let nics = cloud
        .create_nics(&VxnetId::new("vxnet-sim2"), 64, "x")
        .await
        .unwrap();
    let ids: Vec<NicId> = nics.iter().map(|n| n.id.clone()).collect();
    // 63 more fit next to the primary NIC…
    let job = cloud.attach_nics(&instance, &ids[..63]).await.unwrap();
    assert_eq!(
        cloud.wait_job(&job, Duration::from_secs(5)).await.unwrap(),
        JobOutcome::Successful
    );
    // …the 64th secondary does not: a resource quota, not the request quota.
    let err = cloud.attach_nics(&instance, &ids[63..]).await.unwrap_err();
    assert_eq!(
        (err.code, err.kind),
        (Some(2500), CloudErrorKind::QuotaExceeded)
    );
    assert!(!cloud.breaker().is_open());
}

#[tokio::test]
async fn jobs_go_pending_working_successful_or_failed() {
    let sim = Simulator::start(
        SimConfig {
            job_latency: Duration::from_millis(150),
            attach_latency: Duration::from_millis(150),
            ..SimConfig::new(KEY, SECRET)
        },
        None,
    )
    .await
    .unwrap();
    let cloud = client(&sim);
    let nics = cloud
        .create_nics(&VxnetId::new("vxnet-sim1"), 1, "x")
        .await
        .unwrap();
    let id = nics[0].id.clone();
    let job = cloud
        .attach_nics(&InstanceId::new("i-sim00001"), std::slice::from_ref(&id))
        .await
        .unwrap();
    use hostnic_qingcloud::actions::JobStatus;
    assert_eq!(cloud.job_status(&job).await.unwrap(), JobStatus::Pending);
    // Acting on a NIC while its job runs is a wrong-state error.
    let err = cloud
        .delete_nics(std::slice::from_ref(&id))
        .await
        .unwrap_err();
    assert_eq!(err.code, Some(1400));
    // A waiter with a too short timeout gives up with a retryable error.
    let err = cloud
        .wait_job(&job, Duration::from_millis(20))
        .await
        .unwrap_err();
    assert_eq!(err.kind, CloudErrorKind::Retryable);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(cloud.job_status(&job).await.unwrap(), JobStatus::Working);
    assert_eq!(
        cloud.wait_job(&job, Duration::from_secs(5)).await.unwrap(),
        JobOutcome::Successful
    );

    sim.fail_next_jobs(1);
    let job = cloud.detach_nics(std::slice::from_ref(&id)).await.unwrap();
    assert_eq!(
        cloud.wait_job(&job, Duration::from_secs(5)).await.unwrap(),
        JobOutcome::Failed
    );
    // A failed detach leaves the NIC attached.
    assert_eq!(
        sim.state().nics[id.as_str()].instance_id.as_deref(),
        Some("i-sim00001")
    );
    let unknown = cloud
        .job_status(&hostnic_core::types::JobId::new("j-nope"))
        .await
        .unwrap_err();
    assert_eq!(unknown.kind, CloudErrorKind::NotFound);
}

#[tokio::test]
async fn a_vanished_nic_is_gone_and_reported_to_the_hook() {
    let hook = Arc::new(Recorder::default());
    let sim = Simulator::start(fast_config(), Some(hook.clone()))
        .await
        .unwrap();
    let cloud = client(&sim);
    let nics = cloud
        .create_nics(&VxnetId::new("vxnet-sim1"), 1, "x")
        .await
        .unwrap();
    let id = nics[0].id.clone();
    let job = cloud
        .attach_nics(&InstanceId::new("i-sim00001"), std::slice::from_ref(&id))
        .await
        .unwrap();
    cloud.wait_job(&job, Duration::from_secs(5)).await.unwrap();
    // Through the admin endpoint, as the lab would.
    let resp = reqwest::Client::new()
        .post(format!("http://{}/_sim/vanish", sim.addr()))
        .body(format!(r#"{{"nic_id": "{id}"}}"#))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let found = CloudNics::describe_nics(
        &cloud,
        &NicFilter {
            nics: vec![id.clone()],
            ..NicFilter::default()
        },
    )
    .await
    .unwrap();
    assert!(found.is_empty());
    let events = hook.0.lock().unwrap().clone();
    assert_eq!(events.last().unwrap().kind, NicEventKind::Vanished);
    assert_eq!(events.last().unwrap().nic, id);
}

#[tokio::test]
async fn bad_keys_signatures_and_zones_are_rejected() {
    let sim = Simulator::start(fast_config(), None).await.unwrap();
    let wrong_secret = QingCloudClient::for_url(
        &sim.url(),
        KEY,
        Secret::new("WRONG"),
        "pek3a",
        fast_options(),
    )
    .unwrap();
    let err = wrong_secret
        .call("DescribeNics", Params::new())
        .await
        .unwrap_err();
    assert_eq!(
        (err.code, err.kind),
        (Some(1200), CloudErrorKind::Permanent)
    );
    let wrong_key = QingCloudClient::for_url(
        &sim.url(),
        "OTHER",
        Secret::new(SECRET),
        "pek3a",
        fast_options(),
    )
    .unwrap();
    assert_eq!(
        wrong_key
            .call("DescribeNics", Params::new())
            .await
            .unwrap_err()
            .code,
        Some(1200)
    );
    let wrong_zone =
        QingCloudClient::for_url(&sim.url(), KEY, Secret::new(SECRET), "sh1a", fast_options())
            .unwrap();
    assert_eq!(
        wrong_zone
            .call("DescribeNics", Params::new())
            .await
            .unwrap_err()
            .code,
        Some(2100)
    );
    // A stale time_stamp with a valid signature: 1300.
    let mut p = Params::new();
    p.set("action", "DescribeNics").set("zone", "pek3a");
    let signer = hostnic_qingcloud::signer::Signer::new(KEY, Secret::new(SECRET));
    let signed = signer.sign("GET", "/iaas/", &mut p, "2020-01-01T00:00:00Z");
    let body: serde_json::Value = reqwest::get(format!("{}?{}", sim.url(), signed.to_query()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["ret_code"], 1300);
    // The path without trailing slash and form POST are served too.
    let mut p = Params::new();
    p.set("action", "DescribeVxnets").set("zone", "pek3a");
    let stamp = hostnic_qingcloud::signer::format_time_stamp(std::time::SystemTime::now());
    let signed = signer.sign("POST", "/iaas", &mut p, &stamp);
    let body: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/iaas", sim.addr()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(signed.to_query())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["ret_code"], 0, "{body}");
    assert_eq!(body["total_count"], 2);
}

#[tokio::test]
async fn the_simulator_throttles_and_the_breaker_waits_it_out_without_hammering() {
    let sim = Simulator::start(
        SimConfig {
            rate_limit_qps: 20.0,
            ..fast_config()
        },
        None,
    )
    .await
    .unwrap();
    let cloud = QingCloudClient::for_url(
        &sim.url(),
        KEY,
        Secret::new(SECRET),
        "pek3a",
        ClientOptions {
            breaker_probe_interval: Duration::from_millis(100),
            ..fast_options()
        },
    )
    .unwrap();
    // A caller that waits for the breaker's next probe when a call is refused.
    for _ in 0..60 {
        loop {
            match cloud.call("DescribeVxnets", Params::new()).await {
                Ok(_) => break,
                Err(e) => {
                    assert_eq!(e.kind, CloudErrorKind::Throttled, "{e}");
                    let wait = cloud.breaker().next_probe_in().unwrap_or_default();
                    tokio::time::sleep(wait + Duration::from_millis(1)).await;
                }
            }
        }
    }
    let counters = sim.counters();
    assert_eq!(counters["DescribeVxnets"].ok, 60);
    let throttled = counters["DescribeVxnets"]
        .errors
        .get(&2500)
        .copied()
        .unwrap_or(0);
    let breaker = cloud.breaker();
    assert!(throttled > 0, "{counters:?}");
    // Every 2500 the simulator sent either opened the breaker or answered a probe:
    // the client never sent a request while it knew the quota was exhausted.
    assert!(
        throttled <= breaker.trips + breaker.probes,
        "{throttled} 2500s, {breaker:?}"
    );
    assert!(!breaker.is_open());
}

#[tokio::test]
async fn a_wrong_endpoint_path_is_a_permanent_http_error_not_retried() {
    let sim = Simulator::start(fast_config(), None).await.unwrap();
    let url = format!("http://{}/not-iaas/", sim.addr());
    let cloud =
        QingCloudClient::for_url(&url, KEY, Secret::new(SECRET), "pek3a", fast_options()).unwrap();
    let err = cloud.call("DescribeNics", Params::new()).await.unwrap_err();
    assert_eq!(err.kind, CloudErrorKind::Permanent);
    assert!(err.message.contains("404"), "{err}");
    assert_eq!(cloud.stats().snapshot()["DescribeNics"].retries, 0);
}

#[tokio::test]
async fn a_dead_endpoint_is_retried_then_reported_as_retryable() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/iaas/");
    let cloud =
        QingCloudClient::for_url(&url, KEY, Secret::new(SECRET), "pek3a", fast_options()).unwrap();
    let err = cloud.call("DescribeNics", Params::new()).await.unwrap_err();
    assert_eq!(err.kind, CloudErrorKind::Retryable);
    assert_eq!(err.code, None);
    assert_eq!(cloud.stats().snapshot()["DescribeNics"].retries, 3);
}

#[tokio::test]
async fn job_statuses_through_the_port_tell_running_done_and_unknown_apart() {
    use hostnic_core::types::{JobId, JobStatus};
    let sim = Simulator::start(
        SimConfig {
            job_latency: Duration::from_millis(5),
            attach_latency: Duration::from_millis(400),
            ..SimConfig::new(KEY, SECRET)
        },
        None,
    )
    .await
    .unwrap();
    let cloud = client(&sim);
    let instance = InstanceId::new("i-sim00002");
    let name = managed_nic_name(&instance);
    let nics = CloudNics::create_nics(&cloud, &VxnetId::new("vxnet-sim2"), 2, &name)
        .await
        .unwrap();
    let ids: Vec<NicId> = nics.iter().map(|n| n.id.clone()).collect();
    let job = CloudNics::attach_nics(&cloud, &instance, &ids)
        .await
        .unwrap();
    let nowhere = JobId::new("j-nowhere");
    let asked = [job.clone(), nowhere.clone()];
    let statuses = CloudNics::job_statuses(&cloud, &asked).await.unwrap();
    assert_eq!(statuses[&job], JobStatus::Running);
    assert_eq!(statuses[&nowhere], JobStatus::Unknown);
    CloudNics::wait_job(&cloud, &job, Duration::from_secs(5))
        .await
        .unwrap();
    let statuses = CloudNics::job_statuses(&cloud, &asked).await.unwrap();
    assert_eq!(statuses[&job], JobStatus::Done(JobOutcome::Successful));
    // One DescribeJobs for both jobs each time (the wait's polls aside).
    sim.shutdown().await;
}

#[tokio::test]
async fn the_vpc_networks_of_a_vxnet_just_described_cost_no_second_describe_vxnets() {
    let sim = Simulator::start(fast_config(), None).await.unwrap();
    let cloud = client(&sim);
    let vxnet = VxnetId::new("vxnet-sim1");
    CloudNetwork::describe_vxnets(&cloud, std::slice::from_ref(&vxnet))
        .await
        .unwrap();
    let cidrs = CloudNetwork::vpc_cidrs(&cloud, &vxnet).await.unwrap();
    assert!(!cidrs.is_empty());
    assert_eq!(sim.counters()["DescribeVxnets"].requests, 1);
    sim.shutdown().await;
}
