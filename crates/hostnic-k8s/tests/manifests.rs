//! Every manifest in `deploy/` parses into the typed `k8s-openapi` objects without
//! unknown or misspelt fields (typed round trip == original), and the DaemonSet's
//! mounts, paths, env and probes agree with the agent's defaults and its ConfigMap.

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, ServiceAccount, Volume};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

// The agent's defaults (bins/hostnic-agent/src/settings.rs, bins/hostnic/src/config.rs).
const SOCKET: &str = "/run/hostnic/hostnic.sock";
const STATE_DIR: &str = "/var/lib/hostnic";
const METRICS_ADDR: &str = "127.0.0.1:61678";
const CNI_CONF_DIR: &str = "/etc/cni/net.d";
const CNI_BIN_DIR: &str = "/opt/cni/bin";
const INSTANCE_ID: &str = "/etc/qingcloud/instance-id";

/// The keys the agent's config file accepts (it rejects unknown keys).
const AGENT_KEYS: &[&str] = &[
    "pool",
    "mtu",
    "snat_exclusions",
    "external_snat",
    "vxnets",
    "socket",
    "state_dir",
    "metrics_addr",
    "cni_conf_dir",
    "cni_bin_dir",
    "cni_version",
    "portmap",
    "network_name",
    "plugin_binary",
    "log_format",
    "host_netns",
    "pool_interval_secs",
    "reconcile_interval_secs",
    "cloud_budget",
    "breaker_probe_secs",
    "breaker_probe_max_secs",
    "credentials_check_secs",
    "journal_bytes",
];
/// The core's `PoolConfig` fields.
const POOL_KEYS: &[&str] = &[
    "min_free",
    "max_free",
    "max_nics",
    "batch_size",
    "min_lifetime",
    "ip_cooldown",
    "table_base",
    "veth_prefix",
    "job_timeout",
    "backoff_base",
    "backoff_max",
    "missing_link_grace",
    "pod_gone_grace",
    "cloud_resync",
    "permanent_hold",
];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// The Kubernetes manifests of `deploy/` (YAML files whose documents have a `kind`),
/// each document as JSON, with its file name.
fn documents() -> Vec<(String, Value)> {
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{name}: not YAML: {e}"));
            if value.is_null() {
                continue;
            }
            // Not a Kubernetes object (e.g. agent.example.yaml, the agent's own config).
            if value.get("kind").is_none() && value.get("apiVersion").is_none() {
                continue;
            }
            docs.push((name.clone(), value));
        }
    }
    docs
}

/// Deserializes into the typed object and back: any field the type does not know is
/// lost, any value of the wrong shape fails, so a difference is a manifest error.
fn round_trip<T: DeserializeOwned + Serialize>(file: &str, value: &Value) -> T {
    let typed: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{file}: {}: {e}", value["kind"]));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &back, value,
        "{file}: {} {} has unknown or misspelt fields",
        value["kind"], value["metadata"]["name"]
    );
    typed
}

struct Manifests {
    daemonset: DaemonSet,
    config: ConfigMap,
    role: ClusterRole,
    binding: ClusterRoleBinding,
    account: ServiceAccount,
}

fn manifests() -> Manifests {
    let (mut ds, mut cm, mut role, mut binding, mut sa) = (None, None, None, None, None);
    let docs = documents();
    assert!(
        !docs.is_empty(),
        "no manifests in {}",
        deploy_dir().display()
    );
    for (file, doc) in &docs {
        match (doc["apiVersion"].as_str(), doc["kind"].as_str()) {
            (Some("apps/v1"), Some("DaemonSet")) => ds = Some(round_trip(file, doc)),
            (Some("v1"), Some("ConfigMap")) => cm = Some(round_trip(file, doc)),
            (Some("v1"), Some("ServiceAccount")) => sa = Some(round_trip(file, doc)),
            (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRole")) => {
                role = Some(round_trip(file, doc))
            }
            (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRoleBinding")) => {
                binding = Some(round_trip(file, doc))
            }
            (v, k) => panic!("{file}: no typed check for {v:?} {k:?}: add one"),
        }
    }
    Manifests {
        daemonset: ds.expect("a DaemonSet"),
        config: cm.expect("a ConfigMap"),
        role: role.expect("a ClusterRole"),
        binding: binding.expect("a ClusterRoleBinding"),
        account: sa.expect("a ServiceAccount"),
    }
}

#[test]
fn every_manifest_round_trips_through_its_typed_object() {
    // The round trip is asserted inside; this also fails on kinds without a check.
    let m = manifests();
    assert_eq!(m.daemonset.metadata.name.as_deref(), Some("hostnic-node"));
}

#[test]
fn the_round_trip_catches_a_misspelt_field() {
    let (file, mut ds) = documents()
        .into_iter()
        .find(|(_, d)| d["kind"] == "DaemonSet")
        .unwrap();
    ds["spec"]["template"]["spec"]["hostNetwrok"] = Value::Bool(true);
    let caught = std::panic::catch_unwind(|| round_trip::<DaemonSet>(&file, &ds));
    assert!(caught.is_err(), "a misspelt field went unnoticed");
}

fn container(ds: &DaemonSet) -> &Container {
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.containers.len(), 1);
    &pod.containers[0]
}

fn env<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    c.env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value
        .as_deref()
}

/// The volume mounted at a path that contains `path` (the mount point itself or a
/// parent directory), with the path inside the volume.
fn volume_for<'a>(ds: &'a DaemonSet, path: &str) -> (&'a Volume, String) {
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let mounts = container(ds).volume_mounts.as_ref().unwrap();
    let mount = mounts
        .iter()
        .filter(|m| path == m.mount_path || path.starts_with(&format!("{}/", m.mount_path)))
        .max_by_key(|m| m.mount_path.len())
        .unwrap_or_else(|| panic!("nothing mounted at {path}"));
    let rest = path[mount.mount_path.len()..]
        .trim_start_matches('/')
        .to_owned();
    let volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == mount.name)
        .unwrap_or_else(|| panic!("no volume {}", mount.name));
    (volume, rest)
}

fn host_path(ds: &DaemonSet, path: &str) -> String {
    let (volume, rest) = volume_for(ds, path);
    let host = volume
        .host_path
        .as_ref()
        .unwrap_or_else(|| panic!("{path} is not on a hostPath volume"));
    if rest.is_empty() {
        host.path.clone()
    } else {
        format!("{}/{rest}", host.path)
    }
}

fn agent_config(m: &Manifests) -> serde_json::Map<String, Value> {
    let text = &m.config.data.as_ref().unwrap()["agent.yaml"];
    serde_yaml::from_str(text).unwrap()
}

#[test]
fn the_agent_config_has_only_keys_the_agent_accepts() {
    let m = manifests();
    let config = agent_config(&m);
    for key in config.keys() {
        assert!(
            AGENT_KEYS.contains(&key.as_str()),
            "unknown agent key {key}"
        );
    }
    for key in config["pool"].as_object().unwrap().keys() {
        assert!(POOL_KEYS.contains(&key.as_str()), "unknown pool key {key}");
    }
    // The ConfigMap states the agent's defaults, so it must not drift from them.
    for (key, default) in [
        ("socket", SOCKET),
        ("state_dir", STATE_DIR),
        ("metrics_addr", METRICS_ADDR),
        ("cni_conf_dir", CNI_CONF_DIR),
        ("cni_bin_dir", CNI_BIN_DIR),
    ] {
        assert_eq!(config[key], default, "{key}");
    }
    assert!(config["pool"]["max_nics"].as_u64().unwrap() <= 62);
    // The agent's own example (its defaults), once it is in deploy/: same keys, and
    // the values both state agree.
    let example = deploy_dir().join("agent.example.yaml");
    if let Ok(text) = std::fs::read_to_string(example) {
        let example: serde_json::Map<String, Value> = serde_yaml::from_str(&text).unwrap();
        for (key, value) in &example {
            assert!(
                AGENT_KEYS.contains(&key.as_str()),
                "agent.example.yaml: {key}"
            );
            if key == "pool" {
                for (k, v) in value.as_object().unwrap() {
                    if let Some(ours) = config["pool"].get(k) {
                        assert_eq!(ours, v, "pool.{k} differs from agent.example.yaml");
                    }
                }
            } else if let Some(ours) = config.get(key)
                && key != "log_format"
            {
                assert_eq!(ours, value, "{key} differs from agent.example.yaml");
            }
        }
    }
}

#[test]
fn the_daemonset_mounts_what_the_agent_uses_where_it_looks() {
    let m = manifests();
    let ds = &m.daemonset;
    let config = agent_config(&m);
    let c = container(ds);
    // Host directories shared with the kubelet, the runtime and the CNI plugin: same
    // path inside and outside, so the conflist and pending DELs name host paths.
    let socket_dir = Path::new(config["socket"].as_str().unwrap())
        .parent()
        .unwrap();
    for path in [
        socket_dir.to_str().unwrap(),
        config["state_dir"].as_str().unwrap(),
        config["cni_conf_dir"].as_str().unwrap(),
        config["cni_bin_dir"].as_str().unwrap(),
        INSTANCE_ID,
    ] {
        assert_eq!(host_path(ds, path), path, "{path}");
    }
    // Credentials: the user's `qcsecret` Secret, key config.yaml.
    let credentials = env(c, "HOSTNIC_CREDENTIALS").expect("HOSTNIC_CREDENTIALS");
    let (volume, key) = volume_for(ds, credentials);
    assert_eq!(
        volume.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("qcsecret")
    );
    assert_eq!(key, "config.yaml");
    // The agent config: the ConfigMap's agent.yaml.
    let config_path = env(c, "HOSTNIC_CONFIG").expect("HOSTNIC_CONFIG");
    let (volume, key) = volume_for(ds, config_path);
    assert_eq!(
        volume.config_map.as_ref().unwrap().name,
        m.config.metadata.name.clone().unwrap()
    );
    assert_eq!(key, "agent.yaml");
    assert_eq!(env(c, "HOSTNIC_PODS"), Some("kube"));
    assert_eq!(env(c, "HOSTNIC_CLOUD"), Some("qingcloud"));
    for name in ["NODE_NAME", "HOSTNIC_NODE_NAME"] {
        let var = c.env.as_ref().unwrap().iter().find(|e| e.name == name);
        let field = var
            .and_then(|v| v.value_from.as_ref())
            .and_then(|f| f.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(field, Some("spec.nodeName"), "{name}");
    }
}

#[test]
fn the_daemonset_probes_the_metrics_port_on_loopback() {
    let m = manifests();
    let config = agent_config(&m);
    let addr: std::net::SocketAddr = config["metrics_addr"].as_str().unwrap().parse().unwrap();
    let c = container(&m.daemonset);
    for (probe, path) in [
        (c.readiness_probe.as_ref(), "/readyz"),
        (c.liveness_probe.as_ref(), "/healthz"),
    ] {
        let get = probe.and_then(|p| p.http_get.as_ref()).expect(path);
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.host.as_deref(), Some(addr.ip().to_string().as_str()));
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(addr.port().into())
        );
    }
}

#[test]
fn the_daemonset_runs_on_every_node_in_the_host_network() {
    let m = manifests();
    let ds = &m.daemonset;
    assert_eq!(ds.metadata.namespace.as_deref(), Some("kube-system"));
    let spec = ds.spec.as_ref().unwrap();
    let update = spec.update_strategy.as_ref().unwrap();
    assert_eq!(update.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(
        update.rolling_update.as_ref().unwrap().max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("10%".into()))
    );
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.host_network, Some(true));
    // Cluster DNS runs in pods that need hostnic first: the agent resolves the cloud
    // API with the node's resolvers.
    assert_eq!(pod.dns_policy.as_deref(), Some("Default"));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    let tolerations = pod.tolerations.as_ref().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "must tolerate every taint"
    );
    assert_eq!(
        pod.service_account_name, m.account.metadata.name,
        "the DaemonSet runs as the bound ServiceAccount"
    );
    let subject = &m.binding.subjects.as_ref().unwrap()[0];
    assert_eq!(Some(&subject.name), m.account.metadata.name.as_ref());
    assert_eq!(subject.namespace.as_deref(), Some("kube-system"));
    assert_eq!(
        Some(&m.binding.role_ref.name),
        m.role.metadata.name.as_ref()
    );
}

#[test]
fn the_cluster_role_is_least_privilege() {
    let m = manifests();
    let mut granted: Vec<(String, String, String)> = Vec::new();
    for rule in m.role.rules.as_ref().unwrap() {
        for group in rule.api_groups.as_deref().unwrap_or_default() {
            for resource in rule.resources.as_deref().unwrap_or_default() {
                for verb in &rule.verbs {
                    granted.push((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    granted.sort();
    let mut want: Vec<(String, String, String)> = [
        ("", "pods", "get"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
        ("networking.k8s.io", "networkpolicies", "list"),
        ("networking.k8s.io", "networkpolicies", "watch"),
        ("", "nodes", "get"),
        ("", "nodes", "patch"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
    ]
    .iter()
    .map(|(g, r, v)| ((*g).into(), (*r).into(), (*v).into()))
    .collect();
    want.sort();
    assert_eq!(granted, want);
}
