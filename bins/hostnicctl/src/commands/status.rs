//! `hostnicctl status`: the node, readiness and pool summary (`/v1/status`).

use super::introspect::{AgentArgs, cell, get, print_json};

/// Prints the agent's status.
pub fn exec(args: AgentArgs) -> anyhow::Result<()> {
    let s = get(&args.url, "/v1/status")?;
    if args.json {
        return print_json(&s);
    }
    let p = &s["pool"];
    println!("instance:     {}", cell(&s["instance"]));
    println!(
        "primary:      {} ({})",
        cell(&s["primary_ip"]),
        cell(&s["primary_nic"])
    );
    let vxnets: Vec<String> = s["vxnets"]
        .as_array()
        .map(|v| v.iter().map(cell).collect())
        .unwrap_or_default();
    println!("pod vxnets:   {}", vxnets.join(", "));
    println!("ready:        {}", cell(&s["ready"]));
    println!("cloud ok:     {}", cell(&s["cloud_ok"]));
    println!("uptime:       {} s", cell(&s["uptime_secs"]));
    println!("pods:         {}", cell(&s["pods"]));
    println!(
        "NICs:         {} free, {} assigned, {} cooling, {} preparing, {} retiring, {} creating (max {})",
        cell(&p["free"]),
        cell(&p["assigned"]),
        cell(&p["cooling"]),
        cell(&p["preparing"]),
        cell(&p["retiring"]),
        cell(&p["creating"]),
        cell(&p["max_nics"]),
    );
    if let Some(failures) = s["last_round_failures"].as_array()
        && !failures.is_empty()
    {
        println!("last pool round failures:");
        for f in failures {
            println!("  - {}", cell(f));
        }
    }
    Ok(())
}
