//! A whole QingCloud VPC on one machine (feature `lab`): the fabric of
//! `hostnic-lab`.
//!
//! Network namespaces play the VPC router, the nodes, a VPC host outside the
//! cluster (`client`) and a host on the "internet"; veth pairs play the NICs.
//! Every namespace this module creates is named with the lab's prefix (`hl-…`),
//! and every link, address, route and neighbour lives inside one of them: the
//! machine's own namespace is never touched, and since no namespace has a link to
//! it, nothing the lab builds can send a packet off the machine.
//!
//! The router behaves like a VPC SDN: it owns the vxnet gateways (`.1`, on its
//! loopback, so it answers ARP for them on every port), knows each NIC's MAC and
//! IP (a `/32` route and a permanent neighbour per NIC, so it never asks a node to
//! answer ARP for an address the node moved into a pod), answers ARP for other
//! VPC addresses on behalf of their owners (proxy ARP), routes between vxnets and
//! to the internet host, and does no NAT.
//!
//! This is a test fabric, not the datapath: it drives iproute2's `ip` (simple,
//! inspectable with the same commands an operator types) instead of rtnetlink.
//!
//! ## Layout
//! - [`fabric`]: [`Fabric`], building the VPC, hosts, hot-plugged NICs, teardown.
//! - [`probe`]: real-packet probes (ICMP via `ping`, TCP with a server that
//!   reports the peer address) run inside namespaces.
//! - [`cmd`]: running `ip` and other commands, [`LabError`].

pub mod cmd;
pub mod fabric;
pub mod probe;

pub use cmd::LabError;
pub use fabric::{Fabric, FabricSpec, HostSpec, VxnetGateway};
