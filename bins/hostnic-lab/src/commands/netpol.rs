//! `hostnic-lab netpol --dir DIR --cases FILE [--json OUT] [--only ID]`: runs
//! NetworkPolicy truth-table cases (the format of `netpol-cases.json`) on real
//! packets in the lab.
//!
//! For each case: namespaces with the case's labels, labelled pods spread over
//! the nodes round robin (each listening on every TCP container port), the
//! policies (`ipBlockOfPod` resolved to the pod's IP masked to the prefix),
//! then a wait until every agent reports the last write as enforced, then a TCP
//! connect with a 1 s timeout (retried once, as upstream does) for every probe
//! and ordered pair, all in parallel. Only then is the case's expected matrix
//! read, to report mismatches; self-connections are reported, not judged.
//! Between cases, pods whose labels and ports match are kept, a label change is
//! a label patch, and only the policies that differ are written.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hostnic_core::policy::Protocol;
use hostnic_core::policy::cases::{self, TruthCase, parse_cases};
use hostnic_linux::NetNs;
use hostnic_testkit::probe;
use serde_json::{Value, json};

use super::pod::{self, PodSpec};
use crate::apiserver::{self, ApiServer, Strictness};
use crate::labfile::{self, ContainerPort, LabFile, PodRecord};

/// Options of `netpol`.
#[derive(Debug, Clone, Args)]
pub struct NetpolArgs {
    /// The lab directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// The cases (a JSON list in the format of `netpol-cases.json`).
    #[arg(long)]
    pub cases: PathBuf,
    /// Write the observed matrices here: `{"<id>": {"80/TCP": {"x/a": {"x/b": true}}}}`.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Run only these cases: an exact id or a 1-based index (repeatable; a
    /// value that is not an id is split at commas).
    #[arg(long)]
    pub only: Vec<String>,
    /// Keep the pods and policies of the last case.
    #[arg(long)]
    pub keep: bool,
    /// How long to wait for enforcement after a case's writes, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_s: u64,
}

/// One truth-table case (the core's format; `expected` is read only after probing).
pub type Case = TruthCase;

/// Observed matrices: probe → from → to → connected.
pub type Matrix = BTreeMap<String, BTreeMap<String, BTreeMap<String, bool>>>;

/// A cell where the observation differs from the expectation.
#[derive(Debug, Clone)]
pub struct Mismatch {
    /// Case id.
    pub case: String,
    /// `80/TCP`.
    pub probe: String,
    /// Source pod.
    pub from: String,
    /// Destination pod.
    pub to: String,
    /// What the case expects.
    pub expected: bool,
    /// What the packets did.
    pub observed: bool,
}

/// Loads the cases of `file`.
pub fn load_cases(file: &Path) -> anyhow::Result<Vec<Case>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    parse_cases(&text).with_context(|| format!("parse {}", file.display()))
}

/// The cases `only` selects (all when empty), in file order.
pub fn select(cases: Vec<Case>, only: &[String]) -> anyhow::Result<Vec<Case>> {
    if only.is_empty() {
        return Ok(cases);
    }
    let mut wanted = BTreeSet::new();
    for value in only {
        let items: Vec<&str> = if cases.iter().any(|c| c.id == *value) {
            vec![value.as_str()]
        } else {
            value.split(',').map(str::trim).collect()
        };
        for item in items {
            if let Some(i) = cases.iter().position(|c| c.id == item) {
                wanted.insert(i);
            } else if let Ok(n) = item.parse::<usize>()
                && (1..=cases.len()).contains(&n)
            {
                wanted.insert(n - 1);
            } else {
                bail!("no case {item:?} (give an exact id or a 1-based index)");
            }
        }
    }
    Ok(cases
        .into_iter()
        .enumerate()
        .filter(|(i, _)| wanted.contains(i))
        .map(|(_, c)| c)
        .collect())
}

/// The lab as the runner left it: which pods, namespaces and policies exist.
struct World {
    dir: PathBuf,
    lab: LabFile,
    api: ApiServer,
    /// `ns/pod` → node, fixed for the whole run.
    placement: BTreeMap<String, String>,
    /// `ns/pod` → its record.
    pods: BTreeMap<String, PodRecord>,
    /// Namespace → labels, as in the API server.
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// `ns/name` → the policy as written.
    policies: BTreeMap<String, Value>,
}

impl World {
    /// Makes the lab hold exactly the case's namespaces (labels), pods and
    /// policies; the highest resourceVersion written (0: nothing changed).
    async fn converge(&mut self, case: &Case) -> anyhow::Result<u64> {
        let mut rv = 0;
        for (ns, labels) in &case.namespaces {
            if self.namespaces.get(ns) != Some(labels) {
                let mut extra = labels.clone();
                extra.remove(apiserver::NAMESPACE_NAME_LABEL);
                rv = rv.max(self.api.put_namespace(ns, &extra).await?);
                self.namespaces.insert(ns.clone(), labels.clone());
            }
        }
        // Pods: gone ones and those whose ports changed go; new ones come; a
        // label change is a patch of the Pod object.
        let gone: Vec<String> = self
            .pods
            .iter()
            .filter(|(k, p)| {
                !case.pods.contains_key(*k) || sorted(&p.ports) != sorted(&lab_ports(case))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if let Some(p) = self.pods.remove(&key) {
                let (_, del_rv) =
                    pod::del_with(&self.dir, &p.node, &p.namespace, &p.name, None).await?;
                rv = rv.max(del_rv.unwrap_or(0));
            }
        }
        for (key, labels) in &case.pods {
            let (ns, name) = split_pod(key)?;
            if let Some(existing) = self.pods.get_mut(key) {
                if existing.labels != *labels {
                    let mut patch = serde_json::Map::new();
                    for k in existing.labels.keys().filter(|k| !labels.contains_key(*k)) {
                        patch.insert(k.clone(), Value::Null);
                    }
                    for (k, v) in labels {
                        patch.insert(k.clone(), json!(v));
                    }
                    let path = format!("{}/{}", apiserver::pods_path(ns), existing.api_name());
                    let stored = self
                        .api
                        .patch(&path, &json!({"metadata": {"labels": patch}}))
                        .await?;
                    rv = rv.max(apiserver::resource_version(&stored));
                    existing.labels = labels.clone();
                    let record = labfile::pods_dir(&self.dir).join(format!(
                        "{}_{}_{}.json",
                        existing.node, existing.namespace, existing.name
                    ));
                    labfile::write(&record, existing)?;
                }
                continue;
            }
            let node = self.placement.get(key).context("unplaced pod")?.clone();
            let spec = PodSpec {
                labels: labels.clone(),
                ports: lab_ports(case),
                wait: None,
            };
            let (record, _, _, add_rv) = pod::add_with(&self.dir, &node, ns, name, &spec)
                .await
                .with_context(|| format!("pod add {key} on {node}"))?;
            rv = rv.max(add_rv);
            self.pods.insert(key.clone(), record);
        }
        // Policies, with the pods' addresses known.
        let ips: BTreeMap<String, Ipv4Addr> =
            self.pods.iter().map(|(k, p)| (k.clone(), p.ip)).collect();
        let mut wanted = BTreeMap::new();
        for resolved in case.resolved_policies(&ips)? {
            let ns = resolved["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default");
            let name = resolved["metadata"]["name"]
                .as_str()
                .context("policy without a name")?;
            wanted.insert(format!("{ns}/{name}"), resolved);
        }
        let stale: Vec<String> = self
            .policies
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for key in stale {
            let (ns, name) = split_pod(&key)?;
            rv = rv.max(self.api.delete_policy(ns, name).await?.unwrap_or(0));
            self.policies.remove(&key);
        }
        for (key, policy) in wanted {
            if self.policies.get(&key) != Some(&policy) {
                rv = rv.max(self.api.put_policy(&policy).await?);
                self.policies.insert(key, policy);
            }
        }
        Ok(rv)
    }

    /// Deletes every pod and policy the run created.
    async fn clear(&mut self) -> anyhow::Result<()> {
        let mut errors = Vec::new();
        for (key, p) in std::mem::take(&mut self.pods) {
            if let Err(e) = pod::del(&self.dir, &p.node, &p.namespace, &p.name).await {
                errors.push(format!("pod {key}: {e:#}"));
            }
        }
        for key in std::mem::take(&mut self.policies).into_keys() {
            if let Some((ns, name)) = key.split_once('/')
                && let Err(e) = self.api.delete_policy(ns, name).await
            {
                errors.push(format!("policy {key}: {e:#}"));
            }
        }
        if !errors.is_empty() {
            bail!("cleaning up: {}", errors.join("; "));
        }
        Ok(())
    }
}

fn sorted(ports: &[ContainerPort]) -> Vec<ContainerPort> {
    let mut p = ports.to_vec();
    p.sort();
    p
}

/// The case's container ports as the lab's Pod objects declare them.
fn lab_ports(case: &Case) -> Vec<ContainerPort> {
    case.container_ports
        .iter()
        .map(|p| {
            let protocol = p.protocol.as_str();
            ContainerPort {
                name: p.name.clone().unwrap_or_else(|| {
                    format!("serve-{}-{}", p.container_port, protocol.to_lowercase())
                }),
                port: p.container_port,
                protocol: protocol.to_string(),
            }
        })
        .collect()
}

fn split_pod(key: &str) -> anyhow::Result<(&str, &str)> {
    key.split_once('/')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .with_context(|| format!("{key:?} is not NAMESPACE/NAME"))
}

/// A TCP connect from the namespace at `from` to `to:port`, `timeout` each
/// try, retried once on failure (as the upstream suite does).
fn connects(from: &Path, to: Ipv4Addr, port: u16, timeout: Duration) -> bool {
    let Ok(ns) = NetNs::open(from) else {
        return false;
    };
    let attempt = || probe::connects(&ns, SocketAddr::from((to, port)), timeout);
    attempt() || attempt()
}

/// Probes every (probe, from, to) of the case in parallel.
fn probe_all(case: &Case, pods: &BTreeMap<String, PodRecord>) -> (Matrix, Vec<String>) {
    let mut skipped = Vec::new();
    let mut jobs = Vec::new();
    for probe in &case.probes {
        if probe.protocol != Protocol::Tcp {
            skipped.push(probe.key());
            continue;
        }
        for from in case.pods.keys() {
            for to in case.pods.keys() {
                if let (Some(f), Some(t)) = (pods.get(from), pods.get(to)) {
                    jobs.push((
                        probe.key(),
                        probe.port,
                        from.clone(),
                        f.netns.clone(),
                        to.clone(),
                        t.ip,
                    ));
                }
            }
        }
    }
    let results: Vec<(String, String, String, bool)> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(key, port, from, netns, to, ip)| {
                scope.spawn(move || {
                    let ok = connects(&netns, ip, port, Duration::from_secs(1));
                    (key, from, to, ok)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut matrix = Matrix::new();
    for (key, from, to, ok) in results {
        matrix
            .entry(key)
            .or_default()
            .entry(from)
            .or_default()
            .insert(to, ok);
    }
    (matrix, skipped)
}

/// The cells of `observed` that differ from `expected` (self-connections excluded).
pub fn mismatches(
    case_id: &str,
    observed: &Matrix,
    expected: &BTreeMap<String, cases::Matrix>,
) -> Vec<Mismatch> {
    let mut out = Vec::new();
    for (probe, rows) in observed {
        for (from, cells) in rows {
            for (to, seen) in cells {
                if from == to {
                    continue;
                }
                let want = expected
                    .get(probe)
                    .and_then(|m| m.get(from))
                    .and_then(|row| row.get(to))
                    .copied();
                if want != Some(*seen) {
                    out.push(Mismatch {
                        case: case_id.to_owned(),
                        probe: probe.clone(),
                        from: from.clone(),
                        to: to.clone(),
                        expected: want.unwrap_or(!*seen),
                        observed: *seen,
                    });
                }
            }
        }
    }
    out
}

/// Runs the cases; true when no cell mismatched.
pub async fn exec(args: NetpolArgs) -> anyhow::Result<bool> {
    let dir = labfile::lab_dir(&args.dir)?;
    let (lab, _) = labfile::load(&dir)?;
    if lab.nodes.is_empty() || lab.nodes.iter().any(|n| n.pid.is_none()) {
        bail!("netpol needs a lab whose nodes all run an agent");
    }
    let api = ApiServer::of_lab(&dir)?;
    let cases = select(load_cases(&args.cases)?, &args.only)?;
    let started = Instant::now();

    // Round robin over the nodes, by first appearance, fixed for the run.
    let mut placement = BTreeMap::new();
    for case in &cases {
        for key in case.pods.keys() {
            if !placement.contains_key(key) {
                let node = &lab.nodes[placement.len() % lab.nodes.len()].name;
                placement.insert(key.clone(), node.clone());
            }
        }
    }
    // Start from a clean slate in the cases' namespaces: the runner's own pods
    // from an earlier `--keep` run are reused, policies are removed.
    let case_namespaces: BTreeSet<String> = cases
        .iter()
        .flat_map(|c| c.namespaces.keys().cloned())
        .collect();
    let mut pods = BTreeMap::new();
    for p in labfile::pods(&dir)? {
        let key = format!("{}/{}", p.namespace, p.name);
        if placement.contains_key(&key) && !pods.contains_key(&key) {
            pods.insert(key, p);
        }
    }
    let mut rv0 = 0;
    for p in api.policies().await? {
        let ns = p["metadata"]["namespace"].as_str().unwrap_or_default();
        if case_namespaces.contains(ns)
            && let Some(name) = p["metadata"]["name"].as_str()
        {
            rv0 = rv0.max(api.delete_policy(ns, name).await?.unwrap_or(0));
        }
    }
    let mut namespaces = BTreeMap::new();
    for ns in &case_namespaces {
        if let Some(obj) = api.get(&format!("/api/v1/namespaces/{ns}")).await? {
            let labels: BTreeMap<String, String> =
                serde_json::from_value(obj["metadata"]["labels"].clone()).unwrap_or_default();
            namespaces.insert(ns.clone(), labels);
        }
    }
    let mut world = World {
        dir: dir.clone(),
        lab: lab.clone(),
        api,
        placement,
        pods,
        namespaces,
        policies: BTreeMap::new(),
    };

    let timeout = Duration::from_secs(args.timeout_s);
    let mut observed_all: BTreeMap<String, Matrix> = BTreeMap::new();
    let mut all_mismatches = Vec::new();
    let mut self_cells = Vec::new();
    let mut last_rv = rv0;
    for (i, case) in cases.iter().enumerate() {
        let t = Instant::now();
        let rv = world
            .converge(case)
            .await
            .with_context(|| format!("case {}: {}", i + 1, case.id))?;
        last_rv = last_rv.max(rv);
        let setup = t.elapsed();
        let enforce = apiserver::wait_enforced(&world.lab, last_rv, timeout, Strictness::Strict)
            .await
            .with_context(|| format!("case {}: {}", i + 1, case.id))?;
        let t = Instant::now();
        let (matrix, skipped) = {
            let (case, pods) = (case.clone(), world.pods.clone());
            tokio::task::spawn_blocking(move || probe_all(&case, &pods)).await?
        };
        let probing = t.elapsed();
        // Only now is the expectation read.
        let found = mismatches(&case.id, &matrix, &case.expected);
        for (probe, rows) in &matrix {
            for (from, cells) in rows {
                if let Some(seen) = cells.get(from) {
                    self_cells.push(format!(
                        "{probe} {from}→{from}: {}",
                        if *seen { "connected" } else { "refused" }
                    ));
                }
            }
        }
        let cells: usize = matrix
            .values()
            .flat_map(|r| r.values())
            .map(BTreeMap::len)
            .sum();
        println!(
            "[{:>2}/{}] {} — {cells} cells, {} mismatches (setup {:.1} s, enforced in {} ms, probes {:.1} s){}",
            i + 1,
            cases.len(),
            case.id,
            found.len(),
            setup.as_secs_f64(),
            enforce.as_millis(),
            probing.as_secs_f64(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!("; skipped non-TCP probes {}", skipped.join(", "))
            }
        );
        all_mismatches.extend(found);
        observed_all.insert(case.id.clone(), matrix);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&observed_all)? + "\n")
            .with_context(|| format!("write {}", path.display()))?;
    }
    if !args.keep {
        world.clear().await?;
    }
    println!();
    println!(
        "self-connections (reported, not judged): {}",
        self_cells.len()
    );
    if all_mismatches.is_empty() {
        println!(
            "netpol: {} cases, 0 mismatches ({:.1} s)",
            cases.len(),
            started.elapsed().as_secs_f64()
        );
        return Ok(true);
    }
    println!(
        "{:<8} {:<10} {:<10} {:<9} {:<9} case",
        "probe", "from", "to", "expected", "observed"
    );
    for m in &all_mismatches {
        println!(
            "{:<8} {:<10} {:<10} {:<9} {:<9} {}",
            m.probe, m.from, m.to, m.expected, m.observed, m.case
        );
    }
    let failed: BTreeSet<&str> = all_mismatches.iter().map(|m| m.case.as_str()).collect();
    println!(
        "netpol: {} cases, {} mismatches in {} cases ({:.1} s)",
        cases.len(),
        all_mismatches.len(),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_connections_are_not_judged_and_missing_cells_are() {
        let mut m = Matrix::new();
        let row = m.entry("80/TCP".into()).or_default();
        row.entry("x/a".into())
            .or_default()
            .insert("x/a".into(), true);
        row.entry("x/a".into())
            .or_default()
            .insert("x/b".into(), true);
        let expected =
            serde_json::from_value(json!({"80/TCP": {"x/a": {"x/a": false, "x/b": false}}}))
                .unwrap();
        let found = mismatches("c", &m, &expected);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].to.as_str(), found[0].observed), ("x/b", true));
        assert_eq!(mismatches("c", &m, &BTreeMap::new()).len(), 1);
    }

    #[test]
    fn only_takes_ids_with_commas_and_indices() {
        let case = |id: &str| Case {
            id: id.into(),
            name: String::new(),
            namespaces: BTreeMap::new(),
            pods: BTreeMap::new(),
            container_ports: vec![],
            policies: vec![],
            probes: vec![],
            expected: BTreeMap::new(),
        };
        let cases = vec![case("a, with comma"), case("b"), case("c")];
        let ids = |v: &[&str]| -> Vec<String> {
            select(
                cases.clone(),
                &v.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect()
        };
        assert_eq!(ids(&["a, with comma"]), ["a, with comma"]);
        assert_eq!(ids(&["3,b"]), ["b", "c"]);
        assert_eq!(ids(&[]).len(), 3);
        assert!(select(cases.clone(), &["nope".to_string()]).is_err());
    }

    #[test]
    fn the_shared_cases_load() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../crates/hostnic-core/tests/data/netpol-cases.json");
        let cases = load_cases(&file).unwrap();
        assert_eq!(cases.len(), 26);
        assert!(
            cases
                .iter()
                .all(|c| !c.pods.is_empty() && !c.probes.is_empty())
        );
    }
}
