//! Running a round against a [`FleetCloud`]: every call at once (the client
//! bounds how many are in flight), each outcome paired with its call.

use futures::future::join_all;

use crate::fleet::call::{FleetCall, FleetRound, Outcome, PlannedCall};
use crate::fleet::port::FleetCloud;

/// Makes one call.
pub async fn execute_call<C: FleetCloud + ?Sized>(cloud: &C, call: &FleetCall) -> Outcome {
    match call {
        FleetCall::DescribeInstances { instances } => {
            Outcome::Instances(cloud.describe_instances(instances).await)
        }
        FleetCall::DescribeVxnets { vxnets } => {
            Outcome::Vxnets(cloud.describe_vxnets(vxnets).await)
        }
        FleetCall::DescribeNics { query } => Outcome::Nics(cloud.describe_nics(query).await),
        FleetCall::CreateNics {
            vxnet, count, name, ..
        } => Outcome::Created(cloud.create_nics(vxnet, *count, name).await),
        FleetCall::AttachNics { instance, nics, .. } => {
            Outcome::Job(cloud.attach_nics(instance, nics).await)
        }
        FleetCall::DetachNics { nics, .. } => Outcome::Job(cloud.detach_nics(nics).await),
        FleetCall::DeleteNics { nics } => Outcome::Deleted(cloud.delete_nics(nics).await),
        FleetCall::DescribeJobs { query } => Outcome::Jobs(cloud.describe_jobs(query).await),
    }
}

/// Makes every call of `round` concurrently and returns the outcomes in the
/// round's order. The caller reports them with
/// [`Fleet::complete`](crate::fleet::Fleet::complete) (and records the jobs it
/// started, before it waits on them).
pub async fn execute<C: FleetCloud + ?Sized>(
    cloud: &C,
    round: &FleetRound,
) -> Vec<(PlannedCall, Outcome)> {
    let outcomes = join_all(round.calls.iter().map(|c| execute_call(cloud, &c.call))).await;
    round.calls.iter().cloned().zip(outcomes).collect()
}
