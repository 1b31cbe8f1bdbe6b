//! `hostnic-lab apply --dir DIR -f FILE` (NetworkPolicies as YAML or JSON: one
//! object, a `List`, or several YAML documents) and `hostnic-lab delete --dir
//! DIR networkpolicy NS/NAME`. Each waits until every agent enforces the change.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::Deserialize;
use serde_json::Value;

use crate::apiserver::{self, ApiServer, Strictness};
use crate::labfile;

/// Options of `apply`.
#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// The lab directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// The file (`-` for stdin).
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// Return without waiting for the agents to enforce the change.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for enforcement, in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout_s: u64,
}

/// Options of `delete`.
#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// The lab directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// What to delete.
    pub kind: DeleteKind,
    /// `NAMESPACE/NAME`.
    pub name: String,
    /// Return without waiting for the agents to enforce the change.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for enforcement, in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout_s: u64,
}

/// Kinds `delete` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeleteKind {
    /// A NetworkPolicy.
    #[value(alias = "netpol", alias = "networkpolicies")]
    Networkpolicy,
}

/// The NetworkPolicies in `text` (YAML or JSON; an object, a `List`, or several documents).
pub fn parse_policies(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).context("not YAML or JSON")?;
        if v.is_null() {
            continue;
        }
        match v["kind"].as_str() {
            Some(k) if k.ends_with("List") => {
                objects.extend(v["items"].as_array().cloned().unwrap_or_default());
            }
            _ => objects.push(v),
        }
    }
    for o in &objects {
        if o["kind"] != "NetworkPolicy" {
            bail!(
                "only NetworkPolicy objects can be applied, not {}",
                o["kind"]
            );
        }
        if o["metadata"]["name"].as_str().is_none_or(str::is_empty) {
            bail!("a NetworkPolicy without metadata.name");
        }
    }
    Ok(objects)
}

fn read(file: &Path) -> anyhow::Result<String> {
    if file == Path::new("-") {
        return std::io::read_to_string(std::io::stdin()).context("read stdin");
    }
    std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))
}

/// Runs `apply`.
pub async fn exec_apply(args: ApplyArgs) -> anyhow::Result<bool> {
    let dir = labfile::lab_dir(&args.dir)?;
    let (lab, _) = labfile::load(&dir)?;
    let api = ApiServer::of_lab(&dir)?;
    let policies = parse_policies(&read(&args.file)?)?;
    let mut rv = 0;
    for p in &policies {
        let v = api.put_policy(p).await?;
        println!(
            "networkpolicy/{}/{} configured (resourceVersion {v})",
            p["metadata"]["namespace"].as_str().unwrap_or("default"),
            p["metadata"]["name"].as_str().unwrap_or_default()
        );
        rv = rv.max(v);
    }
    if !args.no_wait && rv > 0 {
        wait(&lab, rv, args.timeout_s).await?;
    }
    Ok(true)
}

/// Runs `delete`.
pub async fn exec_delete(args: DeleteArgs) -> anyhow::Result<bool> {
    let dir = labfile::lab_dir(&args.dir)?;
    let (lab, _) = labfile::load(&dir)?;
    let api = ApiServer::of_lab(&dir)?;
    let DeleteKind::Networkpolicy = args.kind;
    let (ns, name) = args
        .name
        .split_once('/')
        .filter(|(ns, n)| !ns.is_empty() && !n.is_empty())
        .context("the name must be NAMESPACE/NAME")?;
    let Some(rv) = api.delete_policy(ns, name).await? else {
        bail!("networkpolicy {ns}/{name} not found");
    };
    println!("networkpolicy/{ns}/{name} deleted (resourceVersion {rv})");
    if !args.no_wait {
        wait(&lab, rv, args.timeout_s).await?;
    }
    Ok(true)
}

async fn wait(lab: &labfile::LabFile, rv: u64, timeout_s: u64) -> anyhow::Result<()> {
    let took =
        apiserver::wait_enforced(lab, rv, Duration::from_secs(timeout_s), Strictness::Strict)
            .await?;
    println!("enforced by every agent in {} ms", took.as_millis());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_json_lists_and_documents_all_parse() {
        let yaml = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: a\n  namespace: x\nspec:\n  podSelector: {}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: b}\nspec: {podSelector: {}}\n";
        let p = parse_policies(yaml).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0]["metadata"]["namespace"], "x");
        let list = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"c"},"spec":{"podSelector":{}}}]}"#;
        assert_eq!(parse_policies(list).unwrap().len(), 1);
        assert!(parse_policies(r#"{"kind":"Pod","metadata":{"name":"p"}}"#).is_err());
        assert!(parse_policies(r#"{"kind":"NetworkPolicy","metadata":{}}"#).is_err());
    }
}
