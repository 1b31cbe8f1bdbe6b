//! The process's request budget: at most N requests in any window of W (a
//! sliding window, the shape of the account quota it protects). Every attempt
//! takes a slot. When the window is full a call waits for the next free slot if
//! that comes within `max_wait`, and otherwise fails at once with
//! [`CloudErrorKind::Throttled`](hostnic_core::ports::CloudErrorKind::Throttled):
//! calls are dropped, never queued for long.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hostnic_core::ports::CloudError;
use serde_json::Value;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt as _};

use super::{ApiRequest, BoxFuture, withheld};
use crate::limits::{SlidingWindow, WindowLimit};

/// The budget's numbers at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetState {
    /// The budget (`None`: unlimited).
    pub limit: Option<WindowLimit>,
    /// Requests in the current window.
    pub used: u32,
    /// Requests left in it (`u32::MAX` when unlimited).
    pub remaining: u32,
    /// Time until a slot frees (zero when one is free now).
    pub frees_in: Duration,
    /// Calls that failed because the budget was spent.
    pub refused: u64,
    /// Calls that waited for a slot and then went.
    pub waited: u64,
}

#[derive(Debug)]
struct Shared {
    limit: Option<WindowLimit>,
    max_wait: Duration,
    window: Mutex<SlidingWindow>,
    refused: AtomicU64,
    waited: AtomicU64,
}

/// Reads the budget of a client.
#[derive(Debug, Clone)]
pub struct BudgetHandle(Arc<Shared>);

impl BudgetHandle {
    /// The numbers now.
    pub fn state(&self) -> BudgetState {
        let now = Instant::now();
        let mut window = self.0.window.lock().unwrap_or_else(|e| e.into_inner());
        let (used, frees_in) = match &self.0.limit {
            Some(limit) => (window.used(limit, now), window.frees_in(limit, now)),
            None => (0, Duration::ZERO),
        };
        BudgetState {
            limit: self.0.limit,
            used,
            remaining: self
                .0
                .limit
                .map_or(u32::MAX, |l| l.requests.saturating_sub(used)),
            frees_in,
            refused: self.0.refused.load(Ordering::Relaxed),
            waited: self.0.waited.load(Ordering::Relaxed),
        }
    }
}

/// Adds the budget to a service.
#[derive(Debug, Clone)]
pub struct BudgetLayer(Arc<Shared>);

impl BudgetLayer {
    /// `limit` requests per window (`None`: unlimited); a call waits at most `max_wait` for a slot.
    pub fn new(limit: Option<WindowLimit>, max_wait: Duration) -> Self {
        Self(Arc::new(Shared {
            limit,
            max_wait,
            window: Mutex::new(SlidingWindow::new()),
            refused: AtomicU64::new(0),
            waited: AtomicU64::new(0),
        }))
    }

    /// A handle that reads the budget's state.
    pub fn handle(&self) -> BudgetHandle {
        BudgetHandle(self.0.clone())
    }
}

impl<S> Layer<S> for BudgetLayer {
    type Service = Budget<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Budget {
            inner,
            shared: self.0.clone(),
        }
    }
}

/// The budget service.
#[derive(Debug, Clone)]
pub struct Budget<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl Shared {
    /// Takes a slot, waiting up to `max_wait` in all; the refusal otherwise.
    async fn take_slot(&self, action: &str) -> Result<(), CloudError> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let deadline = Instant::now() + self.max_wait;
        let mut waited = false;
        loop {
            let now = Instant::now();
            let wait = {
                let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
                match window.try_acquire(&limit, now) {
                    Ok(()) => {
                        if waited {
                            self.waited.fetch_add(1, Ordering::Relaxed);
                        }
                        return Ok(());
                    }
                    Err(wait) => wait,
                }
            };
            if now + wait > deadline {
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(action, budget = %limit, frees_in = ?wait, "request budget spent: call dropped");
                return Err(withheld(
                    action,
                    format!(
                        "the client's request budget ({limit} requests/seconds) is spent: the next request is allowed in {:.0} s; call not sent",
                        wait.as_secs_f64().ceil()
                    ),
                ));
            }
            waited = true;
            tokio::time::sleep(wait).await;
        }
    }
}

impl<S> Service<ApiRequest> for Budget<S>
where
    S: Service<ApiRequest, Response = Value, Error = CloudError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Value;
    type Error = CloudError;
    type Future = BoxFuture<Result<Value, CloudError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), CloudError>> {
        // Readiness of the inner service is awaited in the call, after the slot.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ApiRequest) -> Self::Future {
        let inner = self.inner.clone();
        let shared = self.shared.clone();
        Box::pin(async move {
            shared.take_slot(&request.action).await?;
            inner.oneshot(request).await
        })
    }
}
