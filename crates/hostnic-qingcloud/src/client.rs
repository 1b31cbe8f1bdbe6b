//! The API client: every call goes down the tower stack of [`crate::service`]
//! (retry with backoff, the request-quota breaker, the request budget, timeout,
//! concurrency limit, signing), and is traced and counted.

use std::sync::Arc;
use std::time::Duration;

use hostnic_core::ports::CloudError;
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::config::{Config, Endpoint, Secret};
use crate::jobs::{JobPoller, SharedPoller};
use crate::limits::{Backoff, WindowLimit, scale_down};
use crate::service::{
    self, ApiRequest, ApiService, BreakerHandle, BreakerLayer, BreakerState, BudgetHandle,
    BudgetLayer, BudgetState, RetryPolicy, SendService, StackOptions,
};
use crate::signer::{Params, Signer};
use crate::stats::{CallObserver, CallRecord, CallStats};
use crate::transport::{HttpMethod, HttpTransport, Transport};

/// Tuning of the client. [`ClientOptions::from_config`] takes retries and timeout
/// from the file; [`ClientOptions::time_scaled`] runs every duration K times faster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientOptions {
    /// Timeout of one HTTP attempt.
    pub request_timeout: Duration,
    /// How many times a retryable failure is retried (so `retries + 1` attempts at most).
    pub retries: u32,
    /// Backoff between attempts.
    pub backoff: Backoff,
    /// The process's request budget: at most N requests (attempts) in any window of
    /// W. `None`: unlimited. Default 1,000 per 3,600 s, half the account's default
    /// quota, leaving the rest to the account's other users.
    pub budget: Option<WindowLimit>,
    /// How long a call may wait for a budget slot before it fails with `Throttled`.
    pub budget_max_wait: Duration,
    /// After a request-quota 2500 the client sends one probe per this interval (plus
    /// up to a tenth at random) and refuses every other call until the quota frees.
    pub breaker_probe_interval: Duration,
    /// Each probe the quota refuses doubles the probe interval, up to this: every
    /// request counts against the quota, refused ones too, so a fleet must probe a
    /// locked account rarely for it ever to free. Default: the probe interval (no
    /// doubling); the agent sets an hour.
    pub breaker_probe_max: Duration,
    /// Requests in flight at most.
    pub max_in_flight: usize,
    /// GET (the SDK default) or form POST.
    pub method: HttpMethod,
    /// First DescribeJobs poll of a job, after it started.
    pub job_poll_initial: Duration,
    /// Longest delay between DescribeJobs polls of a job.
    pub job_poll_max: Duration,
    /// Page size of Describe* calls (the API answers at most 100 items).
    pub page_size: u32,
}

/// The default request budget: 1,000 requests per 3,600 s.
pub const DEFAULT_BUDGET: WindowLimit = WindowLimit {
    requests: 1000,
    window: Duration::from_secs(3600),
};

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            retries: 3,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(10)),
            budget: Some(DEFAULT_BUDGET),
            budget_max_wait: Duration::from_secs(10),
            breaker_probe_interval: Duration::from_secs(60),
            breaker_probe_max: Duration::from_secs(60),
            max_in_flight: 8,
            method: HttpMethod::Get,
            job_poll_initial: Duration::from_secs(1),
            job_poll_max: Duration::from_secs(5),
            page_size: 100,
        }
    }
}

impl ClientOptions {
    /// Defaults with `connection_retries` and `connection_timeout` of the config file.
    pub fn from_config(config: &Config) -> Self {
        Self {
            request_timeout: config.connection_timeout,
            retries: config.connection_retries,
            ..Self::default()
        }
    }

    /// The same options with every duration `scale` times shorter (timeout, backoff,
    /// budget window and wait, probe interval, job polls): for a simulator run with
    /// `--time-scale K`, so the client lives in the same simulated time.
    pub fn time_scaled(self, scale: f64) -> Self {
        let s = |d: Duration| scale_down(d, scale);
        Self {
            request_timeout: s(self.request_timeout),
            backoff: Backoff::new(s(self.backoff.initial), s(self.backoff.max)),
            budget: self.budget.map(|b| b.scaled(scale)),
            budget_max_wait: s(self.budget_max_wait),
            breaker_probe_interval: s(self.breaker_probe_interval),
            breaker_probe_max: s(self.breaker_probe_max),
            job_poll_initial: s(self.job_poll_initial),
            job_poll_max: s(self.job_poll_max),
            ..self
        }
    }
}

/// A QingCloud API client for one zone. Cheap to clone; clones share the stack,
/// the breaker, the budget, the job poller and the counters.
#[derive(Clone)]
pub struct QingCloudClient {
    inner: Arc<Inner>,
}

/// The signer of every attempt, replaced when the credentials change.
pub(crate) type SharedSigner = Arc<std::sync::RwLock<Arc<Signer>>>;

struct Inner {
    stack: ApiService,
    signer: SharedSigner,
    zone: String,
    url: String,
    options: ClientOptions,
    breaker: BreakerHandle,
    budget: BudgetHandle,
    jobs: SharedPoller,
    stats: CallStats,
    observers: std::sync::RwLock<Vec<Arc<dyn CallObserver>>>,
    tag_id: tokio::sync::Mutex<Option<String>>,
    vxnets: std::sync::Mutex<
        std::collections::HashMap<hostnic_core::types::VxnetId, hostnic_core::types::Vxnet>,
    >,
}

impl std::fmt::Debug for QingCloudClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QingCloudClient")
            .field("url", &self.inner.url)
            .field("zone", &self.inner.zone)
            .field("access_key_id", &self.access_key_id())
            .finish_non_exhaustive()
    }
}

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the QingCloud client: {0}")]
pub struct BuildError(String);

impl QingCloudClient {
    /// A client over HTTP for `config`, with `options`.
    pub fn new(config: &Config, options: ClientOptions) -> Result<Self, BuildError> {
        let transport =
            HttpTransport::new(options.request_timeout).map_err(|e| BuildError(e.message))?;
        Ok(Self::with_transport(config, options, Arc::new(transport)))
    }

    /// A client for the simulator (or any endpoint) at `url`, e.g. `http://127.0.0.1:4000/iaas/`.
    pub fn for_url(
        url: &str,
        access_key_id: &str,
        secret: Secret,
        zone: &str,
        options: ClientOptions,
    ) -> Result<Self, BuildError> {
        let mut config = Config::new(access_key_id, secret, zone);
        config.endpoint = Endpoint::from_url(url).map_err(|e| BuildError(e.to_string()))?;
        Self::new(&config, options)
    }

    /// A client sending through `transport` (tests, other HTTP stacks).
    pub fn with_transport(
        config: &Config,
        options: ClientOptions,
        transport: Arc<dyn Transport>,
    ) -> Self {
        let signer = Arc::new(std::sync::RwLock::new(Arc::new(Signer::new(
            &config.access_key_id,
            config.secret_access_key.clone(),
        ))));
        let send = SendService {
            transport,
            signer: signer.clone(),
            zone: Arc::from(config.zone.as_str()),
            url: Arc::from(config.endpoint.url()),
            path: Arc::from(config.endpoint.path()),
            method: options.method,
        };
        let breaker =
            BreakerLayer::with_backoff(options.breaker_probe_interval, options.breaker_probe_max);
        let budget = BudgetLayer::new(options.budget, options.budget_max_wait);
        let (breaker_handle, budget_handle) = (breaker.handle(), budget.handle());
        let stack = service::build(
            send,
            StackOptions {
                request_timeout: options.request_timeout,
                max_in_flight: options.max_in_flight,
                retry: RetryPolicy::new(options.retries, options.backoff),
            },
            breaker,
            budget,
        );
        Self {
            inner: Arc::new(Inner {
                stack,
                signer,
                zone: config.zone.clone(),
                url: config.endpoint.url(),
                options,
                breaker: breaker_handle,
                budget: budget_handle,
                jobs: Arc::new(JobPoller::default()),
                stats: CallStats::default(),
                observers: std::sync::RwLock::new(Vec::new()),
                tag_id: tokio::sync::Mutex::new(None),
                vxnets: std::sync::Mutex::new(std::collections::HashMap::new()),
            }),
        }
    }

    /// Reports every call of this client (and its clones) to `observer` as well,
    /// e.g. to turn them into Prometheus metrics.
    pub fn add_observer(&self, observer: Arc<dyn CallObserver>) {
        self.inner
            .observers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(observer);
    }

    /// Per-action counters and latency since the client was built.
    pub fn stats(&self) -> &CallStats {
        &self.inner.stats
    }

    /// The options in use.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The zone all calls go to.
    pub fn zone(&self) -> &str {
        &self.inner.zone
    }

    /// Signs every later attempt with these credentials (a rotated `qcsecret`): calls
    /// in flight finish with the old ones. The endpoint and zone stay.
    pub fn set_credentials(&self, access_key_id: &str, secret: Secret) {
        let signer = Arc::new(Signer::new(access_key_id, secret));
        *self.inner.signer.write().unwrap_or_else(|e| e.into_inner()) = signer;
    }

    /// The access key every call is signed with now.
    pub fn access_key_id(&self) -> String {
        self.inner
            .signer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .access_key_id()
            .to_string()
    }

    /// The request-quota breaker's state now.
    pub fn breaker(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    /// A receiver woken at every transition of the breaker (for a metric, a log
    /// line, a Kubernetes event); it holds the latest state.
    pub fn watch_breaker(&self) -> watch::Receiver<BreakerState> {
        self.inner.breaker.subscribe()
    }

    /// The request budget's numbers now.
    pub fn budget(&self) -> BudgetState {
        self.inner.budget.state()
    }

    /// The breaker and the budget as the agent's metrics show them.
    pub fn gauges(&self) -> hostnic_core::metrics::agent::CloudGauges {
        let (breaker, budget) = (self.breaker(), self.budget());
        hostnic_core::metrics::agent::CloudGauges {
            breaker_status: breaker.status.as_str(),
            breaker_trips: breaker.trips,
            breaker_probes: breaker.probes,
            breaker_refused: breaker.refused,
            budget_limit: budget.limit.map(|l| (l.requests, l.window)),
            budget_used: budget.used,
            budget_remaining: budget.remaining,
            budget_refused: budget.refused,
        }
    }

    pub(crate) fn tag_cache(&self) -> &tokio::sync::Mutex<Option<String>> {
        &self.inner.tag_id
    }

    /// Vxnets described so far (their CIDR, gateway and router do not change).
    pub(crate) fn vxnet_cache(
        &self,
    ) -> &std::sync::Mutex<
        std::collections::HashMap<hostnic_core::types::VxnetId, hostnic_core::types::Vxnet>,
    > {
        &self.inner.vxnets
    }

    pub(crate) fn job_poller(&self) -> SharedPoller {
        self.inner.jobs.clone()
    }

    /// Calls `action` with `params` (plus `zone` and the auth parameters) and
    /// returns the JSON answer of a successful call (`ret_code` 0). A call the
    /// breaker or the budget withholds fails at once with `Throttled` and is
    /// recorded with 0 attempts.
    pub async fn call(&self, action: &str, params: Params) -> Result<Value, CloudError> {
        let span = tracing::debug_span!(
            "qingcloud_call",
            action,
            ret_code = tracing::field::Empty,
            attempts = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        let started = Instant::now();
        let request = ApiRequest::new(action, params);
        let counter = request.clone();
        let result = service::send_through(&self.inner.stack, request)
            .instrument(span.clone())
            .await;
        let attempts = counter.attempts();
        let duration = started.elapsed();
        let ret_code = match &result {
            Ok(_) => Some(0),
            Err(e) => e.code,
        };
        span.record("attempts", attempts);
        span.record("duration_ms", duration.as_millis() as u64);
        if let Some(code) = ret_code {
            span.record("ret_code", code);
        }
        let record = CallRecord {
            action: action.to_string(),
            duration,
            attempts,
            ret_code,
            error: result.as_ref().err().map(|e| e.kind),
        };
        self.inner.stats.observe(&record);
        for observer in self
            .inner
            .observers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            observer.observe(&record);
        }
        span.in_scope(|| match &result {
            Ok(_) => tracing::debug!("call succeeded"),
            Err(e) => tracing::debug!(error = %e, "call failed"),
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use hostnic_core::ports::CloudErrorKind;

    use super::*;
    use crate::transport::{TransportError, WireRequest};

    /// Answers from a script and records when each request arrived.
    struct Scripted {
        answers: Mutex<VecDeque<Result<String, TransportError>>>,
        seen: Mutex<Vec<(Instant, String)>>,
    }

    impl Scripted {
        fn new(answers: Vec<Result<String, TransportError>>) -> Arc<Self> {
            Arc::new(Self {
                answers: Mutex::new(answers.into()),
                seen: Mutex::new(Vec::new()),
            })
        }
        fn times(&self) -> Vec<Instant> {
            self.seen.lock().unwrap().iter().map(|(t, _)| *t).collect()
        }
    }

    #[async_trait]
    impl Transport for Scripted {
        async fn send(&self, request: &WireRequest) -> Result<String, TransportError> {
            self.seen
                .lock()
                .unwrap()
                .push((Instant::now(), request.query.clone()));
            self.answers
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| Ok(r#"{"ret_code":0}"#.into()))
        }
    }

    fn code(c: i64, msg: &str) -> Result<String, TransportError> {
        Ok(serde_json::json!({"ret_code": c, "message": msg}).to_string())
    }

    fn client(transport: Arc<dyn Transport>, options: ClientOptions) -> QingCloudClient {
        let config = Config::new("AKID", Secret::new("TOPSECRET"), "pek3a");
        QingCloudClient::with_transport(&config, options, transport)
    }

    fn fast_options() -> ClientOptions {
        ClientOptions {
            budget: None,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
            ..ClientOptions::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_codes_are_retried_with_growing_jittered_backoff() {
        let t = Scripted::new(vec![
            code(5000, "InternalError"),
            code(5100, "ServerBusy"),
            code(5000, "InternalError"),
            Ok(r#"{"ret_code":0,"nic_set":[]}"#.into()),
        ]);
        let options = fast_options();
        let c = client(t.clone(), options.clone());
        let v = c.call("DescribeNics", Params::new()).await.unwrap();
        assert!(v.get("nic_set").is_some());
        let times = t.times();
        assert_eq!(times.len(), 4);
        // Gap n is in [base * 2^n, 2 * base * 2^n]: 100-200, 200-400, 400-800 ms.
        for (n, pair) in times.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            let floor = options.backoff.delay(n as u32);
            let ceiling = floor.saturating_mul(2).min(options.backoff.max);
            assert!(gap >= floor && gap <= ceiling, "gap {n} = {gap:?}");
        }
        let stats = c.stats().snapshot();
        assert_eq!(stats["DescribeNics"].calls, 1);
        assert_eq!(stats["DescribeNics"].retries, 3);
        assert_eq!(stats["DescribeNics"].errors, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_quota_and_throttled_errors_are_not_retried() {
        for (c_, msg, kind) in [
            (1100, "MissingParameter", CloudErrorKind::Permanent),
            (1200, "AuthFailure", CloudErrorKind::Permanent),
            (1300, "RequestExpired", CloudErrorKind::Permanent),
            (1400, "PermissionDenied", CloudErrorKind::Permanent),
            (2100, "ResourceNotFound", CloudErrorKind::NotFound),
            (
                2500,
                "QuotaExceeded, vxnet has no free IP",
                CloudErrorKind::QuotaExceeded,
            ),
            (
                2500,
                "QuotaExceeded, the API request quota of access key [AKID] is exceeded",
                CloudErrorKind::Throttled,
            ),
        ] {
            let t = Scripted::new(vec![code(c_, msg)]);
            let c = client(t.clone(), fast_options());
            let err = c.call("CreateNics", Params::new()).await.unwrap_err();
            assert_eq!(err.kind, kind);
            assert_eq!(err.code, Some(c_));
            assert_eq!(t.times().len(), 1, "{c_} must not be retried");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_after_the_configured_count() {
        let t = Scripted::new(vec![
            Err(TransportError {
                message: "connection refused".into(),
                retryable: true,
            });
            10
        ]);
        let c = client(
            t.clone(),
            ClientOptions {
                retries: 2,
                ..fast_options()
            },
        );
        let err = c.call("DescribeJobs", Params::new()).await.unwrap_err();
        assert_eq!(err.kind, CloudErrorKind::Retryable);
        assert_eq!(t.times().len(), 3);
        assert_eq!(c.stats().snapshot()["DescribeJobs"].errors, 1);
        assert!(!c.breaker().is_open(), "a dead endpoint is not the quota");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_request_times_out_and_is_retried() {
        struct Hang;
        #[async_trait]
        impl Transport for Hang {
            async fn send(&self, _: &WireRequest) -> Result<String, TransportError> {
                std::future::pending().await
            }
        }
        let c = client(
            Arc::new(Hang),
            ClientOptions {
                retries: 1,
                request_timeout: Duration::from_secs(5),
                ..fast_options()
            },
        );
        let start = Instant::now();
        let err = c.call("DescribeNics", Params::new()).await.unwrap_err();
        assert_eq!(err.kind, CloudErrorKind::Retryable);
        assert_eq!(err.action, "DescribeNics");
        assert!(err.message.contains("no answer within 5s"), "{err}");
        // Two attempts of 5 s each plus one backoff of 100 to 200 ms.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(10_100) && elapsed <= Duration::from_millis(10_200),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_lets_n_per_window_through_then_waits_briefly_or_drops() {
        let t = Scripted::new(vec![]);
        let c = client(
            t.clone(),
            ClientOptions {
                budget: Some(WindowLimit::new(5, Duration::from_secs(60))),
                budget_max_wait: Duration::from_secs(10),
                ..fast_options()
            },
        );
        let start = Instant::now();
        for _ in 0..5 {
            c.call("DescribeNics", Params::new()).await.unwrap();
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the window's five are free"
        );
        // The sixth would wait 60 s, past the 10 s it may: dropped at once, not sent.
        let err = c.call("DescribeNics", Params::new()).await.unwrap_err();
        assert_eq!((err.kind, err.code), (CloudErrorKind::Throttled, None));
        assert!(err.message.contains("budget"), "{err}");
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(t.times().len(), 5);
        let b = c.budget();
        assert_eq!((b.used, b.remaining, b.refused), (5, 0, 1));
        assert_eq!(b.frees_in, Duration::from_secs(60));
        // 55 s on, the first slot frees within the wait: the call waits 5 s and goes.
        tokio::time::sleep(Duration::from_secs(55)).await;
        c.call("DescribeNics", Params::new()).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        assert_eq!(c.budget().waited, 1);
        assert_eq!(c.stats().snapshot()["DescribeNics"].errors, 1);
        assert!(
            !c.breaker().is_open(),
            "the budget is not the account's quota"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn every_retry_attempt_takes_a_budget_slot() {
        let t = Scripted::new(vec![
            code(5000, "InternalError"),
            code(5000, "InternalError"),
        ]);
        let c = client(
            t.clone(),
            ClientOptions {
                budget: Some(WindowLimit::new(100, Duration::from_secs(3600))),
                ..fast_options()
            },
        );
        c.call("DescribeNics", Params::new()).await.unwrap();
        assert_eq!(c.budget().used, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_concurrency_limit_bounds_requests_in_flight() {
        struct Slow {
            now: Mutex<(usize, usize)>,
        }
        #[async_trait]
        impl Transport for Slow {
            async fn send(&self, _: &WireRequest) -> Result<String, TransportError> {
                {
                    let mut n = self.now.lock().unwrap();
                    n.0 += 1;
                    n.1 = n.1.max(n.0);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.now.lock().unwrap().0 -= 1;
                Ok(r#"{"ret_code":0}"#.into())
            }
        }
        let slow = Arc::new(Slow {
            now: Mutex::new((0, 0)),
        });
        let c = client(
            slow.clone(),
            ClientOptions {
                max_in_flight: 3,
                ..fast_options()
            },
        );
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..12 {
            let c = c.clone();
            set.spawn(async move { c.call("DescribeNics", Params::new()).await });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
        assert_eq!(slow.now.lock().unwrap().1, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn every_attempt_is_signed_with_the_zone_and_no_secret() {
        let t = Scripted::new(vec![code(5000, "InternalError")]);
        let c = client(t.clone(), fast_options());
        c.call("DescribeNics", Params::new()).await.unwrap();
        let seen = t.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        for (_, query) in &seen {
            assert!(query.contains("action=DescribeNics"));
            assert!(query.contains("zone=pek3a"));
            assert!(query.contains("&signature="));
            assert!(!query.contains("TOPSECRET"));
        }
        assert!(!format!("{c:?}").contains("TOPSECRET"));
    }

    #[tokio::test(start_paused = true)]
    async fn new_credentials_sign_the_next_calls() {
        let t = Scripted::new(vec![
            code(1200, "AuthFailure, signature not match"),
            Ok(r#"{"ret_code":0}"#.into()),
        ]);
        let c = client(t.clone(), fast_options());
        let err = c.call("DescribeNics", Params::new()).await.unwrap_err();
        assert_eq!(err.code, Some(1200));
        c.set_credentials("AKID2", Secret::new("NEWSECRET"));
        c.call("DescribeNics", Params::new()).await.unwrap();
        let seen = t.seen.lock().unwrap().clone();
        assert!(seen[0].1.contains("access_key_id=AKID&"), "{}", seen[0].1);
        assert!(seen[1].1.contains("access_key_id=AKID2&"), "{}", seen[1].1);
        assert!(!format!("{c:?}").contains("NEWSECRET"));
    }

    #[tokio::test(start_paused = true)]
    async fn observers_hear_every_call_with_its_outcome() {
        let t = Scripted::new(vec![
            code(5100, "ServerBusy"),
            Ok(r#"{"ret_code":0}"#.into()),
            code(2100, "ResourceNotFound"),
        ]);
        let c = client(t, fast_options());
        let seen = Arc::new(CallStats::default());
        c.clone().add_observer(seen.clone());
        c.call("AttachNics", Params::new()).await.unwrap();
        c.call("AttachNics", Params::new()).await.unwrap_err();
        let s = &seen.snapshot()["AttachNics"];
        assert_eq!((s.calls, s.errors, s.retries), (2, 1, 1));
        assert_eq!(s.ret_codes.get(&2100), Some(&1));
    }

    #[test]
    fn time_scaled_options_shorten_every_duration() {
        let o = ClientOptions::default().time_scaled(60.0);
        assert_eq!(o.breaker_probe_interval, Duration::from_secs(1));
        assert_eq!(o.breaker_probe_max, Duration::from_secs(1));
        assert_eq!(o.budget.unwrap().window, Duration::from_secs(60));
        assert_eq!(o.budget.unwrap().requests, 1000);
        assert_eq!(o.request_timeout, Duration::from_millis(500));
        assert!((o.job_poll_initial.as_secs_f64() - 1.0 / 60.0).abs() < 1e-6);
        assert_eq!(o.retries, 3);
    }
}
