//! The whole agent in-process over the core's fakes: storms of concurrent ADD/DEL,
//! restarts and crashes in the middle, pending-DEL replay, readiness gating.

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use hostnic_core::api::{
    Outcome, PENDING_DEL_DIR, PendingDel, Reply, Response, codes, pending_del_file_name,
};
use hostnic_core::config::PoolConfig;
use hostnic_core::ports::Clock;
use hostnic_core::types::Timestamp;
use serde_json::json;

fn ok_ip(r: &Response) -> Ipv4Addr {
    match &r.outcome {
        Outcome::Ok(Reply::Add(a)) => a.ip.addr(),
        other => panic!("expected an ADD reply, got {other:?}"),
    }
}

fn err_code(r: &Response) -> u32 {
    match &r.outcome {
        Outcome::Error(e) => e.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn is_ok(r: &Response) -> bool {
    matches!(r.outcome, Outcome::Ok(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_add_del_storm_gives_distinct_nics_and_releases_them() {
    let world = World::small();
    let agent = world.start();
    agent.serving().await;
    let socket = world.socket();

    // 30 ADDs at once on a pool of 2: most must wait for the pool to grow.
    let adds: Vec<_> = (0..30)
        .map(|i| {
            let s = socket.clone();
            tokio::spawn(async move { call(&s, add_req(i, 30_000)).await })
        })
        .collect();
    let mut ips = BTreeSet::new();
    for a in adds {
        let r = a.await.unwrap();
        assert!(ips.insert(ok_ip(&r)), "an address was given twice");
    }
    assert_eq!(ips.len(), 30);
    assert_eq!(world.host.plumbed().len(), 30);

    // DEL 15 while 10 new pods are ADDed.
    let mut tasks = Vec::new();
    for i in 0..15 {
        let s = socket.clone();
        tasks.push(tokio::spawn(async move { call(&s, del_req(i)).await }));
    }
    for i in 30..40 {
        let s = socket.clone();
        tasks.push(tokio::spawn(
            async move { call(&s, add_req(i, 30_000)).await },
        ));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert!(is_ok(&r), "{r:?}");
    }
    // 15 remaining + 10 new, each with its own address on the host.
    let plumbed = world.host.plumbed();
    assert_eq!(plumbed.len(), 25, "{plumbed:?}");
    for i in 15..40 {
        assert!(
            is_ok(&call(&socket, check_req(i)).await),
            "CHECK of pod {i}"
        );
    }
    for i in 0..15 {
        assert_eq!(
            err_code(&call(&socket, check_req(i)).await),
            codes::UNKNOWN_CONTAINER
        );
    }
    // Repeated ADD is idempotent: same address.
    let again = ok_ip(&call(&socket, add_req(20, 5_000)).await);
    assert!(plumbed.contains_key(&again));
    assert_eq!(world.host.plumbed().len(), 25);

    let adds_ok = agent.metrics.counter(
        "hostnic_cni_requests_total",
        &[("verb", "ADD"), ("result", "ok")],
    );
    assert_eq!(adds_ok, 41);
    agent.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_in_the_middle_of_a_burst_then_restart_keeps_every_answered_pod() {
    let world = World::small();
    let agent = world.start();
    agent.serving().await;
    let socket = world.socket();
    for i in 0..5 {
        ok_ip(&call(&socket, add_req(i, 30_000)).await);
    }
    // A burst in flight when the agent dies.
    let burst: Vec<_> = (5..25)
        .map(|i| {
            let s = socket.clone();
            tokio::spawn(async move { (i, try_call(&s, add_req(i, 30_000)).await) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    agent.kill();
    let mut answered = vec![0, 1, 2, 3, 4];
    for b in burst {
        let (i, r) = b.await.unwrap();
        if let Ok(r) = r
            && is_ok(&r)
        {
            answered.push(i);
        }
    }

    let agent = world.start();
    agent.serving().await;
    // Every pod that got a success is still plumbed and checks out. An ADD cut
    // short may be kept too, recorded by a checkpoint written while it was in
    // flight: plumbed (the startup reconcile plumbs it again) or not confirmed
    // yet (CHECK says so). The runtime's retried ADD completes it, its DEL
    // releases it. No plumbing on the host is unrecorded.
    for &i in &answered {
        assert!(is_ok(&call(&socket, check_req(i)).await), "pod {i} lost");
    }
    let (mut plumbed_ok, mut unconfirmed) = (answered.len(), 0);
    for i in (5..25).filter(|i| !answered.contains(i)) {
        let r = call(&socket, check_req(i)).await;
        if is_ok(&r) {
            plumbed_ok += 1;
            continue;
        }
        match err_code(&r) {
            codes::UNKNOWN_CONTAINER => {}
            codes::CHECK_MISMATCH => unconfirmed += 1,
            other => panic!("pod {i}: code {other}: {r:?}"),
        }
    }
    let before = world.host.plumbed().len();
    assert!(
        (plumbed_ok..=plumbed_ok + unconfirmed).contains(&before),
        "orphan plumbing after the restart: {before} on the host, {plumbed_ok} recorded \
         and plumbed, {unconfirmed} recorded and unconfirmed"
    );
    // The runtime retries the ADDs that failed; they now succeed, no address twice.
    let mut ips = BTreeSet::new();
    for i in 0..25 {
        assert!(ips.insert(ok_ip(&call(&socket, add_req(i, 30_000)).await)));
    }
    assert_eq!(world.host.plumbed().len(), 25);
    // DEL everything: every NIC goes back to the pool (or is retired).
    for i in 0..25 {
        assert!(is_ok(&call(&socket, del_req(i)).await));
    }
    assert!(world.host.plumbed().is_empty());
    agent.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_keeps_pods_pool_and_conflist() {
    let world = World::small();
    let agent = world.start();
    agent.serving().await;
    let socket = world.socket();
    let ip = ok_ip(&call(&socket, add_req(1, 30_000)).await);
    for _ in 0..250 {
        if world.conflist().exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(world.conflist().exists());
    agent.stop().unwrap();
    assert!(
        world.conflist().exists(),
        "the conflist must survive a stop"
    );
    assert!(world.settings.state_dir.join("state.json").exists());

    let agent = world.start();
    agent.serving().await;
    assert_eq!(ok_ip(&call(&socket, add_req(1, 5_000)).await), ip);
    assert!(is_ok(&call(&socket, check_req(1)).await));
    agent.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_dels_are_replayed_before_serving() {
    let world = World::small();
    let agent = world.start();
    agent.serving().await;
    let socket = world.socket();
    let ip_gone = ok_ip(&call(&socket, add_req(1, 30_000)).await);
    let ip_kept = ok_ip(&call(&socket, add_req(2, 30_000)).await);
    agent.kill();

    let dir = world.settings.state_dir.join(PENDING_DEL_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    let record = |i: usize, at: Timestamp| PendingDel {
        version: 1,
        pod: pod(i),
        netns: Some(format!("/var/run/netns/cni-{i}")),
        network: "hostnic".into(),
        requested_at_ms: at,
        reason: "agent unreachable".into(),
        prev_result: None,
    };
    let now = world.clock.now();
    // Pod 1's DEL came after its ADD: it must be done.
    std::fs::write(
        dir.join(pending_del_file_name(&pod(1).attachment())),
        serde_json::to_vec(&record(1, Timestamp(now.0 + 1))).unwrap(),
    )
    .unwrap();
    // Pod 2's record is older than its (re-)ADD: it must not release the new attachment.
    std::fs::write(
        dir.join(pending_del_file_name(&pod(2).attachment())),
        serde_json::to_vec(&record(2, Timestamp(1))).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("garbage.json"), b"{nope").unwrap();
    std::fs::write(dir.join(".x.json.tmp-4242"), b"half").unwrap();

    let agent = world.start();
    agent.serving().await;
    let plumbed = world.host.plumbed();
    assert!(!plumbed.contains_key(&ip_gone), "pod 1 was not released");
    assert!(
        plumbed.contains_key(&ip_kept),
        "pod 2 was released by an old DEL"
    );
    assert_eq!(
        err_code(&call(&socket, check_req(1)).await),
        codes::UNKNOWN_CONTAINER
    );
    assert!(is_ok(&call(&socket, check_req(2)).await));
    let mut left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["garbage.json.bad".to_string()]);
    assert_eq!(
        agent
            .metrics
            .counter("hostnic_pending_dels_total", &[("outcome", "done")]),
        1
    );
    agent.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflist_is_written_only_once_the_agent_can_serve() {
    let world = World::small();
    // The cloud is down: the agent cannot learn who it is, let alone create NICs.
    world.cloud.set_fault_rate(1.0);
    let agent = world.start();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !world.conflist().exists(),
        "conflist written while not ready"
    );
    assert!(try_call(&world.socket(), status_req()).await.is_err());
    // Alive (so a liveness probe does not restart it) but not ready.
    let (line, _) = http_get(world.settings.metrics_addr, "/healthz").await;
    assert!(line.contains("200"), "{line}");
    let (line, _) = http_get(world.settings.metrics_addr, "/readyz").await;
    assert!(line.contains("503"), "{line}");

    world.cloud.set_fault_rate(0.0);
    agent.serving().await;
    for _ in 0..250 {
        if world.conflist().exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = std::fs::read_to_string(world.conflist()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(
        v["plugins"][0]["agentSocket"],
        world.socket().display().to_string()
    );
    let (line, body) = http_get(world.settings.metrics_addr, "/readyz").await;
    assert!(line.contains("200"), "{line} {body}");
    agent.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_without_a_nic_before_the_deadline_is_code_11_and_leaves_nothing() {
    let mut world = World::small();
    world.settings.pool.min_free = 0;
    let agent = world.start();
    agent.serving().await;
    world.cloud.set_fault_rate(1.0);
    let r = call(&world.socket(), add_req(1, 400)).await;
    assert_eq!(err_code(&r), codes::TRY_AGAIN_LATER);
    assert!(world.host.plumbed().is_empty());
    let status = call(&world.socket(), status_req()).await;
    assert_eq!(err_code(&status), codes::PLUGIN_NOT_AVAILABLE);
    world.cloud.set_fault_rate(0.0);
    // The engine backs off after failures, in the (manual) clock's time.
    world.clock.advance(Duration::from_secs(120));
    let r = call(&world.socket(), add_req(1, 30_000)).await;
    ok_ip(&r);
    agent.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_are_answered_not_dropped() {
    let world = World::small();
    let agent = world.start();
    agent.serving().await;
    let socket = world.socket();
    // Another protocol version.
    let body = br#"{"version": 7, "verb": "STATUS"}"#;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    let buf = raw_call(&socket, &frame).await.unwrap();
    let (r, _) = hostnic_core::api::decode_frame::<Response>(&buf).unwrap();
    assert_eq!(err_code(&r), codes::INCOMPATIBLE_VERSION);
    // A header announcing more than 1 MiB is refused without reading it.
    let buf = raw_call(&socket, &(2u32 << 20).to_be_bytes())
        .await
        .unwrap();
    let (r, _) = hostnic_core::api::decode_frame::<Response>(&buf).unwrap();
    assert_eq!(err_code(&r), codes::DECODE_FAILED);
    // The socket is private to root.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    agent.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_the_cap_is_answered_busy_until_a_slot_frees() {
    let mut world = World::small();
    world.settings.socket_limits.max_connections = 4;
    let agent = world.start();
    agent.serving().await;
    let socket = world.socket();
    // Four connections that say nothing hold every slot (for the read timeout).
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(tokio::net::UnixStream::connect(&socket).await.unwrap());
    }
    // The agent accepts them in its own time: until it has, a fifth connection
    // still gets a slot (and gives it back when answered). Poll until it is refused.
    let mut r = call(&socket, status_req()).await;
    for _ in 0..100 {
        if matches!(r.outcome, Outcome::Error(_)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        r = call(&socket, status_req()).await;
    }
    match &r.outcome {
        Outcome::Error(e) => {
            assert_eq!(
                (e.code, e.msg.as_str()),
                (codes::TRY_AGAIN_LATER, "agent busy")
            );
            assert!(e.details.contains("max_connections"), "{e:?}");
        }
        other => panic!("expected busy, got {other:?}"),
    }
    assert_eq!(
        agent
            .metrics
            .counter("hostnic_socket_refused_total", &[("reason", "connections")]),
        1
    );
    // A client that leaves frees its slot at once.
    drop(idle);
    let busy = |r: &Response| matches!(&r.outcome, Outcome::Error(e) if e.msg == "agent busy");
    let mut answered = false;
    for _ in 0..50 {
        if !busy(&call(&socket, status_req()).await) {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        answered,
        "STATUS still busy after the idle connections left"
    );
    agent.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_introspection_show_the_pool_and_pods() {
    let world = World::small();
    let agent = world.start();
    agent.serving().await;
    ok_ip(&call(&world.socket(), add_req(1, 30_000)).await);
    let addr = world.settings.metrics_addr;
    let (line, metrics) = http_get(addr, "/metrics").await;
    assert!(line.contains("200"), "{line}");
    for needle in [
        "hostnic_nics{state=\"assigned\"} 1",
        "hostnic_pods 1",
        "hostnic_cni_requests_total{verb=\"ADD\",result=\"ok\"} 1",
        "hostnic_cni_request_duration_seconds_count{verb=\"ADD\"} 1",
        "hostnic_pool_rounds_total",
    ] {
        assert!(metrics.contains(needle), "{needle} missing in\n{metrics}");
    }
    let (_, status) = http_get(addr, "/v1/status").await;
    let status: hostnic_agent::introspect::Status = serde_json::from_str(&status).unwrap();
    assert_eq!(status.instance, INSTANCE);
    assert_eq!(status.pods, 1);
    assert_eq!(status.pool.assigned, 1);
    let (_, pods) = http_get(addr, "/v1/pods").await;
    let pods: Vec<hostnic_agent::introspect::Pod> = serde_json::from_str(&pods).unwrap();
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].name, "pod-1");
    let (_, nics) = http_get(addr, "/v1/nics").await;
    let nics: Vec<hostnic_agent::introspect::Nic> = serde_json::from_str(&nics).unwrap();
    assert_eq!(
        nics.iter().filter(|n| n.usage == "assigned").count(),
        1,
        "{nics:?}"
    );
    let (line, _) = http_get(addr, "/healthz").await;
    assert!(line.contains("200"));
    agent.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_reconcile_releases_pods_the_static_source_no_longer_lists() {
    let mut world = World::small();
    world.settings.reconcile_interval_secs = 0.3;
    let file = world.dir.path().join("pods.yaml");
    let listed = "- {namespace: default, name: pod-1, pending: false}\n\
                  - {namespace: default, name: pod-2, pending: false}\n\
                  - {namespace: default, name: pod-3, pending: false}\n";
    std::fs::write(&file, listed).unwrap();
    let source = std::sync::Arc::new(hostnic_agent::pods::StaticPods::new(&file));
    let agent = world.start_with_pods(Some(source));
    agent.serving().await;
    let socket = world.socket();
    for i in 1..=3 {
        ok_ip(&call(&socket, add_req(i, 30_000)).await);
    }
    // pod-3 is deleted from the node while the runtime's DEL is lost.
    std::fs::write(
        &file,
        "- {namespace: default, name: pod-1, pending: false}\n\
         - {namespace: default, name: pod-2, pending: false}\n",
    )
    .unwrap();
    // Fresh attachments are safe from release for pod_gone_grace (an ADD can precede
    // the pod source): let that pass on the agent's clock.
    world.clock.advance(Duration::from_secs(120));
    for _ in 0..250 {
        if world.host.plumbed().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(world.host.plumbed().len(), 2);
    assert_eq!(
        err_code(&call(&socket, check_req(3)).await),
        codes::UNKNOWN_CONTAINER
    );
    for i in 1..=2 {
        assert!(is_ok(&call(&socket, check_req(i)).await), "pod {i}");
    }
    assert!(
        agent
            .metrics
            .counter("hostnic_reconcile_actions_total", &[("kind", "release")])
            >= 1
    );
    agent.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_nic_link_makes_the_agent_reconcile_at_once() {
    use futures::StreamExt;
    let mut world = World::small();
    // The periodic reconcile never comes during this test: only the event can explain it.
    world.settings.reconcile_interval_secs = 3600.0;
    let (events, stream) = futures::channel::mpsc::unbounded();
    let agent = world.start_with(None, Some(stream.boxed()));
    agent.serving().await;
    let socket = world.socket();
    let ip = ok_ip(&call(&socket, add_req(1, 30_000)).await);
    let nic = world
        .cloud
        .nics()
        .into_iter()
        .find(|n| n.ip == ip)
        .expect("the pod's NIC")
        .id;
    // Someone deletes the NIC behind the agent's back; the kernel sees the link go.
    world.cloud.vanish(&nic);
    events
        .unbounded_send(hostnic_agent::HostEvent::NicRemoved(nic))
        .unwrap();
    let mut released = false;
    for _ in 0..250 {
        if world.host.plumbed().is_empty() {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(released, "the pod on the vanished NIC was not unplumbed");
    assert_eq!(
        err_code(&call(&socket, check_req(1)).await),
        codes::UNKNOWN_CONTAINER
    );
    agent.stop().unwrap();
}

/// The readiness fix: `/readyz` (and the conflist gate) and CNI STATUS apply one
/// rule. With no free NIC, one NIC cooling down and fewer pods than `max_nics`,
/// the node can serve the next ADD (once the cooldown ends, without the cloud);
/// the agent used to report it not ready while STATUS answered OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_status_agree_when_the_only_spare_nic_is_cooling() {
    let world = World::new(PoolConfig {
        min_free: 0,
        max_free: 2,
        max_nics: 2,
        batch_size: 1,
        // The manual clock never reaches the end of the cooldown.
        ip_cooldown: Duration::from_secs(3600),
        min_lifetime: Duration::ZERO,
        ..PoolConfig::default()
    });
    let agent = world.start();
    agent.serving().await;
    let socket = world.socket();
    ok_ip(&call(&socket, add_req(0, 30_000)).await);
    ok_ip(&call(&socket, add_req(1, 30_000)).await);
    assert!(is_ok(&call(&socket, del_req(1)).await));

    // Wait for the pool round after the DEL: 1 assigned, 1 cooling, none free.
    let addr = world.settings.metrics_addr;
    let mut pool = serde_json::Value::Null;
    for _ in 0..100 {
        let (_, body) = http_get(addr, "/v1/status").await;
        pool = serde_json::from_str::<serde_json::Value>(&body).unwrap()["pool"].clone();
        if pool["cooling"] == 1 && pool["assigned"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (&pool["free"], &pool["assigned"], &pool["cooling"]),
        (&json!(0), &json!(1), &json!(1)),
        "{pool}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let status = call(&socket, status_req()).await;
    assert!(is_ok(&status), "STATUS: {status:?}");
    let (line, body) = http_get(addr, "/readyz").await;
    assert!(
        line.contains("200"),
        "/readyz disagrees with STATUS: {line}: {body}"
    );
    agent.stop().unwrap();
}
