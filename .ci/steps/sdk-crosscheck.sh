#!/usr/bin/env bash
# Cross-checks hostnic's QingCloud signing and the simulator against the official
# Python SDK (qingcloud-sdk from PyPI) in a throwaway venv: the NIC lifecycle, a VIP
# allocation, a paged listing of more than 100 NICs, the request-quota 2500 (the
# simulator runs with the account's default quota, 2000/3600), and signatures.
# Assumes `cargo build --workspace` already ran (debug binaries).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
BIN="$TARGET/debug"
SDK_VERSION="${QINGCLOUD_SDK_VERSION:-1.2.16}"
for b in qingcloud-sim hostnicctl; do
    [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: run cargo build --workspace first" >&2; exit 1; }
done

WORK="$(mktemp -d)"
SIM_PID=""
cleanup() {
    if [ -n "$SIM_PID" ]; then kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install --quiet --disable-pip-version-check "qingcloud-sdk==$SDK_VERSION"

KEY="SIMACCESSKEY"
SECRET="sim-secret-$RANDOM$RANDOM"
QINGCLOUD_SIM_SECRET="$SECRET" "$BIN/qingcloud-sim" --listen 127.0.0.1:0 --access-key-id "$KEY" \
    --zone pek3a --job-latency-ms 100 --attach-latency-ms 200 >"$WORK/sim.out" 2>"$WORK/sim.err" &
SIM_PID=$!
for _ in $(seq 100); do
    [ -s "$WORK/sim.out" ] && break
    kill -0 "$SIM_PID" 2>/dev/null || { cat "$WORK/sim.err" >&2; exit 1; }
    sleep 0.1
done
PORT="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["listen"].rsplit(":",1)[1])' "$WORK/sim.out")"

cat >"$WORK/config.yaml" <<YAML
qy_access_key_id: '$KEY'
qy_secret_access_key: '$SECRET'
zone: 'pek3a'
host: '127.0.0.1'
port: $PORT
protocol: 'http'
uri: '/iaas'
YAML

# The Rust client and the credentials file reach the same simulator.
"$BIN/hostnicctl" cloud describe-vxnets --credentials "$WORK/config.yaml" >/dev/null

"$WORK/venv/bin/python" "$ROOT/crates/hostnic-qingcloud/tests/sdk/crosscheck.py" \
    --port "$PORT" --key "$KEY" --secret "$SECRET" --zone pek3a \
    --hostnicctl "$BIN/hostnicctl" --credentials "$WORK/config.yaml"
