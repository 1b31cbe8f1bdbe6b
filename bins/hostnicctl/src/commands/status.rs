//! `hostnicctl status`: the node, readiness and pool summary (`/v1/status`).

use anyhow::{Context as _, bail};
use hostnic_core::api::introspect::{Startup, Status};

use super::introspect::{AgentArgs, cell, fetch, print_json};

/// Prints the agent's status; while it is starting, what holds the start up (and
/// fails, so scripts notice).
pub async fn exec(args: AgentArgs) -> anyhow::Result<()> {
    let (code, body) = fetch(&args.url, "/v1/status").await?;
    if code == 503
        && let Ok(startup) = serde_json::from_str::<Startup>(&body)
    {
        if args.json {
            print_json(&startup)?;
        } else {
            print_startup(&startup);
        }
        bail!("the agent is not serving yet");
    }
    if !(200..300).contains(&code) {
        bail!("/v1/status: HTTP {code}: {}", body.trim());
    }
    let s: Status = serde_json::from_str(&body).context("/v1/status: not the agent's document")?;
    if args.json {
        return print_json(&s);
    }
    if !s.build.version.is_empty() {
        println!(
            "version:      {} (commit {})",
            s.build.version,
            cell(&s.build.commit)
        );
    }
    if !s.mode.is_empty() {
        println!("mode:         {}", s.mode);
    }
    let p = &s.pool;
    println!("instance:     {}", cell(&s.instance));
    println!(
        "primary:      {} ({})",
        cell(&s.primary_ip),
        cell(&s.primary_nic)
    );
    println!("pod vxnets:   {}", s.vxnets.join(", "));
    // Ready as /readyz says it: the pool can serve and nothing else stands in the way.
    println!("ready:        {}", s.ready && s.not_ready.is_empty());
    println!("cloud ok:     {}", s.cloud_ok);
    println!("uptime:       {} s", s.uptime_secs);
    println!("pods:         {}", s.pods);
    println!(
        "NICs:         {} free, {} assigned, {} cooling, {} preparing, {} retiring, {} creating (max {})",
        p.free, p.assigned, p.cooling, p.preparing, p.retiring, p.creating, p.max_nics,
    );
    for why in &s.not_ready {
        println!("not ready:    {why}");
    }
    if !s.last_round_failures.is_empty() {
        println!("last pool round failures:");
        for f in &s.last_round_failures {
            println!("  - {}", cell(f));
        }
    }
    Ok(())
}

/// The start's progress and its last failure, as an operator reads it.
fn print_startup(s: &Startup) {
    println!("starting:     {} (attempt {})", s.step, s.attempts);
    println!(
        "version:      {} (commit {})",
        cell(&s.build.version),
        cell(&s.build.commit)
    );
    if let Some(e) = &s.error {
        println!("last error:   {} failed: {}", e.step, e.message);
        println!("cause:        {}", e.cause);
        println!("fix:          {}", e.fix);
        println!(
            "retry:        {}",
            match (e.permanent, s.next_attempt_in_secs) {
                (true, Some(n)) => format!("permanent; next attempt in {n} s"),
                (false, Some(n)) => format!("in {n} s"),
                (_, None) => "not retried".into(),
            }
        );
    }
    if let Some(r) = &s.restart_would_help {
        println!("restart:      {r}");
    }
}
