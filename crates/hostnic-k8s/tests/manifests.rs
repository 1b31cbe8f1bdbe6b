//! Every manifest in `deploy/` parses into the typed `k8s-openapi` objects without
//! unknown or misspelt fields (typed round trip == original); the DaemonSet's
//! mounts, paths, env, probes and metrics port agree with the agent's defaults,
//! its ConfigMap and the metrics Service; `deploy/monitoring` scrapes that port
//! and its PrometheusRule carries exactly the rules promtool tests; the
//! controller's Deployment holds the credentials and its RBAC is least
//! privilege; `deploy/crd.yaml` is the CRD generated from the `HostnicNode` type.

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Service, ServiceAccount, Volume};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

// The agent's defaults (bins/hostnic-agent/src/settings.rs, bins/hostnic/src/config.rs).
const SOCKET: &str = "/run/hostnic/hostnic.sock";
const STATE_DIR: &str = "/var/lib/hostnic";
/// The shipped ConfigMap opens the metrics port to the cluster (the agent's own
/// default is loopback); introspection stays on loopback either way.
const METRICS_ADDR: &str = "0.0.0.0:61678";
const CNI_CONF_DIR: &str = "/etc/cni/net.d";
const CNI_BIN_DIR: &str = "/opt/cni/bin";
const INSTANCE_ID: &str = "/etc/qingcloud/instance-id";

/// The keys the agent's config file accepts (it rejects unknown keys).
const AGENT_KEYS: &[&str] = &[
    "mode",
    "vpc_cidrs",
    "pool",
    "mtu",
    "snat_exclusions",
    "external_snat",
    "vxnets",
    "socket",
    "socket_limits",
    "state_dir",
    "metrics_addr",
    "introspection_addr",
    "other_conflists",
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
            // Not a Kubernetes object (e.g. agent.example.yaml, the agent's own config),
            // or kustomize's own file (it lists the objects; `kubectl kustomize` in CI).
            if value.get("kind").is_none() && value.get("apiVersion").is_none()
                || value["kind"] == "Kustomization"
            {
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

/// The typed objects of one manifest file.
#[derive(Default)]
struct Objects {
    daemonsets: Vec<DaemonSet>,
    deployments: Vec<Deployment>,
    configs: Vec<ConfigMap>,
    accounts: Vec<ServiceAccount>,
    services: Vec<Service>,
    cluster_roles: Vec<ClusterRole>,
    cluster_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    bindings: Vec<RoleBinding>,
    budgets: Vec<PodDisruptionBudget>,
    crds: Vec<CustomResourceDefinition>,
}

/// Every document of `file` (all files when `None`), each round-tripped through
/// its typed object; a kind without a typed check fails.
fn objects(file: Option<&str>) -> Objects {
    let mut o = Objects::default();
    let docs = documents();
    assert!(
        !docs.is_empty(),
        "no manifests in {}",
        deploy_dir().display()
    );
    for (name, doc) in docs.iter().filter(|(n, _)| file.is_none_or(|f| f == n)) {
        let name = name.as_str();
        match (doc["apiVersion"].as_str(), doc["kind"].as_str()) {
            (Some("apps/v1"), Some("DaemonSet")) => o.daemonsets.push(round_trip(name, doc)),
            (Some("apps/v1"), Some("Deployment")) => o.deployments.push(round_trip(name, doc)),
            (Some("v1"), Some("ConfigMap")) => o.configs.push(round_trip(name, doc)),
            (Some("v1"), Some("ServiceAccount")) => o.accounts.push(round_trip(name, doc)),
            (Some("v1"), Some("Service")) => o.services.push(round_trip(name, doc)),
            (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRole")) => {
                o.cluster_roles.push(round_trip(name, doc))
            }
            (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRoleBinding")) => {
                o.cluster_bindings.push(round_trip(name, doc))
            }
            (Some("rbac.authorization.k8s.io/v1"), Some("Role")) => {
                o.roles.push(round_trip(name, doc))
            }
            (Some("rbac.authorization.k8s.io/v1"), Some("RoleBinding")) => {
                o.bindings.push(round_trip(name, doc))
            }
            (Some("policy/v1"), Some("PodDisruptionBudget")) => {
                o.budgets.push(round_trip(name, doc))
            }
            (Some("apiextensions.k8s.io/v1"), Some("CustomResourceDefinition")) => {
                o.crds.push(round_trip(name, doc))
            }
            (v, k) => panic!("{name}: no typed check for {v:?} {k:?}: add one"),
        }
    }
    o
}

/// The agent's objects (deploy/hostnic.yaml).
struct Manifests {
    service: Service,
    daemonset: DaemonSet,
    config: ConfigMap,
    role: ClusterRole,
    binding: ClusterRoleBinding,
    account: ServiceAccount,
}

fn one<T>(mut v: Vec<T>, what: &str) -> T {
    assert_eq!(v.len(), 1, "exactly one {what}");
    v.remove(0)
}

fn manifests() -> Manifests {
    let o = objects(Some("hostnic.yaml"));
    let services = objects(Some("service.yaml")).services;
    Manifests {
        service: one(services, "metrics Service"),
        daemonset: one(o.daemonsets, "DaemonSet"),
        config: one(o.configs, "ConfigMap"),
        role: one(o.cluster_roles, "ClusterRole"),
        binding: one(o.cluster_bindings, "ClusterRoleBinding"),
        account: one(o.accounts, "ServiceAccount"),
    }
}

#[test]
fn every_manifest_round_trips_through_its_typed_object() {
    // The round trip is asserted inside; this also fails on kinds without a check.
    let all = objects(None);
    assert_eq!(all.daemonsets.len(), 1);
    assert_eq!(all.deployments.len(), 1);
    assert_eq!(all.crds.len(), 1);
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
    only_container(ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap())
}

fn only_container(pod: &PodSpec) -> &Container {
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
    pod_volume_for(
        ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap(),
        path,
    )
}

fn pod_volume_for<'a>(pod: &'a PodSpec, path: &str) -> (&'a Volume, String) {
    let mounts = only_container(pod).volume_mounts.as_ref().unwrap();
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
                && key != "metrics_addr"
                && key != "mode"
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
    // Controller mode: no credentials on the node at all (only the controller's
    // Deployment mounts qcsecret), and the agent config says so.
    assert_eq!(config["mode"], "controller");
    assert_eq!(env(c, "HOSTNIC_CREDENTIALS"), None);
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    for v in pod.volumes.as_deref().unwrap_or_default() {
        assert!(
            v.secret.is_none(),
            "the DaemonSet mounts Secret volume {}",
            v.name
        );
        assert!(
            v.projected.is_none(),
            "the DaemonSet mounts projected volume {}",
            v.name
        );
    }
    assert!(
        c.env_from.is_none()
            && c.env.as_deref().unwrap_or_default().iter().all(|e| e
                .value_from
                .as_ref()
                .is_none_or(|f| f.secret_key_ref.is_none())),
        "the agent reads no Secret through its environment"
    );
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
    // Loopback reaches a listener on 0.0.0.0 too, and never leaves the node.
    assert!(
        addr.ip().is_unspecified() || addr.ip().is_loopback(),
        "{addr}"
    );
    let c = container(&m.daemonset);
    for (probe, path) in [
        (c.readiness_probe.as_ref(), "/readyz"),
        (c.liveness_probe.as_ref(), "/healthz"),
    ] {
        let get = probe.and_then(|p| p.http_get.as_ref()).expect(path);
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(addr.port().into())
        );
    }
}

/// The metrics could not be scraped (loopback, no port, no Service); now the
/// ConfigMap binds every address, the container declares the port, the pod carries
/// scrape annotations and the Service selects the pods on it, while the
/// introspection stays on loopback (no `introspection_addr` elsewhere).
#[test]
fn the_metrics_port_is_declared_annotated_and_served_by_the_service() {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let m = manifests();
    let config = agent_config(&m);
    let addr: std::net::SocketAddr = config["metrics_addr"].as_str().unwrap().parse().unwrap();
    assert!(
        !addr.ip().is_loopback(),
        "the cluster must reach it: {addr}"
    );
    if let Some(i) = config.get("introspection_addr").and_then(Value::as_str) {
        let i: std::net::SocketAddr = i.parse().unwrap();
        assert!(i.ip().is_loopback(), "/v1/* stays on loopback: {i}");
    }
    let c = container(&m.daemonset);
    let port = c
        .ports
        .as_ref()
        .and_then(|p| p.iter().find(|p| p.name.as_deref() == Some("metrics")))
        .expect("a container port named metrics");
    assert_eq!(port.container_port, i32::from(addr.port()));
    let template = &m.daemonset.spec.as_ref().unwrap().template;
    let annotations = template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap();
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], addr.port().to_string());
    let svc = m.service.spec.as_ref().unwrap();
    let pod_labels = template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
    for (k, v) in svc.selector.as_ref().unwrap() {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "the Service selects the agents: {k}"
        );
    }
    let sp = &svc.ports.as_ref().unwrap()[0];
    assert_eq!(sp.port, i32::from(addr.port()));
    assert_eq!(sp.target_port, Some(IntOrString::String("metrics".into())));
    assert_eq!(env(c, "HOSTNIC_AGENT_URL"), Some("http://127.0.0.1:61679"));
}

fn monitoring(file: &str) -> Value {
    let text = std::fs::read_to_string(deploy_dir().join("monitoring").join(file)).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

#[test]
fn the_pod_monitor_scrapes_the_agents_metrics_port() {
    let m = manifests();
    let pm = monitoring("podmonitor.yaml");
    assert_eq!(pm["kind"], "PodMonitor");
    let template = &m.daemonset.spec.as_ref().unwrap().template;
    let labels = template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
    let wanted = pm["spec"]["selector"]["matchLabels"].as_object().unwrap();
    assert!(!wanted.is_empty());
    for (k, v) in wanted {
        assert_eq!(labels.get(k).map(String::as_str), v.as_str(), "{k}");
    }
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
    assert_eq!(
        pm["spec"]["namespaceSelector"]["matchNames"][0],
        "kube-system"
    );
}

#[test]
fn the_prometheus_rule_carries_exactly_the_rules_promtool_tests() {
    let rule = monitoring("prometheusrule.yaml");
    assert_eq!(rule["kind"], "PrometheusRule");
    let alerts = monitoring("alerts.yaml");
    assert_eq!(
        rule["spec"]["groups"], alerts["groups"],
        "deploy/monitoring/prometheusrule.yaml and alerts.yaml differ"
    );
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

/// (group, resource, verb, resource name or "*") of every grant of `rules`.
fn grants(rules: &[PolicyRule]) -> Vec<(String, String, String, String)> {
    let mut granted = Vec::new();
    for rule in rules {
        let names = rule
            .resource_names
            .clone()
            .unwrap_or_else(|| vec!["*".into()]);
        for group in rule.api_groups.as_deref().unwrap_or_default() {
            for resource in rule.resources.as_deref().unwrap_or_default() {
                for verb in &rule.verbs {
                    for name in &names {
                        granted.push((group.clone(), resource.clone(), verb.clone(), name.clone()));
                    }
                }
            }
        }
    }
    granted.sort();
    granted
}

#[test]
fn the_cluster_role_is_least_privilege() {
    let m = manifests();
    let granted: Vec<(String, String, String)> = grants(m.role.rules.as_ref().unwrap())
        .into_iter()
        .map(|(g, r, v, _)| (g, r, v))
        .collect();
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
        // Its node's HostnicNode: the request (spec), never the status.
        ("hostnic.io", "hostnicnodes", "get"),
        ("hostnic.io", "hostnicnodes", "list"),
        ("hostnic.io", "hostnicnodes", "watch"),
        ("hostnic.io", "hostnicnodes", "create"),
        ("hostnic.io", "hostnicnodes", "update"),
        ("hostnic.io", "hostnicnodes", "patch"),
    ]
    .iter()
    .map(|(g, r, v)| ((*g).into(), (*r).into(), (*v).into()))
    .collect();
    want.sort();
    assert_eq!(granted, want);
}

#[test]
fn deploy_crd_yaml_is_the_crd_generated_from_the_type() {
    let text = std::fs::read_to_string(deploy_dir().join("crd.yaml")).unwrap();
    assert_eq!(
        text,
        hostnic_k8s::crd::crd_yaml(),
        "deploy/crd.yaml is stale: cargo run -p hostnic-k8s --example crd > deploy/crd.yaml"
    );
    let crd = one(objects(Some("crd.yaml")).crds, "CRD");
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("hostnicnodes.hostnic.io")
    );
}

/// The controller's objects (deploy/controller.yaml).
fn controller() -> Objects {
    objects(Some("controller.yaml"))
}

fn controller_pod(o: &Objects) -> &PodSpec {
    o.deployments[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
}

#[test]
fn the_controller_runs_two_replicas_on_different_nodes_holding_the_credentials() {
    let o = controller();
    let deploy = &o.deployments[0];
    assert_eq!(deploy.metadata.namespace.as_deref(), Some("kube-system"));
    let spec = deploy.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = controller_pod(&o);
    let account = one(controller().accounts, "ServiceAccount");
    assert_eq!(pod.service_account_name, account.metadata.name);
    // Pods get their network from hostnic, which needs the controller first.
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.dns_policy.as_deref(), Some("Default"));
    let anti = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .expect("required anti-affinity: two replicas never share a node (host ports)");
    assert_eq!(anti[0].topology_key, "kubernetes.io/hostname");
    let c = only_container(pod);
    // The credentials: the user's qcsecret, key config.yaml, readable by its group.
    let credentials = env(c, "HOSTNIC_CREDENTIALS").expect("HOSTNIC_CREDENTIALS");
    let (volume, key) = pod_volume_for(pod, credentials);
    let secret = volume.secret.as_ref().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("qcsecret"));
    assert_eq!(key, "config.yaml");
    assert_eq!(secret.default_mode, Some(0o440));
    let security = pod.security_context.as_ref().unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.fs_group, security.run_as_group);
    assert_eq!(env(c, "HOSTNIC_BUDGET"), Some("1500/3600"));
    for (name, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let var = c.env.as_ref().unwrap().iter().find(|e| e.name == name);
        let field = var
            .and_then(|v| v.value_from.as_ref())
            .and_then(|f| f.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(field, Some(path), "{name}");
    }
    let addr: std::net::SocketAddr = env(c, "HOSTNIC_METRICS_ADDR").unwrap().parse().unwrap();
    for (probe, path) in [
        (c.readiness_probe.as_ref(), "/readyz"),
        (c.liveness_probe.as_ref(), "/healthz"),
    ] {
        let get = probe.and_then(|p| p.http_get.as_ref()).expect(path);
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(addr.port().into())
        );
    }
    assert_eq!(
        one(o.budgets.clone(), "PodDisruptionBudget")
            .spec
            .unwrap()
            .min_available,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
}

#[test]
fn the_controller_rbac_is_least_privilege() {
    let o = controller();
    let account = one(controller().accounts, "ServiceAccount")
        .metadata
        .name
        .unwrap();
    let role = one(o.cluster_roles, "ClusterRole");
    let binding = one(o.cluster_bindings, "ClusterRoleBinding");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    assert_eq!(binding.subjects.as_ref().unwrap()[0].name, account);
    let owned = |v: &[(&str, &str, &str, &str)]| -> Vec<(String, String, String, String)> {
        let mut v: Vec<_> = v
            .iter()
            .map(|(g, r, verb, n)| ((*g).into(), (*r).into(), (*verb).into(), (*n).into()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        grants(role.rules.as_ref().unwrap()),
        owned(&[
            ("hostnic.io", "hostnicnodes", "get", "*"),
            ("hostnic.io", "hostnicnodes", "list", "*"),
            ("hostnic.io", "hostnicnodes", "watch", "*"),
            ("hostnic.io", "hostnicnodes/status", "get", "*"),
            ("hostnic.io", "hostnicnodes/status", "patch", "*"),
            ("hostnic.io", "hostnicnodes/status", "update", "*"),
            ("", "nodes", "get", "*"),
            ("", "nodes", "list", "*"),
            ("", "nodes", "watch", "*"),
            ("events.k8s.io", "events", "create", "*"),
            ("events.k8s.io", "events", "patch", "*"),
        ])
    );
    let lease = one(o.roles, "Role");
    let lease_binding = one(o.bindings, "RoleBinding");
    assert_eq!(lease.metadata.namespace.as_deref(), Some("kube-system"));
    assert_eq!(
        Some(&lease_binding.role_ref.name),
        lease.metadata.name.as_ref()
    );
    assert_eq!(lease_binding.subjects.as_ref().unwrap()[0].name, account);
    assert_eq!(
        grants(lease.rules.as_ref().unwrap()),
        owned(&[
            ("coordination.k8s.io", "leases", "create", "*"),
            ("coordination.k8s.io", "leases", "get", "hostnic-controller"),
            (
                "coordination.k8s.io",
                "leases",
                "update",
                "hostnic-controller"
            ),
        ])
    );
    // Only the controller writes HostnicNode status: the agents' role never does.
    let agent = manifests();
    assert!(
        grants(agent.role.rules.as_ref().unwrap())
            .iter()
            .all(|(_, r, ..)| r != "hostnicnodes/status"),
        "the agents' role must not write HostnicNode status"
    );
}
