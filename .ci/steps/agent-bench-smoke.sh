#!/usr/bin/env bash
# hostnic-agent: run the agent benchmark once in the dev profile (--quick), so the
# bench keeps compiling and working. Prints the ADD-path latency, the cold start of
# 40 pods (1 s attach latency, simulator) and API calls per pod under churn.
# Numbers from a debug build are not the benchmark's; see bins/hostnic-agent/README.md.
# Needs no root. Assumes `cargo build --workspace` ran. Takes ~20 s after compiling.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo bench -p hostnic-agent --bench agent --profile dev -- --quick
