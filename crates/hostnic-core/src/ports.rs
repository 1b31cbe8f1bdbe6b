//! The ports: the only ways the core reaches the world.
//!
//! Each port is a small async trait over domain types. Adapters implement them
//! (`hostnic-qingcloud`, `hostnic-linux`, `hostnic-k8s`); the `testing` feature
//! provides in-memory fakes. Each port has its own error type whose `kind` says
//! whether trying again can help.
//!
//! | port | implemented by | what it does |
//! |---|---|---|
//! | [`CloudNics`] | QingCloud API client, `FakeCloud` | create/attach/detach/delete NICs in batches, wait for jobs |
//! | [`CloudNetwork`] | QingCloud API client, `FakeCloud` | read-only topology: the instance, vxnets, VPC CIDRs |
//! | [`HostNetwork`] | rtnetlink + nftables, `FakeHost` | prepare NICs, plumb/unplumb/verify pods, inventory, node rules |
//! | [`PodSource`] | kube-rs, static file, `FakePods` | the pods that should exist on this node, and changes |
//! | [`Clock`] | system clock, `ManualClock` | the current time, so every decision is deterministic in tests |
//! | [`CheckpointStore`] | the agent's file store, `MemoryStore` | durable snapshots of the node's state |
//! | [`NodeReporter`] | kube-rs (node annotations, pod events) | tell the cluster the node's capacity and NIC shortages |
//! | [`PolicySource`] | kube-rs (cluster-wide watches) | NetworkPolicies, namespaces and pods as a [`ClusterView`] |
//! | [`PolicyDataplane`] | nftables renderer | program a [`CompiledPolicy`] for this node's pods |
//!
//! The policy ports are used by [`policy::PolicyEnforcer`](crate::policy::PolicyEnforcer),
//! the pool's by [`Engine`](crate::engine::Engine).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::BoxStream;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::policy::{ClusterView, CompiledPolicy, LocalPod, PolicyPod, Programmed};
use crate::types::{
    CloudNic, HostInventory, Instance, InstanceId, JobId, JobOutcome, JobStatus, NicId,
    NicPlumbing, NodePlumbing, NodeReport, PlumbedPod, PodEvent, PodInfo, PodKey, PodPlumbing,
    Timestamp, Vxnet, VxnetId,
};

/// How a cloud failure should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloudErrorKind {
    /// Transient (transport error, internal error, busy, throttled): retry with backoff.
    Retryable,
    /// The resource does not exist (any more): treat it as gone.
    NotFound,
    /// A quota is exhausted (NICs per instance, IPs in the vxnet): retrying soon will not help.
    QuotaExceeded,
    /// The request cannot succeed as it is (bad request, auth, wrong state, balance).
    Permanent,
    /// The account's API request quota is exhausted (a request-quota 2500), or the
    /// client withheld the call to protect it (its circuit breaker is open, its
    /// request budget is spent). The call had no effect; retrying soon only makes
    /// it worse: the client probes the quota rarely and reports when it is back.
    Throttled,
}

/// A failure of the cloud API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("cloud {action} failed ({kind:?}{}): {message}", code.map(|c| format!(", ret_code {c}")).unwrap_or_default())]
pub struct CloudError {
    /// How to handle it.
    pub kind: CloudErrorKind,
    /// The API action that failed, e.g. `AttachNics`.
    pub action: String,
    /// The API's `ret_code`, when the API answered.
    pub code: Option<i64>,
    /// What went wrong, in words (never contains credentials).
    pub message: String,
}

impl CloudError {
    /// A new error of `kind` for `action`.
    pub fn new(
        kind: CloudErrorKind,
        action: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            action: action.into(),
            code: None,
            message: message.into(),
        }
    }

    /// The same error with the API's `ret_code` attached.
    pub fn with_code(mut self, code: i64) -> Self {
        self.code = Some(code);
        self
    }

    /// True when trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind == CloudErrorKind::Retryable
    }

    /// True when the API refused the *account* rather than this call: the
    /// credentials are wrong (QingCloud `ret_code` 1200) or the balance is
    /// insufficient (2400). No call of the account can succeed until an operator
    /// acts, so the node stops calling (until the credentials change or a long
    /// hold passes) instead of retrying in a loop.
    pub fn refuses_account(&self) -> bool {
        self.kind == CloudErrorKind::Permanent && matches!(self.code, Some(1200 | 2400))
    }
}

/// A filter for [`CloudNics::describe_nics`]. Empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NicFilter {
    /// Only these NICs.
    pub nics: Vec<NicId>,
    /// Only NICs attached to this instance.
    pub instance: Option<InstanceId>,
    /// Only NICs with exactly this name (`hostnic_<instance>` finds a node's NICs, attached or not).
    pub name: Option<String>,
    /// Only NICs in these vxnets.
    pub vxnets: Vec<VxnetId>,
}

/// NIC lifecycle operations of the cloud. Every mutating call takes a batch.
#[async_trait]
pub trait CloudNics: Send + Sync {
    /// Lists NICs matching `filter` (all pages).
    async fn describe_nics(&self, filter: &NicFilter) -> Result<Vec<CloudNic>, CloudError>;

    /// Creates `count` NICs in `vxnet`, named `name` (and tagged as hostnic's) in one call.
    async fn create_nics(
        &self,
        vxnet: &VxnetId,
        count: u32,
        name: &str,
    ) -> Result<Vec<CloudNic>, CloudError>;

    /// Starts attaching `nics` to `instance` in one call; returns the job.
    async fn attach_nics(&self, instance: &InstanceId, nics: &[NicId])
    -> Result<JobId, CloudError>;

    /// Starts detaching `nics` from their instance in one call; returns the job.
    async fn detach_nics(&self, nics: &[NicId]) -> Result<JobId, CloudError>;

    /// Deletes detached `nics` in one call.
    async fn delete_nics(&self, nics: &[NicId]) -> Result<(), CloudError>;

    /// Waits until `job` finished or `timeout` passed (a [`CloudErrorKind::Retryable`]
    /// error then: the job may still finish later, and reconcile will find out).
    async fn wait_job(&self, job: &JobId, timeout: Duration) -> Result<JobOutcome, CloudError>;

    /// Where each of `jobs` is now, in one call (`DescribeJobs jobs.N`): how the
    /// node settles NICs whose job's end it did not see (a restart, a lost
    /// answer) without waiting out the job timeout. A job the answer does not
    /// list is [`JobStatus::Unknown`]. The default knows nothing: every job is
    /// `Unknown`, and such NICs are settled from what the cloud shows.
    async fn job_statuses(
        &self,
        jobs: &[JobId],
    ) -> Result<std::collections::BTreeMap<JobId, JobStatus>, CloudError> {
        Ok(jobs
            .iter()
            .map(|j| (j.clone(), JobStatus::Unknown))
            .collect())
    }

    /// When another component makes this node's cloud calls (the agent's
    /// controller mode), the supply it answers through: the engine then makes no
    /// cloud call from its pool, publishes its request there and takes the NICs
    /// it is supplied. Default: none, the node calls the cloud itself.
    fn supplier(&self) -> Option<Arc<dyn NicSupply>> {
        None
    }
}

/// Read-only topology of the cloud: the node's instance, vxnets and VPC networks.
#[async_trait]
pub trait CloudNetwork: Send + Sync {
    /// The instance, with its primary NIC.
    async fn describe_instance(&self, instance: &InstanceId) -> Result<Instance, CloudError>;

    /// The given vxnets with their CIDR and gateway.
    async fn describe_vxnets(&self, vxnets: &[VxnetId]) -> Result<Vec<Vxnet>, CloudError>;

    /// The networks of the VPC that `vxnet` belongs to (the router's VPC network and its
    /// vxnets): pod traffic to them is not SNATed.
    async fn vpc_cidrs(&self, vxnet: &VxnetId) -> Result<Vec<Ipv4Net>, CloudError>;
}

/// Both cloud ports in one object (the QingCloud client and `FakeCloud` are
/// both), so a caller that chooses its cloud at run time holds one
/// `Arc<dyn Cloud>`.
pub trait Cloud: CloudNics + CloudNetwork {}

impl<T: CloudNics + CloudNetwork + ?Sized> Cloud for T {}

#[async_trait]
impl<T: CloudNics + ?Sized> CloudNics for Arc<T> {
    async fn describe_nics(&self, filter: &NicFilter) -> Result<Vec<CloudNic>, CloudError> {
        (**self).describe_nics(filter).await
    }
    async fn create_nics(
        &self,
        vxnet: &VxnetId,
        count: u32,
        name: &str,
    ) -> Result<Vec<CloudNic>, CloudError> {
        (**self).create_nics(vxnet, count, name).await
    }
    async fn attach_nics(
        &self,
        instance: &InstanceId,
        nics: &[NicId],
    ) -> Result<JobId, CloudError> {
        (**self).attach_nics(instance, nics).await
    }
    async fn detach_nics(&self, nics: &[NicId]) -> Result<JobId, CloudError> {
        (**self).detach_nics(nics).await
    }
    async fn delete_nics(&self, nics: &[NicId]) -> Result<(), CloudError> {
        (**self).delete_nics(nics).await
    }
    async fn wait_job(&self, job: &JobId, timeout: Duration) -> Result<JobOutcome, CloudError> {
        (**self).wait_job(job, timeout).await
    }
    async fn job_statuses(
        &self,
        jobs: &[JobId],
    ) -> Result<std::collections::BTreeMap<JobId, JobStatus>, CloudError> {
        (**self).job_statuses(jobs).await
    }
    fn supplier(&self) -> Option<Arc<dyn NicSupply>> {
        (**self).supplier()
    }
}

#[async_trait]
impl<T: CloudNetwork + ?Sized> CloudNetwork for Arc<T> {
    async fn describe_instance(&self, instance: &InstanceId) -> Result<Instance, CloudError> {
        (**self).describe_instance(instance).await
    }
    async fn describe_vxnets(&self, vxnets: &[VxnetId]) -> Result<Vec<Vxnet>, CloudError> {
        (**self).describe_vxnets(vxnets).await
    }
    async fn vpc_cidrs(&self, vxnet: &VxnetId) -> Result<Vec<Ipv4Net>, CloudError> {
        (**self).vpc_cidrs(vxnet).await
    }
}

/// How a host failure should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostErrorKind {
    /// May succeed later (the NIC link has not appeared yet, netlink busy).
    Retryable,
    /// The object (netns, link) does not exist.
    NotFound,
    /// Plumbing is missing or differs from what was created (CHECK).
    Mismatch,
    /// Cannot succeed (permissions, invalid input).
    Permanent,
}

/// A failure of the host datapath.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("host datapath ({kind:?}): {message}")]
pub struct HostError {
    /// How to handle it.
    pub kind: HostErrorKind,
    /// What went wrong; for CHECK, every missing or wrong item.
    pub message: String,
}

impl HostError {
    /// A new error.
    pub fn new(kind: HostErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// True when trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind == HostErrorKind::Retryable
    }
}

/// The node's kernel datapath.
#[async_trait]
pub trait HostNetwork: Send + Sync {
    /// Node-wide setup, idempotent: forwarding, SNAT for traffic leaving the VPC, and
    /// the guard that keeps the main default route on the primary NIC.
    async fn ensure_node(&self, node: &NodePlumbing) -> Result<NodeReport, HostError>;

    /// Prepares an attached NIC for pod traffic: find the link by MAC, bring it up,
    /// strip host addresses, program its route table. Idempotent.
    /// [`HostErrorKind::Retryable`] when the link has not appeared yet.
    async fn prepare_nic(&self, nic: &NicPlumbing) -> Result<(), HostError>;

    /// Undoes [`HostNetwork::prepare_nic`] before the NIC is detached. Idempotent.
    async fn release_nic(&self, nic: &NicPlumbing) -> Result<(), HostError>;

    /// Plumbs a pod onto its NIC (veth, addresses, routes, rules). Idempotent for the same pod.
    async fn plumb_pod(&self, pod: &PodPlumbing) -> Result<PlumbedPod, HostError>;

    /// What [`HostNetwork::plumb_pod`] will report for `pod` when it creates the
    /// plumbing afresh, known before the host is touched (an implementation that
    /// chooses its names and MACs itself). The engine then records it while the
    /// plumbing runs instead of after. `None` (the default): not known in advance.
    fn plan_pod(&self, pod: &PodPlumbing) -> Option<PlumbedPod> {
        let _ = pod;
        None
    }

    /// Removes a pod's plumbing. Idempotent; succeeds when it is already gone or the
    /// sandbox namespace no longer exists (`netns` may be `None` or stale).
    async fn unplumb_pod(&self, pod: &PlumbedPod, netns: Option<&str>) -> Result<(), HostError>;

    /// Verifies a pod's plumbing in both namespaces (CNI CHECK); a
    /// [`HostErrorKind::Mismatch`] error lists everything missing.
    async fn verify_pod(&self, pod: &PodPlumbing, plumbed: &PlumbedPod) -> Result<(), HostError>;

    /// What hostnic plumbing exists on the host, for reconcile and GC.
    async fn inventory(&self) -> Result<HostInventory, HostError>;

    /// Finishes now what [`HostNetwork::unplumb_pod`] may leave for later (an
    /// implementation may cut a pod off at once and batch the slow removal of
    /// what is left of it). The default has nothing deferred.
    async fn settle(&self) -> Result<(), HostError> {
        Ok(())
    }
}

#[async_trait]
impl<T: HostNetwork + ?Sized> HostNetwork for Arc<T> {
    async fn ensure_node(&self, node: &NodePlumbing) -> Result<NodeReport, HostError> {
        (**self).ensure_node(node).await
    }
    async fn prepare_nic(&self, nic: &NicPlumbing) -> Result<(), HostError> {
        (**self).prepare_nic(nic).await
    }
    async fn release_nic(&self, nic: &NicPlumbing) -> Result<(), HostError> {
        (**self).release_nic(nic).await
    }
    async fn plumb_pod(&self, pod: &PodPlumbing) -> Result<PlumbedPod, HostError> {
        (**self).plumb_pod(pod).await
    }
    fn plan_pod(&self, pod: &PodPlumbing) -> Option<PlumbedPod> {
        (**self).plan_pod(pod)
    }
    async fn unplumb_pod(&self, pod: &PlumbedPod, netns: Option<&str>) -> Result<(), HostError> {
        (**self).unplumb_pod(pod, netns).await
    }
    async fn verify_pod(&self, pod: &PodPlumbing, plumbed: &PlumbedPod) -> Result<(), HostError> {
        (**self).verify_pod(pod, plumbed).await
    }
    async fn inventory(&self) -> Result<HostInventory, HostError> {
        (**self).inventory().await
    }
    async fn settle(&self) -> Result<(), HostError> {
        (**self).settle().await
    }
}

/// A failure of the pod source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("pod source{}: {message}", if *retryable { " (retryable)" } else { "" })]
pub struct PodSourceError {
    /// True when trying again later may succeed (API server unreachable).
    pub retryable: bool,
    /// What went wrong.
    pub message: String,
}

/// Which pods should exist on this node.
#[async_trait]
pub trait PodSource: Send + Sync {
    /// The pods that should currently exist on this node (host-network pods excluded).
    async fn pods(&self) -> Result<Vec<PodInfo>, PodSourceError>;

    /// A stream of changes from now on. The stream ends when the source shuts down.
    fn changes(&self) -> BoxStream<'static, PodEvent>;
}

/// The source of time for every decision of the core (cooldowns, lifetimes, backoff).
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The wall clock: milliseconds since the Unix epoch, so timestamps in a checkpoint
/// survive a restart of the agent.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(since_epoch.as_millis() as u64)
    }
}

impl<T: Clock + ?Sized> Clock for Arc<T> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

/// What kind of failure a [`StoreError`] is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreErrorKind {
    /// Reading or writing failed.
    #[default]
    Io,
    /// The disk (or the quota) is full: nothing can be recorded until room is made.
    NoSpace,
}

/// A failure to read or write the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("checkpoint store{}: {message}", if *kind == StoreErrorKind::NoSpace { ": the disk of the state directory is full" } else { "" })]
pub struct StoreError {
    /// What kind of failure.
    #[serde(default)]
    pub kind: StoreErrorKind,
    /// What went wrong (path and OS error for a file store).
    pub message: String,
}

impl StoreError {
    /// A read or write failure.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            kind: StoreErrorKind::Io,
            message: message.into(),
        }
    }

    /// The disk is full.
    pub fn no_space(message: impl Into<String>) -> Self {
        Self {
            kind: StoreErrorKind::NoSpace,
            message: message.into(),
        }
    }
}

/// Durable storage of the node's [`Checkpoint`](crate::checkpoint::Checkpoint).
///
/// Synchronous on purpose: a checkpoint is a few kilobytes, and the agent's file
/// store writes it atomically (temp file, fsync, rename) in well under a millisecond
/// on tmpfs and a few on disk.
pub trait CheckpointStore: Send + Sync {
    /// Reads the last checkpoint written, if any.
    fn load(&self) -> Result<Option<crate::checkpoint::Checkpoint>, StoreError>;

    /// Reads the last checkpoint written or, when what the store holds is damaged,
    /// the best intact one, and says what was wrong (a file store keeps the damaged
    /// files aside for inspection). The engine opens with this. The default reads
    /// [`CheckpointStore::load`] and takes a failure for corruption.
    fn load_verified(&self) -> Result<crate::checkpoint::Loaded, StoreError> {
        use crate::checkpoint::{CheckpointDamage, Loaded, RecoveryReason};
        Ok(match self.load() {
            Ok(checkpoint) => Loaded::clean(checkpoint),
            Err(e) => Loaded {
                checkpoint: None,
                damage: Some(CheckpointDamage {
                    reason: RecoveryReason::Corrupt,
                    detail: e.message,
                }),
                generation: 0,
            },
        })
    }

    /// Keeps the checkpoint the store holds aside for inspection, because the engine
    /// cannot use it (`why`: another instance's, an unknown version, inconsistent);
    /// the next save starts afresh. Returns where it went, if anywhere. The default
    /// keeps nothing.
    fn set_aside(&self, why: &str) -> Result<Option<String>, StoreError> {
        let _ = why;
        Ok(None)
    }

    /// Replaces the checkpoint atomically: after a crash, either the old or the new one is read.
    fn save(&self, checkpoint: &crate::checkpoint::Checkpoint) -> Result<(), StoreError>;

    /// Starts saving `checkpoint` off the caller's thread and returns a future
    /// that completes once it is durable, so the caller's other work (the ADD's
    /// plumbing) goes on meanwhile. `None` (the default): this store only saves
    /// in place, and the caller uses [`CheckpointStore::save`]. A store that
    /// saves in the background never lets an older generation replace a newer one.
    fn save_in_background(
        &self,
        checkpoint: &crate::checkpoint::Checkpoint,
    ) -> Option<futures::future::BoxFuture<'static, Result<(), StoreError>>> {
        let _ = checkpoint;
        None
    }
}

impl<T: CheckpointStore + ?Sized> CheckpointStore for Arc<T> {
    fn load(&self) -> Result<Option<crate::checkpoint::Checkpoint>, StoreError> {
        (**self).load()
    }
    fn load_verified(&self) -> Result<crate::checkpoint::Loaded, StoreError> {
        (**self).load_verified()
    }
    fn set_aside(&self, why: &str) -> Result<Option<String>, StoreError> {
        (**self).set_aside(why)
    }
    fn save(&self, checkpoint: &crate::checkpoint::Checkpoint) -> Result<(), StoreError> {
        (**self).save(checkpoint)
    }
    fn save_in_background(
        &self,
        checkpoint: &crate::checkpoint::Checkpoint,
    ) -> Option<futures::future::BoxFuture<'static, Result<(), StoreError>>> {
        (**self).save_in_background(checkpoint)
    }
}

/// Reports the node's state to the cluster. Calls must not block: implementations queue.
pub trait NodeReporter: Send + Sync {
    /// After every pool round: NICs free now, and pods the node can still get a NIC for.
    fn capacity(&self, free_nics: u32, assignable_pods: u32);

    /// An ADD failed for lack of a NIC; `quota` when the node or the cloud refuses more
    /// (full node, NIC or address quota), else the pool had none ready in time.
    fn nic_shortage(&self, pod: &PodKey, quota: bool, message: &str);

    /// The agent started from a checkpoint it could not trust and rebuilt the node from
    /// the host, the pod source and the cloud. The default reports nothing.
    fn checkpoint_recovered(&self, recovery: &crate::recovery::Recovery) {
        let _ = recovery;
    }

    /// An ADD failed for lack of a NIC, with the reason the pool could not grow
    /// ([`Shortage`](crate::pool::Shortage): a full vxnet, the NIC quota, the
    /// account's request quota, …) when one is known. The default forwards to
    /// [`NodeReporter::nic_shortage`], `quota` for the quota causes.
    fn nic_shortage_because(
        &self,
        pod: &PodKey,
        cause: Option<crate::pool::ShortageCause>,
        message: &str,
    ) {
        self.nic_shortage(pod, cause.is_some_and(|c| c.is_quota()), message);
    }

    /// The account's API request quota: `exhausted` when the cloud client's circuit
    /// breaker opened (the cloud answered a request-quota 2500, and the node stops
    /// calling it), `false` when it closed again. `message` says what the client
    /// saw. The default reports nothing.
    fn request_quota(&self, exhausted: bool, message: &str) {
        let _ = (exhausted, message);
    }
}

/// A [`PolicySource`] lookup failed. Always worth retrying: the ADD that needed
/// it answers "try again later".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PolicySourceError {
    /// What failed.
    pub message: String,
}

/// Where the cluster's NetworkPolicies, namespaces and pods come from.
#[async_trait]
pub trait PolicySource: Send + Sync {
    /// True once the source has listed everything at least once: before that, an
    /// empty view would wrongly mean "no policy".
    fn is_synced(&self) -> bool;

    /// The current view.
    fn view(&self) -> Arc<ClusterView>;

    /// The current view and the arrival time of the oldest change no earlier
    /// `take_view` returned (for the event-to-enforcement latency).
    fn take_view(&self) -> (Arc<ClusterView>, Option<Instant>);

    /// Yields once for every change of the view (or of [`is_synced`](Self::is_synced))
    /// after this call; changes may coalesce. Ends when the source shuts down.
    fn changes(&self) -> BoxStream<'static, ()>;

    /// One pod as the source's cache has it.
    fn cached_pod(&self, namespace: &str, name: &str) -> Option<PolicyPod>;

    /// One pod read from the origin (for a pod the cache does not have yet);
    /// `Ok(None)` when it does not exist.
    async fn pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PolicyPod>, PolicySourceError>;
}

/// A [`PolicyDataplane::sync`] failed; nothing is known to be programmed. Always
/// retried (with backoff) by the policy task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyDataplaneError(pub String);

/// Programs NetworkPolicy on this node.
#[async_trait]
pub trait PolicyDataplane: Send {
    /// Makes the node enforce `compiled` for the `local` pods (all at once, or
    /// nothing on error).
    async fn sync(
        &mut self,
        compiled: &CompiledPolicy,
        local: &[LocalPod],
    ) -> Result<Programmed, PolicyDataplaneError>;

    /// Forgets what earlier syncs programmed, so the next sync checks the real
    /// state instead of sending a difference (called every few minutes, to heal
    /// changes made behind the agent's back). Default: nothing to forget.
    fn forget(&mut self) {}
}

/// What the node's supplier (in controller mode, the controller through the
/// node's `HostnicNode` status) says the node has now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Supplied {
    /// The supplier has answered for this node at all (the status exists). Until
    /// it has, NICs the node knows are kept: an empty list means "not yet", not
    /// "none".
    pub answered: bool,
    /// The node's NICs and where each is; only [`NicPhase::Attached`](crate::fleet::NicPhase::Attached)
    /// ones are usable.
    pub nics: Vec<crate::fleet::NodeNic>,
    /// Why the supplier refuses the node's request, if it does (`InvalidRequest`,
    /// `UnknownInstance`, … with its message): nothing changes for the node in
    /// the cloud until the request is fixed.
    pub refusal: Option<String>,
    /// Every NIC wanted is attached.
    pub ready: bool,
}

/// How a supply failure should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SupplyErrorKind {
    /// The supplier or the way to it is down (API server unreachable, a conflict,
    /// a timeout): the node keeps serving from its pool and tries again.
    Retryable,
    /// The request cannot succeed as it is (forbidden, invalid).
    Permanent,
}

/// A failure to publish the node's request or to read what it was supplied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("NIC supply ({kind:?}): {message}")]
pub struct SupplyError {
    /// How to handle it.
    pub kind: SupplyErrorKind,
    /// What went wrong.
    pub message: String,
}

impl SupplyError {
    /// A new error of `kind`.
    pub fn new(kind: SupplyErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// The source of the node's NICs when another component calls the cloud (the
/// agent's controller mode): the node states what it needs as a
/// [`NodeDemand`](crate::fleet::NodeDemand) and prepares the NICs it is supplied.
/// The pool's side is pure: [`NodeState::supply_request`](crate::pool::NodeState::supply_request)
/// and [`NodeState::supplied`](crate::pool::NodeState::supplied).
#[async_trait]
pub trait NicSupply: Send + Sync {
    /// Publishes the node's request. Adapters coalesce: an unchanged request
    /// writes nothing, and changes are written at most once every few seconds.
    async fn request(&self, request: &crate::fleet::NodeDemand) -> Result<(), SupplyError>;

    /// What the supplier says the node has now.
    async fn supplied(&self) -> Result<Supplied, SupplyError>;

    /// Changes of it; the stream ends only when the adapter stops.
    fn changes(&self) -> BoxStream<'static, Supplied>;
}
