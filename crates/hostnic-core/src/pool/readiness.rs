//! The one rule for "can this node serve an ADD", used by the agent's
//! `/readyz`, the gating of the CNI configuration and the CNI STATUS answer.
//!
//! A node can serve an ADD when a NIC is free now, or when one will be without
//! the node being full: some pod NIC slot is not held by a pod, and the cloud
//! answers (so the pool can create, attach or wait out a cooldown for one). An
//! ADD that finds no free NIC then waits for the pool, within its deadline.
//! NICs in their IP cooldown count as coming, not as held: a node whose NICs are
//! all assigned or cooling serves the next ADD once a cooldown ends. A node whose
//! pool cannot grow (a full vxnet, the NIC quota, the account's request quota, a
//! refusal: a [`Shortage`]) and has no NIC free, cooling or on its way cannot serve.

use crate::pool::{Shortage, ShortageCause};
use crate::reconcile::UsageCounts;

/// Whether the node can serve an ADD, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// A NIC is free, or one can be made ready.
    Ready,
    /// No NIC is free and every pod NIC the node may hold is assigned.
    NodeFull {
        /// Assigned pod NICs.
        assigned: u32,
        /// The node's limit (`max_nics`).
        max: u32,
    },
    /// No NIC is free and the cloud did not answer the last pool round.
    CloudUnavailable,
    /// No NIC is free, cooling or on its way, and the pool cannot grow.
    CannotGrow(ShortageCause),
}

impl Readiness {
    /// The rule, from the pool's counts, its `max_nics` and whether the cloud
    /// answered the last pool round that called it.
    pub fn of(counts: &UsageCounts, max_nics: u32, cloud_ok: bool) -> Self {
        if counts.free > 0 {
            Readiness::Ready
        } else if counts.assigned >= max_nics {
            Readiness::NodeFull {
                assigned: counts.assigned,
                max: max_nics,
            }
        } else if !cloud_ok {
            Readiness::CloudUnavailable
        } else {
            Readiness::Ready
        }
    }

    /// [`Readiness::of`], and not ready when no NIC is free, cooling or on its way
    /// while `blocked` keeps the pool from growing.
    pub fn of_pool(
        counts: &UsageCounts,
        max_nics: u32,
        cloud_ok: bool,
        blocked: Option<&Shortage>,
    ) -> Self {
        let basic = Self::of(counts, max_nics, cloud_ok);
        match blocked {
            Some(s)
                if basic.is_ready()
                    && counts.free == 0
                    && counts.cooling == 0
                    && counts.preparing == 0 =>
            {
                Readiness::CannotGrow(s.cause)
            }
            _ => basic,
        }
    }

    /// True for [`Readiness::Ready`].
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready)
    }

    /// Why the node is not ready, in words for `/readyz` and `/v1/status`; with
    /// `blocked`, why the pool cannot grow when the cloud said (a full vxnet, a
    /// quota, a refusal).
    pub fn explain(&self, blocked: Option<&Shortage>) -> String {
        match (self, blocked) {
            (Readiness::NodeFull { assigned, max }, _) => format!(
                "the node is full: {assigned} of its {max} pod NICs are assigned (max_nics)"
            ),
            (Readiness::CloudUnavailable | Readiness::CannotGrow(_), Some(blocked)) => {
                format!(
                    "no NIC ready and none can be created: {}",
                    blocked.describe()
                )
            }
            (Readiness::CloudUnavailable, None) => {
                "no NIC ready and the cloud did not answer the last pool round".into()
            }
            (Readiness::CannotGrow(cause), None) => {
                format!("no NIC ready and none can be created: {}", cause.reason())
            }
            (Readiness::Ready, _) => "no NIC ready and none can be created".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(free: u32, assigned: u32, cooling: u32) -> UsageCounts {
        UsageCounts {
            free,
            assigned,
            cooling,
            ..UsageCounts::default()
        }
    }

    #[test]
    fn a_free_nic_is_ready_even_on_a_full_node_with_the_cloud_down() {
        assert_eq!(
            Readiness::of(&counts(1, 62, 0), 62, false),
            Readiness::Ready
        );
    }

    #[test]
    fn cooling_nics_with_slots_left_are_ready() {
        // The case the agent's two rules disagreed on: no free NIC, NICs cooling
        // down, fewer pods than max_nics, held (assigned + cooling) == max. The
        // readiness flag said "not ready" while CNI STATUS said OK.
        assert_eq!(Readiness::of(&counts(0, 1, 1), 2, true), Readiness::Ready);
    }

    #[test]
    fn all_slots_assigned_is_full() {
        assert_eq!(
            Readiness::of(&counts(0, 2, 0), 2, true),
            Readiness::NodeFull {
                assigned: 2,
                max: 2
            }
        );
    }

    #[test]
    fn a_pool_that_cannot_grow_is_ready_only_with_a_nic_coming() {
        use crate::ports::{CloudError, CloudErrorKind};
        use crate::types::Timestamp;
        let full = Shortage {
            cause: ShortageCause::VxnetFull,
            error: CloudError::new(CloudErrorKind::QuotaExceeded, "CreateNics", "full"),
            since: Timestamp(0),
        };
        // Issue 20 item 6: a node whose vxnet was full stayed ready.
        assert_eq!(
            Readiness::of_pool(&counts(0, 3, 0), 62, true, Some(&full)),
            Readiness::CannotGrow(ShortageCause::VxnetFull)
        );
        assert!(Readiness::of_pool(&counts(0, 3, 1), 62, true, Some(&full)).is_ready());
        assert!(Readiness::of_pool(&counts(0, 3, 0), 62, true, None).is_ready());
    }

    #[test]
    fn no_free_nic_and_no_cloud_is_unavailable() {
        assert_eq!(
            Readiness::of(&counts(0, 0, 0), 2, false),
            Readiness::CloudUnavailable
        );
        assert!(!Readiness::CloudUnavailable.is_ready());
    }
}
