//! Leader election against the fake API server (real HTTP, real time, short
//! durations): one leader at a time, renewal, take-over after expiry, hand-over on
//! graceful shutdown, stepping down when renewals fail, and a race for an expired
//! Lease that exactly one candidate wins.

use std::time::Duration;

use hostnic_k8s::fake_apiserver::FakeApiServer;
use hostnic_k8s::lease::{LeaderElector, Leadership, LeaseConfig, spawn};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::sync::watch;

async fn client(server: &FakeApiServer, dir: &tempfile::TempDir) -> kube::Client {
    let kubeconfig = server.write_kubeconfig(dir.path()).unwrap();
    hostnic_k8s::client(Some(&kubeconfig)).await.unwrap()
}

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: Duration::from_millis(1000),
        renew_deadline: Duration::from_millis(600),
        retry_period: Duration::from_millis(100),
        ..LeaseConfig::new("kube-system", "hostnic-controller", identity)
    }
}

async fn wait_for(rx: &mut watch::Receiver<Leadership>, leader: bool, within: Duration) {
    tokio::time::timeout(within, rx.wait_for(|l| l.is_leader() == leader))
        .await
        .unwrap_or_else(|_| panic!("leader={leader} not reached within {within:?}"))
        .unwrap();
}

async fn holder(client: &kube::Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    leases
        .get("hostnic-controller")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity)
}

#[tokio::test]
async fn one_leader_then_the_other_after_the_lease_expires() {
    let server = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, &dir).await;
    let (stop_a, a_shutdown) = watch::channel(false);
    let (mut a, a_task) = spawn(client.clone(), config("a"), a_shutdown);
    wait_for(&mut a, true, Duration::from_secs(5)).await;
    let (_stop_b, b_shutdown) = watch::channel(false);
    let (mut b, _b_task) = spawn(client.clone(), config("b"), b_shutdown);
    // A keeps renewing: B stays a follower well past the lease duration.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(a.borrow().is_leader());
    assert_eq!(
        *b.borrow(),
        Leadership::Follower {
            holder: Some("a".into())
        }
    );
    assert_eq!(holder(&client).await.as_deref(), Some("a"));
    // A dies without releasing: B takes over once A's record stayed unrenewed
    // for the lease duration, not before.
    a_task.abort();
    drop(stop_a);
    let died = tokio::time::Instant::now();
    wait_for(&mut b, true, Duration::from_secs(5)).await;
    assert!(
        died.elapsed() >= Duration::from_millis(900),
        "{:?}",
        died.elapsed()
    );
    assert_eq!(holder(&client).await.as_deref(), Some("b"));
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let lease = leases.get("hostnic-controller").await.unwrap();
    assert_eq!(lease.spec.unwrap().lease_transitions, Some(1));
}

#[tokio::test]
async fn a_graceful_shutdown_hands_over_at_once() {
    let server = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, &dir).await;
    let slow = |id: &str| LeaseConfig {
        // A long lease: only the release explains a quick hand-over.
        lease_duration: Duration::from_secs(30),
        renew_deadline: Duration::from_secs(20),
        ..config(id)
    };
    let (stop_a, a_shutdown) = watch::channel(false);
    let (mut a, a_task) = spawn(client.clone(), slow("a"), a_shutdown);
    wait_for(&mut a, true, Duration::from_secs(5)).await;
    let (_stop_b, b_shutdown) = watch::channel(false);
    let (mut b, _b_task) = spawn(client.clone(), slow("b"), b_shutdown);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_a.send(true).unwrap();
    a_task.await.unwrap();
    assert!(!a.borrow().is_leader());
    wait_for(&mut b, true, Duration::from_secs(2)).await;
    assert_eq!(holder(&client).await.as_deref(), Some("b"));
}

#[tokio::test]
async fn a_leader_that_cannot_renew_steps_down_within_the_renew_deadline() {
    let server = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, &dir).await;
    let (_stop, shutdown) = watch::channel(false);
    let long = LeaseConfig {
        lease_duration: Duration::from_secs(3),
        ..config("a")
    };
    let (mut a, _task) = spawn(client.clone(), long, shutdown);
    wait_for(&mut a, true, Duration::from_secs(5)).await;
    server.set_available(false);
    let down = tokio::time::Instant::now();
    wait_for(&mut a, false, Duration::from_secs(5)).await;
    // Stepped down (after its 600 ms renew deadline) before the lease expired for
    // the others (3 s after its last renewal).
    assert!(
        down.elapsed() < Duration::from_secs(3),
        "{:?}",
        down.elapsed()
    );
    server.set_available(true);
    wait_for(&mut a, true, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn of_two_candidates_racing_for_an_expired_lease_exactly_one_wins() {
    let server = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, &dir).await;
    let mut dead = LeaderElector::new(client.clone(), config("dead"));
    assert!(dead.try_acquire_or_renew().await.unwrap());
    let mut a = LeaderElector::new(client.clone(), config("a"));
    let mut b = LeaderElector::new(client.clone(), config("b"));
    assert!(!a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (ra, rb) = tokio::join!(a.try_acquire_or_renew(), b.try_acquire_or_renew());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(ra ^ rb, "a won: {ra}, b won: {rb}");
    let winner = if ra { "a" } else { "b" };
    assert_eq!(holder(&client).await.as_deref(), Some(winner));
}

#[tokio::test]
async fn the_leader_carries_its_notes_on_the_lease_for_the_next_one() {
    let server = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, &dir).await;
    let mut a = LeaderElector::new(client.clone(), config("a"));
    a.notes()
        .lock()
        .unwrap()
        .write
        .insert("hostnic.io/spent".into(), "[[1,2]]".into());
    assert!(a.try_acquire_or_renew().await.unwrap());
    let mut b = LeaderElector::new(client.clone(), config("b"));
    assert!(!b.try_acquire_or_renew().await.unwrap());
    assert_eq!(
        b.notes()
            .lock()
            .unwrap()
            .read
            .get("hostnic.io/spent")
            .map(String::as_str),
        Some("[[1,2]]")
    );
}
