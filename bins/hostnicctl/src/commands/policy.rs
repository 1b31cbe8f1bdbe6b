//! `hostnicctl policy [NAMESPACE/NAME]`: NetworkPolicy enforcement on the node
//! (`/v1/policy`), or one pod's effective allow sets
//! (`/v1/policy/pods/{namespace}/{name}`).

use hostnic_core::api::introspect::{PodPolicy, PolicyStatus};

use super::introspect::{AgentArgs, cell, get, opt, print_json, table};

/// Arguments of `hostnicctl policy`.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// A pod as `namespace/name`; without it, the node's enforcement status.
    pub pod: Option<String>,
    /// Where the agent is, and `--json`.
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// Prints the status or the pod's allow sets.
pub async fn exec(args: PolicyArgs) -> anyhow::Result<()> {
    let Some(pod) = &args.pod else {
        let s: PolicyStatus = get(&args.agent.url, "/v1/policy").await?;
        if args.agent.json {
            return print_json(&s);
        }
        print!("{}", status(&s));
        return Ok(());
    };
    let (ns, name) = pod
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .ok_or_else(|| anyhow::anyhow!("expected NAMESPACE/NAME, got {pod:?}"))?;
    let doc: PodPolicy = get(&args.agent.url, &format!("/v1/policy/pods/{ns}/{name}")).await?;
    if args.agent.json {
        return print_json(&doc);
    }
    print!("{}", pod_policy(&doc));
    Ok(())
}

/// The `/v1/policy` document as lines of text.
fn status(s: &PolicyStatus) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<26}{v}\n"));
    line("enabled:", s.enabled.to_string());
    line("source synced:", s.source_synced.to_string());
    line(
        "cluster:",
        format!(
            "{} policies, {} namespaces, {} pods",
            s.policies, s.namespaces, s.cluster_pods
        ),
    );
    line(
        "local pods enforced:",
        format!("{} ({} isolated)", s.local_pods, s.isolated_local_pods),
    );
    line(
        "programmed:",
        format!("{} rules, {} set elements", s.rules, s.set_elements),
    );
    line(
        "resource version:",
        format!(
            "{} synced of {} seen",
            s.synced_resource_version, s.source_resource_version
        ),
    );
    line("syncs:", format!("{} ({} failed)", s.syncs, s.sync_errors));
    if let Some(ms) = s.last_sync_duration_ms {
        line("last sync:", format!("{ms:.2} ms"));
    }
    if let Some(l) = &s.last_sync {
        line(
            "last sync changed:",
            format!(
                "{} commands, +{}/-{} elements, {} chains written, {} deleted",
                l.commands,
                l.elements_added,
                l.elements_removed,
                l.chains_written,
                l.chains_deleted
            ),
        );
    }
    if let Some(e) = &s.last_error {
        line("last error:", cell(e));
    }
    out
}

/// A pod's effective policy as a header and one table row per allow.
fn pod_policy(doc: &PodPolicy) -> String {
    let policies = if doc.policies.is_empty() {
        "-".to_string()
    } else {
        doc.policies.join(", ")
    };
    let mut out = format!(
        "pod:      {}\nip:       {}\npolicies: {policies}\n",
        cell(&doc.pod),
        opt(doc.ip.as_ref())
    );
    let mut rows = Vec::new();
    for (direction, d) in [("ingress", &doc.ingress), ("egress", &doc.egress)] {
        let row = |peer: &str, addresses: String, ports: String| {
            vec![direction.to_string(), peer.to_string(), addresses, ports]
        };
        if !d.isolated {
            rows.push(row("everything (not isolated)", "-".into(), "-".into()));
            continue;
        }
        if d.allow.is_empty() {
            rows.push(row("nothing (isolated)", "-".into(), "-".into()));
        }
        let list = |items: &[String], empty: &str| {
            if items.is_empty() {
                empty.to_string()
            } else {
                items.join(", ")
            }
        };
        for a in &d.allow {
            rows.push(row(
                &cell(&a.peer),
                list(&a.addresses, "-"),
                list(&a.ports, "all"),
            ));
        }
    }
    out.push_str(&table(&["DIRECTION", "PEER", "ADDRESSES", "PORTS"], &rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_isolated_pod_lists_its_allows_and_a_free_direction_says_so() {
        let doc = serde_json::json!({
            "pod": "x/b", "ip": "10.0.0.2", "policies": ["x/allow-a"],
            "ingress": {"isolated": true, "allow": [
                {"peer": "pods", "addresses": ["10.0.0.1 (x/a)"], "ports": ["TCP/80"]}
            ]},
            "egress": {"isolated": false, "allow": []},
        });
        let text = pod_policy(&serde_json::from_value(doc).unwrap());
        assert!(text.contains("policies: x/allow-a\n"), "{text}");
        assert!(
            text.contains("ingress    pods                       10.0.0.1 (x/a)  TCP/80"),
            "{text}"
        );
        assert!(
            text.contains("egress     everything (not isolated)"),
            "{text}"
        );
    }
}
