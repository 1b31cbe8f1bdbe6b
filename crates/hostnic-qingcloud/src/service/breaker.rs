//! The circuit breaker on the account's API request quota.
//!
//! Over the quota every call of the account answers 2500 and the account may stay
//! locked until midnight, so the quota error is a breaker, never a retry:
//! - **closed**: calls go through. A request-quota 2500 *opens* it (a resource-quota
//!   2500 — vxnet full, too many NICs — does not: it is an answer about resources).
//! - **open**: calls fail at once with `Throttled` without being sent. After the probe
//!   interval (default 60 s, plus up to a tenth of it at random so that many
//!   processes do not probe together) the next call becomes the probe. Each probe
//!   the quota refuses doubles the interval, up to `probe_max`: every request counts
//!   against the quota, refused ones too, so a fleet probing once a minute each would
//!   keep a locked account locked (1,000 nodes: 60,000 probes an hour).
//! - **probing**: one call is in flight; others fail at once. If the API answers it
//!   with anything but a request-quota 2500, the breaker closes; otherwise it opens
//!   for another interval. A probe that gets no answer (transport error, timeout, or
//!   dropped) reopens it for another interval (dropped: the next call may probe).
//!
//! Its state is observable: [`BreakerHandle::state`] and a `watch` channel
//! ([`BreakerHandle::subscribe`]) published at every transition, so an agent or a
//! controller can export a metric, log and emit a Kubernetes event. A watch holds
//! the latest value: a probe answered before the watcher runs shows as one change
//! (open → open, `probes` one higher); the counters tell what happened between.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hostnic_core::ports::CloudError;
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt as _};

use super::{ApiRequest, BoxFuture, withheld};
use crate::errors;
use crate::signer::format_time_stamp;

/// Where the breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerStatus {
    /// Calls go through.
    Closed,
    /// The request quota is exhausted: calls fail without being sent until the next probe.
    Open,
    /// One call is probing the quota; the others fail without being sent.
    Probing,
}

impl BreakerStatus {
    /// `closed`, `open` or `probing` (for metrics and logs).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerStatus::Closed => "closed",
            BreakerStatus::Open => "open",
            BreakerStatus::Probing => "probing",
        }
    }
}

/// The breaker's state and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerState {
    /// Where it is.
    pub status: BreakerStatus,
    /// Times it opened (closed → open).
    pub trips: u64,
    /// Probes sent.
    pub probes: u64,
    /// Calls refused without being sent.
    pub refused: u64,
    /// When the next probe may go (open only).
    pub next_probe_at: Option<Instant>,
    /// Wall-clock time it last opened.
    pub opened_at: Option<SystemTime>,
    /// The API's message of the last request-quota 2500.
    pub last_error: Option<String>,
}

impl BreakerState {
    fn closed() -> Self {
        Self {
            status: BreakerStatus::Closed,
            trips: 0,
            probes: 0,
            refused: 0,
            next_probe_at: None,
            opened_at: None,
            last_error: None,
        }
    }

    /// True unless closed.
    pub fn is_open(&self) -> bool {
        self.status != BreakerStatus::Closed
    }

    /// Time until the next probe may go (open only).
    pub fn next_probe_in(&self) -> Option<Duration> {
        self.next_probe_at
            .map(|t| t.saturating_duration_since(Instant::now()))
    }
}

#[derive(Debug)]
struct Core {
    state: BreakerState,
    /// Bumped at every trip, so an answer to a call sent before it cannot close it.
    epoch: u64,
    /// How far the probe interval has doubled: one step per probe the quota
    /// refused. Kept when the breaker closes, so an account that locks again soon
    /// after is probed at the interval it had reached, not once a minute again;
    /// forgotten after `probe_max` closed.
    refused_probes: u32,
    /// When the breaker last closed.
    closed_at: Option<Instant>,
}

#[derive(Debug)]
struct Shared {
    probe_interval: Duration,
    probe_max: Duration,
    core: Mutex<Core>,
    tx: watch::Sender<BreakerState>,
}

/// What one call was admitted as.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    epoch: u64,
    probe: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the state; receivers are woken only when `transition`.
    fn publish(&self, state: &BreakerState, transition: bool) {
        self.tx.send_if_modified(|s| {
            *s = state.clone();
            transition
        });
    }

    /// When the next probe may go: the interval doubled per probe the quota refused
    /// since the breaker opened, at most `probe_max`, plus up to a tenth at random.
    fn next_probe(&self, now: Instant, refused_probes: u32) -> Instant {
        let interval = self
            .probe_interval
            .saturating_mul(1u32 << refused_probes.min(20))
            .min(self.probe_max.max(self.probe_interval));
        let jitter = interval.mul_f64(rand::random::<f64>() / 10.0);
        now + interval + jitter
    }

    fn admit(&self, action: &str) -> Result<Ticket, CloudError> {
        let mut core = self.lock();
        let now = Instant::now();
        let epoch = core.epoch;
        let refusal = match core.state.status {
            BreakerStatus::Closed => {
                return Ok(Ticket {
                    epoch,
                    probe: false,
                });
            }
            BreakerStatus::Open if core.state.next_probe_at.is_none_or(|t| now >= t) => {
                core.state.status = BreakerStatus::Probing;
                core.state.next_probe_at = None;
                core.state.probes += 1;
                self.publish(&core.state, true);
                tracing::info!(action, "probing the API request quota");
                return Ok(Ticket { epoch, probe: true });
            }
            BreakerStatus::Open => format!(
                "next probe in {:.0} s",
                core.state
                    .next_probe_in()
                    .unwrap_or_default()
                    .as_secs_f64()
                    .ceil()
            ),
            BreakerStatus::Probing => "a probe is in flight".to_string(),
        };
        core.state.refused += 1;
        self.publish(&core.state, false);
        let since = core
            .state
            .opened_at
            .map(format_time_stamp)
            .unwrap_or_default();
        Err(withheld(
            action,
            format!(
                "the account's API request quota is exhausted (breaker open since {since}): {refusal}; call not sent"
            ),
        ))
    }

    fn settle(&self, ticket: Ticket, result: &Result<Value, CloudError>) {
        let mut core = self.lock();
        let now = Instant::now();
        let quota_message = match result {
            Err(e) if errors::is_request_quota(e.code, &e.message) => Some(e.message.clone()),
            _ => None,
        };
        let answered = match result {
            Ok(_) => true,
            Err(e) => e.code.is_some(),
        };
        let current = ticket.epoch == core.epoch;
        match (core.state.status, quota_message) {
            (BreakerStatus::Closed, Some(message)) => {
                core.epoch += 1;
                core.state.status = BreakerStatus::Open;
                core.state.trips += 1;
                let healthy_for = core.closed_at.map(|t| now.saturating_duration_since(t));
                if healthy_for.is_none_or(|d| d >= self.probe_max) {
                    core.refused_probes = 0;
                }
                let level = core.refused_probes;
                core.state.next_probe_at = Some(self.next_probe(now, level));
                core.state.opened_at = Some(SystemTime::now());
                tracing::warn!(
                    message = %message,
                    probe_interval = ?self.probe_interval,
                    "the account's API request quota is exhausted: cloud calls stop; the quota is probed once per interval"
                );
                core.state.last_error = Some(message);
                self.publish(&core.state, true);
            }
            (BreakerStatus::Probing, Some(message)) if ticket.probe && current => {
                core.state.status = BreakerStatus::Open;
                core.refused_probes = core.refused_probes.saturating_add(1);
                let refused = core.refused_probes;
                core.state.next_probe_at = Some(self.next_probe(now, refused));
                core.state.last_error = Some(message);
                tracing::info!("the API request quota is still exhausted");
                self.publish(&core.state, true);
            }
            (BreakerStatus::Probing, None) if ticket.probe && current => {
                if answered {
                    core.state.status = BreakerStatus::Closed;
                    core.state.next_probe_at = None;
                    core.closed_at = Some(now);
                    tracing::warn!("the API request quota is available again: cloud calls resume");
                } else {
                    // No answer: nothing learned; try again after an interval.
                    core.state.status = BreakerStatus::Open;
                    let refused = core.refused_probes;
                    core.state.next_probe_at = Some(self.next_probe(now, refused));
                }
                self.publish(&core.state, true);
            }
            // Answers to calls sent before the breaker opened change nothing.
            _ => {}
        }
    }

    /// A probe was dropped before its answer: the next call may probe.
    fn abandon(&self, ticket: Ticket) {
        let mut core = self.lock();
        if ticket.probe && ticket.epoch == core.epoch && core.state.status == BreakerStatus::Probing
        {
            core.state.status = BreakerStatus::Open;
            core.state.next_probe_at = Some(Instant::now());
            self.publish(&core.state, true);
        }
    }
}

/// Settles a ticket exactly once, also when the call's future is dropped.
struct Settle {
    shared: Arc<Shared>,
    ticket: Ticket,
    done: bool,
}

impl Drop for Settle {
    fn drop(&mut self) {
        if !self.done {
            self.shared.abandon(self.ticket);
        }
    }
}

/// Reads and watches the breaker of a client.
#[derive(Debug, Clone)]
pub struct BreakerHandle(Arc<Shared>);

impl BreakerHandle {
    /// The state now.
    pub fn state(&self) -> BreakerState {
        self.0.lock().state.clone()
    }

    /// A receiver woken at every transition (closed → open → probing → …); it
    /// holds the latest state, the counters say what happened in between.
    pub fn subscribe(&self) -> watch::Receiver<BreakerState> {
        self.0.tx.subscribe()
    }

    /// The probe interval.
    pub fn probe_interval(&self) -> Duration {
        self.0.probe_interval
    }
}

/// Adds the breaker to a service.
#[derive(Debug, Clone)]
pub struct BreakerLayer(Arc<Shared>);

impl BreakerLayer {
    /// A closed breaker that probes no more often than once per `probe_interval`.
    pub fn new(probe_interval: Duration) -> Self {
        Self::with_backoff(probe_interval, probe_interval)
    }

    /// A closed breaker that probes once per `probe_interval` at first, doubling the
    /// interval for every probe the quota refuses, up to `probe_max`.
    pub fn with_backoff(probe_interval: Duration, probe_max: Duration) -> Self {
        let (tx, _) = watch::channel(BreakerState::closed());
        Self(Arc::new(Shared {
            probe_interval,
            probe_max,
            core: Mutex::new(Core {
                state: BreakerState::closed(),
                epoch: 0,
                refused_probes: 0,
                closed_at: None,
            }),
            tx,
        }))
    }

    /// A handle that reads and watches the breaker.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle(self.0.clone())
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Breaker {
            inner,
            shared: self.0.clone(),
        }
    }
}

/// The breaker service.
#[derive(Debug, Clone)]
pub struct Breaker<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<ApiRequest> for Breaker<S>
where
    S: Service<ApiRequest, Response = Value, Error = CloudError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Value;
    type Error = CloudError;
    type Future = BoxFuture<Result<Value, CloudError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), CloudError>> {
        // Admission is decided in the call, so a refused call costs nothing.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ApiRequest) -> Self::Future {
        let ticket = match self.shared.admit(&request.action) {
            Ok(ticket) => ticket,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let inner = self.inner.clone();
        let mut settle = Settle {
            shared: self.shared.clone(),
            ticket,
            done: false,
        };
        Box::pin(async move {
            let result = inner.oneshot(request).await;
            settle.done = true;
            settle.shared.settle(settle.ticket, &result);
            result
        })
    }
}
