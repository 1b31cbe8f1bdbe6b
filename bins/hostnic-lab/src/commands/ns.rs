//! `hostnic-lab ns add --dir DIR NAME [--labels k=v,...]`: a Namespace in the
//! lab's API server (with `kubernetes.io/metadata.name`), created or relabelled.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::apiserver::{self, ApiServer, Strictness};
use crate::labfile;

/// Options of `ns`.
#[derive(Debug, Clone, Args)]
pub struct NsArgs {
    /// `add` (create, or replace the labels of an existing namespace).
    pub verb: NsVerb,
    /// The lab directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// The namespace.
    pub name: String,
    /// Its labels, `k=v,k2=v2` (`kubernetes.io/metadata.name` is always set).
    #[arg(long, default_value = "")]
    pub labels: String,
    /// Return without waiting for the agents to enforce the change.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for enforcement, in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout_s: u64,
}

/// What to do with the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NsVerb {
    /// Create it or set its labels.
    Add,
}

/// Runs `ns add`.
pub async fn exec(args: NsArgs) -> anyhow::Result<bool> {
    let dir = labfile::lab_dir(&args.dir)?;
    let (lab, _) = labfile::load(&dir)?;
    let api = ApiServer::of_lab(&dir)?;
    let labels = apiserver::parse_labels(&args.labels)?;
    let NsVerb::Add = args.verb;
    let rv = api.put_namespace(&args.name, &labels).await?;
    println!("namespace/{} configured (resourceVersion {rv})", args.name);
    if !args.no_wait {
        let took = apiserver::wait_enforced(
            &lab,
            rv,
            Duration::from_secs(args.timeout_s),
            Strictness::Strict,
        )
        .await?;
        println!("enforced by every agent in {} ms", took.as_millis());
    }
    Ok(true)
}
