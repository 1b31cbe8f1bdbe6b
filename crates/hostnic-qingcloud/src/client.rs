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
            backoff: Backoff {
                base: Duration::from_millis(500),
                max: Duration::from_secs(10),
            },
            budget: Some(DEFAULT_BUDGET),
            budget_max_wait: Duration::from_secs(10),
            breaker_probe_interval: Duration::from_secs(60),
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
            backoff: Backoff {
                base: s(self.backoff.base),
                max: s(self.backoff.max),
            },
            budget: self.budget.map(|b| b.scaled(scale)),
            budget_max_wait: s(self.budget_max_wait),
            breaker_probe_interval: s(self.breaker_probe_interval),
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

struct Inner {
    stack: ApiService,
    signer: Arc<Signer>,
    zone: String,
    url: String,
    options: ClientOptions,
    breaker: BreakerHandle,
    budget: BudgetHandle,
    jobs: SharedPoller,
    stats: CallStats,
    observers: std::sync::RwLock<Vec<Arc<dyn CallObserver>>>,
    tag_id: tokio::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for QingCloudClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QingCloudClient")
            .field("url", &self.inner.url)
            .field("zone", &self.inner.zone)
            .field("signer", &self.inner.signer)
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
        let signer = Arc::new(Signer::new(
            &config.access_key_id,
            config.secret_access_key.clone(),
        ));
        let send = SendService {
            transport,
            signer: signer.clone(),
            zone: Arc::from(config.zone.as_str()),
            url: Arc::from(config.endpoint.url()),
            path: Arc::from(config.endpoint.path()),
            method: options.method,
        };
        let breaker = BreakerLayer::new(options.breaker_probe_interval);
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

    /// The request-quota breaker's state now.
    pub fn breaker(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    /// A receiver that sees every transition of the breaker (for a metric, a log
    /// line, a Kubernetes event).
    pub fn watch_breaker(&self) -> watch::Receiver<BreakerState> {
        self.inner.breaker.subscribe()
    }

    /// The request budget's numbers now.
    pub fn budget(&self) -> BudgetState {
        self.inner.budget.state()
    }

    pub(crate) fn tag_cache(&self) -> &tokio::sync::Mutex<Option<String>> {
        &self.inner.tag_id
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
