#!/usr/bin/env bash
# NetworkPolicy on real packets, as root: a 2-node lab whose agents watch the
# lab's API server, `hostnic-lab netpol` over the 26 upstream truth-table cases
# (crates/hostnic-core/tests/data/netpol-cases.json), a smoke-sized
# `netpol-bench`, leak checks (NICs, pod plumbing, policy chains and sets), down.
# Assumes `cargo build --workspace` (debug binaries in
# ${CARGO_TARGET_DIR:-target}/debug). Exits non-zero on any mismatch or leak.
# Takes about a minute once built (55 s on a 2-core machine).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$(dirname "${BASH_SOURCE[0]}")/../lib/lab.sh"
lab_env lab-netpol
CASES="$ROOT/crates/hostnic-core/tests/data/netpol-cases.json"
lab_dir lab-netpol

step() { echo; echo "=== $* ($(date -u +%T))"; }
started=$(date +%s)

step "up (2 nodes, agents with --pods kube against the lab's API server)"
"$LAB" up --dir "$DIR" --nodes 2 >/dev/null

step "netpol: the 26 upstream truth tables"
"$LAB" netpol --dir "$DIR" --cases "$CASES" --json "$DIR/netpol.json"
# One top-level key per case in the pretty-printed matrices.
n="$(grep -c '^  "' "$DIR/netpol.json")"
[[ "$n" -eq 26 ]] || { echo "lab-netpol: observed matrices for $n cases, not 26" >&2; exit 1; }

step "netpol-bench (smoke size)"
"$LAB" netpol-bench --dir "$DIR" --pods 6 --policies 3 --rounds 3

step "the CLI: ns add, pod add --labels --listen, apply, delete"
"$LAB" ns add --dir "$DIR" cli --labels team=a
"$LAB" pod add --dir "$DIR" --node node1 --pod cli/server --labels app=server --listen 8080 >/dev/null
"$LAB" pod add --dir "$DIR" --node node2 --pod cli/client --labels app=client >/dev/null
field() { grep -o "\"$1\": \"[^\"]*\"" "$2" | head -1 | cut -d'"' -f4; }
server_ip="$(field ip "$DIR/pods/node1_cli_server.json")"
client_ns="$(field netns "$DIR/pods/node2_cli_client.json")"
[[ -n "$server_ip" && -n "$client_ns" ]] || { echo "lab-netpol: pod records unreadable" >&2; exit 1; }
reach() { nsenter --net="$client_ns" timeout 2 bash -c "exec 3<>/dev/tcp/$server_ip/8080" 2>/dev/null; }
reach || { echo "lab-netpol: client cannot reach the server before any policy" >&2; exit 1; }
cat >"$DIR/deny.yaml" <<YAML
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-server, namespace: cli}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
YAML
"$LAB" apply --dir "$DIR" -f "$DIR/deny.yaml"
if reach; then echo "lab-netpol: the server is reachable despite deny-server" >&2; exit 1; fi
"$LAB" delete --dir "$DIR" networkpolicy cli/deny-server
reach || { echo "lab-netpol: the server stays unreachable after deny-server was deleted" >&2; exit 1; }
"$LAB" pod del --dir "$DIR" --node node1 --pod cli/server
"$LAB" pod del --dir "$DIR" --node node2 --pod cli/client

step "leaks"
"$LAB" leaks --dir "$DIR"

step "down"
"$LAB" down --dir "$DIR"
echo
echo "lab-netpol: all steps held in $(( $(date +%s) - started )) s"
