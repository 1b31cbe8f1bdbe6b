//! The lab daemon: hosts the simulator and the fabric hook, and the fake
//! Kubernetes API server (the control plane: a Node per lab node, the agents
//! run with `--pods kube` against it), builds the VPC and the nodes, starts the
//! agents, writes `lab.json`, and on SIGTERM/SIGINT tears everything down.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use hostnic_k8s::fake_apiserver::FakeApiServer;
use hostnic_k8s::node::VXNET_ANNOTATION;
use hostnic_linux::lab::fabric;
use hostnic_qingcloud::sim::{InstanceSpec, SimConfig, SimState, Topology};
use hostnic_testkit::vpc::Vpc;
use ipnet::Ipv4Net;
use tokio::signal::unix::{SignalKind, signal};

use super::up::UpArgs;
use crate::agents::{self, NodeFiles};
use crate::labfile::{self, HostEntry, LabFile, LabState, NodeEntry};

const ACCESS_KEY: &str = "HOSTNICLABKEY";
const CLIENT_INSTANCE: &str = "i-simclient";
const INTERNET: &str = "198.51.100.0/24";
/// The vxnet of the nodes (their Node objects carry it in the vxnet annotation).
const NODE_VXNET: &str = "vxnet-sim1";
/// Namespaces every cluster has.
const NAMESPACES: &[&str] = &["default", "kube-system"];

/// Runs the daemon until signalled; a lab that fails to come up is removed again.
pub async fn exec(args: UpArgs) -> anyhow::Result<bool> {
    let dir = labfile::lab_dir(&args.dir)?;
    let prefix = labfile::prefix_for(&dir);
    // What a previous lab left and cannot be removed stops the start here, before
    // anything is built (and so before the failure path removes anything again).
    let leftovers = cleanup_previous(&dir, &prefix).await;
    if !leftovers.is_empty() {
        anyhow::bail!("{}", leftovers_help(&dir, &prefix, &leftovers));
    }
    let result = serve(&args, &dir, &prefix).await;
    if result.is_err() {
        if let Ok(lab) = labfile::read::<LabFile>(&dir.join("lab.json")) {
            for pid in lab.nodes.iter().filter_map(|n| n.pid) {
                agents::signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        for l in fabric::destroy(&prefix).await {
            tracing::error!("leftover: {l}");
        }
    }
    result
}

async fn serve(args: &UpArgs, dir: &Path, prefix: &str) -> anyhow::Result<bool> {
    let (dir, prefix) = (dir.to_path_buf(), prefix.to_string());
    let internet: Ipv4Net = INTERNET.parse()?;

    let topology = Topology {
        instances: (1..=args.nodes)
            .map(|i| InstanceSpec {
                id: format!("i-sim{i:05}"),
                vxnet: NODE_VXNET.into(),
            })
            .chain(std::iter::once(InstanceSpec {
                id: CLIENT_INSTANCE.into(),
                vxnet: "vxnet-sim2".into(),
            }))
            .collect(),
        ..Topology::default()
    };
    let mut hosts: BTreeMap<String, String> = (1..=args.nodes)
        .map(|i| (format!("i-sim{i:05}"), format!("node{i}")))
        .collect();
    hosts.insert(CLIENT_INSTANCE.into(), "client".into());

    let secret = format!(
        "lab-{:x}",
        (std::process::id() as u64 * 0x9e37_79b9) ^ nanos()
    );
    let mut config = SimConfig::new(ACCESS_KEY, secret.clone());
    config.topology = topology.clone();
    config.attach_latency = Duration::from_millis(args.attach_latency_ms);
    config.job_latency = Duration::from_millis(args.job_latency_ms);
    config.fault_rate = args.fault_rate;
    let Vpc { fabric, sim, hosts } = Vpc::build(&prefix, internet, config, hosts)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let state = sim.state();

    let mut nodes = Vec::new();
    let credentials = dir.join("credentials.yaml");
    let addr = sim.addr();
    write_secret_file(
        &credentials,
        &format!(
            "qy_access_key_id: '{ACCESS_KEY}'\nqy_secret_access_key: '{secret}'\nzone: '{}'\nhost: '{}'\nport: {}\nprotocol: 'http'\nuri: '/iaas'\nconnection_retries: 3\nconnection_timeout: 10\n",
            sim.zone(),
            addr.ip(),
            addr.port()
        ),
    )?;
    hostnic_qingcloud::config::Config::load(&credentials)
        .context("the credentials file the lab wrote does not load")?;

    // The control plane: the API server the agents watch, with the nodes and the
    // namespaces every cluster has.
    let apiserver = FakeApiServer::start()
        .await
        .context("start the fake Kubernetes API server")?;
    for (_, host) in hosts.iter().filter(|(_, h)| h.starts_with("node")) {
        apiserver.add_node(host, &[(VXNET_ANNOTATION, NODE_VXNET)]);
    }
    for ns in NAMESPACES {
        apiserver
            .apply(serde_json::json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {crate::apiserver::NAMESPACE_NAME_LABEL: ns}},
            }))
            .map_err(|e| anyhow::anyhow!("create namespace {ns}: {}", e.message))?;
    }
    let kubeconfig = apiserver
        .write_kubeconfig(&dir)
        .context("write the kubeconfig")?;

    let hostnic_bin = agents::sibling_binary("hostnic");
    let agent_bin = if args.no_agents {
        None
    } else {
        agents::sibling_binary("hostnic-agent")
    };
    for (instance, host) in hosts.iter().filter(|(_, h)| h.starts_with("node")) {
        let files = NodeFiles::new(&dir, host);
        files.create()?;
        if let (Some(bin), None) = (&hostnic_bin, &agent_bin) {
            // Without an agent nobody installs the plugin: link it, so `pod add`
            // still runs the real binary (and gets its "agent unreachable" error).
            let link = files.bin_dir().join("hostnic");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(bin, &link)?;
        }
        // A port free right now; the agent binds it a moment later.
        let metrics_port = std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port();
        if let Some(agent) = &agent_bin {
            let netns = fabric.netns_path(host);
            let node = AgentNode {
                name: host,
                instance,
                netns: &netns,
                metrics_port,
            };
            let argv = agent_argv(
                agent,
                hostnic_bin.as_deref(),
                &files,
                &node,
                &credentials,
                &kubeconfig,
            )?;
            labfile::write(&files.argv(), &argv)?;
        } else {
            agents::write_conflist(&files)?;
        }
        let (_, ip, _) = primary_nic(&state, instance)?;
        nodes.push(NodeEntry {
            name: host.clone(),
            instance_id: instance.clone(),
            netns: fabric.netns_path(host),
            primary_ip: ip,
            socket: files.socket(),
            conflist: files.conflist(),
            cni_bin_dir: files.bin_dir(),
            state_dir: files.state_dir(),
            metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
            // The agents' metrics listener is on loopback: it serves /v1/* too.
            introspection_url: format!("http://127.0.0.1:{metrics_port}"),
            pid: None,
        });
    }
    let (_, client_ip, _) = primary_nic(&state, CLIENT_INSTANCE)?;
    let lab = LabFile {
        sim_url: sim.url(),
        credentials,
        nodes,
        client: HostEntry {
            netns: fabric.netns_path("client"),
            ip: client_ip,
        },
        internet: HostEntry {
            netns: fabric.netns_path("internet"),
            ip: fabric.internet_ip(),
        },
        kubeconfig: Some(kubeconfig.clone()),
    };
    labfile::write(
        &labfile::state_json(&dir),
        &LabState {
            prefix: prefix.clone(),
            daemon_pid: std::process::id(),
            internet_cidr: internet,
            apiserver_url: Some(apiserver.url()),
        },
    )?;
    // Agents start from the saved command lines, detached like `agent start` does;
    // lab.json is written once they are all ready.
    let mut lab = lab;
    if agent_bin.is_some() {
        for node in &mut lab.nodes {
            node.pid = Some(agents::spawn_detached(&dir, &node.name)?);
        }
        if let Err(e) = wait_ready(&lab, Duration::from_secs(args.timeout_s)).await {
            for pid in lab.nodes.iter().filter_map(|n| n.pid) {
                agents::signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
            return Err(e);
        }
    } else {
        if !args.no_agents {
            tracing::warn!("no hostnic-agent binary next to hostnic-lab: the nodes run no agent");
        }
    }
    if agent_bin.is_some() {
        for node in &lab.nodes {
            apiserver
                .apply(agent_pod(node))
                .map_err(|e| anyhow::anyhow!("agent pod of {}: {}", node.name, e.message))?;
        }
    }
    labfile::write(&labfile::lab_json(&dir), &lab)?;
    tracing::info!(sim = %sim.url(), prefix, "lab ready");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stopping the lab");
    let lab: LabFile = labfile::read(&labfile::lab_json(&dir)).unwrap_or(lab);
    for pid in lab.nodes.iter().filter_map(|n| n.pid) {
        agents::stop(pid, Duration::from_secs(5)).await;
    }
    sim.shutdown().await;
    drop(apiserver);
    let leftovers = fabric::destroy(&prefix).await;
    for l in &leftovers {
        tracing::error!("leftover: {l}");
    }
    let _ = std::fs::remove_file(labfile::lab_json(&dir));
    Ok(leftovers.is_empty())
}

/// Where one agent runs.
#[derive(Debug, Clone, Copy)]
struct AgentNode<'a> {
    /// The node (and Node object) name.
    name: &'a str,
    /// Its instance id.
    instance: &'a str,
    /// The node's network namespace.
    netns: &'a Path,
    /// The agent's HTTP port on 127.0.0.1.
    metrics_port: u16,
}

/// The DaemonSet's pod of a lab node, as the API server lists it (host network:
/// its IP is the node's, here the loopback where the agents listen), so that
/// `hostnicctl cluster` finds the agents as it does in a cluster.
fn agent_pod(node: &NodeEntry) -> serde_json::Value {
    let port = node
        .metrics_url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(61678);
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "namespace": "kube-system",
            "name": format!("hostnic-node-{}", node.name),
            "labels": {"app.kubernetes.io/name": "hostnic", "app.kubernetes.io/component": "node"},
        },
        "spec": {
            "nodeName": node.name, "hostNetwork": true,
            "containers": [{"name": "hostnic-agent", "image": "hostnic-lab",
                            "ports": [{"name": "metrics", "containerPort": port}]}],
        },
        "status": {"phase": "Running", "podIP": "127.0.0.1", "hostIP": node.primary_ip.to_string()},
    })
}

/// The shipped ConfigMap's `agent.yaml` (deploy/hostnic.yaml): the lab's agents
/// run the defaults users get, so what the lab (and the CRI suite on it) proves
/// holds for them.
const SHIPPED: &str = include_str!("../../../../deploy/hostnic.yaml");

/// The shipped `agent.yaml` with the lab's few overrides: short pool and reconcile
/// intervals and `missing_link_grace` so a lab reacts quickly, text logs for
/// people reading `agent.log`, and direct mode. Paths and addresses come from the command line.
pub fn lab_agent_yaml() -> anyhow::Result<String> {
    let mut config = None;
    for doc in serde_yaml::Deserializer::from_str(SHIPPED) {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc)?;
        if v["kind"] == "ConfigMap" && v["metadata"]["name"] == "hostnic-config" {
            let text = v["data"]["agent.yaml"]
                .as_str()
                .context("the hostnic-config ConfigMap has no agent.yaml")?;
            config = Some(serde_yaml::from_str::<serde_json::Value>(text)?);
        }
    }
    let mut config = config.context("deploy/hostnic.yaml has no hostnic-config ConfigMap")?;
    config["pool_interval_secs"] = 1.0.into();
    config["reconcile_interval_secs"] = 3.0.into();
    config["pool"]["missing_link_grace"] = 2.0.into();
    config["log_format"] = "text".into();
    // The lab's agents call the simulator themselves (direct mode) until the lab
    // runs the controller replicas too (issue 15 item 7); users get controller mode.
    config["mode"] = "direct".into();
    Ok(serde_yaml::to_string(&config)?)
}

/// What the lab cannot remove of a previous lab in `dir`, and the commands that do.
fn leftovers_help(dir: &Path, prefix: &str, leftovers: &[String]) -> String {
    let names: Vec<&str> = leftovers
        .iter()
        .filter_map(|l| l.strip_prefix("namespace "))
        .filter_map(|l| l.split([':', ' ']).next())
        .collect();
    let mut text = format!(
        "a previous lab in {} left what cannot be removed:\n  {}\n",
        dir.display(),
        leftovers.join("\n  ")
    );
    text.push_str(
        "Namespaces that cannot be deleted are usually held by a mount: an `ip netns add` \
         run after the lab bind-mounted /run/netns over itself, or a process still in them. \
         Clear them with:\n",
    );
    let mut names: Vec<&str> = names;
    names.sort();
    names.dedup();
    for n in &names {
        text.push_str(&format!(
            "  umount -l /run/netns/{n}; ip netns delete {n}\n"
        ));
    }
    if names.is_empty() {
        text.push_str(&format!("  ip netns list | grep {prefix}\n"));
    }
    text.push_str(&format!(
        "(or `grep /run/netns /proc/mounts` to see what holds them), then run `hostnic-lab up --dir {}` again.",
        dir.display()
    ));
    text
}

/// The agent's command line (`bins/hostnic-agent` flags), and its config file
/// ([`lab_agent_yaml`]).
fn agent_argv(
    agent: &Path,
    plugin: Option<&Path>,
    files: &NodeFiles,
    node: &AgentNode<'_>,
    credentials: &Path,
    kubeconfig: &Path,
) -> anyhow::Result<Vec<String>> {
    let AgentNode {
        name: node_name,
        instance,
        netns,
        metrics_port,
    } = *node;
    let config = files.root.join("agent.yaml");
    std::fs::write(&config, lab_agent_yaml()?)?;
    let s = |p: &Path| p.display().to_string();
    let mut argv = vec![
        s(agent),
        "--config".into(),
        s(&config),
        "--credentials".into(),
        s(credentials),
        "--instance-id".into(),
        instance.into(),
        "--cloud".into(),
        "qingcloud".into(),
        "--pods".into(),
        "kube".into(),
        "--kubeconfig".into(),
        s(kubeconfig),
        "--node-name".into(),
        node_name.into(),
        "--host-netns".into(),
        s(netns),
        "--socket".into(),
        s(&files.socket()),
        "--state-dir".into(),
        s(&files.state_dir()),
        "--cni-conf-dir".into(),
        s(&files.conf_dir()),
        "--cni-bin-dir".into(),
        s(&files.bin_dir()),
        "--metrics-addr".into(),
        format!("127.0.0.1:{metrics_port}"),
    ];
    if let Some(plugin) = plugin {
        argv.extend(["--plugin-binary".into(), s(plugin)]);
    }
    Ok(argv)
}

/// Waits until every agent is ready.
async fn wait_ready(lab: &LabFile, timeout: Duration) -> anyhow::Result<()> {
    for node in &lab.nodes {
        if let Some(pid) = node.pid {
            agents::wait_ready(node, pid, timeout).await?;
        }
    }
    Ok(())
}

/// MAC, address and vxnet network of an instance's primary NIC.
fn primary_nic(state: &SimState, instance: &str) -> anyhow::Result<(String, Ipv4Addr, Ipv4Net)> {
    hostnic_testkit::vpc::primary_nic(state, instance).map_err(|e| anyhow::anyhow!(e))
}

/// Removes what a crashed previous lab in this directory left; what could not
/// be removed.
async fn cleanup_previous(dir: &Path, prefix: &str) -> Vec<String> {
    if let Ok(lab) = labfile::read::<LabFile>(&labfile::lab_json(dir)) {
        for pid in lab.nodes.iter().filter_map(|n| n.pid) {
            agents::signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    if let Ok(state) = labfile::read::<LabState>(&labfile::state_json(dir))
        && state.daemon_pid != std::process::id()
        && agents::alive(state.daemon_pid)
    {
        agents::signal(state.daemon_pid, nix::sys::signal::Signal::SIGKILL);
    }
    let leftovers = fabric::destroy(prefix).await;
    for l in &leftovers {
        tracing::warn!("could not remove a previous lab's {l}");
    }
    let _ = std::fs::remove_dir_all(labfile::pods_dir(dir));
    let _ = std::fs::remove_dir_all(dir.join("nodes"));
    leftovers
}

fn write_secret_file(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_runs_the_shipped_agent_yaml_with_its_few_overrides() {
        let text = lab_agent_yaml().unwrap();
        let v: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(v["pool_interval_secs"], 1.0);
        assert_eq!(v["pool"]["missing_link_grace"], 2.0);
        // Nothing pins the CNI version: the shipped default is what runs.
        assert!(v.get("cni_version").is_none(), "{text}");
        assert_eq!(v["pool"]["min_free"], 5, "the shipped pool");
    }

    #[test]
    fn leftovers_come_with_the_commands_that_clear_them() {
        let text = leftovers_help(
            Path::new("/tmp/lab"),
            "hl-1a2b-",
            &[
                "namespace hl-1a2b-node1: Device or resource busy".into(),
                "namespace hl-1a2b-node1 still exists".into(),
            ],
        );
        assert!(
            text.contains("umount -l /run/netns/hl-1a2b-node1; ip netns delete hl-1a2b-node1"),
            "{text}"
        );
        assert_eq!(text.matches("umount -l").count(), 1, "{text}");
        assert!(text.contains("hostnic-lab up --dir /tmp/lab"), "{text}");
    }
}
