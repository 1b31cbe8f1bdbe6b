//! The client's request path as a tower [`Service`] stack, outermost first:
//!
//! 1. [`tower::retry::Retry`] with [`RetryPolicy`]: retryable failures only (5000,
//!    5100, transport errors, timeouts), with tower's jittered exponential backoff.
//! 2. [`BreakerLayer`]: the circuit breaker on the account's request quota. A
//!    request-quota 2500 opens it; while open, calls fail at once without being
//!    sent, and one call a probe interval (default a minute) goes through as the
//!    probe; the probe's answer closes it or keeps it open.
//! 3. [`BudgetLayer`]: the process's own request budget, a sliding window of N
//!    requests per W (every attempt counts, as on the API); a call waits for a
//!    slot a short while, then fails instead of queueing.
//! 4. [`tower::timeout::Timeout`] of one attempt (its errors turned back into
//!    [`CloudError`]s by `CloudErrors`), then [`tower::limit::ConcurrencyLimit`].
//! 5. `SendService`: signs the attempt afresh, sends it, reads `ret_code`.
//!
//! Calls refused by the breaker or the budget fail with
//! [`CloudErrorKind::Throttled`] and no `ret_code`; the API's own request-quota
//! 2500 has kind `Throttled` and code 2500. Neither is retried by the retry layer.
//! A resource-quota 2500 (`QuotaExceeded`) passes through untouched.

pub mod breaker;
pub mod budget;
mod retry;
mod send;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hostnic_core::ports::{CloudError, CloudErrorKind};
use serde_json::Value;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt as _};

pub use breaker::{BreakerHandle, BreakerLayer, BreakerState, BreakerStatus};
pub use budget::{BudgetHandle, BudgetLayer, BudgetState};
pub use retry::RetryPolicy;
pub(crate) use send::SendService;

use crate::signer::Params;

/// One API call as it goes down the stack: the action and its parameters (the
/// auth parameters are added per attempt by the innermost service).
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// The action, e.g. `DescribeNics`.
    pub action: Arc<str>,
    /// Its parameters (without `action`; `zone` is added when absent).
    pub params: Params,
    attempts: Arc<AtomicU32>,
}

impl ApiRequest {
    /// A request for `action` with `params`.
    pub fn new(action: &str, params: Params) -> Self {
        Self {
            action: Arc::from(action),
            params,
            attempts: Arc::new(AtomicU32::new(0)),
        }
    }

    /// How many attempts of this call (and its clones) reached the transport.
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    pub(crate) fn count_attempt(&self) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }
}

/// A boxed, sendable future (what the custom layers answer with).
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The assembled stack, type-erased.
pub type ApiService = BoxCloneSyncService<ApiRequest, Value, CloudError>;

/// A call the client withheld (breaker open, budget spent): kind `Throttled`, no `ret_code`.
pub fn withheld(action: &str, message: impl Into<String>) -> CloudError {
    CloudError::new(CloudErrorKind::Throttled, action, message)
}

/// Turns the timeout layer's boxed errors back into [`CloudError`]s, with the action.
#[derive(Debug, Clone)]
struct CloudErrors<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Service<ApiRequest> for CloudErrors<S>
where
    S: Service<ApiRequest, Response = Value, Error = BoxError> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Value;
    type Error = CloudError;
    type Future = BoxFuture<Result<Value, CloudError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), CloudError>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| CloudError::new(CloudErrorKind::Permanent, "", e.to_string()))
    }

    fn call(&mut self, request: ApiRequest) -> Self::Future {
        let action = request.action.clone();
        let timeout = self.timeout;
        let future = self.inner.call(request);
        Box::pin(async move {
            future.await.map_err(|e| match e.downcast::<CloudError>() {
                Ok(e) => *e,
                Err(e) if e.is::<tower::timeout::error::Elapsed>() => CloudError::new(
                    CloudErrorKind::Retryable,
                    &*action,
                    format!("no answer within {timeout:?}"),
                ),
                Err(e) => CloudError::new(CloudErrorKind::Retryable, &*action, e.to_string()),
            })
        })
    }
}

/// What the stack needs to know.
#[derive(Debug, Clone)]
pub(crate) struct StackOptions {
    pub request_timeout: Duration,
    pub max_in_flight: usize,
    pub retry: RetryPolicy,
}

/// Assembles the stack over `send`.
pub(crate) fn build(
    send: SendService,
    options: StackOptions,
    breaker: BreakerLayer,
    budget: BudgetLayer,
) -> ApiService {
    let timeout = options.request_timeout;
    let attempt = ServiceBuilder::new()
        .timeout(timeout)
        .concurrency_limit(options.max_in_flight.max(1))
        .service(send);
    let attempt = CloudErrors {
        inner: attempt,
        timeout,
    };
    let stack = ServiceBuilder::new()
        .retry(options.retry)
        .layer(breaker)
        .layer(budget)
        .service(attempt);
    BoxCloneSyncService::new(stack)
}

/// Sends `request` through a clone of `service`.
pub(crate) async fn send_through(
    service: &ApiService,
    request: ApiRequest,
) -> Result<Value, CloudError> {
    service.clone().oneshot(request).await
}
