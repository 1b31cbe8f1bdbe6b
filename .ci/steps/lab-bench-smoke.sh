#!/usr/bin/env bash
# A small `hostnic-lab bench` run, so the benchmark keeps working (the numbers
# of a real run come from `hostnic-lab bench --dir DIR` with the defaults).
# Assumes `cargo build --workspace`.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../lib/lab.sh"
lab_env lab-bench-smoke containernetworking-plugins:/usr/lib/cni/ptp
lab_dir lab-bench

"$LAB" up --dir "$DIR" --nodes 2 >/dev/null
"$LAB" bench --dir "$DIR" --iterations 5 --cold-pods 10 --churn 5 --json >"$DIR/bench.json"
cat "$DIR/bench.json"
# Four ADD/DEL series of 5 samples each, and a cold start that called the cloud.
[[ "$(grep -c '"n": 5' "$DIR/bench.json")" -eq 4 ]] || { echo "lab-bench-smoke: missing samples" >&2; exit 1; }
grep -Eq '"cold_start_api_calls": [1-9]' "$DIR/bench.json" || { echo "lab-bench-smoke: no API calls counted" >&2; exit 1; }
# The report and its plot, side by side in the lab directory.
cmp -s <(python3 -m json.tool "$DIR/bench.json") <(python3 -m json.tool "$DIR/bench/bench.json") || { echo "lab-bench-smoke: bench/bench.json differs from the printed report" >&2; exit 1; }
grep -q '<svg' "$DIR/bench/latency.svg" && grep -q 'hostnic ADD (n=5)' "$DIR/bench/latency.svg" || { echo "lab-bench-smoke: no latency plot" >&2; exit 1; }
"$LAB" down --dir "$DIR"
echo "lab-bench-smoke: ok"
