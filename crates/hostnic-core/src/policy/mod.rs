//! Kubernetes NetworkPolicy, computed purely.
//!
//! [`model`] holds serde types of the `networking.k8s.io/v1` object (the JSON of
//! real objects deserializes into them); [`compile()`] turns pods, namespaces and
//! policies into a [`CompiledPolicy`]: for every pod and direction whether it is
//! isolated and which peers and ports are allowed, with peers as named sets
//! shared by every pod a policy selects (what the nftables renderer programs).
//! [`evaluate`] answers "may `from` open a connection to `to:port`?" on the
//! compiled form, for tests and `hostnicctl policy`.
//!
//! ## Layout
//! - [`model`]: `NetworkPolicy`, selectors, peers, ports.
//! - [`cases`]: the upstream truth-table case format (tests and `hostnic-lab netpol`).
//! - [`cluster`]: the compiler's view of pods and namespaces.
//! - [`compiled`]: the output types and [`evaluate`].
//! - [`compile`](mod@compile): the compiler.
//! - [`program`]: what a dataplane is given and reports ([`LocalPod`], [`ProgramStats`]).
//! - [`enforcer`]: [`PolicyEnforcer`], enforcement on one node over the policy ports
//!   ([`PolicySource`](crate::ports::PolicySource),
//!   [`PolicyDataplane`](crate::ports::PolicyDataplane)), runtime-agnostic.

pub mod cases;
pub mod cluster;
pub mod compile;
pub mod compiled;
pub mod enforcer;
pub mod model;
pub mod program;

pub use cluster::{ClusterView, ContainerPort, PodRef, PolicyNamespace, PolicyPod};
pub use compile::compile;
pub use compiled::{
    Allow, CompiledPolicy, Direction, DirectionRules, Endpoint, PeerMatch, PodRules, PortRange,
    SetId, evaluate,
};
pub use enforcer::{PolicyEnforcer, PolicyGauges, SyncReport};
pub use model::{
    EgressRule, IngressRule, IpBlock, LabelSelector, LabelSelectorRequirement, NetworkPolicy,
    NetworkPolicySpec, ObjectMeta, Peer, PolicyPort, PolicyType, PortRef, Protocol,
    SelectorOperator,
};
pub use program::{LocalAssignment, LocalPod, ProgramStats, Programmed};
