//! # hostnic-linux
//!
//! The host datapath of hostnic: [`LinuxHost`] implements the core's
//! [`HostNetwork`](hostnic_core::ports::HostNetwork) port with rtnetlink (veth
//! pairs, addresses, routes, policy rules, neighbours) and nftables (`nft -j`,
//! one table `hostnic`). No `ip`/`iptables` commands are run.
//!
//! What a pod gets ([`pod`]): a veth `<prefix><sha1(ns.pod)[..11]>` whose peer is
//! created directly in the sandbox, `<podIP>/32` and a default route via
//! `169.254.1.1` (a permanent neighbour with the host veth's MAC) inside; on the
//! host `<podIP>/32 dev <veth>`, rule 512 `to <podIP> lookup main` and rule 1536
//! `from <podIP> fwmark M/M lookup <NIC table>` with the "to table" action. SNAT
//! uses design (a), a firewall mark on VPC-bound packets: see [`node`].
//!
//! Each NIC ([`nic`]) is up, address-less, has `rp_filter` off (loose is not
//! enough for an address-less device, see [`LinuxHost::prepare_nic_now`]) and its
//! own table `<gw>/32 dev <nic> scope link` + `default via <gw>`.
//!
//! Everything runs in one "host" namespace, the current one by default; tests,
//! the benchmark and the lab pass a namespace path so nothing touches the
//! machine's own namespace. Root tests: `cargo test -p hostnic-linux -- --include-ignored`.
//!
//! ## Layout
//! - [`netns`]: open/enter/create/delete network namespaces; `setns` only on
//!   short-lived threads of its own.
//! - [`agent`]: the node agent's datapath at start (configuration from its
//!   settings, opened with a diagnosis).
//! - [`arp`]: shared mode's address claims: a proxy neighbour entry for exactly
//!   one address on a link, and its gratuitous ARP.
//! - [`config`]: [`LinuxHostConfig`] and its validation.
//! - [`host`]: [`LinuxHost`], the port implementation and the inventory.
//! - [`nic`]: NIC preparation and release.
//! - [`pod`]: pod plumbing, teardown and verification.
//! - [`node`]: forwarding, the `hostnic` nftables table, the default-route guard.
//! - `nft`: the one runner of the `nft` binary.
//! - [`events`]: link and address notifications ([`LinkEvent`]).
//! - [`names`]: host veth names.
//! - [`process`]: the process's own numbers from `/proc/self` (`process_*` metrics).
//! - `reap`: deferred, batched deletion of the veths of deleted pods ([`ReapTiming`]).
//! - [`policy`]: NetworkPolicy rendered into the `hostnic` table (per pod chains,
//!   peer sets, incremental `nft` transactions).
//! - [`error`]: [`LinuxError`] and its mapping onto `HostError`.
//! - `lab` (feature `lab`): the VPC fabric of `hostnic-lab` (namespaces as
//!   router, nodes and hosts; veth pairs as hot-plugged NICs).

pub mod agent;
pub mod arp;
pub mod config;
pub mod error;
pub mod events;
pub mod host;
pub mod names;
pub mod netns;
mod nft;
pub mod nic;
mod nl;
pub mod node;
pub mod pod;
pub mod policy;
pub mod process;
mod reap;

pub use config::LinuxHostConfig;
pub use error::LinuxError;
pub use events::LinkEvent;
pub use host::LinuxHost;
pub use netns::{NetNs, NetnsError};
pub use reap::ReapTiming;

#[cfg(feature = "lab")]
pub mod lab;
