//! `hostnicctl nics`: every NIC of the node and who holds it (`/v1/nics`).

use super::introspect::{AgentArgs, get, print_json, print_list};

/// Prints the NICs.
pub fn exec(args: AgentArgs) -> anyhow::Result<()> {
    let v = get(&args.url, "/v1/nics")?;
    if args.json {
        return print_json(&v);
    }
    print_list(
        &v,
        &[
            ("id", "NIC"),
            ("ip", "IP"),
            ("vxnet", "VXNET"),
            ("table", "TABLE"),
            ("link", "LINK"),
            ("host_ready", "HOST"),
            ("usage", "USAGE"),
            ("pod", "POD"),
        ],
    );
    Ok(())
}
