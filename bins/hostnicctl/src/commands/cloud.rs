//! `hostnicctl cloud …`: raw API answers as JSON, through the agent's client.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use hostnic_qingcloud::signer::{Params, Signer};
use hostnic_qingcloud::{ClientOptions, Config, QingCloudClient};
use serde_json::Value;

/// Arguments of `hostnicctl cloud`.
#[derive(Debug, Args)]
pub struct CloudArgs {
    /// The `qcsecret` config.yaml (credentials, zone, host/port/protocol/uri).
    #[arg(long, global = true, default_value = "/etc/qingcloud/config.yaml")]
    credentials: PathBuf,
    #[command(subcommand)]
    action: CloudAction,
}

/// List filters shared by the Describe commands.
#[derive(Debug, Args)]
struct Paging {
    /// First item.
    #[arg(long)]
    offset: Option<u32>,
    /// Items per page (at most 100).
    #[arg(long)]
    limit: Option<u32>,
}

#[derive(Debug, Subcommand)]
enum CloudAction {
    /// DescribeNics.
    DescribeNics {
        /// Only these NICs (MACs).
        #[arg(long = "nic")]
        nics: Vec<String>,
        /// Only NICs in these vxnets.
        #[arg(long = "vxnet")]
        vxnets: Vec<String>,
        /// Only NICs attached to these instances.
        #[arg(long = "instance")]
        instances: Vec<String>,
        /// Only NICs with this name (e.g. `hostnic_i-abc`).
        #[arg(long)]
        name: Option<String>,
        /// `available` or `in-use`.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// DescribeVxnets.
    DescribeVxnets {
        /// Only these vxnets.
        #[arg(long = "vxnet")]
        vxnets: Vec<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// DescribeInstances.
    DescribeInstances {
        /// Only these instances.
        #[arg(long = "instance")]
        instances: Vec<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// DescribeJobs.
    DescribeJobs {
        /// Only these jobs.
        #[arg(long = "job")]
        jobs: Vec<String>,
        /// Only jobs of this action, e.g. `AttachNics`.
        #[arg(long)]
        job_action: Option<String>,
        /// `pending`, `working`, `successful` or `failed`.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Prints the canonical query and signature of a request without sending it
    /// (compare with another SDK; the secret comes from the credentials file).
    Sign {
        /// GET or POST.
        #[arg(long, default_value = "GET")]
        method: String,
        /// The signed path.
        #[arg(long, default_value = "/iaas/")]
        path: String,
        /// Every parameter to sign, `key=value`, exactly as sent (auth parameters included).
        #[arg(value_name = "KEY=VALUE")]
        params: Vec<String>,
    },
}

fn paging(params: &mut Params, paging: &Paging) {
    params
        .set_opt("offset", paging.offset)
        .set_opt("limit", paging.limit);
}

/// Runs `hostnicctl cloud …`.
pub async fn exec(args: CloudArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.credentials)?;
    let mut params = Params::new();
    let action = match args.action {
        CloudAction::Sign {
            method,
            path,
            params: pairs,
        } => {
            let mut signed = Params::new();
            for pair in pairs {
                let (k, v) = pair
                    .split_once('=')
                    .with_context(|| format!("{pair:?} is not KEY=VALUE"))?;
                signed.set(k, v);
            }
            let signer = Signer::new(&config.access_key_id, config.secret_access_key.clone());
            let out = signer.sign_exact(&method, &path, &signed);
            let json = serde_json::json!({
                "canonical_query": out.canonical,
                "signature": out.signature,
            });
            println!("{json}");
            return Ok(());
        }
        CloudAction::DescribeNics {
            nics,
            vxnets,
            instances,
            name,
            status,
            paging: p,
        } => {
            params
                .list("nics", nics)
                .list("vxnets", vxnets)
                .list("instances", instances)
                .set_opt("nic_name", name)
                .set_opt("status", status);
            paging(&mut params, &p);
            "DescribeNics"
        }
        CloudAction::DescribeVxnets { vxnets, paging: p } => {
            params.list("vxnets", vxnets).set("verbose", 1);
            paging(&mut params, &p);
            "DescribeVxnets"
        }
        CloudAction::DescribeInstances {
            instances,
            paging: p,
        } => {
            params.list("instances", instances).set("verbose", 1);
            paging(&mut params, &p);
            "DescribeInstances"
        }
        CloudAction::DescribeJobs {
            jobs,
            job_action,
            status,
            paging: p,
        } => {
            params
                .list("jobs", jobs)
                .set_opt("job_action", job_action)
                .set_opt("status", status);
            paging(&mut params, &p);
            "DescribeJobs"
        }
    };
    let client = QingCloudClient::new(&config, ClientOptions::from_config(&config))?;
    let answer: Value = client
        .call(action, params)
        .await
        .with_context(|| format!("{action} at {}", config.endpoint.url()))?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
