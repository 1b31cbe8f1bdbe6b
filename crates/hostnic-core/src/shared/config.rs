//! The shared mode's settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::range::MIN_BLOCK;

/// Settings of the block planner and the node allocator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SharedConfig {
    /// The size of a node's first block in a vxnet. `None` (the default): the
    /// node's max-pods rounded up to a power of two (at least [`MIN_BLOCK`], at
    /// most the vxnet), so a node usually needs one reservation. Set, it must be a
    /// power of two ≥ 16, and a vxnet it does not fit in is refused
    /// ([`PlanProblem::BlockDoesNotFit`](super::PlanProblem::BlockDoesNotFit)).
    pub first_block: Option<u32>,
    /// A node whose free addresses fall below this many (or below what it may
    /// still run under its max-pods, if fewer) gets another block.
    pub headroom: u32,
    /// How long a block stays empty before it is retired and released.
    pub release_grace: Duration,
    /// How long a reservation whose answer was lost is waited for before a
    /// listing that does not show it counts as "it did not happen".
    pub reserve_timeout: Duration,
    /// How long a freed address rests before the node gives it to another pod
    /// (conntrack entries and endpoints of the old pod expire meanwhile).
    pub cooldown: Duration,
}

impl Default for SharedConfig {
    fn default() -> Self {
        Self {
            first_block: None,
            headroom: 8,
            release_grace: Duration::from_secs(600),
            reserve_timeout: Duration::from_secs(120),
            cooldown: Duration::from_secs(30),
        }
    }
}

/// Why a [`SharedConfig`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharedConfigError {
    /// `first_block` is not a power of two of at least 16.
    #[error("firstBlock {0} must be a power of two of at least {MIN_BLOCK}")]
    BlockSize(u32),
}

impl SharedConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), SharedConfigError> {
        match self.first_block {
            Some(n) if n < MIN_BLOCK || !n.is_power_of_two() => {
                Err(SharedConfigError::BlockSize(n))
            }
            _ => Ok(()),
        }
    }

    /// The size the first block of a node with `max_pods` asks for, before the
    /// vxnet caps it.
    pub fn first_block_size(&self, max_pods: u32) -> u32 {
        self.first_block.unwrap_or_else(|| {
            max_pods
                .max(MIN_BLOCK)
                .checked_next_power_of_two()
                .unwrap_or(1 << 31)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_block_follows_max_pods_unless_set() {
        let c = SharedConfig::default();
        assert_eq!(c.first_block_size(110), 128);
        assert_eq!(c.first_block_size(250), 256);
        assert_eq!(c.first_block_size(3), 16);
        let set = SharedConfig {
            first_block: Some(32),
            ..c
        };
        assert_eq!(set.first_block_size(110), 32);
        assert!(set.validate().is_ok());
        for bad in [0, 8, 48, 100] {
            let c = SharedConfig {
                first_block: Some(bad),
                ..SharedConfig::default()
            };
            assert_eq!(c.validate(), Err(SharedConfigError::BlockSize(bad)));
        }
    }
}
