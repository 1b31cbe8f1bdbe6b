#!/usr/bin/env bash
# The lab as an operator uses it (issue 19 item 8, issue 20 item 8), with agents:
# lab.json names each agent's introspection URL (hostnicctl reads it) and lists a
# pid only for an agent that runs (one that exits while starting is not listed);
# `hostnicctl cluster` sees every node through the lab's API server; `check` knows
# NetworkPolicy (cells a policy denies are reported as such and pass). Assumes
# `cargo build --workspace`.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib/lab.sh
lab_env lab-ops
lab_dir lab-ops
ctl="$BIN/hostnicctl"
field() { python3 -c 'import json,sys; n=[x for x in json.load(open(sys.argv[1]))["nodes"] if x["name"]==sys.argv[2]][0]; v=n[sys.argv[3]]; print("" if v is None else v)' "$DIR/lab.json" "$1" "$2"; }
fail() { echo "lab-ops: $*" >&2; exit 1; }

"$LAB" up --dir "$DIR" --nodes 2 >/dev/null
for node in node1 node2; do
    url="$(field "$node" introspection_url)"
    [[ -n "$url" ]] || fail "lab.json has no introspection_url for $node"
    "$ctl" status --url "$url" | grep -q '^ready:        true' || fail "$node: hostnicctl status via $url"
done

# An agent that exits while starting is not listed as running.
cfg="$DIR/nodes/node2/agent.yaml"
cp "$cfg" "$cfg.good"
"$LAB" agent stop --dir "$DIR" --node node2 >/dev/null
echo "no_such_key: 1" >>"$cfg"
if "$LAB" agent start --dir "$DIR" --node node2 >/dev/null 2>&1; then fail "an agent with a bad config started"; fi
[[ -z "$(field node2 pid)" ]] || fail "lab.json lists the pid of an agent that exited: $(field node2 pid)"
mv "$cfg.good" "$cfg"
"$LAB" agent start --dir "$DIR" --node node2 >/dev/null
pid="$(field node2 pid)"
[[ -n "$pid" && -d "/proc/$pid" ]] || fail "the restarted agent is not listed"

# The cluster view through the lab's API server.
KUBECONFIG="$DIR/kubeconfig" "$ctl" cluster | tee "$DIR/cluster.txt"
[[ "$(grep -c ' exclusive  true ' "$DIR/cluster.txt")" -eq 2 ]] || fail "hostnicctl cluster does not show two ready nodes"

# check with a NetworkPolicy: web accepts only app=friend.
"$LAB" pod add --dir "$DIR" --node node1 --pod prod/web --labels app=web >/dev/null
"$LAB" pod add --dir "$DIR" --node node2 --pod prod/friend --labels app=friend >/dev/null
cat <<'YAML' | "$LAB" apply --dir "$DIR" -f - >/dev/null
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: prod, name: web-from-friends}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: friend}}}]}]
YAML
"$LAB" check --dir "$DIR" | tee "$DIR/check.txt" || fail "check failed with a NetworkPolicy in place"
grep -q 'client→pod .*node1/prod/web .*denied by policy' "$DIR/check.txt" || fail "the client→web cell is not reported as denied by policy"
grep -Eq 'cells, 0 failed, [1-9][0-9]* denied by policy' "$DIR/check.txt" || fail "no cell denied by policy"
"$LAB" down --dir "$DIR" >/dev/null
echo "lab-ops: ok"
