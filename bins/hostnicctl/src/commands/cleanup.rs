//! `hostnicctl cleanup`: the NICs a node keeps after hostnic is uninstalled.
//!
//! The agent leaves its NICs attached when it stops (a restart must not cut pods
//! off), so after an uninstall, or before moving a node from the original
//! hostnic-cni (which names its NICs the same way), the node's
//! `hostnic_<instance>` NICs are left. `cleanup` lists them with what it would do,
//! and only with `--yes` detaches the attached ones (one DetachNics, waiting for
//! the job) and deletes them (DeleteNics). The instance's primary NIC and NICs
//! attached to another instance are never touched. `--yes` is refused while an
//! agent answers on this node: the agent owns those NICs and would recreate them.
//!
//! The `TAGS` column tells hostnic's NICs (tagged `hostnic`) from the original
//! hostnic-cni's (no tag), which carry the same name.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use hostnic_core::types::{JobId, JobOutcome, NicId};
use hostnic_qingcloud::signer::Params;
use hostnic_qingcloud::{ClientOptions, QingCloudClient};
use serde_json::Value;

use super::cloud::{Credentials, tag_names};
use super::introspect::table;

/// The instance id file of a QingCloud instance.
use hostnic_qingcloud::agent::INSTANCE_ID_FILE;

/// How long a DetachNics job may take.
const DETACH_TIMEOUT: Duration = Duration::from_secs(300);

/// Arguments of `hostnicctl cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    #[command(flatten)]
    credentials: Credentials,
    /// The node's instance id; default: the content of /etc/qingcloud/instance-id.
    #[arg(long)]
    instance: Option<String>,
    /// Detach and delete them. Without it nothing is changed: a dry run.
    #[arg(long)]
    yes: bool,
    /// Where this node's agent would answer; `--yes` is refused while one does.
    #[arg(
        long,
        env = "HOSTNIC_AGENT_URL",
        default_value = "http://127.0.0.1:61678"
    )]
    agent_url: String,
    /// Clean up although an agent answers (it will recreate its pool).
    #[arg(long)]
    force: bool,
}

/// What cleanup does with one NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Attached to this instance: detach, then delete.
    DetachDelete,
    /// Not attached: delete.
    Delete,
    /// Attached to another instance: not this node's any more.
    Skip,
}

impl Plan {
    fn describe(self) -> &'static str {
        match self {
            Plan::DetachDelete => "detach, delete",
            Plan::Delete => "delete",
            Plan::Skip => "skip (attached to another instance)",
        }
    }
}

async fn agent_answers(url: &str) -> bool {
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return false;
    };
    client
        .get(format!("{}/healthz", url.trim_end_matches('/')))
        .send()
        .await
        .is_ok()
}

/// Runs `hostnicctl cleanup`.
pub async fn exec(args: CleanupArgs) -> anyhow::Result<()> {
    let instance = match &args.instance {
        Some(i) => i.clone(),
        None => std::fs::read_to_string(INSTANCE_ID_FILE)
            .with_context(|| format!("no --instance and {INSTANCE_ID_FILE} is unreadable"))?
            .trim()
            .to_string(),
    };
    if instance.is_empty() {
        bail!("the instance id is empty");
    }
    let config = args.credentials.load()?;
    hostnic_qingcloud::transport::install_crypto_provider();
    let agent = agent_answers(&args.agent_url).await;
    if agent && args.yes && !args.force {
        bail!(
            "a hostnic agent answers at {}: it owns this node's NICs and would recreate them. \
             Uninstall hostnic (or stop the agent) first, or pass --force",
            args.agent_url
        );
    }
    if agent {
        eprintln!(
            "note: a hostnic agent answers at {}: these NICs are in use; uninstall hostnic \
             before cleaning up with --yes",
            args.agent_url
        );
    }
    let client = QingCloudClient::new(&config, ClientOptions::from_config(&config))?;
    let name = hostnic_core::types::managed_nic_name(&hostnic_core::types::InstanceId::new(
        instance.clone(),
    ));
    let mut params = Params::new();
    params.set("nic_name", &name);
    let nics = client
        .describe_all("DescribeNics", params, "nic_set")
        .await
        .with_context(|| format!("DescribeNics at {}", config.endpoint.url()))?;
    let str_of = |n: &Value, k: &str| n.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut planned: Vec<(NicId, Plan, Vec<String>)> = Vec::new();
    for n in &nics {
        // The API filters by name; checked again, and the primary NIC is never ours.
        if str_of(n, "nic_name") != name || n.get("role").and_then(Value::as_i64) == Some(1) {
            continue;
        }
        let attached_to = str_of(n, "instance_id");
        let plan = if str_of(n, "status") == "in-use" || !attached_to.is_empty() {
            if attached_to == instance {
                Plan::DetachDelete
            } else {
                Plan::Skip
            }
        } else {
            Plan::Delete
        };
        let id = str_of(n, "nic_id");
        let nic = NicId::new(&id).map_err(|e| anyhow::anyhow!("DescribeNics: NIC {id:?}: {e}"))?;
        planned.push((
            nic,
            plan,
            vec![
                id,
                str_of(n, "private_ip"),
                str_of(n, "vxnet_id"),
                str_of(n, "status"),
                super::introspect::cell(attached_to),
                tag_names(n),
                plan.describe().to_string(),
            ],
        ));
    }
    if planned.is_empty() {
        println!("no NIC named {name}: nothing to clean up");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = planned.iter().map(|(_, _, r)| r.clone()).collect();
    print!(
        "{}",
        table(
            &["NIC", "IP", "VXNET", "STATUS", "INSTANCE", "TAGS", "ACTION"],
            &rows
        )
    );
    let detach: Vec<NicId> = planned
        .iter()
        .filter(|(_, p, _)| *p == Plan::DetachDelete)
        .map(|(id, _, _)| id.clone())
        .collect();
    let delete: Vec<NicId> = planned
        .iter()
        .filter(|(_, p, _)| *p != Plan::Skip)
        .map(|(id, _, _)| id.clone())
        .collect();
    if !args.yes {
        println!(
            "dry run: nothing changed. `hostnicctl cleanup --instance {instance} --yes` would \
             detach {} and delete {} NIC(s)",
            detach.len(),
            delete.len()
        );
        return Ok(());
    }
    if !detach.is_empty() {
        let job: JobId = client.detach_nics(&detach).await.context("DetachNics")?;
        match client
            .wait_job(&job, DETACH_TIMEOUT)
            .await
            .context("DescribeJobs")?
        {
            JobOutcome::Successful => println!("detached {} NIC(s) (job {job})", detach.len()),
            JobOutcome::Failed => bail!("DetachNics job {job} failed: nothing deleted"),
        }
    }
    for batch in delete.chunks(50) {
        client.delete_nics(batch).await.context("DeleteNics")?;
    }
    println!("deleted {} NIC(s) named {name}", delete.len());
    Ok(())
}
