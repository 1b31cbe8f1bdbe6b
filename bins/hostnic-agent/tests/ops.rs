//! What an operator sees (issue 19 items 3–5, issue 20 item 5): start-up failures
//! with their cause and fix, not retried in a tight loop; `/healthz` failing when a
//! restart would help; metrics apart from the loopback-only introspection; the
//! HTTP endpoint's bounds; the build on `/metrics` and `/v1/status`; a checkpoint
//! of a newer hostnic refused; another CNI configuration sorting first reported
//! and moved aside. Each failed on the code before these changes.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hostnic_agent::settings::{OtherConflists, Settings};
use hostnic_agent::{Deps, Metrics};
use hostnic_core::api::introspect;
use hostnic_core::ports::SystemClock;
use hostnic_core::types::InstanceId;
use hostnic_qingcloud::sim::{SimConfig, Simulator};
use hostnic_qingcloud::{ClientOptions, QingCloudClient, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Polls `GET path` until `f(status line, body)` holds; the last answer.
async fn poll(addr: SocketAddr, path: &str, f: impl Fn(&str, &str) -> bool) -> (String, String) {
    let mut last = (String::new(), String::new());
    for _ in 0..300 {
        if let Ok(got) = try_http_get(addr, path).await {
            if f(&got.0, &got.1) {
                return got;
            }
            last = got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("GET {path}: never as expected; last: {} {}", last.0, last.1);
}

/// Sends `request` raw and reads until the server closes; the answer.
async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_hold_the_start_with_cause_and_fix_and_are_not_retried_in_a_loop() {
    let sim = Simulator::start(SimConfig::new("AKID", "SECRET"), None)
        .await
        .unwrap();
    let client = QingCloudClient::for_url(
        &sim.url(),
        "AKID",
        Secret::new("NOT-THE-SECRET"),
        &sim.zone(),
        ClientOptions::default(),
    )
    .unwrap();
    let metrics = Arc::new(Metrics::default());
    client.add_observer(metrics.clone());
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_in(dir.path(), hostnic_core::config::PoolConfig::default());
    let addr = settings.metrics_addr;
    let deps = Deps {
        cloud: client,
        host: hostnic_core::testing::FakeHost::new(InstanceId::new(INSTANCE), "nic"),
        clock: SystemClock,
        pods: None,
        nic_events: None,
        metrics: metrics.clone(),
        reporter: None,
        policy: None,
        client: None,
        time_scale: 1.0,
    };
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(hostnic_agent::run(
        deps,
        settings,
        InstanceId::new(INSTANCE),
        async move {
            let _ = rx.await;
        },
    ));

    // Before: "starting: resolving the node and reconciling", nothing else.
    let (line, body) = poll(addr, "/readyz", |_, b| b.contains("1200")).await;
    assert!(line.contains("503"), "{line}");
    assert!(body.contains("resolving the instance"), "{body}");
    assert!(body.contains("qcsecret"), "the fix: {body}");
    assert!(body.contains("permanent"), "{body}");
    let (line, body) = http_get(addr, "/v1/status").await;
    assert!(line.contains("503"), "{line}");
    let status: introspect::Startup = serde_json::from_str(&body).unwrap();
    let error = status.error.expect("the failure");
    assert!(error.permanent, "{error:?}");
    assert!(error.cause.contains("1200"), "{error:?}");
    assert_eq!(status.build.version, env!("CARGO_PKG_VERSION"));
    // Not retried in a tight loop: the next attempt is half a minute away, and
    // after a second nothing more was sent (200 ms backoff sent 3 more before).
    assert!(status.next_attempt_in_secs.unwrap() >= 25, "{body}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = metrics.counter(
        "hostnic_cloud_api_calls_total",
        &[("action", "DescribeInstances"), ("ret_code", "1200")],
    );
    assert_eq!(calls, 1, "calls with the wrong key");
    let (_, text) = http_get(addr, "/metrics").await;
    assert!(text.contains("hostnic_starting 1\n"), "{text}");
    assert!(
        text.contains(
            "hostnic_startup_error{step=\"resolving the instance\",permanent=\"true\"} 1\n"
        ),
        "{text}"
    );
    // Restarting would not help: nothing the agent read has changed.
    let (line, _) = http_get(addr, "/healthz").await;
    assert!(line.contains("200"), "{line}");
    let _ = stop.send(());
    agent.await.unwrap().unwrap();
    sim.shutdown().await;
}

/// The binary without its credentials file: `/readyz` says what and how to fix it,
/// and once the file appears (the Secret was created) `/healthz` asks for the
/// restart that reads it. The log written to a file carries no ANSI colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_says_what_is_missing_and_asks_for_a_restart_when_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("qcsecret/config.yaml");
    let addr = free_port();
    let log = dir.path().join("agent.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hostnic-agent"))
        .args(["--credentials", creds.to_str().unwrap()])
        .args(["--instance-id", INSTANCE])
        .args(["--metrics-addr", &addr.to_string()])
        .args(["--state-dir", dir.path().join("state").to_str().unwrap()])
        .args(["--socket", dir.path().join("s.sock").to_str().unwrap()])
        .args(["--log-format", "text"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let (line, body) = poll(addr, "/readyz", |_, b| b.contains("credentials")).await;
    assert!(line.contains("503"), "{line}");
    assert!(
        body.contains("qcsecret") && body.contains(creds.to_str().unwrap()),
        "{body}"
    );
    let (line, _) = http_get(addr, "/healthz").await;
    assert!(line.contains("200"), "{line}");
    std::fs::create_dir_all(creds.parent().unwrap()).unwrap();
    std::fs::write(
        &creds,
        "qy_access_key_id: AKID\nqy_secret_access_key: S\nzone: pek3\n",
    )
    .unwrap();
    let (_, body) = poll(addr, "/healthz", |l, _| l.contains("503")).await;
    assert!(
        body.contains("restart") && body.contains("config.yaml"),
        "{body}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("permanently"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escapes in a log file:\n{text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_public_and_introspection_stays_on_loopback() {
    let mut world = World::small();
    let port = free_port().port();
    world.settings.metrics_addr = format!("0.0.0.0:{port}").parse().unwrap();
    let introspection = free_port();
    world.settings.introspection_addr = Some(introspection);
    let agent = world.start();
    agent.serving().await;
    let local: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (line, body) = http_get(local, "/v1/pods").await;
    assert!(line.contains("404"), "{line}");
    assert!(
        body.contains(&introspection.to_string()),
        "points there: {body}"
    );
    let (line, text) = http_get(local, "/metrics").await;
    assert!(
        line.contains("200") && text.contains("hostnic_pool_free"),
        "{line}"
    );
    let (line, body) = http_get(introspection, "/v1/status").await;
    assert!(line.contains("200"), "{line}");
    let status: introspect::Status = serde_json::from_str(&body).unwrap();
    assert_eq!(status.build.version, env!("CARGO_PKG_VERSION"));
    assert!(!status.build.commit.is_empty());
    assert_eq!(status.mode, "exclusive");
    assert!(
        text.contains(&format!(
            "hostnic_build_info{{version=\"{}\",commit=\"{}\"}} 1",
            status.build.version, status.build.commit
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "hostnic_node_info{{instance=\"{INSTANCE}\",mode=\"exclusive\"}} 1"
    )));
    assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
    agent.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_endpoint_answers_only_get_and_drops_slow_clients() {
    let world = World::small();
    let addr = world.settings.metrics_addr;
    let agent = world.start();
    agent.serving().await;
    let answer = raw(
        addr,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("allow: get, head"),
        "{answer}"
    );
    let answer = raw(
        addr,
        "DELETE /v1/pods HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    // Headers that never end: closed after the header timeout (5 s), not held
    // open (the 30 s guard of `raw` is what the old code ran into).
    let started = Instant::now();
    let answer = raw(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "a connection with unfinished headers was held open: {answer:?}"
    );
    // Still serving the others.
    let (line, _) = http_get(addr, "/healthz").await;
    assert!(line.contains("200"), "{line}");
    agent.stop().unwrap();
}

fn write_newer_checkpoint(state_dir: &Path) -> Vec<u8> {
    std::fs::create_dir_all(state_dir).unwrap();
    let doc = format!(
        "{{\n  \"version\": \"hostnic/2\",\n  \"generation\": 9,\n  \"instance\": \"{INSTANCE}\",\n  \
         \"written_at\": 1,\n  \"nics\": [],\n  \"attachments\": [],\n  \"blocks\": []\n}}\n"
    );
    std::fs::write(state_dir.join("state.json"), &doc).unwrap();
    doc.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_a_newer_hostnic_is_refused_and_left_as_it_is() {
    let world = World::small();
    let written = write_newer_checkpoint(&world.settings.state_dir);
    let addr = world.settings.metrics_addr;
    let agent = world.start();
    let (_, body) = poll(addr, "/readyz", |_, b| b.contains("newer")).await;
    assert!(
        body.contains("hostnic/2") && body.contains("docs/upgrade.md"),
        "{body}"
    );
    assert!(body.contains("permanent"), "{body}");
    // Not set aside and rebuilt over (the recovery's way with damage).
    let files: Vec<String> = std::fs::read_dir(&world.settings.state_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["state.json"], "{files:?}");
    assert_eq!(
        std::fs::read(world.settings.state_dir.join("state.json")).unwrap(),
        written
    );
    assert!(try_call(&world.socket(), status_req()).await.is_err());
    assert_eq!(
        world
            .cloud
            .requests(hostnic_core::testing::CloudAction::Topology),
        0,
        "no cloud call before the state is usable"
    );
    agent.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_conflist_sorting_first_is_reported_then_moved_aside() {
    let mut world = World::small();
    let conf = world.settings.cni_conf_dir.clone();
    std::fs::create_dir_all(&conf).unwrap();
    let old = conf.join("10-ahostnic.conflist");
    std::fs::write(
        &old,
        r#"{"cniVersion":"0.3.1","name":"hostnic","plugins":[{"type":"hostnic"}]}"#,
    )
    .unwrap();
    let addr = world.settings.metrics_addr;
    let agent = world.start();
    agent.serving().await;
    let (_, body) = poll(addr, "/readyz", |_, b| b.contains("10-ahostnic")).await;
    assert!(body.contains("other_conflists: move-aside"), "{body}");
    let (_, text) = http_get(addr, "/metrics").await;
    assert!(text.contains("hostnic_cni_config_shadowed 1\n"), "{text}");
    let (_, body) = http_get(addr, "/v1/status").await;
    let status: introspect::Status = serde_json::from_str(&body).unwrap();
    assert!(
        status.not_ready.iter().any(|r| r.contains("10-ahostnic")),
        "{status:?}"
    );
    assert!(old.exists(), "report touches nothing");
    agent.stop().unwrap();

    world.settings.other_conflists = OtherConflists::MoveAside;
    let agent = world.start();
    agent.serving().await;
    poll(addr, "/readyz", |l, _| l.contains("200")).await;
    assert!(!old.exists());
    assert!(
        conf.join("10-ahostnic.conflist.hostnic-moved-aside")
            .exists()
    );
    let (_, text) = http_get(addr, "/metrics").await;
    assert!(text.contains("hostnic_cni_config_shadowed 0\n"), "{text}");
    agent.stop().unwrap();
}

/// The settings of every test here leave introspection on the metrics listener.
#[test]
fn loopback_metrics_keep_introspection() {
    let s = Settings::default();
    assert_eq!(s.introspection(), s.metrics_addr);
}
