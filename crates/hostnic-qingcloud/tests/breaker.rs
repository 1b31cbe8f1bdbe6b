//! The request-quota breaker on a paused clock: after the account's request
//! quota is exhausted the client sends no more than one probe a minute until the
//! quota frees, refuses every other call at once without sending it, and says so
//! through its state and its watch channel.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hostnic_core::ports::CloudErrorKind;
use hostnic_qingcloud::signer::Params;
use hostnic_qingcloud::transport::{Transport, TransportError, WireRequest};
use hostnic_qingcloud::{BreakerStatus, ClientOptions, Config, QingCloudClient, Secret};
use tokio::time::Instant;

/// An API whose request quota is exhausted from `locks` to `frees` (seconds after start).
struct Account {
    start: Instant,
    locks: Duration,
    frees: Duration,
    seen: Mutex<Vec<Duration>>,
}

#[async_trait]
impl Transport for Account {
    async fn send(&self, _: &WireRequest) -> Result<String, TransportError> {
        let at = self.start.elapsed();
        self.seen.lock().unwrap().push(at);
        Ok(if at >= self.locks && at < self.frees {
            r#"{"ret_code":2500,"message":"QuotaExceeded, the API request quota of access key [AK] is exceeded: at most [2000] requests in [3600] seconds, please try again later"}"#
        } else {
            r#"{"ret_code":0,"nic_set":[],"total_count":0}"#
        }
        .to_string())
    }
}

#[tokio::test(start_paused = true)]
async fn after_a_request_quota_2500_at_most_one_probe_a_minute_until_the_quota_frees() {
    let start = Instant::now();
    let account = Arc::new(Account {
        start,
        locks: Duration::from_secs(30),
        frees: Duration::from_secs(310),
        seen: Mutex::new(Vec::new()),
    });
    let config = Config::new("AK", Secret::new("SK"), "pek3a");
    // The defaults: a one-minute probe interval and the default budget.
    let client =
        QingCloudClient::with_transport(&config, ClientOptions::default(), account.clone());
    assert_eq!(
        client.options().breaker_probe_interval,
        Duration::from_secs(60)
    );

    // Every transition, as an agent exporting a metric would see them.
    let mut watch = client.watch_breaker();
    let transitions = Arc::new(Mutex::new(Vec::new()));
    let recorder = {
        let transitions = transitions.clone();
        tokio::spawn(async move {
            while watch.changed().await.is_ok() {
                let s = watch.borrow_and_update().clone();
                transitions
                    .lock()
                    .unwrap()
                    .push((start.elapsed().as_secs(), s.status, s.probes));
            }
        })
    };

    // A caller that wants the cloud every second for ten minutes.
    let mut refused = 0u64;
    for _ in 0..600 {
        let before = Instant::now();
        match client.call("DescribeNics", Params::new()).await {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.kind, CloudErrorKind::Throttled, "{e}");
                if e.code.is_none() {
                    refused += 1;
                    assert_eq!(
                        before.elapsed(),
                        Duration::ZERO,
                        "refused at once, not queued"
                    );
                    assert!(e.message.contains("request quota is exhausted"), "{e}");
                }
            }
        }
        tokio::time::sleep_until(before + Duration::from_secs(1)).await;
    }

    let seen = account.seen.lock().unwrap().clone();
    let locks = Duration::from_secs(30);
    let frees = Duration::from_secs(310);
    // Before the lock-out every call went; the call at 30 s met the 2500 and tripped.
    assert_eq!(seen.iter().filter(|t| **t < locks).count(), 30);
    // From the trip until the quota freed: the tripping call and probes at least a
    // minute apart (plus up to a tenth of it at random), nothing else.
    let locked: Vec<Duration> = seen
        .iter()
        .copied()
        .filter(|t| *t >= locks && *t < frees)
        .collect();
    assert_eq!(locked[0], locks);
    for pair in locked.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_secs(60),
            "probes {gap:?} apart: {locked:?}"
        );
        assert!(
            gap <= Duration::from_secs(67),
            "a probe was late: {locked:?}"
        );
    }
    assert!(
        (4..=5).contains(&locked.len()),
        "280 s locked: the trip and 3 or 4 probes, got {locked:?}"
    );
    // The first probe after the quota freed closed the breaker, within one interval.
    let reopened = seen.iter().copied().find(|t| *t >= frees).unwrap();
    assert!(reopened < frees + Duration::from_secs(67), "{reopened:?}");
    // From then on, every call went again.
    let after = seen.iter().filter(|t| **t > reopened).count() as u64;
    assert_eq!(after, 599 - reopened.as_secs());
    assert_eq!(
        refused,
        600 - seen.len() as u64,
        "every call not sent was refused by the breaker"
    );

    let state = client.breaker();
    assert_eq!(state.status, BreakerStatus::Closed);
    assert_eq!(state.trips, 1);
    assert_eq!(
        state.probes as usize,
        locked.len(),
        "the trip's call was no probe; the one that closed it was"
    );
    assert_eq!(state.refused, refused);
    assert!(state.last_error.unwrap().contains("request quota"));

    drop(client);
    recorder.abort();
    // A watch channel holds the latest state (a probe answered at once is seen
    // as open → open with one more probe): opened once at 30 s, never closed
    // before the quota freed, closed at the end.
    let transitions = transitions.lock().unwrap().clone();
    assert_eq!(
        transitions.first(),
        Some(&(30, BreakerStatus::Open, 0)),
        "{transitions:?}"
    );
    let (last, rest) = transitions.split_last().unwrap();
    assert_eq!(
        (last.1, last.2 as usize),
        (BreakerStatus::Closed, locked.len())
    );
    assert!(last.0 >= 310, "{transitions:?}");
    assert!(
        rest.iter().all(|(_, s, _)| *s != BreakerStatus::Closed),
        "{transitions:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_gets_no_answer_waits_another_interval_and_a_dropped_probe_frees_the_slot() {
    struct Down;
    #[async_trait]
    impl Transport for Down {
        async fn send(&self, request: &WireRequest) -> Result<String, TransportError> {
            if request.query.contains("action=Hang") {
                std::future::pending::<()>().await;
            }
            if request.query.contains("action=Trip") {
                return Ok(
                    r#"{"ret_code":2500,"message":"QuotaExceeded, too many requests"}"#.into(),
                );
            }
            Err(TransportError {
                message: "connection refused".into(),
                retryable: true,
            })
        }
    }
    let config = Config::new("AK", Secret::new("SK"), "pek3a");
    let client = QingCloudClient::with_transport(
        &config,
        ClientOptions {
            retries: 0,
            ..ClientOptions::default()
        },
        Arc::new(Down),
    );
    let err = client.call("Trip", Params::new()).await.unwrap_err();
    assert_eq!(
        (err.kind, err.code),
        (CloudErrorKind::Throttled, Some(2500))
    );
    assert_eq!(client.breaker().status, BreakerStatus::Open);

    // The probe meets a dead endpoint: nothing learned, open for another interval.
    tokio::time::sleep(client.breaker().next_probe_in().unwrap()).await;
    let err = client
        .call("DescribeNics", Params::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind, CloudErrorKind::Retryable);
    let s = client.breaker();
    assert_eq!((s.status, s.probes), (BreakerStatus::Open, 1));
    assert!(s.next_probe_in().unwrap() >= Duration::from_secs(60));

    // A probe whose caller gives up (dropped future) lets the next call probe at once.
    tokio::time::sleep(s.next_probe_in().unwrap()).await;
    let hung =
        tokio::time::timeout(Duration::from_secs(1), client.call("Hang", Params::new())).await;
    assert!(hung.is_err());
    assert_eq!(client.breaker().status, BreakerStatus::Open);
    assert_eq!(client.breaker().next_probe_in(), Some(Duration::ZERO));
    let err = client
        .call("DescribeNics", Params::new())
        .await
        .unwrap_err();
    assert_eq!(
        err.kind,
        CloudErrorKind::Retryable,
        "this call was the probe: {err}"
    );
    assert_eq!(client.breaker().probes, 3);
}

#[tokio::test(start_paused = true)]
async fn with_a_probe_max_each_refused_probe_doubles_the_interval() {
    // A fleet probing a locked account once a minute per node keeps it locked (every
    // request counts, refused ones too): the agent lets the interval double.
    let start = Instant::now();
    let account = Arc::new(Account {
        start,
        locks: Duration::ZERO,
        frees: Duration::from_secs(4 * 3600),
        seen: Mutex::new(Vec::new()),
    });
    let config = Config::new("AK", Secret::new("SK"), "pek3a");
    let client = QingCloudClient::with_transport(
        &config,
        ClientOptions {
            breaker_probe_max: Duration::from_secs(3600),
            ..ClientOptions::default()
        },
        account.clone(),
    );
    for _ in 0..(3 * 3600) {
        let before = Instant::now();
        let _ = client.call("DescribeNics", Params::new()).await;
        tokio::time::sleep_until(before + Duration::from_secs(1)).await;
    }
    let seen = account.seen.lock().unwrap().clone();
    let gaps: Vec<u64> = seen.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
    // 60, 120, 240, … s (plus up to a tenth), then at most an hour (plus a tenth).
    for (i, gap) in gaps.iter().enumerate() {
        let nominal = (60u64 << i.min(20)).min(3600);
        assert!(
            *gap >= nominal && *gap <= nominal + nominal / 10 + 1,
            "probe gaps {gaps:?}"
        );
    }
    assert!(seen.len() <= 9, "3 h locked: {} requests", seen.len());
}

/// An API locked from `locks`, free for a short while from `frees`, locked again from `relocks`.
struct Flapping {
    start: Instant,
    locks: Duration,
    frees: Duration,
    relocks: Duration,
    seen: Mutex<Vec<Duration>>,
}

#[async_trait]
impl Transport for Flapping {
    async fn send(&self, _: &WireRequest) -> Result<String, TransportError> {
        let at = self.start.elapsed();
        self.seen.lock().unwrap().push(at);
        let locked = (at >= self.locks && at < self.frees) || at >= self.relocks;
        Ok(if locked {
            r#"{"ret_code":2500,"message":"QuotaExceeded, the API request quota of access key [AK] is exceeded"}"#
        } else {
            r#"{"ret_code":0,"nic_set":[],"total_count":0}"#
        }
        .to_string())
    }
}

#[tokio::test(start_paused = true)]
async fn an_account_locked_again_soon_is_probed_where_the_backoff_stopped() {
    // Locked for 8 min (probes at 1, 3, 7 min: the interval reached 8 min), free for
    // 2 min, locked again: the first probe comes 8 min after the trip, not 1 min.
    let start = Instant::now();
    let api = Arc::new(Flapping {
        start,
        locks: Duration::ZERO,
        frees: Duration::from_secs(8 * 60),
        relocks: Duration::from_secs(20 * 60),
        seen: Mutex::new(Vec::new()),
    });
    let config = Config::new("AK", Secret::new("SK"), "pek3a");
    let client = QingCloudClient::with_transport(
        &config,
        ClientOptions {
            breaker_probe_max: Duration::from_secs(3600),
            ..ClientOptions::default()
        },
        api.clone(),
    );
    for _ in 0..(40 * 60) {
        let before = Instant::now();
        let _ = client.call("DescribeNics", Params::new()).await;
        tokio::time::sleep_until(before + Duration::from_secs(1)).await;
    }
    let seen = api.seen.lock().unwrap().clone();
    let relocked = seen
        .iter()
        .copied()
        .find(|t| *t >= Duration::from_secs(20 * 60))
        .unwrap();
    let next = seen.iter().copied().find(|t| *t > relocked).unwrap();
    assert!(
        next - relocked >= Duration::from_secs(8 * 60),
        "first probe {:?} after the second trip: {seen:?}",
        next - relocked
    );
    assert_eq!(client.breaker().trips, 2);
}
