//! `hostnicctl cloud …`: the API's answers as tables (or `--json`), through the
//! agent's client and the agent's credentials file (`HOSTNIC_CREDENTIALS`, which
//! the DaemonSet sets to the mounted `qcsecret`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use hostnic_qingcloud::signer::{Params, Signer};
use hostnic_qingcloud::{ClientOptions, Config, QingCloudClient};
use serde_json::Value;

/// The credentials file when neither `--credentials` nor `HOSTNIC_CREDENTIALS` says.
pub const DEFAULT_CREDENTIALS: &str = "/etc/qingcloud/config.yaml";

/// The `qcsecret` config.yaml: `--credentials`, else `HOSTNIC_CREDENTIALS` (set in
/// the agent's container to the mounted Secret), else [`DEFAULT_CREDENTIALS`].
#[derive(Debug, Clone, Args)]
pub struct Credentials {
    /// The `qcsecret` config.yaml (credentials, zone, host/port/protocol/uri).
    #[arg(
        long,
        global = true,
        env = "HOSTNIC_CREDENTIALS",
        default_value = DEFAULT_CREDENTIALS
    )]
    pub credentials: PathBuf,
}

impl Credentials {
    /// Loads the file, saying which one and where the value came from when it fails.
    pub fn load(&self) -> anyhow::Result<Config> {
        Config::load(&self.credentials).with_context(|| {
            format!(
                "credentials {} (--credentials or HOSTNIC_CREDENTIALS; in the agent's pod: \
                 /etc/qingcloud/qcsecret/config.yaml)",
                self.credentials.display()
            )
        })
    }
}

/// Arguments of `hostnicctl cloud`.
#[derive(Debug, Args)]
pub struct CloudArgs {
    #[command(flatten)]
    credentials: Credentials,
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
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
    let config = args.credentials.load()?;
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
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", answer_table(action, &answer));
    }
    Ok(())
}

/// A string field of an API item, `-` when absent.
fn field(item: &Value, key: &str) -> String {
    match item.get(key) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "-".into(),
    }
}

/// The tag names of an API item (`tags[].tag_name`), `-` when none.
pub fn tag_names(item: &Value) -> String {
    let names: Vec<&str> = item
        .get("tags")
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.get("tag_name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(",")
    }
}

/// One row of a table from one API item.
type Row = fn(&Value) -> Vec<String>;

/// The table for an answer of `action`, with the page's `total_count` under it.
pub fn answer_table(action: &str, answer: &Value) -> String {
    let (set, headers, row): (&str, &[&str], Row) = match action {
        "DescribeNics" => (
            "nic_set",
            &[
                "NIC", "NAME", "VXNET", "IP", "STATUS", "INSTANCE", "ROLE", "TAGS",
            ],
            |n| {
                vec![
                    field(n, "nic_id"),
                    field(n, "nic_name"),
                    field(n, "vxnet_id"),
                    field(n, "private_ip"),
                    field(n, "status"),
                    field(n, "instance_id"),
                    if n.get("role").and_then(Value::as_i64) == Some(1) {
                        "primary".into()
                    } else {
                        "-".into()
                    },
                    tag_names(n),
                ]
            },
        ),
        "DescribeVxnets" => (
            "vxnet_set",
            &["VXNET", "NAME", "NETWORK", "GATEWAY", "ROUTER"],
            |v| {
                let router = v.get("router").cloned().unwrap_or(Value::Null);
                vec![
                    field(v, "vxnet_id"),
                    field(v, "vxnet_name"),
                    field(&router, "ip_network"),
                    field(&router, "manager_ip"),
                    field(v, "vpc_router_id"),
                ]
            },
        ),
        "DescribeInstances" => (
            "instance_set",
            &["INSTANCE", "NAME", "STATUS", "NICS"],
            |i| {
                let nics = i
                    .get("vxnets")
                    .and_then(Value::as_array)
                    .map(|v| {
                        v.iter()
                            .map(|n| format!("{}={}", field(n, "nic_id"), field(n, "private_ip")))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                vec![
                    field(i, "instance_id"),
                    field(i, "instance_name"),
                    field(i, "status"),
                    super::introspect::cell(nics),
                ]
            },
        ),
        _ => ("job_set", &["JOB", "ACTION", "STATUS", "CREATED"], |j| {
            vec![
                field(j, "job_id"),
                field(j, "job_action"),
                field(j, "status"),
                field(j, "create_time"),
            ]
        }),
    };
    let rows: Vec<Vec<String>> = answer
        .get(set)
        .and_then(Value::as_array)
        .map(|items| items.iter().map(row).collect())
        .unwrap_or_default();
    let mut out = super::introspect::table(headers, &rows);
    if let Some(total) = answer.get("total_count").and_then(Value::as_u64)
        && total > rows.len() as u64
    {
        out.push_str(&format!(
            "{} of {total} (--offset/--limit for the rest)\n",
            rows.len()
        ));
    }
    out
}
