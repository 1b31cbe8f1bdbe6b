//! Configuration of [`crate::LinuxHost`].

use std::path::PathBuf;
use std::time::Duration;

use crate::error::LinuxError;
use crate::reap::ReapTiming;

/// How the host datapath is laid out. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxHostConfig {
    /// Prefix of host veth names (at most 4 characters; default `nic`).
    pub veth_prefix: String,
    /// MTU of NICs and veths (default 1500; never larger than the underlay).
    pub mtu: u32,
    /// First route table number used for NIC tables (default 1000). Tables
    /// `table_base..table_base + table_span` are considered hostnic's.
    pub table_base: u32,
    /// How many tables after `table_base` belong to hostnic (default 256).
    pub table_span: u32,
    /// Priority of the `to <podIP> lookup main` rule (default 512).
    pub to_pod_priority: u32,
    /// Priority of the `from <podIP> lookup <NIC table>` rule (default 1536).
    pub from_pod_priority: u32,
    /// When true (default) pod traffic leaving the VPC is SNATed by the node, so the
    /// `from <podIP>` rule only catches packets marked as VPC-bound ([`Self::vpc_mark`]).
    /// When false the VPC does NAT and the rule catches everything from the pod.
    pub snat: bool,
    /// The firewall mark (a single bit) set on pod packets bound for the VPC (default `0x0100_0000`).
    pub vpc_mark: u32,
    /// The network namespace the host side lives in: `None` is the namespace of
    /// the thread that builds the [`crate::LinuxHost`]; tests and the lab pass a path.
    pub host_netns: Option<PathBuf>,
    /// The nftables binary (default `nft`).
    pub nft_binary: String,
    /// The link group DEL moves a pod's veth to before it is deleted in a batch
    /// (default `0x686e6963`, "hnic"; never 0, the group of every other link).
    /// Every link in this group is deleted: no other software may use it.
    pub dead_veth_group: u32,
    /// When the dead group is deleted (default: after 1 s without ADD or DEL, at
    /// the latest 10 s after the first veth was parked).
    pub reap: ReapTiming,
}

impl Default for LinuxHostConfig {
    fn default() -> Self {
        Self {
            veth_prefix: "nic".into(),
            mtu: 1500,
            table_base: 1000,
            table_span: 256,
            to_pod_priority: 512,
            from_pod_priority: 1536,
            snat: true,
            vpc_mark: 0x0100_0000,
            host_netns: None,
            nft_binary: "nft".into(),
            dead_veth_group: 0x686e_6963,
            reap: ReapTiming {
                quiet: Duration::from_secs(1),
                max_delay: Duration::from_secs(10),
            },
        }
    }
}

/// Tables the kernel and iproute2 reserve: unspec, default, main, local.
const RESERVED_TABLES: [u32; 4] = [0, 253, 254, 255];

impl LinuxHostConfig {
    /// Checks the invariants the datapath relies on.
    pub fn validate(&self) -> Result<(), LinuxError> {
        let bad = |m: String| Err(LinuxError::Config(m));
        if self.veth_prefix.is_empty() || self.veth_prefix.len() > 4 {
            return bad(format!(
                "veth prefix {:?} must have 1 to 4 characters (names are prefix + 11 hex ≤ 15)",
                self.veth_prefix
            ));
        }
        if !self
            .veth_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return bad(format!(
                "veth prefix {:?} must be alphanumeric",
                self.veth_prefix
            ));
        }
        if !(68..=65535).contains(&self.mtu) {
            return bad(format!("MTU {} out of range", self.mtu));
        }
        let end = self.table_base as u64 + self.table_span as u64;
        if self.table_span == 0 || end > u32::MAX as u64 {
            return bad("table span must be non-zero and fit in u32".into());
        }
        if RESERVED_TABLES
            .iter()
            .any(|t| (self.table_base as u64..end).contains(&(*t as u64)))
        {
            return bad(format!(
                "tables {}..{} overlap the reserved tables 0, 253-255",
                self.table_base, end
            ));
        }
        if self.to_pod_priority >= self.from_pod_priority {
            return bad("the to-pod rule must come before the from-pod rule".into());
        }
        if self.dead_veth_group == 0 {
            return bad(
                "the dead veth group must not be 0 (every link is in group 0 by default)".into(),
            );
        }
        if self.vpc_mark.count_ones() != 1 {
            return bad(format!(
                "VPC mark {:#x} must be a single bit",
                self.vpc_mark
            ));
        }
        Ok(())
    }

    /// True when `table` is in hostnic's range.
    pub fn owns_table(&self, table: u32) -> bool {
        table >= self.table_base && (table as u64) < self.table_base as u64 + self.table_span as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = LinuxHostConfig::default();
        c.validate().unwrap();
        assert_eq!(c.veth_prefix, "nic");
        assert_eq!(c.mtu, 1500);
        assert_eq!(c.table_base, 1000);
        assert_eq!((c.to_pod_priority, c.from_pod_priority), (512, 1536));
    }

    #[test]
    fn table_ranges_touching_main_local_default_are_rejected() {
        for base in [0, 200, 253, 254, 255] {
            let c = LinuxHostConfig {
                table_base: base,
                table_span: 60,
                ..Default::default()
            };
            assert!(c.validate().is_err(), "base {base} must be rejected");
        }
        let ok = LinuxHostConfig {
            table_base: 256,
            ..Default::default()
        };
        ok.validate().unwrap();
    }

    #[test]
    fn the_default_link_group_is_never_the_dead_group() {
        let c = LinuxHostConfig {
            dead_veth_group: 0,
            ..Default::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("dead veth group"), "{err}");
    }

    #[test]
    fn long_prefixes_are_rejected() {
        let c = LinuxHostConfig {
            veth_prefix: "hostn".into(),
            ..Default::default()
        };
        assert!(c.validate().is_err());
    }
}
