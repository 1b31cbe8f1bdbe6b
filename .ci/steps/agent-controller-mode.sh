#!/usr/bin/env bash
# The real agent binary in controller mode (issue 15 item 4), as root in its own
# network namespace: a primary link with the default route, the fake API server
# (process) with deploy/crd.yaml and the node's Node, and the agent with a
# credentials path that does not exist (it must read none). Checks: the agent
# creates its HostnicNode owned by its Node asking for its warm pool; a status
# naming one attached NIC (whose link exists in the namespace) makes it prepare
# the NIC on the host (its table's default route through it) and be ready
# (its conflist written); the request is not
# written again at rest. The controller itself is tested in-process
# (bins/hostnic-controller/tests/agents.rs). Assumes `cargo build --workspace`.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
BIN="$target/debug"
for b in hostnic-agent hostnic-fake-apiserver; do
    [[ -x "$BIN/$b" ]] || { echo "agent-controller-mode: $BIN/$b missing: run cargo build --workspace" >&2; exit 1; }
done
command -v kubectl >/dev/null || { echo "agent-controller-mode: kubectl missing" >&2; exit 1; }
W="$(mktemp -d /tmp/hostnic-ctlmode.XXXXXX)"
NS="hnctl$$"
API="" AGENT=""
cleanup() {
    for p in $AGENT $API; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add prim0 address 52:54:99:00:00:01 type veth peer name prim0p
ip -n "$NS" addr add 10.77.0.10/24 dev prim0
ip -n "$NS" link set prim0 up
ip -n "$NS" link set prim0p up
ip -n "$NS" route add default via 10.77.0.1 dev prim0
ip -n "$NS" link add eth1 address 52:54:99:00:00:11 type veth peer name eth1p

"$BIN/hostnic-fake-apiserver" --kubeconfig "$W/kubeconfig" --node node-x >"$W/api.out" 2>&1 &
API=$!
for _ in $(seq 100); do [[ -s "$W/kubeconfig" ]] && break; sleep 0.1; done
export KUBECONFIG="$W/kubeconfig"
kubectl apply --validate=false -f deploy/crd.yaml >/dev/null
"$BIN/hostnic-agent" --mode controller --node-name node-x --instance-id i-ctlmode --pods none \
    --kubeconfig "$W/kubeconfig" --host-netns "/run/netns/$NS" --socket "$W/sock" \
    --state-dir "$W/state" --cni-conf-dir "$W/net.d" --cni-bin-dir "$W/bin" \
    --metrics-addr 127.0.0.1:0 --credentials "$W/no-such-credentials.yaml" >"$W/agent.log" 2>&1 &
AGENT=$!
fail() { echo "agent-controller-mode: $*" >&2; tail -20 "$W/agent.log" >&2; exit 1; }
for _ in $(seq 150); do kubectl get hostnicnodes node-x >/dev/null 2>&1 && break; sleep 0.1; done
kubectl get hostnicnodes node-x -o json >"$W/hnn.json" || fail "no HostnicNode written"
python3 - "$W/hnn.json" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
s = o["spec"]
assert s["instanceId"] == "i-ctlmode" and s["wantNics"] == 5 and s["maxNics"] == 62, s
own = o["metadata"]["ownerReferences"]
assert len(own) == 1 and own[0]["kind"] == "Node" and own[0]["name"] == "node-x", own
print(f"agent-controller-mode: HostnicNode node-x owned by its Node, spec {s}")
PY
# The controller's answer: one NIC attached.
python3 - "$W/hnn.json" >"$W/status.json" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
o["status"] = {"nics": [{"id": "52:54:99:00:00:11", "ip": "10.77.1.5", "vxnet": "vxnet-p",
                         "cidr": "10.77.1.0/24", "gateway": "10.77.1.1", "phase": "Attached"}],
               "attached": 1, "room": 61, "conditions": []}
print(json.dumps(o))
PY
kubectl replace --validate=false --subresource=status -f "$W/status.json" >/dev/null
# Prepared on the host: the NIC's own routing table (table_base 1000) through eth1.
prepared() { ip -n "$NS" route show table all | grep -q "10.77.1.1 dev eth1"; }
for _ in $(seq 150); do prepared && break; sleep 0.1; done
prepared || fail "the supplied NIC was never prepared"
[[ -e "$W/net.d/10-hostnic.conflist" ]] || fail "no conflist: the agent is not ready"
sleep 4  # more than the agent's write interval (3 s)
gen="$(kubectl get hostnicnodes node-x -o jsonpath='{.metadata.generation}')"
[[ "$gen" == 1 ]] || fail "the request was written again at rest (generation $gen)"
grep -q "no credentials on this node" "$W/agent.log" || fail "no controller-mode line in the log"
kill -0 "$AGENT" || fail "the agent exited"
echo "agent-controller-mode: ok (no credentials file, the supplied NIC prepared, ready, no write at rest)"
