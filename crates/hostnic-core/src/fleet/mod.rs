//! The fleet planner: from every node's demand and what it knows of the cloud, it
//! plans the next round of cloud calls for the whole cluster under one request
//! budget. Pure, like the pool: no I/O and no clock of its own.
//!
//! The same planner serves two places. In controller mode one leader-elected
//! controller runs it for every node of the cluster (its input: the `HostnicNode`
//! objects; its output: their status). In direct mode a node's agent runs it for
//! its one node. Its inputs are plain domain types: [`NodeDemand`]s and the
//! outcomes of the calls it planned.
//!
//! What it guarantees, and what the property tests (`tests/fleet_properties.rs`)
//! check against a deterministic cloud with faults, slow and lost jobs and
//! leader changes:
//! - **Budget.** A round never costs more requests than the budget has left,
//!   keeping a small reserve for job polls; none while the breaker on the
//!   account's quota is open, except the one call the client lets through as its
//!   probe.
//! - **Batching across nodes.** One `CreateNics` per vxnet for every node's
//!   needs (`count` ≤ 252, within the vxnet's room), one `AttachNics` per node
//!   per round, detaches and deletes in batches, one `DescribeJobs` for every job
//!   in flight, listings one page at a time.
//! - **Lanes.** Nodes with pods waiting first, then repairs, nodes filling their
//!   pools, releases, garbage collection and inventory ([`Lane`]).
//! - **Fairness.** Inside a lane the node served least recently goes first, and a
//!   vxnet's or the stock's NICs are shared one NIC per node at a time: a node
//!   asking for one NIC is never starved behind nodes asking for sixty.
//! - **Limits.** No node gets more than its `max_nics` attached and attaching;
//!   no NIC is given to two nodes.
//! - **No leaks.** NICs are named `hostnic_<cluster>`; whatever nobody needs is
//!   deleted after a linger time, NICs of nodes that left after a grace period,
//!   and leftovers of lost answers are found by listing the cluster's NICs.
//! - **Take-over.** A planner resuming from the records of another
//!   ([`Fleet::resume`]) follows the jobs in flight instead of starting the work
//!   again, and checks every instance with the cloud before changing anything.
//!
//! ## Layout
//! - `model`: [`NodeDemand`], [`NodeRecord`], [`Lane`], the cloud's answers.
//! - `config`: [`FleetConfig`].
//! - `call`: [`FleetCall`], [`FleetRound`], [`RoundBudget`], [`Outcome`].
//! - `state`: [`Fleet`] (what the planner knows), [`NodeView`], [`Refusal`].
//! - `plan`: planning a round: the demand set, refusals, selection under the budget.
//! - `serve`: what each node lacks, shared stock and creations, attaches.
//! - `upkeep`: job polls, describes, detaches, deletes, listings.
//! - `complete`: learning from outcomes (jobs, creates, attaches, detaches, deletes).
//! - `observe`: learning what the cloud says (instances, vxnets, NIC pages).
//! - `port`: [`FleetCloud`], the cloud the executor calls.
//! - `exec`: running a round against a [`FleetCloud`].

mod call;
mod complete;
mod config;
mod exec;
mod model;
mod observe;
mod plan;
mod port;
mod serve;
mod state;
mod upkeep;

pub use call::{AfterDetach, Breaker, FleetCall, FleetRound, Outcome, PlannedCall, RoundBudget};
pub use config::{FleetConfig, FleetConfigError};
pub use exec::{execute, execute_call};
pub use model::{
    InstanceNics, JobAction, JobInfo, JobPage, JobProgress, JobQuery, JobRecord, Lane, NicPage,
    NicPhase, NicQuery, NodeDemand, NodeName, NodeNic, NodeRecord,
};
pub use port::FleetCloud;
pub use state::{Fleet, NodeView, Refusal};
