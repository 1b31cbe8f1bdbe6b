//! Deferred deletion of the veths of deleted pods.
//!
//! Deleting a veth costs the kernel 10–30 ms here (an RCU grace period with
//! RTNL held), most of what a DEL would take. Deleting a *group* of links costs
//! the same as deleting one: `ip link del group G` unregisters them all in one
//! batch (32 veths: 20 ms, one veth: 17 ms, measured here).
//!
//! So DEL does not delete the veth. It sets the host end down and moves it to
//! the "dead" link group ([`crate::LinuxHostConfig::dead_veth_group`]) in one
//! message, removes the pod's route and rules, and answers: from then on no
//! packet reaches or leaves the pod through the node. What happens to the pair
//! then:
//! - usually the runtime deletes the sandbox's namespace right after DEL, and
//!   the kernel destroys the pair with it, in its own batched namespace cleanup;
//! - otherwise (`podman network disconnect`, a runtime that keeps the namespace)
//!   the [`Reaper`] deletes the whole dead group in one call once the node has
//!   been quiet (no ADD or DEL) for `reap_quiet`, and at the latest
//!   `reap_max_delay` after the first veth was parked, so a burst of DELs costs
//!   one grace period instead of one each, and never lands in the middle of
//!   a burst of ADDs.
//!
//! Dead veths are never shown as pods ([`crate::LinuxHost::inventory_now`] skips
//! the group). A crash leaves them in the group: the reaper's first round, soon
//! after start-up, deletes them. An ADD whose veth name is still held by a dead veth (the
//! same pod back before its old pair was reaped) reaps at once.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rtnetlink::Handle;
use rtnetlink::packet_route::link::LinkAttribute;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{LinuxError, errno_of, libc_errno};

/// After a failed group deletion, the next attempt waits this long.
const RETRY: Duration = Duration::from_secs(5);

/// When the dead group is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReapTiming {
    /// Reap once no ADD or DEL has been seen for this long.
    pub quiet: Duration,
    /// Reap at the latest this long after the first veth was parked.
    pub max_delay: Duration,
}

#[derive(Debug, Default)]
struct State {
    /// When the oldest veth not reaped yet was parked (None: nothing parked).
    parked_since: Option<Instant>,
    /// The last ADD or DEL.
    last_activity: Option<Instant>,
    /// After a failed deletion: not again before this.
    not_before: Option<Instant>,
}

#[derive(Debug)]
struct Inner {
    handle: Handle,
    group: u32,
    timing: ReapTiming,
    state: Mutex<State>,
    wake: Notify,
    /// Serialises group deletions (the task's and [`Reaper::reap_now`]'s).
    deleting: tokio::sync::Mutex<()>,
}

/// Deletes the dead veth group in the background; see the module docs.
#[derive(Debug)]
pub(crate) struct Reaper {
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// When the parked veths are due, if any are: `quiet` after the last ADD or DEL,
/// at the latest `max_delay` after the first was parked, never before a retry time.
fn due(state: &State, timing: ReapTiming) -> Option<Instant> {
    let since = state.parked_since?;
    let quiet = state.last_activity.unwrap_or(since).max(since) + timing.quiet;
    let due = quiet.min(since + timing.max_delay);
    Some(state.not_before.map_or(due, |n| n.max(due)))
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deletes every link of the dead group. Nothing in it is not an error.
    async fn delete_group(&self) -> Result<(), LinuxError> {
        let _one = self.deleting.lock().await;
        let mut request = self.handle.link().del(0);
        request
            .message_mut()
            .attributes
            .push(LinkAttribute::Group(self.group));
        match request.execute().await {
            Ok(()) => Ok(()),
            // rtnl_group_dellink answers ENODEV when no link is in the group.
            Err(e) if errno_of(&e) == Some(libc_errno::ENODEV) => Ok(()),
            Err(e) => Err(LinuxError::netlink(format!(
                "delete dead veths (link group {})",
                self.group
            ))(e)),
        }
    }

    fn due(&self) -> Option<Instant> {
        due(&self.lock(), self.timing)
    }

    async fn run(self: Arc<Self>) {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.due() {
                None => notified.await,
                Some(due) if due > Instant::now() => {
                    tokio::select! {
                        () = tokio::time::sleep_until(due) => {}
                        () = notified => {}
                    }
                }
                Some(_) => {
                    // Veths parked from now on wait for the next round.
                    let since = self.lock().parked_since.take();
                    let result = self.delete_group().await;
                    let mut state = self.lock();
                    match result {
                        Ok(()) => state.not_before = None,
                        Err(e) => {
                            tracing::warn!(error = %e, "reaping the veths of deleted pods; retrying in {RETRY:?}");
                            state.parked_since = state.parked_since.or(since);
                            state.not_before = Some(Instant::now() + RETRY);
                        }
                    }
                }
            }
        }
    }
}

impl Reaper {
    /// Starts the reaper task on the current tokio runtime.
    pub(crate) fn start(handle: Handle, group: u32, timing: ReapTiming) -> Self {
        let inner = Arc::new(Inner {
            handle,
            group,
            timing,
            // A crashed predecessor may have left dead veths: the first round reaps.
            state: Mutex::new(State {
                parked_since: Some(Instant::now()),
                ..State::default()
            }),
            wake: Notify::new(),
            deleting: tokio::sync::Mutex::new(()),
        });
        let task = tokio::spawn(inner.clone().run());
        Self { inner, task }
    }

    /// The link group dead veths are moved to.
    pub(crate) fn group(&self) -> u32 {
        self.inner.group
    }

    /// An ADD or DEL is happening: the node is not quiet.
    pub(crate) fn activity(&self) {
        self.inner.lock().last_activity = Some(Instant::now());
    }

    /// A veth was moved to the dead group.
    pub(crate) fn parked(&self) {
        let mut state = self.inner.lock();
        let now = Instant::now();
        state.parked_since.get_or_insert(now);
        state.last_activity = Some(now);
        drop(state);
        self.inner.wake.notify_one();
    }

    /// Deletes the dead group now.
    pub(crate) async fn reap_now(&self) -> Result<(), LinuxError> {
        self.inner.lock().parked_since = None;
        self.inner.delete_group().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: ReapTiming = ReapTiming {
        quiet: Duration::from_secs(1),
        max_delay: Duration::from_secs(10),
    };

    fn at(t0: Instant, ms: u64) -> Option<Instant> {
        Some(t0 + Duration::from_millis(ms))
    }

    #[test]
    fn nothing_parked_is_never_due() {
        let t0 = Instant::now();
        let state = State {
            last_activity: at(t0, 0),
            ..State::default()
        };
        assert_eq!(due(&state, TIMING), None);
    }

    #[test]
    fn parked_veths_wait_for_a_quiet_second() {
        let t0 = Instant::now();
        let mut state = State {
            parked_since: at(t0, 0),
            last_activity: at(t0, 0),
            not_before: None,
        };
        assert_eq!(due(&state, TIMING), at(t0, 1_000));
        // More ADDs and DELs postpone it...
        state.last_activity = at(t0, 4_000);
        assert_eq!(due(&state, TIMING), at(t0, 5_000));
        // ...but never past max_delay after the first was parked.
        state.last_activity = at(t0, 9_500);
        assert_eq!(due(&state, TIMING), at(t0, 10_000));
    }

    #[test]
    fn without_activity_the_quiet_time_counts_from_parking() {
        let t0 = Instant::now();
        let state = State {
            parked_since: at(t0, 200),
            ..State::default()
        };
        assert_eq!(due(&state, TIMING), at(t0, 1_200));
    }

    #[test]
    fn a_failed_reaping_is_retried_no_sooner_than_its_retry_time() {
        let t0 = Instant::now();
        let state = State {
            parked_since: at(t0, 0),
            last_activity: at(t0, 0),
            not_before: at(t0, 5_000),
        };
        assert_eq!(due(&state, TIMING), at(t0, 5_000));
    }
}
