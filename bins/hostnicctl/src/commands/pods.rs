//! `hostnicctl pods`: the pod attachments of the node (`/v1/pods`).

use hostnic_core::api::introspect::Pod;

use super::introspect::{AgentArgs, cell, get, opt, print_json, table};

/// Prints the pods.
pub async fn exec(args: AgentArgs) -> anyhow::Result<()> {
    let pods: Vec<Pod> = get(&args.url, "/v1/pods").await?;
    if args.json {
        return print_json(&pods);
    }
    let rows: Vec<Vec<String>> = pods
        .iter()
        .map(|p| {
            vec![
                cell(&p.namespace),
                cell(&p.name),
                cell(&p.container_id),
                cell(&p.ifname),
                cell(&p.ip),
                cell(&p.nic),
                cell(p.table),
                opt(p.host_veth.as_ref()),
            ]
        })
        .collect();
    let headers = [
        "NAMESPACE",
        "NAME",
        "CONTAINER",
        "IF",
        "IP",
        "NIC",
        "TABLE",
        "VETH",
    ];
    print!("{}", table(&headers, &rows));
    Ok(())
}
