//! `hostnicctl pool`: the warm pool's numbers against its settings (`/v1/status`).

use hostnic_core::api::introspect::Status;

use super::introspect::{AgentArgs, get, print_json, table};

/// Prints the pool.
pub async fn exec(args: AgentArgs) -> anyhow::Result<()> {
    let s: Status = get(&args.url, "/v1/status").await?;
    let p = &s.pool;
    if args.json {
        return print_json(p);
    }
    let columns = [
        ("FREE", p.free),
        ("ASSIGNED", p.assigned),
        ("COOLING", p.cooling),
        ("PREPARING", p.preparing),
        ("RETIRING", p.retiring),
        ("CREATING", p.creating),
        ("WAITING_ADDS", p.waiting_adds),
        ("PENDING_PODS", p.pending_pods),
        ("MIN_FREE", p.min_free),
        ("MAX_FREE", p.max_free),
        ("MAX_NICS", p.max_nics),
    ];
    let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    let row: Vec<String> = columns.iter().map(|(_, v)| v.to_string()).collect();
    print!("{}", table(&headers, &[row]));
    Ok(())
}
