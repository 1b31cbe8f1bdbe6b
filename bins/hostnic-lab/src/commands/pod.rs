//! `hostnic-lab pod add|del`: a pod namespace and the node's CNI binary called
//! exactly as a runtime does (environment + the plugin's config on stdin), and
//! the Pod object as kubelet keeps it: created (bound to the node, with labels
//! and container ports) before the CNI ADD, `status.podIP` and phase Running
//! set after it, deleted after the CNI DEL. A failed ADD is followed by a DEL,
//! as runtimes do, before the sandbox is removed. A pod with `--listen` ports gets a
//! small TCP listener process inside its namespace until `pod del`.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use hostnic_linux::NetNs;
use hostnic_testkit::cni::{self, CniCall};
use tokio::io::AsyncWriteExt;

use crate::apiserver::{self, ApiServer, Strictness};
use crate::labfile::{self, ContainerPort, LabFile, NodeEntry, PodRecord};

/// How long a write waits for the agents to enforce it, by default.
pub const ENFORCE_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// Labels of the Pod object, `k=v,k2=v2` (add).
    #[arg(long, default_value = "")]
    pub labels: String,
    /// TCP ports the pod listens on, `80,81` (add); declared as container
    /// ports named `serve-<port>-tcp`.
    #[arg(long, value_delimiter = ',')]
    pub listen: Vec<u16>,
    /// Return without waiting for the agents to enforce policy for the change.
    #[arg(long)]
    pub no_wait: bool,
}

/// What a pod is, beyond its name.
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    /// Labels of the Pod object.
    pub labels: BTreeMap<String, String>,
    /// Container ports; the TCP ones get a listener.
    pub ports: Vec<ContainerPort>,
    /// Wait (up to this long) for every agent to enforce policy for the pod.
    pub wait: Option<Duration>,
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
    let wait = (!args.no_wait).then_some(ENFORCE_TIMEOUT);
    match args.verb {
        PodVerb::Add => {
            let spec = PodSpec {
                labels: apiserver::parse_labels(&args.labels)?,
                ports: args.listen.iter().map(|p| ContainerPort::tcp(*p)).collect(),
                wait,
            };
            let (record, stdout, _, _) = add_with(&dir, &args.node, namespace, name, &spec).await?;
            println!("{}", stdout.trim_end());
            tracing::info!(ip = %record.ip, "pod added");
        }
        PodVerb::Del => {
            del_with(&dir, &args.node, namespace, name, wait).await?;
        }
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
    add_with(dir, node, namespace, name, &PodSpec::default())
        .await
        .map(|(record, out, took, _)| (record, out, took))
}

/// Creates the pod described by `spec`: its Pod object, namespace, listener
/// and CNI ADD. Returns its record, the CNI result, how long the ADD took and
/// the resourceVersion of the last write to the API server (0: none).
pub async fn add_with(
    dir: &Path,
    node: &str,
    namespace: &str,
    name: &str,
    spec: &PodSpec,
) -> anyhow::Result<(PodRecord, String, Duration, u64)> {
    let (lab, state) = labfile::load(dir)?;
    let entry = node_entry(&lab, node)?;
    let path = record_path(dir, node, namespace, name);
    if path.exists() {
        bail!("pod {namespace}/{name} already exists on {node}");
    }
    // Kubernetes names are unique per namespace; the lab lets the same NS/NAME
    // live on several nodes, so a second one gets the node in its API name.
    let k8s_name = labfile::pods(dir)?
        .iter()
        .any(|p| p.namespace == namespace && p.name == name && p.node != node)
        .then(|| format!("{name}-{node}"));
    let api_name = k8s_name.as_deref().unwrap_or(name).to_owned();
    let api = state
        .apiserver_url
        .is_some()
        .then(|| ApiServer::of_lab(dir))
        .transpose()?;
    let mut rv = 0;
    if let Some(api) = &api {
        if let Some(v) = api.ensure_namespace(namespace).await? {
            rv = rv.max(v);
        }
        let obj = apiserver::pod_object(namespace, &api_name, node, &spec.labels, &spec.ports);
        let stored = api.apply(&apiserver::pods_path(namespace), &obj).await?;
        rv = rv.max(apiserver::resource_version(&stored));
    }
    let pod_path = format!("{}/{api_name}", apiserver::pods_path(namespace));
    let ns_name = netns_name(&state.prefix, node, namespace, name);
    let undo = |netns: bool, listener: Option<u32>| {
        let (api, pod_path, ns_name) = (api.clone(), pod_path.clone(), ns_name.clone());
        async move {
            if let Some(pid) = listener {
                crate::agents::signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
            if netns {
                let _ = NetNs::delete_named(&ns_name);
            }
            if let Some(api) = api {
                let _ = api.delete(&pod_path).await;
            }
        }
    };
    let netns = match NetNs::create_named(&ns_name) {
        Ok(ns) => ns,
        Err(e) => {
            undo(false, None).await;
            return Err(e).with_context(|| format!("create the pod namespace {ns_name}"));
        }
    };
    // Runtimes bring the sandbox's loopback up (CRI does; CNI's `loopback`).
    if let Err(e) = hostnic_linux::lab::cmd::ip_in(&ns_name, &["link", "set", "lo", "up"]).await {
        undo(true, None).await;
        return Err(e).context("bring up the pod's loopback");
    }
    let tcp: Vec<u16> = spec
        .ports
        .iter()
        .filter(|p| p.protocol.eq_ignore_ascii_case("TCP"))
        .map(|p| p.port)
        .collect();
    let listener_pid = if tcp.is_empty() {
        None
    } else {
        match start_listener(netns.path(), &tcp) {
            Ok(pid) => Some(pid),
            Err(e) => {
                undo(true, None).await;
                return Err(e);
            }
        }
    };
    let container_id = container_id(node, namespace, name);
    let started = Instant::now();
    let result = cni(
        entry,
        "ADD",
        &container_id,
        netns.path(),
        namespace,
        &api_name,
    )
    .await;
    let took = started.elapsed();
    // As every runtime does, a failed ADD is followed by a DEL (with the same
    // container id and namespace) before the sandbox goes, so whatever the plugin
    // and the agent did before failing is released now, not by a later reconcile.
    let del_after_failure = || async {
        if let Err(e) = cni(
            entry,
            "DEL",
            &container_id,
            netns.path(),
            namespace,
            &api_name,
        )
        .await
        {
            tracing::warn!(error = %format!("{e:#}"), "DEL after the failed ADD failed too");
        }
    };
    let stdout = match result {
        Ok(out) => out,
        Err(e) => {
            del_after_failure().await;
            undo(true, listener_pid).await;
            return Err(e);
        }
    };
    let Some(ip) = result_ip(&stdout) else {
        del_after_failure().await;
        undo(true, listener_pid).await;
        bail!("no IPv4 address in the CNI result: {stdout}");
    };
    let record = PodRecord {
        node: node.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        container_id,
        netns: netns.path().to_path_buf(),
        ip,
        k8s_name,
        labels: spec.labels.clone(),
        ports: spec.ports.clone(),
        listener_pid,
    };
    // Recorded before the status update, so `pod del` can clean up if it fails.
    std::fs::create_dir_all(labfile::pods_dir(dir))?;
    labfile::write(&path, &record)?;
    if let Some(api) = &api {
        let status = serde_json::json!({"status": {
            "phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}],
        }});
        let stored = api.patch(&format!("{pod_path}/status"), &status).await?;
        rv = rv.max(apiserver::resource_version(&stored));
    }
    if let (Some(timeout), Some(_)) = (spec.wait, &api) {
        apiserver::wait_enforced(&lab, rv, timeout, Strictness::Lenient).await?;
    }
    Ok((record, stdout, took, rv))
}

/// Starts `hostnic-lab listen` in the namespace at `netns`, detached (it lives
/// until `pod del` kills it), and waits until it listens on every port.
fn start_listener(netns: &Path, ports: &[u16]) -> anyhow::Result<u32> {
    use std::os::unix::process::CommandExt;
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("listen")
        .arg("--netns")
        .arg(netns)
        .arg("--ports")
        .arg(ports.join(","))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .context("start the pod's listener")?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    if line.trim() != super::listen::READY {
        let _ = child.kill();
        let out = child.wait_with_output()?;
        bail!(
            "the pod's listener failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let pid = child.id();
    // Reap it if it ends while this process still runs.
    std::thread::spawn(move || child.wait());
    Ok(pid)
}

/// Deletes the pod: CNI DEL, then its namespace and record.
pub async fn del(dir: &Path, node: &str, namespace: &str, name: &str) -> anyhow::Result<()> {
    del_with(dir, node, namespace, name, None).await.map(|_| ())
}

/// Deletes the pod: its listener, CNI DEL, its namespace, its Pod object and
/// record; with `wait`, waits for the agents to have seen the Pod go. Returns
/// how long the DEL took and the resourceVersion of the Pod's deletion.
pub async fn del_with(
    dir: &Path,
    node: &str,
    namespace: &str,
    name: &str,
    wait: Option<Duration>,
) -> anyhow::Result<(Duration, Option<u64>)> {
    let (lab, state) = labfile::load(dir)?;
    let entry = node_entry(&lab, node)?;
    let path = record_path(dir, node, namespace, name);
    let record: PodRecord =
        labfile::read(&path).with_context(|| format!("no pod {namespace}/{name} on {node}"))?;
    if let Some(pid) = record.listener_pid {
        crate::agents::signal(pid, nix::sys::signal::Signal::SIGKILL);
    }
    let started = Instant::now();
    cni(
        entry,
        "DEL",
        &record.container_id,
        &record.netns,
        namespace,
        record.api_name(),
    )
    .await?;
    let took = started.elapsed();
    let ns_name = record
        .netns
        .file_name()
        .and_then(|n| n.to_str())
        .context("pod namespace path")?;
    NetNs::delete_named(ns_name)?;
    let mut rv = None;
    if state.apiserver_url.is_some() {
        let api = ApiServer::of_lab(dir)?;
        rv = api
            .delete(&format!(
                "{}/{}",
                apiserver::pods_path(namespace),
                record.api_name()
            ))
            .await?
            .map(|v| apiserver::resource_version(&v));
    }
    std::fs::remove_file(&path)?;
    if let (Some(timeout), Some(rv)) = (wait, rv) {
        apiserver::wait_enforced(&lab, rv, timeout, Strictness::Lenient).await?;
    }
    Ok((took, rv))
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
    let call = CniCall {
        verb,
        container_id,
        netns,
        pod: (namespace, name),
        cni_path: &node.cni_bin_dir,
    };
    let mut child = cni::command(&binary, &call)
        .spawn()
        .with_context(|| format!("run {}", binary.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin may answer (an error) before it read its input: its answer counts.
        match stdin.write_all(config.to_string().as_bytes()).await {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other?,
        }
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
