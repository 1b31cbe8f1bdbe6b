//! The retry policy of [`tower::retry::Retry`]: only retryable failures, at most
//! `retries` times, each after tower's jittered exponential backoff. A throttled
//! call (request quota, breaker, budget) is never retried here: the breaker
//! decides when the next call may go.

use std::time::Duration;

use hostnic_core::ports::CloudError;
use serde_json::Value;
use tower::retry::Policy;
use tower::retry::backoff::{
    Backoff as _, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff as _,
};
use tower::util::rng::HasherRng;

use super::ApiRequest;
use crate::limits::Backoff;

/// Retries retryable failures with backoff. Each call starts from a fresh copy
/// (tower clones the policy into every call), so the counts are per call.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    remaining: u32,
    backoff: ExponentialBackoff<HasherRng>,
}

impl RetryPolicy {
    /// At most `retries` retries, waiting `backoff.delay(n)` to twice that (capped
    /// at `backoff.max`) before retry `n`.
    pub fn new(retries: u32, backoff: Backoff) -> Self {
        let max = backoff.max.max(Duration::from_millis(1));
        let min = backoff.initial.min(max);
        // Jitter 1.0: up to the base delay again at random (capped at `max`).
        let maker = ExponentialBackoffMaker::new(min, max, 1.0, HasherRng::default())
            .expect("min <= max, max > 0 and jitter 1.0 are valid");
        Self {
            remaining: retries,
            backoff: { maker }.make_backoff(),
        }
    }
}

impl Policy<ApiRequest, Value, CloudError> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        request: &mut ApiRequest,
        result: &mut Result<Value, CloudError>,
    ) -> Option<Self::Future> {
        match result {
            Err(e) if e.is_retryable() && self.remaining > 0 => {
                self.remaining -= 1;
                tracing::debug!(action = %request.action, error = %e, remaining = self.remaining, "retrying");
                Some(self.backoff.next_backoff())
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, request: &ApiRequest) -> Option<ApiRequest> {
        Some(request.clone())
    }
}
