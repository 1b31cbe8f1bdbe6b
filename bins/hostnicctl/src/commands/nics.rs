//! `hostnicctl nics`: every NIC of the node and who holds it (`/v1/nics`).

use hostnic_core::api::introspect::Nic;

use super::introspect::{AgentArgs, cell, get, opt, print_json, table};

/// Prints the NICs.
pub async fn exec(args: AgentArgs) -> anyhow::Result<()> {
    let nics: Vec<Nic> = get(&args.url, "/v1/nics").await?;
    if args.json {
        return print_json(&nics);
    }
    let rows: Vec<Vec<String>> = nics
        .iter()
        .map(|n| {
            vec![
                cell(&n.id),
                cell(&n.ip),
                cell(&n.vxnet),
                cell(n.table),
                cell(&n.link),
                cell(n.host_ready),
                cell(&n.usage),
                opt(n.pod.as_ref()),
            ]
        })
        .collect();
    let headers = [
        "NIC", "IP", "VXNET", "TABLE", "LINK", "HOST", "USAGE", "POD",
    ];
    print!("{}", table(&headers, &rows));
    Ok(())
}
