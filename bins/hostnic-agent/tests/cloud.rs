//! The agent and the account's API budget (issue 14 item 3, issue 20 item 6):
//! one real agent at rest over a simulated hour, a rotated secret picked up
//! without a restart, an ADD starved by a full vxnet that says so, the request
//! quota's breaker logged, counted and reported on the node.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hostnic_agent::settings::Settings;
use hostnic_agent::{CloudClient, Deps, Metrics};
use hostnic_core::api::{Outcome, codes};
use hostnic_core::config::PoolConfig;
use hostnic_core::pool::ShortageCause;
use hostnic_core::ports::NodeReporter;
use hostnic_core::testing::{FakeCloudConfig, FakeHost};
use hostnic_core::types::{InstanceId, PodKey};
use hostnic_qingcloud::sim::{SimConfig, SimHandle, Simulator, WindowLimit};
use hostnic_qingcloud::{ClientOptions, QingCloudClient, Secret};
use hostnic_testkit::hooks::FakeHostLinks;
use hostnic_testkit::time::ScaledClock;

const KEY: &str = "AKID";
const SECRET: &str = "SECRET";

/// What the agent reported through the core's `NodeReporter` port.
#[derive(Default)]
struct Reported {
    quota_exhausted: AtomicU64,
    quota_recovered: AtomicU64,
    shortages: Mutex<Vec<(Option<ShortageCause>, String)>>,
    capacity: Mutex<Option<(u32, u32)>>,
}

impl NodeReporter for Reported {
    fn capacity(&self, free_nics: u32, assignable_pods: u32) {
        *self.capacity.lock().unwrap() = Some((free_nics, assignable_pods));
    }
    fn nic_shortage(&self, _: &PodKey, _: bool, message: &str) {
        self.shortages
            .lock()
            .unwrap()
            .push((None, message.to_string()));
    }
    fn nic_shortage_because(&self, _: &PodKey, cause: Option<ShortageCause>, message: &str) {
        self.shortages
            .lock()
            .unwrap()
            .push((cause, message.to_string()));
    }
    fn request_quota(&self, exhausted: bool, _: &str) {
        if exhausted {
            self.quota_exhausted.fetch_add(1, Ordering::SeqCst);
        } else {
            self.quota_recovered.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// An agent on a simulator's time scale: the simulator, the fake host following it,
/// the agent's task and its handles.
struct Scaled {
    sim: SimHandle,
    socket: std::path::PathBuf,
    metrics: Arc<Metrics>,
    reported: Arc<Reported>,
    settings: Settings,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), hostnic_agent::AgentError>>,
    _dir: tempfile::TempDir,
}

/// Starts the simulator (`quota`, `scale`) and the agent on the same scale, its
/// client signing with `secret` and following the credentials file `credentials`.
async fn start_scaled(
    quota: Option<WindowLimit>,
    scale: f64,
    secret: &str,
    credentials: Option<&Path>,
    tune: impl FnOnce(&mut Settings),
) -> Scaled {
    let host = FakeHost::new(InstanceId::new(INSTANCE), "nic");
    let sim = Simulator::start(
        SimConfig {
            quota,
            time_scale: scale,
            ..SimConfig::new(KEY, SECRET)
        },
        Some(Arc::new(FakeHostLinks(host.clone()))),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings_in(dir.path(), PoolConfig::default());
    tune(&mut settings);
    let config = hostnic_qingcloud::Config::new(KEY, Secret::new(secret), sim.zone());
    let unscaled = hostnic_agent::cloud::client_options(&settings, &config);
    let options = ClientOptions {
        request_timeout: unscaled.request_timeout,
        ..unscaled.clone().time_scaled(scale)
    };
    let client =
        QingCloudClient::for_url(&sim.url(), KEY, Secret::new(secret), &sim.zone(), options)
            .unwrap();
    let metrics = Arc::new(Metrics::default());
    client.add_observer(metrics.clone());
    let reported = Arc::new(Reported::default());
    let deps = Deps {
        cloud: client.clone(),
        host,
        clock: ScaledClock::new(scale),
        pods: None,
        nic_events: None,
        metrics: metrics.clone(),
        reporter: Some(reported.clone()),
        policy: None,
        client: Some(CloudClient {
            client,
            credentials: credentials.map(Path::to_path_buf),
        }),
        time_scale: scale,
    };
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(hostnic_agent::run(
        deps,
        settings.clone(),
        InstanceId::new(INSTANCE),
        async move {
            let _ = rx.await;
        },
    ));
    Scaled {
        socket: settings.socket.clone(),
        sim,
        metrics,
        reported,
        settings,
        stop,
        task,
        _dir: dir,
    }
}

impl Scaled {
    /// Waits (at most `within` of real time) until the agent answers on its socket.
    async fn serving(&self, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if try_call(&self.socket, status_req()).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    fn sim_requests(&self) -> u64 {
        self.sim.counters().values().map(|c| c.requests).sum()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.sim.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_at_rest_makes_at_most_two_calls_in_a_simulated_hour() {
    // Issue 14: the periodic reconcile (every 60 s) asked the cloud every time, about
    // 60 DescribeNics an hour per idle node. At a time scale of 360 an hour is 10 s.
    let scale = 360.0;
    let agent = start_scaled(None, scale, SECRET, None, |_| {}).await;
    assert!(agent.serving(Duration::from_secs(20)).await);
    // The start fills the warm pool; ten simulated minutes settle everything.
    tokio::time::sleep(Duration::from_secs_f64(600.0 / scale)).await;
    let before = agent.sim.counters();
    tokio::time::sleep(Duration::from_secs_f64(3600.0 / scale)).await;
    let after = agent.sim.counters();
    let calls: u64 = after
        .iter()
        .map(|(a, c)| c.requests - before.get(a).map_or(0, |b| b.requests))
        .sum();
    let by_action: Vec<(String, u64)> = after
        .iter()
        .map(|(a, c)| {
            (
                a.clone(),
                c.requests - before.get(a).map_or(0, |b| b.requests),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    eprintln!("one agent at rest, one simulated hour: {calls} calls {by_action:?}");
    assert!(
        calls <= 2,
        "{calls} calls in a simulated hour at rest: {by_action:?}"
    );
    // 60 local reconciles in that hour, every one counted.
    let text = agent.metrics.render(&Default::default());
    assert!(
        text.contains("hostnic_reconciles_total{cloud=\"local\"}"),
        "{text}"
    );
    agent.stop().await;
}

/// A `qcsecret` directory as the kubelet mounts it: `config.yaml` is a symlink into
/// `..data`, a symlink to a timestamped directory, swapped on every update.
fn mount_secret(dir: &Path, version: &str, secret: &str) {
    let data = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("config.yaml"),
        format!("qy_access_key_id: {KEY}\nqy_secret_access_key: {secret}\nzone: pek3a\n"),
    )
    .unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("config.yaml");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/config.yaml", &link).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_not_retried_in_a_loop_and_a_rotated_one_is_used_at_once() {
    // Issue 20 item 6: a permanent 1200 (wrong secret) was retried forever (every
    // 10 s at start, every 60 s by the pool), and the credentials file was never
    // re-read when the Secret changed.
    let secrets = tempfile::tempdir().unwrap();
    mount_secret(secrets.path(), "2026_01_01", "WRONG");
    let file = secrets.path().join("config.yaml");
    let agent = start_scaled(None, 1.0, "WRONG", Some(&file), |s| {
        s.credentials_check_secs = 0.1;
    })
    .await;
    // Five seconds with the wrong secret: one refused call, then the agent waits.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let refused = agent
        .sim
        .counters()
        .values()
        .map(|c| c.errors.get(&1200).copied().unwrap_or(0))
        .sum::<u64>();
    assert!(
        (1..=2).contains(&refused),
        "{refused} calls with a wrong secret in 5 s: retried in a loop"
    );
    assert!(
        try_call(&agent.socket, status_req()).await.is_err(),
        "not serving yet"
    );
    // The Secret is updated: the kubelet swaps the symlink.
    mount_secret(secrets.path(), "2026_01_02", SECRET);
    assert!(
        agent.serving(Duration::from_secs(30)).await,
        "the agent did not pick the new secret up"
    );
    let after = agent
        .sim
        .counters()
        .values()
        .map(|c| c.errors.get(&1200).copied().unwrap_or(0))
        .sum::<u64>();
    assert_eq!(
        after, refused,
        "no call signed with the old secret after the swap"
    );
    assert!(agent.sim_requests() > refused);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_quota_breaker_is_reported_on_the_node_and_pods_wait_with_code_11() {
    // The account's quota is exhausted by the agent's start (8 requests an hour):
    // the breaker opens (WARN, a node event, the metric), ADDs fail with code 11
    // naming the request quota, and once the quota frees the breaker closes and the
    // pod is served on retry.
    let scale = 60.0;
    let agent = start_scaled(
        Some(WindowLimit::new(8, Duration::from_secs(3600))),
        scale,
        SECRET,
        None,
        |s| {
            s.pool.min_free = 0;
            s.pool.max_free = 2;
        },
    )
    .await;
    assert!(agent.serving(Duration::from_secs(20)).await);
    // The start took 6 of the 8 (identity, DescribeNics, DescribeTags…); a pod asks
    // for NICs until the quota refuses.
    let mut code11 = None;
    for i in 0..20 {
        let r = call(&agent.socket, add_req(i, 2_000)).await;
        if let Outcome::Error(e) = &r.outcome {
            assert_eq!(e.code, codes::TRY_AGAIN_LATER, "{e:?}");
            if e.msg.contains("request quota") {
                code11 = Some(e.clone());
                break;
            }
        }
    }
    let e = code11.expect("an ADD failed naming the request quota");
    assert!(
        e.details.contains("2500") || e.details.contains("request quota"),
        "{e:?}"
    );
    assert!(agent.reported.quota_exhausted.load(Ordering::SeqCst) >= 1);
    let text = agent
        .metrics
        .render(&hostnic_agent::metrics::Gauges::default());
    assert!(text.contains("hostnic_cloud_api_calls_total"), "{text}");
    // The quota frees: the next probe closes the breaker; a retried ADD is served.
    agent.sim.reset_quota();
    agent.sim.set_quota(None);
    let until = Instant::now() + Duration::from_secs(60);
    let mut served = false;
    while Instant::now() < until {
        let r = call(&agent.socket, add_req(100, 2_000)).await;
        if matches!(r.outcome, Outcome::Ok(_)) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(served, "the pod was never served once the quota freed");
    assert!(agent.reported.quota_recovered.load(Ordering::SeqCst) >= 1);
    let _ = &agent.settings;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_starved_by_a_full_vxnet_says_vxnet_full_and_the_node_offers_what_it_holds() {
    // Issue 20 item 6: ADDs failed as "no free NIC … the pool is growing" with event
    // NoFreeNic, the node kept advertising 52 assignable pods and /readyz said ready.
    let mut world = World::new(PoolConfig {
        min_free: 1,
        max_free: 2,
        ip_cooldown: Duration::ZERO,
        min_lifetime: Duration::ZERO,
        ..PoolConfig::default()
    });
    // The vxnet has 3 addresses: the primary NIC's and two more.
    world.cloud = hostnic_core::testing::FakeCloud::new(
        FakeCloudConfig {
            vxnet_capacity: Some(3),
            attach_latency: Duration::from_secs(1),
            ..FakeCloudConfig::default()
        },
        world.clock.clone(),
    );
    world.cloud.set_hook(Arc::new(world.host.clone()));
    let reported = Arc::new(Reported::default());
    let agent = world.start_reporting(None, None, None, Some(reported.clone()));
    agent.serving().await;
    let socket = world.socket();
    let mut served = 0;
    let mut starved = None;
    for i in 0..4 {
        let r = call(&socket, add_req(i, 1_500)).await;
        match r.outcome {
            Outcome::Ok(_) => served += 1,
            Outcome::Error(e) => {
                starved = Some(e);
                break;
            }
        }
    }
    assert_eq!(served, 2, "the vxnet held two NICs");
    let e = starved.expect("the third pod starves");
    assert_eq!(e.code, codes::TRY_AGAIN_LATER);
    assert_eq!(e.msg, "VxnetFull", "{e:?}");
    assert!(!e.details.contains("growing"), "{e:?}");
    let shortages = reported.shortages.lock().unwrap().clone();
    assert!(
        shortages
            .iter()
            .any(|(cause, _)| *cause == Some(ShortageCause::VxnetFull)),
        "{shortages:?}"
    );
    // The node offers what it holds (nothing), and is not ready.
    let capacity = *reported.capacity.lock().unwrap();
    assert_eq!(capacity.map(|c| c.1), Some(0), "{capacity:?}");
    let (line, body) = http_get(world.settings.metrics_addr, "/readyz").await;
    assert!(line.contains("503"), "{line}: {body}");
    assert!(body.contains("VxnetFull"), "{body}");
    let (_, metrics) = http_get(world.settings.metrics_addr, "/metrics").await;
    assert!(
        metrics.contains("hostnic_pool_shortage{cause=\"VxnetFull\"} 1"),
        "{metrics}"
    );
    agent.stop().unwrap();
}
