//! Admission on the plugin socket: how many connections are served at once and
//! how many request bytes they may hold, so that no flood of connections or of
//! large frames takes the agent past its memory limit (the DaemonSet's 256 Mi),
//! while an ordinary ADD or DEL still gets through.
//!
//! - **Connections**: at most `max_connections` are served at once. One more is
//!   answered "agent busy" (code 11, try again) once its header arrived, and
//!   closed; its body is never read. As many again may wait for their header
//!   to be refused so ([`HEADER_WAIT`]); beyond that a connection is closed at once.
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

use hostnic_core::api::{AgentError as WireError, codes};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::settings::SocketLimits;

/// Bodies up to this size may use the whole budget; larger ones leave its last
/// quarter to them.
pub(crate) const SMALL_BODY: u64 = 64 * 1024;
/// How long a connection refused for lack of a slot may take to send its header.
pub(crate) const HEADER_WAIT: Duration = Duration::from_secs(1);
/// Refusals are logged at most this often (with the count since the last line).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The caps of one socket, shared by its connections.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: SocketLimits,
    /// One permit per connection served.
    slots: Arc<Semaphore>,
    /// One permit per connection waiting for its header to be refused.
    refusing: Arc<Semaphore>,
    budget: Arc<Budget>,
    refusals: RefusalLog,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every connection slot was taken.
    Connections,
    /// The byte budget could not take the body.
    Bytes,
}

impl Refusal {
    /// The `reason` label of `hostnic_socket_refused_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Connections => "connections",
            Refusal::Bytes => "bytes",
        }
    }
}

impl Admission {
    pub(crate) fn new(limits: SocketLimits) -> Self {
        Self {
            limits,
            slots: Arc::new(Semaphore::new(limits.max_connections as usize)),
            refusing: Arc::new(Semaphore::new(limits.max_connections as usize)),
            budget: Arc::new(Budget {
                used: AtomicU64::new(0),
                total: limits.max_buffered_bytes,
                reserve: limits.max_buffered_bytes / 4,
            }),
            refusals: RefusalLog::default(),
        }
    }

    /// A slot for a new connection, if one is free.
    pub(crate) fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Leave to wait for the header of a connection that will be refused.
    pub(crate) fn refusing(&self) -> Option<OwnedSemaphorePermit> {
        self.refusing.clone().try_acquire_owned().ok()
    }

    /// Reserves `len` body bytes, if the budget can take them now.
    pub(crate) fn reserve(&self, len: usize) -> Option<Reservation> {
        self.budget.take(len as u64)
    }

    /// Body bytes reserved now.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> u64 {
        self.budget.used.load(Ordering::SeqCst)
    }

    /// The answer to a refused connection.
    pub(crate) fn busy(&self, why: Refusal, len: Option<usize>) -> WireError {
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
                self.budget.used.load(Ordering::SeqCst)
            ),
        };
        WireError::new(codes::TRY_AGAIN_LATER, "agent busy", details)
    }

    /// Counts a refusal and logs it (rate-limited).
    pub(crate) fn refused(&self, why: Refusal) {
        self.refusals.note(why, &self.limits);
    }
}

/// The byte budget.
#[derive(Debug)]
struct Budget {
    used: AtomicU64,
    total: u64,
    /// What bodies over [`SMALL_BODY`] leave free.
    reserve: u64,
}

impl Budget {
    fn take(self: &Arc<Self>, len: u64) -> Option<Reservation> {
        let limit = if len > SMALL_BODY {
            self.total - self.reserve
        } else {
            self.total
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
pub(crate) struct Reservation {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(connections: u32, bytes: u64) -> Admission {
        Admission::new(SocketLimits {
            max_connections: connections,
            max_buffered_bytes: bytes,
        })
    }

    #[test]
    fn connections_beyond_the_cap_get_no_slot_until_one_ends() {
        let a = admission(2, 1 << 22);
        let one = a.slot().unwrap();
        let _two = a.slot().unwrap();
        assert!(a.slot().is_none());
        drop(one);
        assert!(a.slot().is_some());
    }

    #[test]
    fn large_bodies_leave_the_last_quarter_to_small_ones() {
        // 4 MiB: bodies over 64 KiB may hold 3 MiB together, small ones the rest.
        let a = admission(64, 4 << 20);
        let large: Vec<_> = (0..3).map(|_| a.reserve(1 << 20).unwrap()).collect();
        assert!(a.reserve(1 << 20).is_none(), "a fourth 1 MiB body");
        assert!(a.reserve(SMALL_BODY as usize + 1).is_none());
        // The reserve is for ordinary requests: 16 bodies of 64 KiB fit in it.
        let small: Vec<_> = (0..16)
            .map(|_| a.reserve(SMALL_BODY as usize).unwrap())
            .collect();
        assert!(a.reserve(1).is_none(), "the budget is spent");
        assert_eq!(a.buffered(), 4 << 20);
        drop(large);
        drop(small);
        assert_eq!(a.buffered(), 0);
        assert!(a.reserve(1 << 20).is_some());
    }

    #[test]
    fn the_busy_answer_is_try_again_and_names_the_setting() {
        let a = admission(3, 1 << 22);
        let e = a.busy(Refusal::Connections, None);
        assert_eq!(e.code, codes::TRY_AGAIN_LATER);
        assert!(e.details.contains("max_connections"), "{e:?}");
        let e = a.busy(Refusal::Bytes, Some(1 << 20));
        assert!(e.details.contains("1048576 bytes"), "{e:?}");
        assert!(e.details.contains("max_buffered_bytes"), "{e:?}");
    }
}
