//! What the node knows about the cloud's willingness, and when it must ask it.
//!
//! The account's API request quota (2,000 requests an hour by default, shared by
//! every node and every other user of the account) decides the design: a node at
//! rest must cost almost nothing. So the periodic reconcile compares checkpoint,
//! host and pods *without* the cloud, and [`NodeState::needs_cloud`] says when
//! something local disagrees enough that only the cloud can settle it: a NIC whose
//! job's end was not seen, a prepared NIC whose link vanished, a link of a NIC the
//! node believes unattached, pod plumbing whose address is no NIC of the node, the
//! first reconcile, and a slow jittered resync (`cloud_resync`, 30 min, stretched
//! by 2–27 %).
//!
//! It also keeps what the cloud refused, so the pool neither hammers it nor hides
//! the cause:
//! - [`Shortage`]: why the pool could not grow the last time it tried (a full
//!   vxnet, the NIC quota, the request quota, a refusal, an outage). ADD errors,
//!   events, the advertised capacity and readiness name it.
//! - Full vxnets are retried with a backoff that stays short (up to
//!   `backoff_max`) while pods wait and long (10×) when none does, and forgotten
//!   at once when the node itself frees an address there.
//! - An account refusal (wrong credentials, no balance) holds every cloud call for
//!   `permanent_hold`, or until the credentials change.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::backoff::ExponentialBackoff;
use crate::pool::plan::ActionKind;
use crate::pool::state::{CloudLink, NodeState, Usage};
use crate::ports::{CloudError, CloudErrorKind};
use crate::types::{HostInventory, NicId, Timestamp, VxnetId};

/// Why the pool could not grow the last time it asked the cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShortageCause {
    /// Every pod vxnet of the node refused more NICs: its addresses (or its 252
    /// NICs) are used up (a resource-quota 2500 on CreateNics).
    VxnetFull,
    /// The instance holds as many NICs as the cloud allows, or the account's NIC
    /// quota is reached (a resource-quota 2500 on AttachNics).
    NicQuota,
    /// The account's API request quota is exhausted (a request-quota 2500), or the
    /// cloud client withholds calls to protect it (breaker open, budget spent).
    RequestQuota,
    /// The API refused the account (credentials, balance) or the operation (denied).
    Refused,
    /// The cloud did not answer (transport errors, 5000, 5100).
    Unavailable,
}

impl ShortageCause {
    /// The `reason` of events and the word errors start with.
    pub fn reason(self) -> &'static str {
        match self {
            ShortageCause::VxnetFull => "VxnetFull",
            ShortageCause::NicQuota => "QuotaExceeded",
            ShortageCause::RequestQuota => "RequestQuotaExceeded",
            ShortageCause::Refused => "CloudRefused",
            ShortageCause::Unavailable => "CloudUnavailable",
        }
    }

    /// A resource quota: the cloud refuses more NICs or addresses.
    pub fn is_quota(self) -> bool {
        matches!(self, ShortageCause::VxnetFull | ShortageCause::NicQuota)
    }

    /// True when the pool cannot grow until the cloud changes its mind (as opposed
    /// to an outage, which the next retry may end): the node can serve only the
    /// NICs it holds.
    pub fn blocks_growth(self) -> bool {
        !matches!(self, ShortageCause::Unavailable)
    }

    fn of(action: ActionKind, e: &CloudError) -> Self {
        match e.kind {
            CloudErrorKind::QuotaExceeded if action == ActionKind::Create => {
                ShortageCause::VxnetFull
            }
            CloudErrorKind::QuotaExceeded => ShortageCause::NicQuota,
            CloudErrorKind::Throttled => ShortageCause::RequestQuota,
            CloudErrorKind::Permanent => ShortageCause::Refused,
            CloudErrorKind::Retryable | CloudErrorKind::NotFound => ShortageCause::Unavailable,
        }
    }
}

/// The pool could not grow: why, since when, and what the cloud said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortage {
    /// The cause.
    pub cause: ShortageCause,
    /// The failed call's error, as the client reported it.
    pub error: CloudError,
    /// When the pool first failed for this cause (consecutive failures keep it).
    pub since: Timestamp,
}

impl Shortage {
    /// One sentence for an ADD error or an event: the cause first, then the cloud's words.
    pub fn describe(&self) -> String {
        let what = match self.cause {
            ShortageCause::VxnetFull => {
                "VxnetFull: the node's pod vxnets have no address (or NIC) left; \
                 pods wait until addresses are freed or a vxnet is added to the node"
            }
            ShortageCause::NicQuota => {
                "QuotaExceeded: the instance (or the account) holds as many NICs as the cloud allows"
            }
            ShortageCause::RequestQuota => {
                "the account's API request quota is exhausted (QingCloud ret_code 2500): \
                 no NIC can be created or attached until it frees"
            }
            ShortageCause::Refused => "the cloud API refused the request",
            ShortageCause::Unavailable => "the cloud API does not answer",
        };
        format!("{what} ({})", self.error)
    }
}

/// A vxnet that refused more NICs: retried with backoff from its last refusal,
/// asking for half as many each time (it may have a few addresses left).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exhausted {
    /// Consecutive refusals.
    pub failures: u32,
    /// The last refusal.
    pub last: Timestamp,
    /// The most NICs the next CreateNics in this vxnet asks for.
    pub cap: u32,
}

/// The whole cloud held after the API refused the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloudHold {
    pub until: Timestamp,
    pub error: CloudError,
}

/// Why a reconcile asks the cloud (one DescribeNics of the node's NICs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloudReason {
    /// The agent starts: nothing local can be trusted to match the cloud.
    Startup,
    /// The slow periodic resync (`cloud_resync`).
    Resync,
    /// A NIC's attach, detach or delete was in flight, or its job's end was not seen.
    JobUnseen(NicId),
    /// A NIC operation got no answer (it may have taken effect) or was refused in a
    /// way that says the node's picture of its NICs is wrong (a NIC not found, or in
    /// another state than the node believes).
    Doubt,
    /// A prepared NIC's link vanished from the host (or never appeared).
    LinkMissing(NicId),
    /// The host has the link of a NIC the node believes unattached.
    UnexpectedLink(NicId),
    /// Pod plumbing on the host holds an address that is none of the node's NICs.
    UnknownAddress(Ipv4Addr),
}

impl std::fmt::Display for CloudReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloudReason::Startup => f.write_str("startup"),
            CloudReason::Resync => f.write_str("periodic resync"),
            CloudReason::JobUnseen(n) => write!(f, "NIC {n}: its job's end was not seen"),
            CloudReason::Doubt => f.write_str(
                "a NIC operation got no answer, or was refused as if the NICs were elsewhere",
            ),
            CloudReason::LinkMissing(n) => write!(f, "NIC {n}: its link is missing on the host"),
            CloudReason::UnexpectedLink(n) => {
                write!(
                    f,
                    "NIC {n}: its link is on the host but it is not attached here"
                )
            }
            CloudReason::UnknownAddress(ip) => {
                write!(f, "pod plumbing with {ip}, no NIC of this node")
            }
        }
    }
}

impl CloudReason {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            CloudReason::Startup => "startup",
            CloudReason::Resync => "resync",
            CloudReason::JobUnseen(_) => "job_unseen",
            CloudReason::Doubt => "doubt",
            CloudReason::LinkMissing(_) => "link_missing",
            CloudReason::UnexpectedLink(_) => "unexpected_link",
            CloudReason::UnknownAddress(_) => "unknown_address",
        }
    }
}

impl NodeState {
    /// Why the reconcile at `now` must ask the cloud, given what the host shows;
    /// `None` when checkpoint, host and pods can be reconciled without it. Call it
    /// while no pool round runs (the engine holds the pool lock): a NIC still
    /// marked in flight then had its job's end unseen.
    pub fn needs_cloud(&self, host: &HostInventory, now: Timestamp) -> Option<CloudReason> {
        if self.cloud_synced_at.is_none() {
            return Some(CloudReason::Startup);
        }
        if self.doubt {
            return Some(CloudReason::Doubt);
        }
        let links: BTreeSet<&NicId> = host.nic_links.iter().collect();
        for n in self.nics.values() {
            match n.link {
                CloudLink::Attaching | CloudLink::Detaching | CloudLink::Deleting => {
                    return Some(CloudReason::JobUnseen(n.id.clone()));
                }
                CloudLink::Uncertain { .. } => return Some(CloudReason::JobUnseen(n.id.clone())),
                // A prepared NIC losing its link, or one whose link the pool waits for:
                // detached or deleted behind the node's back? (One the pool detaches
                // and attaches again is its own business.)
                CloudLink::Attached
                    if !links.contains(&n.id)
                        && !n.reattach
                        && (n.host_ready || n.link_missing_since.is_some()) =>
                {
                    return Some(CloudReason::LinkMissing(n.id.clone()));
                }
                CloudLink::Unattached if links.contains(&n.id) => {
                    return Some(CloudReason::UnexpectedLink(n.id.clone()));
                }
                _ => {}
            }
        }
        let ips: BTreeSet<Ipv4Addr> = self.nics.values().map(|n| n.ip).collect();
        if let Some(p) = host
            .pods
            .iter()
            .find(|p| !p.ip.is_unspecified() && !ips.contains(&p.ip))
        {
            return Some(CloudReason::UnknownAddress(p.ip));
        }
        if self.resync_due(now) {
            return Some(CloudReason::Resync);
        }
        None
    }

    /// True once `cloud_resync` (plus this node's jitter) passed since the last
    /// time the node's NICs were described.
    pub fn resync_due(&self, now: Timestamp) -> bool {
        self.cloud_synced_at
            .is_none_or(|at| now >= at.plus(self.resync_interval()))
    }

    /// The interval to the next resync: `cloud_resync` stretched by 2–27 %, drawn
    /// from the node's seed and the resync count, so a fleet started together
    /// drifts apart, and with the default of 30 min no node resyncs three times
    /// within an hour (at most 2 calls per node in any hour at rest, 1.75 on average).
    fn resync_interval(&self) -> std::time::Duration {
        let draw = crate::backoff::splitmix64(self.seed ^ self.resyncs.wrapping_add(0x5eed)) % 250;
        self.config
            .cloud_resync
            .mul_f64(1.02 + draw as f64 / 1000.0)
    }

    /// The node's NICs were described at `now`.
    pub(crate) fn cloud_synced(&mut self, now: Timestamp) {
        self.cloud_synced_at = Some(now);
        self.doubt = false;
        self.resyncs = self.resyncs.wrapping_add(1);
    }

    /// When the node's NICs were last described, if ever since the start.
    pub fn cloud_synced_at(&self) -> Option<Timestamp> {
        self.cloud_synced_at
    }

    /// True when a call of `kind` may go to the cloud at `now` (its backoff ran
    /// out and the cloud is not held).
    pub fn cloud_ready(&self, kind: ActionKind, now: Timestamp) -> bool {
        self.hold.as_ref().is_none_or(|h| now >= h.until)
            && self.backoff.get(&kind).is_none_or(|b| b.ready(now))
    }

    /// The error the cloud is held for, and until when (after an account refusal).
    pub fn cloud_held(&self, now: Timestamp) -> Option<(&CloudError, Timestamp)> {
        self.hold
            .as_ref()
            .filter(|h| now < h.until)
            .map(|h| (&h.error, h.until))
    }

    /// The credentials changed: what the API refused may succeed now, so the hold
    /// and the backoffs of refused operations end at once.
    pub fn credentials_changed(&mut self) {
        self.hold = None;
        self.backoff.clear();
        if self.shortage.as_ref().is_some_and(|s| {
            matches!(
                s.cause,
                ShortageCause::Refused | ShortageCause::RequestQuota
            )
        }) {
            self.shortage = None;
        }
    }

    /// Records a failed cloud call of `kind`: its backoff (up to `backoff_max`, or
    /// `permanent_hold` for a permanent refusal), the hold of every call after an
    /// account refusal, and the shortage when the call was growing the pool.
    pub(crate) fn cloud_failed(&mut self, kind: ActionKind, e: &CloudError, now: Timestamp) {
        let (base, seed) = (self.config.backoff_base, self.seed);
        // A refusal the API answered (1400 denied, 1100 malformed) backs off long; a
        // job that failed (no `ret_code`) is the cloud's own hiccup, retried as usual.
        let max = if e.kind == CloudErrorKind::Permanent && e.code.is_some() {
            self.config.permanent_hold.max(self.config.backoff_max)
        } else {
            self.config.backoff_max
        };
        self.backoff
            .entry(kind)
            .or_default()
            .fail(now, base, max, seed);
        if e.refuses_account() {
            let until = now.plus(self.config.permanent_hold);
            self.hold = Some(CloudHold {
                until,
                error: e.clone(),
            });
        }
        if matches!(kind, ActionKind::Create | ActionKind::Attach) {
            self.note_shortage(ShortageCause::of(kind, e), e, now);
        }
        // The node's picture of its NICs may be wrong: NICs may exist (or be gone, or
        // be elsewhere) that it does not know of. The next reconcile asks the cloud.
        let doubt = match kind {
            ActionKind::Create => e.kind == CloudErrorKind::Retryable,
            ActionKind::Attach | ActionKind::Detach | ActionKind::Delete => {
                e.kind != CloudErrorKind::Throttled && !e.refuses_account()
            }
            ActionKind::Prepare | ActionKind::Describe => false,
        };
        self.doubt |= doubt;
    }

    /// Jobs whose end the node waits for still run: the next look comes after the
    /// `Describe` delay (from `backoff_base`, doubling up to `backoff_max`).
    pub(crate) fn describe_later(&mut self, now: Timestamp) {
        let (base, max, seed) = (self.config.backoff_base, self.config.backoff_max, self.seed);
        self.backoff
            .entry(ActionKind::Describe)
            .or_default()
            .fail(now, base, max, seed);
    }

    /// Records a successful cloud call of `kind`.
    pub(crate) fn cloud_succeeded(&mut self, kind: ActionKind) {
        self.backoff.remove(&kind);
        self.hold = None;
        if matches!(kind, ActionKind::Create | ActionKind::Attach)
            && self
                .shortage
                .as_ref()
                .is_some_and(|s| s.cause != ShortageCause::VxnetFull || kind == ActionKind::Create)
        {
            self.shortage = None;
        }
    }

    fn note_shortage(&mut self, cause: ShortageCause, e: &CloudError, now: Timestamp) {
        let since = match &self.shortage {
            Some(s) if s.cause == cause => s.since,
            _ => now,
        };
        self.shortage = Some(Shortage {
            cause,
            error: e.clone(),
            since,
        });
    }

    /// Every pod vxnet refused more NICs (`e`, the last refusal).
    pub(crate) fn note_vxnets_full(&mut self, e: &CloudError, now: Timestamp) {
        self.note_shortage(ShortageCause::VxnetFull, e, now);
    }

    /// Why the pool could not grow the last time it tried, while that lasts.
    pub fn shortage(&self) -> Option<&Shortage> {
        self.shortage.as_ref()
    }

    /// The shortage, when it keeps the pool from growing (not a mere outage).
    pub fn growth_blocked(&self) -> Option<&Shortage> {
        self.shortage.as_ref().filter(|s| s.cause.blocks_growth())
    }

    /// Pods the node can still give an address: every pod NIC slot not held by a
    /// pod while the pool can grow; while a shortage blocks it, only the NICs the
    /// node holds that no pod has (free, cooling, on their way). What the node
    /// advertises (`hostnic.io/assignable-pods`).
    pub fn assignable_pods(&self) -> u32 {
        let assigned = self.attachments.len() as u32;
        if self.growth_blocked().is_none() {
            return self.config.max_nics.saturating_sub(assigned);
        }
        self.nics
            .values()
            .filter(|n| matches!(n.usage, Usage::Free { .. } | Usage::Cooling { .. }))
            .filter(|n| !n.reattach)
            .count() as u32
    }

    /// A vxnet refused `count` more NICs at `now`.
    pub(crate) fn vxnet_exhausted(&mut self, vxnet: &VxnetId, count: u32, now: Timestamp) {
        let e = self.exhausted.entry(vxnet.clone()).or_insert(Exhausted {
            failures: 0,
            last: now,
            cap: count,
        });
        e.failures = e.failures.saturating_add(1);
        e.last = now;
        e.cap = (e.cap.min(count) / 2).max(1);
    }

    /// The most NICs a CreateNics in `vxnet` asks for now (half the last refused count
    /// while the vxnet was found full).
    pub(crate) fn vxnet_cap(&self, vxnet: &VxnetId) -> u32 {
        self.exhausted.get(vxnet).map_or(u32::MAX, |e| e.cap)
    }

    /// True while `vxnet` is left alone after refusing NICs: its next try comes
    /// after a backoff from `backoff_base` that stops at `backoff_max` while pods
    /// wait for a NIC (so freed addresses are found within about a minute), and at
    /// ten times that when none waits.
    pub(crate) fn vxnet_resting(&self, vxnet: &VxnetId, now: Timestamp) -> bool {
        let Some(e) = self.exhausted.get(vxnet) else {
            return false;
        };
        let cap = if self.demand > 0 {
            self.config.backoff_max
        } else {
            self.config.backoff_max * 10
        };
        let delay = ExponentialBackoff::new(self.config.backoff_base, cap)
            .spread(e.failures.saturating_sub(1), self.seed);
        now < e.last.plus(delay)
    }

    /// The node freed an address (or a NIC) in `vxnet`: it is worth trying again now.
    pub(crate) fn vxnet_freed(&mut self, vxnet: &VxnetId) {
        if self.exhausted.remove(vxnet).is_some()
            && self
                .shortage
                .as_ref()
                .is_some_and(|s| s.cause == ShortageCause::VxnetFull)
        {
            self.shortage = None;
            self.backoff.remove(&ActionKind::Create);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::PoolConfig;
    use crate::types::InstanceId;

    fn node() -> NodeState {
        NodeState::new(PoolConfig::default(), InstanceId::new("i-1"), vec![])
    }

    #[test]
    fn resync_comes_after_1_02_to_1_27_intervals_and_differs_per_node() {
        let mut intervals = BTreeSet::new();
        for i in 0..20 {
            let mut s = NodeState::new(
                PoolConfig::default(),
                InstanceId::new(format!("i-{i}")),
                vec![],
            );
            s.cloud_synced(Timestamp(0));
            let d = s.resync_interval();
            assert!(
                d >= Duration::from_secs(1836) && d < Duration::from_secs(2286),
                "{d:?}"
            );
            intervals.insert(d);
            assert!(!s.resync_due(Timestamp(0).plus(Duration::from_secs(1835))));
            assert!(s.resync_due(Timestamp(0).plus(Duration::from_secs(2286))));
        }
        assert!(
            intervals.len() > 10,
            "the jitter spreads nodes: {intervals:?}"
        );
    }

    #[test]
    fn an_account_refusal_holds_every_call_until_the_credentials_change() {
        let mut s = node();
        let auth =
            CloudError::new(CloudErrorKind::Permanent, "CreateNics", "AuthFailure").with_code(1200);
        s.cloud_failed(ActionKind::Create, &auth, Timestamp(0));
        let later = Timestamp(0).plus(Duration::from_secs(600));
        assert!(!s.cloud_ready(ActionKind::Describe, later));
        assert!(!s.cloud_ready(ActionKind::Attach, later));
        assert_eq!(s.shortage().unwrap().cause, ShortageCause::Refused);
        s.credentials_changed();
        assert!(s.cloud_ready(ActionKind::Create, later));
        assert!(s.shortage().is_none());
    }

    #[test]
    fn a_denied_operation_backs_off_up_to_the_permanent_hold_not_the_retry_max() {
        let mut s = node();
        let denied =
            CloudError::new(CloudErrorKind::Permanent, "AttachNics", "denied").with_code(1400);
        let mut now = Timestamp(0);
        for _ in 0..20 {
            s.cloud_failed(ActionKind::Attach, &denied, now);
            now = s.backoff[&ActionKind::Attach].not_before;
        }
        let last = s.backoff[&ActionKind::Attach];
        s.cloud_failed(ActionKind::Attach, &denied, now);
        let gap = s.backoff[&ActionKind::Attach].not_before.0 - last.not_before.0;
        assert!(gap >= 1_800_000 * 8 / 10, "{gap} ms");
        // Only the account's refusal holds the other calls.
        assert!(s.cloud_ready(ActionKind::Describe, now));
    }
}
