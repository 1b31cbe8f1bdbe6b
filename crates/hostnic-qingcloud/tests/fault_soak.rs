//! 100 NICs created, attached, detached and deleted in batches through the
//! `CloudNics` port against a simulator that fails 20 % of all requests with
//! 5000/5100. Invariants: no NIC is leaked, and every injected fault was either
//! retried by the client or reported to the caller (who retried the step).

use std::future::Future;
use std::time::Duration;

use hostnic_core::ports::{CloudError, CloudNics, NicFilter};
use hostnic_core::types::{InstanceId, JobId, JobOutcome, NicId, VxnetId, managed_nic_name};
use hostnic_qingcloud::limits::Backoff;
use hostnic_qingcloud::sim::{SimConfig, Simulator};
use hostnic_qingcloud::{ClientOptions, QingCloudClient, Secret};

const BATCH: u32 = 10;
const NICS: u32 = 100;

/// Runs a port call until it succeeds, counting the failures it reported.
/// Only retryable failures are acceptable here: anything else fails the test.
async fn persist<T, F, Fut>(reported: &mut u64, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CloudError>>,
{
    for _ in 0..20 {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(e.is_retryable(), "unexpected non-retryable failure: {e}");
                *reported += 1;
            }
        }
    }
    panic!("a step kept failing 20 times at a 20 % fault rate");
}

async fn wait(cloud: &QingCloudClient, job: &JobId, reported: &mut u64) {
    let outcome = persist(reported, || {
        CloudNics::wait_job(cloud, job, Duration::from_secs(10))
    })
    .await;
    assert_eq!(outcome, JobOutcome::Successful, "no job was set to fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_nics_at_fault_rate_0_2_leak_nothing() {
    let sim = Simulator::start(
        SimConfig {
            fault_rate: 0.2,
            job_latency: Duration::from_millis(2),
            attach_latency: Duration::from_millis(5),
            ..SimConfig::new("AK", "SK")
        },
        None,
    )
    .await
    .unwrap();
    let cloud = QingCloudClient::for_url(
        &sim.url(),
        "AK",
        Secret::new("SK"),
        "pek3a",
        ClientOptions {
            budget: None,
            retries: 3,
            backoff: Backoff::new(Duration::from_millis(2), Duration::from_millis(20)),
            job_poll_initial: Duration::from_millis(5),
            job_poll_max: Duration::from_millis(10),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let instance = InstanceId::new("i-sim00002");
    let vxnet = VxnetId::new("vxnet-sim2");
    let name = managed_nic_name(&instance);
    let mut reported = 0u64;

    for _ in 0..NICS / BATCH {
        let created = persist(&mut reported, || {
            CloudNics::create_nics(&cloud, &vxnet, BATCH, &name)
        })
        .await;
        assert_eq!(created.len(), BATCH as usize);
        let ids: Vec<NicId> = created.into_iter().map(|n| n.id).collect();
        let job = persist(&mut reported, || {
            CloudNics::attach_nics(&cloud, &instance, &ids)
        })
        .await;
        wait(&cloud, &job, &mut reported).await;
        let job = persist(&mut reported, || CloudNics::detach_nics(&cloud, &ids)).await;
        wait(&cloud, &job, &mut reported).await;
        persist(&mut reported, || CloudNics::delete_nics(&cloud, &ids)).await;
    }

    // No leak: neither by name through the API nor in the simulator's state.
    let filter = NicFilter {
        name: Some(name.clone()),
        ..NicFilter::default()
    };
    let left = persist(&mut reported, || CloudNics::describe_nics(&cloud, &filter)).await;
    assert!(left.is_empty(), "leaked: {left:?}");
    let state = sim.state();
    assert_eq!(state.nics.len(), 3, "only the primary NICs remain");
    assert!(state.nics.values().all(|n| n.role == 1));
    assert_eq!(
        state.jobs.len(),
        2 * (NICS / BATCH) as usize,
        "no duplicate jobs"
    );

    // Every injected fault was retried by the client or reported to us.
    let injected: u64 = sim
        .counters()
        .values()
        .map(|c| c.errors.get(&5000).unwrap_or(&0) + c.errors.get(&5100).unwrap_or(&0))
        .sum();
    let stats = cloud.stats().snapshot();
    let retried: u64 = stats.values().map(|s| s.retries).sum();
    let reported_by_client: u64 = stats.values().map(|s| s.errors).sum();
    let requests: u64 = sim.counters().values().map(|c| c.requests).sum();
    // About 20 % of the requests failed; 5 % is a bound that a fair coin
    // essentially never misses over ~100 requests.
    assert!(
        injected > 0 && injected * 20 >= requests,
        "{injected} faults in {requests} requests"
    );
    assert_eq!(injected, retried + reported_by_client);
    // The waiter swallows failed polls itself, so the caller saw at most the rest.
    assert!(reported <= reported_by_client);
}
