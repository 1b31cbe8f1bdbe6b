//! Admission on the plugin socket: how many connections are served at once
//! (here, tokio semaphores) and how many request bytes they may hold (the
//! core's [`Budget`], whose docs say why and how).
//!
//! At most `max_connections` are served at once. One more is answered "agent
//! busy" (code 11, try again) once its header arrived, and closed; its body is
//! never read. As many again may wait for their header to be refused so
//! ([`HEADER_WAIT`]); beyond that a connection is closed at once.

use std::sync::Arc;
use std::time::Duration;

use hostnic_core::api::AgentError as WireError;
pub(crate) use hostnic_core::api::admission::{Budget, Refusal, Reservation, SMALL_BODY};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::settings::SocketLimits;

/// How long a connection refused for lack of a slot may take to send its header.
pub(crate) const HEADER_WAIT: Duration = Duration::from_secs(1);

/// The caps of one socket, shared by its connections.
#[derive(Debug)]
pub(crate) struct Admission {
    /// One permit per connection served.
    slots: Arc<Semaphore>,
    /// One permit per connection waiting for its header to be refused.
    refusing: Arc<Semaphore>,
    budget: Arc<Budget>,
}

impl Admission {
    pub(crate) fn new(limits: SocketLimits) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limits.max_connections as usize)),
            refusing: Arc::new(Semaphore::new(limits.max_connections as usize)),
            budget: Arc::new(Budget::new(limits)),
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
        self.budget.used()
    }

    /// The answer to a refused connection.
    pub(crate) fn busy(&self, why: Refusal, len: Option<usize>) -> WireError {
        self.budget.busy(why, len)
    }

    /// Counts a refusal and logs it (rate-limited).
    pub(crate) fn refused(&self, why: Refusal) {
        self.budget.refused(why);
    }
}

#[cfg(test)]
mod tests {
    use hostnic_core::api::codes;

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
