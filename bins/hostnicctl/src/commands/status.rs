//! `hostnicctl status`: the node, readiness and pool summary (`/v1/status`).

use hostnic_core::api::introspect::Status;

use super::introspect::{AgentArgs, cell, get, print_json};

/// Prints the agent's status.
pub async fn exec(args: AgentArgs) -> anyhow::Result<()> {
    let s: Status = get(&args.url, "/v1/status").await?;
    if args.json {
        return print_json(&s);
    }
    let p = &s.pool;
    println!("instance:     {}", cell(&s.instance));
    println!(
        "primary:      {} ({})",
        cell(&s.primary_ip),
        cell(&s.primary_nic)
    );
    println!("pod vxnets:   {}", s.vxnets.join(", "));
    println!("ready:        {}", s.ready);
    println!("cloud ok:     {}", s.cloud_ok);
    println!("uptime:       {} s", s.uptime_secs);
    println!("pods:         {}", s.pods);
    println!(
        "NICs:         {} free, {} assigned, {} cooling, {} preparing, {} retiring, {} creating (max {})",
        p.free, p.assigned, p.cooling, p.preparing, p.retiring, p.creating, p.max_nics,
    );
    if !s.last_round_failures.is_empty() {
        println!("last pool round failures:");
        for f in &s.last_round_failures {
            println!("  - {}", cell(f));
        }
    }
    Ok(())
}
