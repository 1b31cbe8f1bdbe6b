//! `hostnicctl pool`: the warm pool's numbers against its settings (`/v1/status`).

use super::introspect::{AgentArgs, cell, get, print_json, table};

/// Prints the pool.
pub fn exec(args: AgentArgs) -> anyhow::Result<()> {
    let s = get(&args.url, "/v1/status")?;
    if args.json {
        return print_json(&s["pool"]);
    }
    let p = &s["pool"];
    let keys = [
        "free",
        "assigned",
        "cooling",
        "preparing",
        "retiring",
        "creating",
        "waiting_adds",
        "pending_pods",
        "min_free",
        "max_free",
        "max_nics",
    ];
    let headers: Vec<String> = keys.iter().map(|k| k.to_uppercase()).collect();
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let row: Vec<String> = keys.iter().map(|k| cell(&p[*k])).collect();
    print!("{}", table(&headers, &[row]));
    Ok(())
}
