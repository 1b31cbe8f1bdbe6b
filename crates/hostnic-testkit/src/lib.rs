//! # hostnic-testkit
//!
//! Test glue shared by the test suites of the workspace, its benchmarks and
//! `hostnic-lab` (after linkerd2-proxy's `linkerd/app/test`): one home for each
//! piece of scaffolding that used to be copied from suite to suite. Dev-only:
//! `publish = false`, a dev-dependency everywhere except of the lab (test tooling
//! itself); `scripts/check-core-purity.sh` enforces it.
//!
//! ## Layout
//! - [`netns`]: `ip()`, uniquely named namespaces deleted on drop.
//! - [`hooks`]: simulator attach hooks — NICs as veth pairs ([`hooks::VethLinks`]),
//!   plugged into the lab fabric ([`hooks::FabricHook`]), or followed by the
//!   core's `FakeHost` ([`hooks::FakeHostLinks`], feature `fakes`).
//! - [`vpc`]: the lab's VPC — fabric, simulator and hosts — built once for
//!   `hostnic-lab` and the root end-to-end tests.
//! - [`process`]: workspace binaries as child processes killed on drop, the
//!   agent's files against a simulator, the primary NIC of a test node.
//! - [`cni`]: runs the `hostnic` plugin as a runtime does.
//! - [`requests`]: plugin ↔ agent requests, raw socket calls, HTTP GETs.
//! - `sim` (feature `fakes`): the simulator, a client of it and a `FakeHost`
//!   following its attachments, for in-process agents; `FakeHosts`, the fake hosts
//!   of a whole fleet behind one attach hook.
//! - [`time`]: `ScaledClock`, the core's clock on a simulator's time scale.
//! - [`probe`]: TCP and ICMP probes from inside a namespace
//!   (`hostnic_linux::lab::probe`, re-exported).

pub mod cni;
pub mod hooks;
pub mod netns;
pub mod process;
pub mod requests;
#[cfg(feature = "fakes")]
pub mod sim;
pub mod time;
pub mod vpc;

pub use hostnic_linux::lab::probe;
