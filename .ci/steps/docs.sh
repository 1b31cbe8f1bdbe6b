#!/usr/bin/env bash
# Runs, as written, every command the operator docs mark `<!-- ci: run -->`
# (docs/troubleshooting.md, docs/migrate-from-hostnic-cni.md, docs/upgrade.md,
# deploy/README.md), on a lab node set up as the DaemonSet sets one up: a private
# mount namespace where /etc, /opt, /var/lib and /run are overlays (nothing
# persists on this machine) holding /etc/hostnic/agent.yaml (the shipped
# ConfigMap's), /etc/qingcloud/instance-id, the qcsecret at
# /etc/qingcloud/qcsecret/config.yaml, and the original hostnic's
# 10-ahostnic.conflist in /etc/cni/net.d; the agent runs there with the
# DaemonSet's environment and ports (61678 for metrics, 61679 loopback for /v1/*),
# and the commands get the pod's environment (HOSTNIC_AGENT_URL,
# HOSTNIC_CREDENTIALS) and the lab's KUBECONFIG. Blocks marked `ci: skip: …`
# change a cluster and are listed with their reason. Assumes `cargo build --workspace`.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

source .ci/lib/lab.sh
lab_env docs prometheus:promtool curl:curl
lab_dir docs

docs=(docs/troubleshooting.md docs/migrate-from-hostnic-cni.md docs/upgrade.md deploy/README.md)
blocks="$DIR/blocks.jsonl"
python3 .ci/lib/doc_commands.py "${docs[@]}" >"$blocks"

"$LAB" up --dir "$DIR" --nodes 2 >"$DIR/lab.json.out"
# node2 gets the DaemonSet-style agent below instead of the lab's.
"$LAB" agent stop --dir "$DIR" --node node2 >/dev/null
read -r instance netns kubeconfig credentials < <(python3 - "$DIR/lab.json" <<'EOF'
import json, sys
lab = json.load(open(sys.argv[1]))
node = next(n for n in lab["nodes"] if n["name"] == "node2")
print(node["instance_id"], node["netns"], lab["kubeconfig"], lab["credentials"])
EOF
)
python3 - "$DIR/agent.yaml" <<'EOF'
import json, sys, yaml
for doc in yaml.safe_load_all(open("deploy/hostnic.yaml")):
    if doc and doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == "hostnic-config":
        open(sys.argv[1], "w").write(doc["data"]["agent.yaml"])
EOF

cat >"$DIR/node.sh" <<EOF
set -euo pipefail
for d in etc opt var/lib; do
    mkdir -p "$DIR/ov/\$d/upper" "$DIR/ov/\$d/work"
    mount -t overlay overlay -o "lowerdir=/\$d,upperdir=$DIR/ov/\$d/upper,workdir=$DIR/ov/\$d/work" "/\$d"
done
# /run holds the lab's namespaces: not overlaid; a tmpfs on /run/hostnic only.
mount -t tmpfs tmpfs /run/hostnic
mkdir -p /etc/hostnic /etc/qingcloud/qcsecret /etc/cni/net.d /opt/cni/bin /var/lib/hostnic
rm -f /etc/cni/net.d/*
cp "$DIR/agent.yaml" /etc/hostnic/agent.yaml
echo "$instance" >/etc/qingcloud/instance-id
cp "$credentials" /etc/qingcloud/qcsecret/config.yaml
echo '{"cniVersion":"0.3.1","name":"hostnic","plugins":[{"type":"hostnic"}]}' >/etc/cni/net.d/10-ahostnic.conflist
# The DaemonSet's environment (deploy/hostnic.yaml); the kubeconfig and the
# node's namespace are the lab's. The lab runs no controller yet, so this agent
# runs in direct mode (HOSTNIC_MODE, over the ConfigMap's mode: controller) with
# the lab's credentials, as a direct-mode DaemonSet would.
NODE_NAME=node2 HOSTNIC_NODE_NAME=node2 HOSTNIC_CLOUD=qingcloud HOSTNIC_PODS=kube HOSTNIC_MODE=direct \\
HOSTNIC_CREDENTIALS=/etc/qingcloud/qcsecret/config.yaml HOSTNIC_CONFIG=/etc/hostnic/agent.yaml \\
RUST_LOG=info HOSTNIC_KUBECONFIG="$kubeconfig" HOSTNIC_HOST_NETNS="$netns" \\
    "$BIN/hostnic-agent" >"$DIR/node2-agent.log" 2>&1 &
agent=\$!
trap 'kill \$agent 2>/dev/null || true; wait \$agent 2>/dev/null || true' EXIT
for _ in \$(seq 1 300); do
    [[ -e /etc/cni/net.d/10-hostnic.conflist ]] && break
    kill -0 \$agent 2>/dev/null || { echo "docs: the agent exited:"; tail -20 "$DIR/node2-agent.log"; exit 1; }
    sleep 0.2
done
[[ -e /etc/cni/net.d/10-hostnic.conflist ]] || { echo "docs: the agent never served"; tail -20 "$DIR/node2-agent.log"; exit 1; }
export PATH="$BIN:\$PATH" HOSTNIC_AGENT_URL=http://127.0.0.1:61679 \\
    HOSTNIC_CREDENTIALS=/etc/qingcloud/qcsecret/config.yaml KUBECONFIG="$kubeconfig"
cd "$root"
failed=0 ran=0
while IFS= read -r cmd; do
    ran=\$((ran + 1))
    printf '\n$ %s\n' "\$cmd"
    if ! bash -o pipefail -c "\$cmd"; then
        echo "docs: FAILED: \$cmd"
        failed=\$((failed + 1))
    fi
done < <(python3 -c '
import json, sys
for l in open(sys.argv[1]):
    b = json.loads(l)
    if b["run"]:
        for c in b["commands"]:
            print(c)
' "$blocks")
echo
echo "docs: \$ran commands run as written, \$failed failed"
[[ \$failed -eq 0 ]]
EOF
made_run=0
[[ -d /run/hostnic ]] || { mkdir /run/hostnic; made_run=1; }
status=0
unshare -m --propagation private bash "$DIR/node.sh" || status=$?
[[ $made_run -eq 0 ]] || rmdir /run/hostnic
[[ $status -eq 0 ]] || { echo "docs: commands failed (agent log: $DIR/node2-agent.log)" >&2; tail -30 "$DIR/node2-agent.log" >&2; exit 1; }
python3 - "$blocks" <<'EOF'
import json, sys
for l in open(sys.argv[1]):
    b = json.loads(l)
    if not b["run"]:
        print(f'not run ({b["reason"]}): {b["file"]}:{b["line"]}: {len(b["commands"])} command(s)')
EOF
echo "docs: ok"
