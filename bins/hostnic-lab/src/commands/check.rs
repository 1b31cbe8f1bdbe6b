//! `hostnic-lab check`: the connectivity matrix with real packets. Every cell
//! sends an ICMP echo and opens a TCP connection to a server in the target
//! namespace that answers with the source address it saw.
//!
//! The matrix knows NetworkPolicy: the lab's API server's policies, namespaces
//! and pods are compiled with the core's compiler (the agents enforce the same
//! model), and a flow the policies deny must be blocked. A cell whose flows are
//! denied and blocked is reported as "denied by policy", not as a failure; a
//! denied flow that passes is a failure (enforcement is broken), as is an
//! allowed flow that is blocked.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use hostnic_core::policy::{
    CompiledPolicy, Direction, NetworkPolicy, PeerMatch, PolicyNamespace, PolicyPod, Protocol,
    compile,
};
use hostnic_linux::lab::probe::{self, PeerServer};
use serde::Serialize;

use crate::apiserver::ApiServer;
use crate::labfile::{self, LabFile, PodRecord};

const PORT: u16 = 7777;

/// Options of `check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The lab directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// Print the cells as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One end of a probe.
#[derive(Debug, Clone, Serialize)]
pub struct End {
    /// Display name, e.g. `node1/default/p0` or `client`.
    pub name: String,
    /// Path of its namespace.
    pub netns: PathBuf,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// One cell of the matrix.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// What is checked, e.g. `pod→pod across nodes`.
    pub kind: &'static str,
    /// Sender.
    pub from: String,
    /// Receiver.
    pub to: String,
    /// Receiver's address.
    pub to_ip: Ipv4Addr,
    /// ICMP echo answered.
    pub icmp: bool,
    /// The source address the TCP server saw (none: no connection).
    pub seen_as: Option<Ipv4Addr>,
    /// The source address it must see.
    pub expect: Ipv4Addr,
    /// Error of the TCP probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What NetworkPolicy allows for this cell.
    pub policy: Verdict,
}

/// What the lab's NetworkPolicies allow for a cell (everything without policies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The TCP connection to the probe port.
    pub tcp: bool,
    /// The ICMP echo (only policy rules without ports allow it).
    pub icmp: bool,
}

impl Verdict {
    /// No policy: everything passes.
    pub const OPEN: Verdict = Verdict {
        tcp: true,
        icmp: true,
    };
}

impl Cell {
    /// Every flow did what the policies say: an allowed flow went through (TCP
    /// with the expected source), a denied one was blocked.
    pub fn ok(&self) -> bool {
        let tcp = if self.policy.tcp {
            self.seen_as == Some(self.expect)
        } else {
            self.seen_as.is_none()
        };
        tcp && self.icmp == self.policy.icmp
    }

    /// Some flow of the cell is denied by policy.
    pub fn denied(&self) -> bool {
        self.policy != Verdict::OPEN
    }

    /// The result column: `ok`, `denied by policy` or `FAIL …`.
    pub fn result(&self) -> String {
        match (self.ok(), self.denied()) {
            (true, false) => "ok".into(),
            (true, true) => "denied by policy".into(),
            (false, false) => "FAIL".into(),
            (false, true) => {
                if !self.policy.tcp && self.seen_as.is_some() {
                    "FAIL: passed although denied by policy".into()
                } else {
                    "FAIL (policy allows only part)".into()
                }
            }
        }
    }
}

/// The lab's NetworkPolicy model: its API server's policies, namespaces and pods,
/// compiled as the agents compile them; `None` without an API server or policies.
pub async fn policy_model(dir: &Path) -> anyhow::Result<Option<CompiledPolicy>> {
    let (_, state) = labfile::load(dir)?;
    if state.apiserver_url.is_none() {
        return Ok(None);
    }
    let api = ApiServer::of_lab(dir)?;
    let policies: Vec<NetworkPolicy> = api
        .policies()
        .await?
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .filter_map(|np| hostnic_k8s::policy::core_policy(&np))
        .collect();
    if policies.is_empty() {
        return Ok(None);
    }
    let pods: Vec<PolicyPod> = api
        .list("/api/v1/pods")
        .await?
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .filter_map(|p| hostnic_k8s::policy::policy_pod(&p))
        .collect();
    let namespaces: Vec<PolicyNamespace> = api
        .list("/api/v1/namespaces")
        .await?
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .map(|n| hostnic_k8s::policy::policy_namespace(&n))
        .collect();
    Ok(Some(compile(&pods, &namespaces, &policies)))
}

/// Whether `direction` of the pod at `pod_ip` (if it is a known pod) lets an ICMP
/// echo with `peer` pass: not isolated, or an allow without ports matching `peer`.
fn icmp_passes(c: &CompiledPolicy, direction: Direction, pod_ip: Ipv4Addr, peer: Ipv4Addr) -> bool {
    let Some(rules) = c.by_ip.get(&pod_ip).and_then(|p| c.pods.get(p)) else {
        return true;
    };
    let rules = rules.direction(direction);
    !rules.isolated
        || rules.allow.iter().any(|a| {
            a.ports.is_none()
                && match &a.peer {
                    PeerMatch::Any => true,
                    PeerMatch::Pods(id) => c.pod_sets.get(id).is_some_and(|s| s.contains(&peer)),
                    PeerMatch::Block { cidr, except } => {
                        cidr.contains(&peer) && !except.iter().any(|e| e.contains(&peer))
                    }
                    PeerMatch::Endpoints(_) => false,
                }
        })
}

/// What `model` allows from `from` to `to` (the probe port over TCP, an echo).
pub fn verdict(model: Option<&CompiledPolicy>, from: Ipv4Addr, to: Ipv4Addr) -> Verdict {
    let Some(c) = model else {
        return Verdict::OPEN;
    };
    Verdict {
        tcp: c.evaluate(from, to, PORT, Protocol::Tcp),
        icmp: icmp_passes(c, Direction::Egress, from, to)
            && icmp_passes(c, Direction::Ingress, to, from),
    }
}

/// Runs the matrix and prints it.
pub async fn exec(args: CheckArgs) -> anyhow::Result<bool> {
    let dir = labfile::lab_dir(&args.dir)?;
    let cells = run(&dir).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&cells)?);
    } else {
        print_table(&cells);
    }
    Ok(!cells.is_empty() && cells.iter().all(Cell::ok))
}

fn pod_end(p: &PodRecord) -> End {
    End {
        name: format!("{}/{}/{}", p.node, p.namespace, p.name),
        netns: p.netns.clone(),
        ip: p.ip,
    }
}

/// The cells for the lab's pods: every pod to the client (no SNAT in the VPC)
/// and to the internet (SNAT to its node), the client to every pod, and for the
/// first pod of each node: a second pod on the node, the first pod of the next
/// node (both ways), its own node and the next node.
pub fn plan(lab: &LabFile, pods: &[PodRecord]) -> Vec<(&'static str, End, End, Ipv4Addr)> {
    let client = End {
        name: "client".into(),
        netns: lab.client.netns.clone(),
        ip: lab.client.ip,
    };
    let internet = End {
        name: "internet".into(),
        netns: lab.internet.netns.clone(),
        ip: lab.internet.ip,
    };
    let node_end = |name: &str| {
        lab.nodes.iter().find(|n| n.name == name).map(|n| End {
            name: n.name.clone(),
            netns: n.netns.clone(),
            ip: n.primary_ip,
        })
    };
    let mut cells = Vec::new();
    for p in pods {
        let pe = pod_end(p);
        cells.push((
            "pod→VPC client (keeps pod IP)",
            pe.clone(),
            client.clone(),
            p.ip,
        ));
        if let Some(node) = node_end(&p.node) {
            cells.push((
                "pod→internet (SNAT to node)",
                pe.clone(),
                internet.clone(),
                node.ip,
            ));
        }
        cells.push(("client→pod", client.clone(), pe, lab.client.ip));
    }
    let firsts: Vec<&PodRecord> = lab
        .nodes
        .iter()
        .filter_map(|n| pods.iter().find(|p| p.node == n.name))
        .collect();
    for (i, a) in firsts.iter().enumerate() {
        if let Some(b) = pods.iter().find(|p| p.node == a.node && p.name != a.name) {
            cells.push(("pod→pod same node", pod_end(a), pod_end(b), a.ip));
        }
        if let Some(node) = node_end(&a.node) {
            cells.push(("pod→own node", pod_end(a), node, a.ip));
        }
        if firsts.len() > 1 {
            let b = firsts[(i + 1) % firsts.len()];
            cells.push(("pod→pod across nodes", pod_end(a), pod_end(b), a.ip));
            if let Some(node) = node_end(&b.node) {
                cells.push(("pod→other node", pod_end(a), node, a.ip));
            }
        }
    }
    cells
}

/// Runs every planned cell.
pub async fn run(dir: &Path) -> anyhow::Result<Vec<Cell>> {
    let (lab, _) = labfile::load(dir)?;
    let pods = labfile::pods(dir)?;
    let plan = plan(&lab, &pods);
    let model = policy_model(dir).await?;
    // One peer server per target namespace, alive for the whole matrix.
    let mut targets: Vec<PathBuf> = plan.iter().map(|(_, _, to, _)| to.netns.clone()).collect();
    targets.sort();
    targets.dedup();
    let mut servers = Vec::new();
    for t in &targets {
        servers.push(PeerServer::start(t, PORT)?);
    }
    let mut cells = Vec::new();
    for (kind, from, to, expect) in plan {
        let from_name = from
            .netns
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let icmp = probe::ping(&from_name, to.ip, 2).await;
        let (fns, ip) = (from.netns.clone(), to.ip);
        let tcp = tokio::task::spawn_blocking(move || {
            probe::tcp_peer(&fns, ip, PORT, Duration::from_secs(3))
        })
        .await?;
        let (seen_as, error) = match tcp {
            Ok(seen) => (Some(seen), None),
            Err(e) => (None, Some(e.to_string())),
        };
        cells.push(Cell {
            kind,
            policy: verdict(model.as_ref(), from.ip, to.ip),
            from: from.name,
            to: to.name,
            to_ip: to.ip,
            icmp,
            seen_as,
            expect,
            error,
        });
    }
    drop(servers);
    Ok(cells)
}

fn print_table(cells: &[Cell]) {
    println!(
        "{:<30} {:<24} {:<24} {:<5} {:<16} {:<16} result",
        "check", "from", "to", "icmp", "tcp seen as", "expected"
    );
    for c in cells {
        println!(
            "{:<30} {:<24} {:<24} {:<5} {:<16} {:<16} {}",
            c.kind,
            c.from,
            format!("{} {}", c.to, c.to_ip),
            match (c.icmp, c.policy.icmp) {
                (true, true) => "ok",
                (false, false) => "deny",
                _ => "FAIL",
            },
            c.seen_as.map_or("-".to_string(), |ip| ip.to_string()),
            c.expect.to_string(),
            c.result()
        );
        if let Some(e) = c.error.as_ref().filter(|_| !c.ok()) {
            println!("    {e}");
        }
    }
    let failed = cells.iter().filter(|c| !c.ok()).count();
    let denied = cells.iter().filter(|c| c.ok() && c.denied()).count();
    println!(
        "{} cells, {failed} failed, {denied} denied by policy as they should be",
        cells.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostnic_core::policy::PodRef;

    fn cell(policy: Verdict, icmp: bool, seen: bool) -> Cell {
        let ip = Ipv4Addr::new(172, 16, 1, 5);
        Cell {
            kind: "client→pod",
            from: "client".into(),
            to: "node1/prod/web".into(),
            to_ip: ip,
            icmp,
            seen_as: seen.then_some(ip),
            expect: ip,
            error: None,
            policy,
        }
    }

    #[test]
    fn a_denied_cell_that_is_blocked_is_no_failure_and_one_that_passes_is() {
        let deny = Verdict {
            tcp: false,
            icmp: false,
        };
        assert!(cell(deny, false, false).ok());
        assert_eq!(cell(deny, false, false).result(), "denied by policy");
        assert!(!cell(deny, false, true).ok(), "a denied flow passed");
        assert!(cell(deny, false, true).result().contains("although denied"));
        assert!(
            !cell(Verdict::OPEN, false, false).ok(),
            "no policy: a failure"
        );
        assert!(cell(Verdict::OPEN, true, true).ok());
    }

    #[test]
    fn the_model_denies_what_an_ingress_policy_does_not_allow() {
        let web = Ipv4Addr::new(172, 16, 1, 5);
        let client = Ipv4Addr::new(172, 16, 2, 2);
        let friend = Ipv4Addr::new(172, 16, 1, 6);
        let pod = |name: &str, ip: Ipv4Addr, app: &str| PolicyPod {
            pod: PodRef::new("prod", name),
            labels: [("app".to_string(), app.to_string())].into(),
            ip: Some(ip),
            ports: vec![],
        };
        let policy: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "prod", "name": "web"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "friend"}}}]}]}
        }))
        .unwrap();
        let c = compile(
            &[pod("web", web, "web"), pod("friend", friend, "friend")],
            &[PolicyNamespace {
                name: "prod".into(),
                labels: Default::default(),
            }],
            &[policy],
        );
        assert_eq!(
            verdict(Some(&c), client, web),
            Verdict {
                tcp: false,
                icmp: false
            }
        );
        assert_eq!(verdict(Some(&c), friend, web), Verdict::OPEN);
        assert_eq!(
            verdict(Some(&c), web, client),
            Verdict::OPEN,
            "egress is free"
        );
        assert_eq!(verdict(None, client, web), Verdict::OPEN);
    }
}
