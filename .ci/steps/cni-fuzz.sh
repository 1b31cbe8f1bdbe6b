#!/usr/bin/env bash
# Longer fuzzing run of the hostnic CNI plugin's parsers and the agent protocol
# decoder (proptest; the default `cargo test` run uses 256 cases per property).
# Bounded: HOSTNIC_FUZZ_CASES cases per property (default 20000, ~1 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
export HOSTNIC_FUZZ_CASES="${HOSTNIC_FUZZ_CASES:-20000}"
timeout 900 cargo test -p hostnic --test fuzz -- --test-threads=2
