#!/usr/bin/env bash
# The CNI plugin's ADD and DEL end to end (process start to exit, real
# namespaces, the real agent and simulator) next to Debian's ptp + host-local,
# in one run: `hostnic-lab bench` on a 2-node lab of release builds.
#
# Usage (root): scripts/bench-cni.sh [ITERATIONS] [RUNS]   (default 60, 1)
# Each run is a fresh lab.
#
# The plugin is the static build the image ships (`crt-static`; the default
# dynamic build spends ~0.3 ms more loading libc). node1's pool is kept warm for
# the series: `ip_cooldown: 0`, `min_free: 10`, `max_free: 20` (with the lab's
# 30 s cooldown a second series within 30 s would measure cooling NICs).
# Release builds take several minutes the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

iterations="${1:-60}"
runs="${2:-1}"
if [ "$(id -u)" -ne 0 ]; then
    echo "bench-cni: needs root" >&2
    exit 1
fi
[ -x /usr/lib/cni/ptp ] || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containernetworking-plugins
}

cargo build --release -p hostnic-agent -p hostnic-lab
cargo rustc --release -p hostnic --bin hostnic -- -C target-feature=+crt-static
bin="$PWD/target/release"
dir=""
trap '[ -z "$dir" ] || { "$bin/hostnic-lab" down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"; }' EXIT

# Each run gets a fresh lab: a run's cold start leaves node2 busy with cooling
# NICs and torn-down pods, which would leak into the next run's series.
for _ in $(seq "$runs"); do
    dir="$(mktemp -d /tmp/hostnic-bench-cni.XXXXXX)"
    "$bin/hostnic-lab" up --dir "$dir" >/dev/null
    conf="$dir/nodes/node1/agent.yaml"
    grep -q '^pool:$' "$conf" || { echo "bench-cni: no pool section in $conf" >&2; exit 1; }
    sed -i 's/^pool:$/pool:\n  ip_cooldown: 0.0\n  min_free: 10\n  max_free: 20/' "$conf"
    "$bin/hostnic-lab" agent --dir "$dir" --node node1 stop >/dev/null
    "$bin/hostnic-lab" agent --dir "$dir" --node node1 start >/dev/null
    sleep 3 # the pool fills to min_free
    metrics="$(grep -o '"metrics_url": "[^"]*"' "$dir/lab.json" | head -1 | cut -d'"' -f4)"
    "$bin/hostnic-lab" bench --dir "$dir" --iterations "$iterations"
    # The agent's own share of the series (node1): hostnic_cni_request_duration_seconds.
    if command -v curl >/dev/null; then
        curl -fsS "$metrics" | awk -F'[ {}"]+' '
            /^hostnic_cni_request_duration_seconds_sum/ { sum[$3] = $NF }
            /^hostnic_cni_request_duration_seconds_count/ { n[$3] = $NF }
            END { for (v in n) if (n[v] > 0) printf "agent side, node1: %s average %.2f ms over %d requests\n", v, 1000 * sum[v] / n[v], n[v] }'
    fi
    "$bin/hostnic-lab" down --dir "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
    dir=""
done
