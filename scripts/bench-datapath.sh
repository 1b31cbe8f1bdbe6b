#!/usr/bin/env bash
# Pod plumb + unplumb benchmark of hostnic-linux in real network namespaces,
# side by side with Debian's reference ptp + host-local CNI plugins.
# Needs root. Builds the bench in the bench (optimised) profile (~2-3 min on 2
# cores the first time), then runs 50 iterations (~5 s).
# Fails when the benchmark cannot run; with HOSTNIC_BENCH_ENFORCE=1 (default
# here) also when the targets are missed: ADD median <= 6 ms and <= 0.35x ptp.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "bench-datapath: needs root" >&2
    exit 1
fi
need=()
command -v ip >/dev/null || need+=(iproute2)
[ -x /usr/lib/cni/ptp ] || need+=(containernetworking-plugins)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

export HOSTNIC_BENCH_ENFORCE="${HOSTNIC_BENCH_ENFORCE:-1}"
export HOSTNIC_BENCH_ITERS="${HOSTNIC_BENCH_ITERS:-50}"
cargo bench -p hostnic-linux --bench plumb
