//! `hostnicctl pods`: the pod attachments of the node (`/v1/pods`).

use super::introspect::{AgentArgs, get, print_json, print_list};

/// Prints the pods.
pub fn exec(args: AgentArgs) -> anyhow::Result<()> {
    let v = get(&args.url, "/v1/pods")?;
    if args.json {
        return print_json(&v);
    }
    print_list(
        &v,
        &[
            ("namespace", "NAMESPACE"),
            ("name", "NAME"),
            ("container_id", "CONTAINER"),
            ("ifname", "IF"),
            ("ip", "IP"),
            ("nic", "NIC"),
            ("table", "TABLE"),
            ("host_veth", "VETH"),
        ],
    );
    Ok(())
}
