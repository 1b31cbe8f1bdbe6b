#!/usr/bin/env bash
# RunPodSandbox latency through containerd's CRI, hostnic vs ptp + host-local on
# the same containerd, in one run (tests/examples/bench_cri.rs). Root; builds
# the release binaries the lab runs, makes the CRI client's venv if missing.
#   sudo scripts/bench-cri.sh [ROUNDS]      (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-30}"
cargo build --release --locked -p hostnic -p hostnic-agent -p hostnic-lab
scripts/cri-venv.sh
cargo run --release --locked -p hostnic-e2e --example bench_cri -- "$rounds"
