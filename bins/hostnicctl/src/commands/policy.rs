//! `hostnicctl policy [NAMESPACE/NAME]`: NetworkPolicy enforcement on the node
//! (`/v1/policy`), or one pod's effective allow sets
//! (`/v1/policy/pods/{namespace}/{name}`).

use serde_json::Value;

use super::introspect::{AgentArgs, cell, get, print_json, table};

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
pub fn exec(args: PolicyArgs) -> anyhow::Result<()> {
    let Some(pod) = &args.pod else {
        let s = get(&args.agent.url, "/v1/policy")?;
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
    let doc = get(&args.agent.url, &format!("/v1/policy/pods/{ns}/{name}"))?;
    if args.agent.json {
        return print_json(&doc);
    }
    print!("{}", pod_policy(&doc));
    Ok(())
}

/// The `/v1/policy` document as lines of text.
fn status(s: &Value) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<26}{v}\n"));
    line("enabled:", cell(&s["enabled"]));
    line("source synced:", cell(&s["source_synced"]));
    line(
        "cluster:",
        format!(
            "{} policies, {} namespaces, {} pods",
            cell(&s["policies"]),
            cell(&s["namespaces"]),
            cell(&s["cluster_pods"])
        ),
    );
    line(
        "local pods enforced:",
        format!(
            "{} ({} isolated)",
            cell(&s["local_pods"]),
            cell(&s["isolated_local_pods"])
        ),
    );
    line(
        "programmed:",
        format!(
            "{} rules, {} set elements",
            cell(&s["rules"]),
            cell(&s["set_elements"])
        ),
    );
    line(
        "resource version:",
        format!(
            "{} synced of {} seen",
            cell(&s["synced_resource_version"]),
            cell(&s["source_resource_version"])
        ),
    );
    line(
        "syncs:",
        format!("{} ({} failed)", cell(&s["syncs"]), cell(&s["sync_errors"])),
    );
    if let Some(ms) = s["last_sync_duration_ms"].as_f64() {
        line("last sync:", format!("{ms:.2} ms"));
    }
    let l = &s["last_sync"];
    if l.is_object() {
        line(
            "last sync changed:",
            format!(
                "{} commands, +{}/-{} elements, {} chains written, {} deleted",
                cell(&l["commands"]),
                cell(&l["elements_added"]),
                cell(&l["elements_removed"]),
                cell(&l["chains_written"]),
                cell(&l["chains_deleted"])
            ),
        );
    }
    if !s["last_error"].is_null() {
        line("last error:", cell(&s["last_error"]));
    }
    out
}

/// A pod's effective policy as a header and one table row per allow.
fn pod_policy(doc: &Value) -> String {
    let mut out = format!(
        "pod:      {}\nip:       {}\n",
        cell(&doc["pod"]),
        cell(&doc["ip"])
    );
    let policies: Vec<String> = doc["policies"]
        .as_array()
        .map(|p| p.iter().map(cell).collect())
        .unwrap_or_default();
    let policies = if policies.is_empty() {
        "-".to_string()
    } else {
        policies.join(", ")
    };
    out.push_str(&format!("policies: {policies}\n"));
    let mut rows = Vec::new();
    for direction in ["ingress", "egress"] {
        let d = &doc[direction];
        if d["isolated"] != Value::Bool(true) {
            rows.push(vec![
                direction.to_string(),
                "everything (not isolated)".into(),
                "-".into(),
                "-".into(),
            ]);
            continue;
        }
        let allows = d["allow"].as_array().cloned().unwrap_or_default();
        if allows.is_empty() {
            rows.push(vec![
                direction.to_string(),
                "nothing (isolated)".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for a in allows {
            let list = |k: &str, empty: &str| {
                let items: Vec<String> = a[k]
                    .as_array()
                    .map(|v| v.iter().map(cell).collect())
                    .unwrap_or_default();
                if items.is_empty() {
                    empty.to_string()
                } else {
                    items.join(", ")
                }
            };
            rows.push(vec![
                direction.to_string(),
                cell(&a["peer"]),
                list("addresses", "-"),
                list("ports", "all"),
            ]);
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
        let text = pod_policy(&doc);
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
