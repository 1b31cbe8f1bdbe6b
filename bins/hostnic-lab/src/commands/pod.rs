//! `hostnic-lab pod add|del`: a pod namespace and the node's CNI binary called
//! exactly as a runtime does (environment + the plugin's config on stdin).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use hostnic_linux::NetNs;
use tokio::io::AsyncWriteExt;

use crate::labfile::{self, LabFile, NodeEntry, PodRecord};

/// Options of `pod`.
#[derive(Debug, Clone, Args)]
pub struct PodArgs {
    /// `add` or `del`.
    pub verb: PodVerb,
    /// The lab directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// The node, e.g. `node1`.
    #[arg(long)]
    pub node: String,
    /// The pod as `NAMESPACE/NAME`.
    #[arg(long)]
    pub pod: String,
}

/// What to do with the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PodVerb {
    /// Create the namespace and run CNI ADD.
    Add,
    /// Run CNI DEL and remove the namespace.
    Del,
}

/// Runs `pod add|del`.
pub async fn exec(args: PodArgs) -> anyhow::Result<bool> {
    let dir = labfile::lab_dir(&args.dir)?;
    let (namespace, name) = args
        .pod
        .split_once('/')
        .filter(|(ns, n)| !ns.is_empty() && !n.is_empty())
        .context("--pod must be NAMESPACE/NAME")?;
    match args.verb {
        PodVerb::Add => {
            let (record, stdout) = add(&dir, &args.node, namespace, name).await?;
            println!("{}", stdout.trim_end());
            tracing::info!(ip = %record.ip, "pod added");
        }
        PodVerb::Del => del(&dir, &args.node, namespace, name).await?,
    }
    Ok(true)
}

fn record_path(dir: &Path, node: &str, namespace: &str, name: &str) -> PathBuf {
    labfile::pods_dir(dir).join(format!("{node}_{namespace}_{name}.json"))
}

fn netns_name(prefix: &str, node: &str, namespace: &str, name: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("{prefix}pod-{node}-{}-{}", clean(namespace), clean(name))
}

/// Creates the pod and returns its record and the CNI result.
pub async fn add(
    dir: &Path,
    node: &str,
    namespace: &str,
    name: &str,
) -> anyhow::Result<(PodRecord, String)> {
    add_timed(dir, node, namespace, name)
        .await
        .map(|(record, out, _)| (record, out))
}

/// Like [`add`], also returning how long the CNI ADD call took.
pub async fn add_timed(
    dir: &Path,
    node: &str,
    namespace: &str,
    name: &str,
) -> anyhow::Result<(PodRecord, String, Duration)> {
    let (lab, state) = labfile::load(dir)?;
    let entry = node_entry(&lab, node)?;
    let path = record_path(dir, node, namespace, name);
    if path.exists() {
        bail!("pod {namespace}/{name} already exists on {node}");
    }
    let ns_name = netns_name(&state.prefix, node, namespace, name);
    let netns = NetNs::create_named(&ns_name)
        .with_context(|| format!("create the pod namespace {ns_name}"))?;
    let container_id = container_id(node, namespace, name);
    let started = Instant::now();
    let result = cni(entry, "ADD", &container_id, netns.path(), namespace, name).await;
    let took = started.elapsed();
    let stdout = match result {
        Ok(out) => out,
        Err(e) => {
            let _ = NetNs::delete_named(&ns_name);
            return Err(e);
        }
    };
    let ip = result_ip(&stdout)
        .with_context(|| format!("no IPv4 address in the CNI result: {stdout}"))?;
    let record = PodRecord {
        node: node.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        container_id,
        netns: netns.path().to_path_buf(),
        ip,
    };
    std::fs::create_dir_all(labfile::pods_dir(dir))?;
    labfile::write(&path, &record)?;
    Ok((record, stdout, took))
}

/// Deletes the pod: CNI DEL, then its namespace and record.
pub async fn del(dir: &Path, node: &str, namespace: &str, name: &str) -> anyhow::Result<()> {
    del_timed(dir, node, namespace, name).await.map(|_| ())
}

/// Like [`del`], returning how long the CNI DEL call took.
pub async fn del_timed(
    dir: &Path,
    node: &str,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Duration> {
    let (lab, _) = labfile::load(dir)?;
    let entry = node_entry(&lab, node)?;
    let path = record_path(dir, node, namespace, name);
    let record: PodRecord =
        labfile::read(&path).with_context(|| format!("no pod {namespace}/{name} on {node}"))?;
    let started = Instant::now();
    cni(
        entry,
        "DEL",
        &record.container_id,
        &record.netns,
        namespace,
        name,
    )
    .await?;
    let took = started.elapsed();
    let ns_name = record
        .netns
        .file_name()
        .and_then(|n| n.to_str())
        .context("pod namespace path")?;
    NetNs::delete_named(ns_name)?;
    std::fs::remove_file(&path)?;
    Ok(took)
}

fn node_entry<'a>(lab: &'a LabFile, node: &str) -> anyhow::Result<&'a NodeEntry> {
    lab.nodes
        .iter()
        .find(|n| n.name == node)
        .with_context(|| format!("no node {node} in this lab"))
}

fn container_id(node: &str, namespace: &str, name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{node}/{namespace}/{name}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("hostniclab{h:016x}")
}

/// The config a runtime hands the first plugin of a conflist: the plugin's own
/// object plus the list's `cniVersion` and `name`.
pub fn plugin_config(conflist: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let mut plugin = conflist["plugins"]
        .get(0)
        .cloned()
        .context("the conflist has no plugins")?;
    let obj = plugin.as_object_mut().context("plugin is not an object")?;
    obj.insert("cniVersion".into(), conflist["cniVersion"].clone());
    obj.insert("name".into(), conflist["name"].clone());
    Ok(plugin)
}

/// Runs the node's CNI plugin for `verb`; its stdout on success.
async fn cni(
    node: &NodeEntry,
    verb: &str,
    container_id: &str,
    netns: &Path,
    namespace: &str,
    name: &str,
) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(&node.conflist).with_context(|| {
        format!(
            "read {} (is the node's agent ready?)",
            node.conflist.display()
        )
    })?;
    let conflist: serde_json::Value = serde_json::from_str(&text)?;
    let config = plugin_config(&conflist)?;
    let plugin = config["type"].as_str().context("plugin without type")?;
    let binary = node.cni_bin_dir.join(plugin);
    let mut child = tokio::process::Command::new(&binary)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={container_id}"),
        )
        .env("CNI_PATH", &node.cni_bin_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {}", binary.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(config.to_string().as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "CNI {verb} failed ({}): {}{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(stdout)
}

/// The first IPv4 address of a CNI result (`ips[].address`, CIDR form).
pub fn result_ip(result: &str) -> Option<Ipv4Addr> {
    let v: serde_json::Value = serde_json::from_str(result).ok()?;
    v["ips"]
        .as_array()?
        .iter()
        .find_map(|ip| ip["address"].as_str()?.split('/').next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_gets_the_list_name_and_version() {
        let list = serde_json::json!({"cniVersion": "1.0.0", "name": "hostnic",
            "plugins": [{"type": "hostnic", "agentSocket": "/s"}, {"type": "portmap"}]});
        let c = plugin_config(&list).unwrap();
        assert_eq!(c["type"], "hostnic");
        assert_eq!(c["name"], "hostnic");
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["agentSocket"], "/s");
    }

    #[test]
    fn the_pod_ip_comes_from_the_result() {
        let r = r#"{"cniVersion":"1.0.0","ips":[{"address":"172.16.1.9/32","interface":0}]}"#;
        assert_eq!(result_ip(r), Some(Ipv4Addr::new(172, 16, 1, 9)));
        assert_eq!(result_ip("{}"), None);
    }

    #[test]
    fn pod_namespaces_carry_the_lab_prefix() {
        let n = netns_name("hl-1a2b-", "node1", "default", "web/0");
        assert_eq!(n, "hl-1a2b-pod-node1-default-web_0");
    }
}
