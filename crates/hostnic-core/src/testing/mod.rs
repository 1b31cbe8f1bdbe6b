//! In-memory fakes of every port, for tests of this crate, of the adapters and of
//! projects that embed the core. Enabled by the `testing` feature.
//!
//! The fakes keep real state, record what they were asked, and can be told to fail:
//! - [`FakeCloud`]: NICs, asynchronous jobs with latency, quotas (NICs per instance,
//!   addresses per vxnet), per-call and random fault injection (before or after the
//!   effect, like a response lost on the wire), request counters per action.
//! - [`FakeHost`]: NIC links appearing when the fake cloud attaches them, prepared
//!   NICs, plumbed pods, sandboxes that can disappear, reboots.
//! - [`FakePods`]: a pod list with a change stream.
//! - [`ManualClock`]: time that only moves when told (or when a fake job is waited on).
//! - [`MemoryStore`]: a checkpoint store that survives a simulated crash.
//! - [`FleetCloudSim`]: the cloud as the fleet planner sees it (its
//!   [`FleetCloud`](crate::fleet::FleetCloud) port), with the account's request
//!   quota, NIC limits, 100-item pages and faults, for the fleet's property tests.
//!
//! ## Layout
//! - `clock`, `cloud`, `host`, `pods`, `store`, `fleet`: one fake each.

mod clock;
mod cloud;
mod fleet;
mod host;
mod pods;
mod store;

pub use clock::ManualClock;
pub use cloud::{CloudAction, FakeCloud, FakeCloudConfig, FaultPoint};
pub use fleet::{
    FleetCloudSim, FleetSimConfig, FleetSimNic, SIM_OTHER_VXNET, SIM_ROUTER, sim_instance,
    sim_vxnet,
};
pub use host::{FakeHost, HostOp};
pub use pods::FakePods;
pub use store::MemoryStore;

/// Receives attach/detach notifications from [`FakeCloud`], as a node's kernel does
/// when a NIC is hot-plugged. [`FakeHost`] implements it.
pub trait AttachHook: Send + Sync {
    /// The NIC is now attached to `instance`.
    fn attached(&self, nic: &crate::types::NicId, instance: &crate::types::InstanceId);
    /// The NIC is no longer attached to `instance`.
    fn detached(&self, nic: &crate::types::NicId, instance: &crate::types::InstanceId);
}

/// A tiny deterministic random generator (xorshift64*), so fakes need no dependency.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(crate::pool::splitmix(seed) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}
