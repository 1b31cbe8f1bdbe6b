//! The accounting of the agent's plugin socket: one budget of request bytes
//! shared by its connections, the refusal answer ("agent busy", code 11) and its
//! rate-limited log line. The agent's `admission` adds the connection slots.
//!
//! Admission on the plugin socket bounds how many connections are served at once
//! and how many request bytes they may hold, so that no flood of connections or of
//! large frames takes the agent past its memory limit (the DaemonSet's 256 Mi),
//! while an ordinary ADD or DEL still gets through.
//!
//! - **Connections**: at most `max_connections` are served at once. One more is
//!   answered "agent busy" (code 11, try again) once its header arrived, and
//!   closed; its body is never read. As many again may wait for their header
//!   to be refused so (the agent's `HEADER_WAIT`); beyond that a connection is closed at once.
//! - **Bytes**: before reading a body, a connection reserves the length its
//!   header announces (at most 1 MiB, the protocol's limit per connection) from
//!   one budget of `max_buffered_bytes`, and holds it until it has answered (the
//!   decoded request lives that long). A body the budget cannot take now is
//!   refused "agent busy" at once rather than queued: a queue would let a flood
//!   of large frames delay the ADDs behind it by their whole read timeouts.
//! - **Ordinary requests first**: bodies over [`SMALL_BODY`] never take the last
//!   quarter of the budget. An ADD is about 1 KiB, a GC of 250 pods 30 KiB; only
//!   a runaway or hostile client sends frames near the limit, and those cannot
//!   starve the node's pods.
//!
//! The memory this bounds is `max_buffered_bytes` of bodies plus their decoded
//! form (for the JSON runtimes send, a few times the body: the budget is charged
//! the body only) plus a task and a socket per connection (a few KiB each; the
//! kernel charges the bytes a client has written but the agent has not read to
//! the client's socket).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::api::{AgentError as WireError, codes};
use crate::config::agent::SocketLimits;

/// Bodies up to this size may use the whole budget; larger ones leave its last
/// quarter to them.
pub const SMALL_BODY: u64 = 64 * 1024;
/// Refusals are logged at most this often (with the count since the last line).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every connection slot was taken.
    Connections,
    /// The byte budget could not take the body.
    Bytes,
}

impl Refusal {
    /// The `reason` label of `hostnic_socket_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Connections => "connections",
            Refusal::Bytes => "bytes",
        }
    }
}

/// The byte budget of one socket, and its limits.
#[derive(Debug)]
pub struct Budget {
    limits: SocketLimits,
    used: AtomicU64,
    /// What bodies over [`SMALL_BODY`] leave free.
    reserve: u64,
    refusals: RefusalLog,
}

impl Budget {
    /// The budget of a socket with `limits`.
    pub fn new(limits: SocketLimits) -> Self {
        Self {
            limits,
            used: AtomicU64::new(0),
            reserve: limits.max_buffered_bytes / 4,
            refusals: RefusalLog::default(),
        }
    }

    /// Body bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// The answer to a refused connection (`len`: the body the budget could not take).
    pub fn busy(&self, why: Refusal, len: Option<usize>) -> WireError {
        let details = match why {
            Refusal::Connections => format!(
                "{} plugin connections are being served (socket_limits.max_connections); \
                 try again",
                self.limits.max_connections
            ),
            Refusal::Bytes => format!(
                "a request of {} bytes does not fit in the {} bytes requests may hold \
                 (socket_limits.max_buffered_bytes; {} in use); try again",
                len.unwrap_or_default(),
                self.limits.max_buffered_bytes,
                self.used.load(Ordering::SeqCst)
            ),
        };
        WireError::new(codes::TRY_AGAIN_LATER, "agent busy", details)
    }

    /// Counts a refusal and logs it (rate-limited).
    pub fn refused(&self, why: Refusal) {
        self.refusals.note(why, &self.limits);
    }

    /// Reserves `len` body bytes, if the budget can take them now.
    pub fn take(self: &Arc<Self>, len: u64) -> Option<Reservation> {
        let total = self.limits.max_buffered_bytes;
        let limit = if len > SMALL_BODY {
            total - self.reserve
        } else {
            total
        };
        let mut used = self.used.load(Ordering::SeqCst);
        loop {
            if used + len > limit {
                return None;
            }
            match self.used.compare_exchange_weak(
                used,
                used + len,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    return Some(Reservation {
                        budget: self.clone(),
                        len,
                    });
                }
                Err(now) => used = now,
            }
        }
    }
}

/// Body bytes reserved by one connection, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    len: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.len, Ordering::SeqCst);
    }
}

/// Refusals since the last log line, so that a flood is one WARN line per
/// [`LOG_EVERY`], not one per connection.
#[derive(Debug, Default)]
struct RefusalLog(std::sync::Mutex<RefusalCounts>);

#[derive(Debug, Default)]
struct RefusalCounts {
    last: Option<std::time::Instant>,
    connections: u64,
    bytes: u64,
}

impl RefusalLog {
    fn note(&self, why: Refusal, limits: &SocketLimits) {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match why {
            Refusal::Connections => c.connections += 1,
            Refusal::Bytes => c.bytes += 1,
        }
        if c.last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            return;
        }
        tracing::warn!(
            for_connections = c.connections,
            for_bytes = c.bytes,
            max_connections = limits.max_connections,
            max_buffered_bytes = limits.max_buffered_bytes,
            "plugin socket busy: refused connections (answered code 11, try again); \
             a client floods the socket or the limits are too low"
        );
        c.last = Some(std::time::Instant::now());
        c.connections = 0;
        c.bytes = 0;
    }
}
