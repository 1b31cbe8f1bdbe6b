//! The API client: signs every attempt afresh, rate-limits, bounds concurrency,
//! times out, retries only retryable failures with jittered exponential backoff,
//! traces and counts every call.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hostnic_core::ports::{CloudError, CloudErrorKind};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::config::{Config, Endpoint, Secret};
use crate::errors;
use crate::limits::{Backoff, TokenBucket};
use crate::signer::{Params, Signer, format_time_stamp};
use crate::stats::{CallObserver, CallRecord, CallStats};
use crate::transport::{HttpMethod, HttpTransport, Transport, WireRequest};

/// Tuning of the client. [`ClientOptions::from_config`] takes retries and timeout from the file.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientOptions {
    /// Timeout of one HTTP attempt.
    pub request_timeout: Duration,
    /// How many times a retryable failure is retried (so `retries + 1` attempts at most).
    pub retries: u32,
    /// Backoff between attempts.
    pub backoff: Backoff,
    /// Client-side rate limit in requests per second (0 = none). The API throttles
    /// accounts, so the default is conservative.
    pub rate_limit_qps: f64,
    /// Requests that may be sent at once after a quiet period.
    pub rate_limit_burst: u32,
    /// Requests in flight at most.
    pub max_in_flight: usize,
    /// GET (the SDK default) or form POST.
    pub method: HttpMethod,
    /// First DescribeJobs poll delay of the job waiter.
    pub job_poll_initial: Duration,
    /// Longest DescribeJobs poll delay.
    pub job_poll_max: Duration,
    /// Page size of Describe* calls (the API caps it at 100).
    pub page_size: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            retries: 3,
            backoff: Backoff {
                base: Duration::from_millis(500),
                max: Duration::from_secs(10),
            },
            rate_limit_qps: 10.0,
            rate_limit_burst: 20,
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
}

/// A QingCloud API client for one zone. Cheap to clone.
#[derive(Clone)]
pub struct QingCloudClient {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Arc<dyn Transport>,
    signer: Signer,
    zone: String,
    url: String,
    path: String,
    options: ClientOptions,
    bucket: TokenBucket,
    in_flight: Semaphore,
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
        Self {
            inner: Arc::new(Inner {
                transport,
                signer: Signer::new(&config.access_key_id, config.secret_access_key.clone()),
                zone: config.zone.clone(),
                url: config.endpoint.url(),
                path: config.endpoint.path(),
                bucket: TokenBucket::new(options.rate_limit_qps, options.rate_limit_burst),
                in_flight: Semaphore::new(options.max_in_flight.max(1)),
                options,
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

    pub(crate) fn tag_cache(&self) -> &tokio::sync::Mutex<Option<String>> {
        &self.inner.tag_id
    }

    /// Calls `action` with `params` (plus `zone` and the auth parameters) and
    /// returns the JSON answer of a successful call (`ret_code` 0).
    pub async fn call(&self, action: &str, params: Params) -> Result<Value, CloudError> {
        let span = tracing::debug_span!(
            "qingcloud_call",
            action,
            ret_code = tracing::field::Empty,
            attempts = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        let started = Instant::now();
        let (result, attempts) = self
            .call_with_retries(action, params)
            .instrument(span.clone())
            .await;
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

    async fn call_with_retries(
        &self,
        action: &str,
        params: Params,
    ) -> (Result<Value, CloudError>, u32) {
        let opts = &self.inner.options;
        let mut attempt = 0;
        loop {
            let result = self.attempt(action, params.clone()).await;
            attempt += 1;
            match result {
                Err(e) if e.is_retryable() && attempt <= opts.retries => {
                    let delay = opts.backoff.delay(attempt - 1);
                    tracing::debug!(error = %e, attempt, ?delay, "retrying");
                    tokio::time::sleep(delay).await;
                }
                other => return (other, attempt),
            }
        }
    }

    /// One signed attempt, after the rate limit and within the concurrency limit.
    async fn attempt(&self, action: &str, mut params: Params) -> Result<Value, CloudError> {
        let inner = &self.inner;
        inner.bucket.acquire().await;
        let _permit = inner
            .in_flight
            .acquire()
            .await
            .map_err(|_| CloudError::new(CloudErrorKind::Permanent, action, "client closed"))?;
        params.set("action", action);
        if params.get("zone").is_none() {
            params.set("zone", &inner.zone);
        }
        let method = inner.options.method;
        let signed = inner.signer.sign(
            method.as_str(),
            &inner.path,
            &mut params,
            &format_time_stamp(SystemTime::now()),
        );
        let request = WireRequest {
            method,
            url: inner.url.clone(),
            query: signed.to_query(),
            action: action.to_string(),
        };
        let body = match tokio::time::timeout(
            inner.options.request_timeout,
            inner.transport.send(&request),
        )
        .await
        {
            Err(_) => {
                return Err(CloudError::new(
                    CloudErrorKind::Retryable,
                    action,
                    format!("no answer within {:?}", inner.options.request_timeout),
                ));
            }
            Ok(Err(e)) => {
                let kind = if e.retryable {
                    CloudErrorKind::Retryable
                } else {
                    CloudErrorKind::Permanent
                };
                return Err(CloudError::new(kind, action, e.to_string()));
            }
            Ok(Ok(body)) => body,
        };
        parse_answer(action, &body)
    }
}

/// Checks `ret_code` of an answer.
fn parse_answer(action: &str, body: &str) -> Result<Value, CloudError> {
    let value: Value = serde_json::from_str(body).map_err(|e| {
        // A proxy's HTML error page or a truncated body: worth another try.
        CloudError::new(
            CloudErrorKind::Retryable,
            action,
            format!("answer is not JSON: {e}"),
        )
    })?;
    let code = value
        .get("ret_code")
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            CloudError::new(CloudErrorKind::Retryable, action, "answer has no ret_code")
        })?;
    if code == 0 {
        return Ok(value);
    }
    let message = value
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("no message");
    Err(errors::api_error(action, code, message))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::transport::TransportError;

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

    fn client(transport: Arc<Scripted>, options: ClientOptions) -> QingCloudClient {
        let config = Config::new("AKID", Secret::new("TOPSECRET"), "pek3a");
        QingCloudClient::with_transport(&config, options, transport)
    }

    fn fast_options() -> ClientOptions {
        ClientOptions {
            rate_limit_qps: 0.0,
            backoff: Backoff {
                base: Duration::from_millis(100),
                max: Duration::from_secs(2),
            },
            ..ClientOptions::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_codes_are_retried_with_growing_backoff() {
        let t = Scripted::new(vec![
            code(5000, "InternalError"),
            code(5100, "ServerBusy"),
            code(2500, "QuotaExceeded, request rate exceeded"),
            Ok(r#"{"ret_code":0,"nic_set":[]}"#.into()),
        ]);
        let c = client(t.clone(), fast_options());
        let v = c.call("DescribeNics", Params::new()).await.unwrap();
        assert!(v.get("nic_set").is_some());
        let times = t.times();
        assert_eq!(times.len(), 4);
        // Gap n is in [ceiling(n)/2, ceiling(n)] with ceilings 100, 200, 400 ms.
        for (n, pair) in times.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            let ceiling = Duration::from_millis(100 << n);
            assert!(gap >= ceiling / 2 && gap <= ceiling, "gap {n} = {gap:?}");
        }
        let stats = c.stats().snapshot();
        assert_eq!(stats["DescribeNics"].calls, 1);
        assert_eq!(stats["DescribeNics"].retries, 3);
        assert_eq!(stats["DescribeNics"].errors, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
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
        let config = Config::new("AKID", Secret::new("S"), "pek3a");
        let c = QingCloudClient::with_transport(
            &config,
            ClientOptions {
                retries: 1,
                request_timeout: Duration::from_secs(5),
                ..fast_options()
            },
            Arc::new(Hang),
        );
        let start = Instant::now();
        let err = c.call("DescribeNics", Params::new()).await.unwrap_err();
        assert_eq!(err.kind, CloudErrorKind::Retryable);
        // Two attempts of 5 s each plus one backoff of at most 100 ms.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_secs(10) && elapsed <= Duration::from_millis(10_100));
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_spaces_requests() {
        let t = Scripted::new(vec![]);
        let c = client(
            t.clone(),
            ClientOptions {
                rate_limit_qps: 5.0,
                rate_limit_burst: 2,
                ..fast_options()
            },
        );
        for _ in 0..6 {
            c.call("DescribeNics", Params::new()).await.unwrap();
        }
        let times = t.times();
        // Two free, then one every 200 ms.
        assert_eq!(times[1] - times[0], Duration::ZERO);
        for pair in times[1..].windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_millis(199) && gap <= Duration::from_millis(201),
                "{gap:?}"
            );
        }
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
        let config = Config::new("AKID", Secret::new("S"), "pek3a");
        let c = QingCloudClient::with_transport(
            &config,
            ClientOptions {
                max_in_flight: 3,
                ..fast_options()
            },
            slow.clone(),
        );
        let calls = (0..12).map(|_| {
            let c = c.clone();
            async move { c.call("DescribeNics", Params::new()).await }
        });
        for r in futures_join_all(calls).await {
            r.unwrap();
        }
        assert_eq!(slow.now.lock().unwrap().1, 3);
    }

    async fn futures_join_all<F>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let mut set = tokio::task::JoinSet::new();
        for f in fs {
            set.spawn(f);
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r.unwrap());
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn every_attempt_is_signed_with_the_zone_and_no_secret() {
        let t = Scripted::new(vec![code(5000, "InternalError")]);
        let c = client(t.clone(), fast_options());
        c.call("DescribeNics", Params::new()).await.unwrap();
        for (_, query) in t.seen.lock().unwrap().iter() {
            assert!(query.contains("action=DescribeNics"));
            assert!(query.contains("zone=pek3a"));
            assert!(query.contains("&signature="));
            assert!(!query.contains("TOPSECRET"));
        }
        assert!(!format!("{c:?}").contains("TOPSECRET"));
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
    fn answers_without_json_or_ret_code_are_retryable() {
        assert!(parse_answer("X", "<html>").unwrap_err().is_retryable());
        assert!(parse_answer("X", "{}").unwrap_err().is_retryable());
        assert_eq!(
            parse_answer("X", r#"{"ret_code":0,"a":1}"#).unwrap()["a"],
            1
        );
    }
}
