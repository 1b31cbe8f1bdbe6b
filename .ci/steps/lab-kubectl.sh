#!/usr/bin/env bash
# kubectl against the lab: the machine's /usr/bin/kubectl talks to the lab's API
# server through the kubeconfig `hostnic-lab up` writes (and whose export line it
# prints), and gets, describes, applies, watches and deletes what the agents
# act on; the NetworkPolicy kubectl applies is enforced on real packets.
# Assumes `cargo build --workspace`. About 20 s.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../lib/lab.sh"
lab_env lab-kubectl kubernetes-client:kubectl
lab_dir lab-kubectl

fail() { echo "lab-kubectl: $*" >&2; exit 1; }
expect() { # expect WHAT PATTERN TEXT
    grep -Eq -- "$2" <<<"$3" || { printf '%s\n' "$3" >&2; fail "$1: no match for /$2/"; }
}

"$LAB" up --dir "$DIR" --nodes 2 >/dev/null 2>"$DIR/up.err"
export_line="$(grep '^export KUBECONFIG=' "$DIR/up.err")" || fail "up printed no export KUBECONFIG= line"
eval "$export_line"
[[ "$KUBECONFIG" == "$DIR/kubeconfig" ]] || fail "KUBECONFIG is $KUBECONFIG"
k() { echo "\$ kubectl $*" >&2; kubectl "$@"; }

out="$(k version -o json)"; expect "version" '"gitVersion": "v1\.33' "$out"
out="$(k api-resources)"
for r in 'pods +po +v1 +true +Pod' 'nodes +no +v1 +false +Node' 'namespaces +ns +v1 +false +Namespace' \
         'networkpolicies +netpol +networking.k8s.io/v1 +true +NetworkPolicy' 'events +ev +v1 +true +Event'; do
    expect "api-resources" "$r" "$out"
done
out="$(k get nodes)"; expect "get nodes" '^node1 ' "$out"; expect "get nodes" '^node2 ' "$out"
out="$(k get ns)"; expect "get ns" '^default ' "$out"; expect "get ns" '^kube-system ' "$out"
out="$(k describe node node1)"; expect "describe node" 'node.beta.kubernetes.io/vxnet: vxnet-sim1' "$out"

# Pods made by the lab (as kubelet makes them) are seen by kubectl.
"$LAB" ns add --dir "$DIR" shop --labels team=shop
"$LAB" pod add --dir "$DIR" --node node1 --pod shop/web --labels app=web --listen 8080 >/dev/null
"$LAB" pod add --dir "$DIR" --node node2 --pod shop/client --labels app=client >/dev/null
out="$(k get pods -A)"; expect "get pods -A" '^shop +web ' "$out"; expect "get pods -A" '^shop +client ' "$out"
web_ip="$(k get pod web -n shop -o jsonpath='{.status.podIP}')"
[[ "$web_ip" =~ ^172\.16\.1\.[0-9]+$ ]] || fail "web's podIP is '$web_ip'"
out="$(k describe pod web -n shop)"; expect "describe pod" "IP: +$web_ip" "$out"; expect "describe pod" 'Node: +node1' "$out"
client_ns="$(grep -o '"netns": "[^"]*' "$DIR/pods/node2_shop_client.json" | cut -d'"' -f4)"
reach() { nsenter --net="$client_ns" timeout 2 bash -c "exec 3<>/dev/tcp/$web_ip/8080" 2>/dev/null; }
until_() { local i; for i in $(seq 100); do "$@" && return 0; sleep 0.1; done; return 1; }
reach || fail "client cannot reach web before any policy"

# A NetworkPolicy applied with kubectl (no OpenAPI: --validate=false) is
# enforced by the agents; `get -w` sees it go; deleting it restores the flow.
cat >"$DIR/deny-web.yaml" <<YAML
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
YAML
out="$(k apply --validate=false -f "$DIR/deny-web.yaml")"; expect "apply" 'networkpolicy.networking.k8s.io/deny-web created' "$out"
blocked() { ! reach; }
until_ blocked || fail "the policy kubectl applied is not enforced within 10 s"
sed -i 's/policyTypes: \[Ingress\]/policyTypes: [Ingress, Egress]/' "$DIR/deny-web.yaml"
out="$(k apply --validate=false -f "$DIR/deny-web.yaml")"; expect "apply again" 'deny-web configured' "$out"
out="$(k get netpol deny-web -n shop -o jsonpath='{.spec.policyTypes}')"; expect "applied change" 'Egress' "$out"
out="$(k describe netpol deny-web -n shop)"; expect "describe netpol" 'PodSelector: +app=web' "$out"
k get netpol -n shop -w --output-watch-events >"$DIR/watch.out" 2>&1 &
watcher=$!
sleep 1
out="$(k delete netpol deny-web -n shop)"; expect "delete" 'networkpolicy.networking.k8s.io "deny-web" deleted' "$out"
sleep 1
kill "$watcher" 2>/dev/null || true
wait "$watcher" 2>/dev/null || true
out="$(cat "$DIR/watch.out")"; expect "get -w" '^ADDED +deny-web' "$out"; expect "get -w" '^DELETED +deny-web' "$out"
until_ reach || fail "client cannot reach web after kubectl deleted the policy"

out="$(k delete pod web -n shop)"; expect "delete pod" 'pod "web" deleted' "$out"
out="$(k get pods -n shop)"; [[ "$out" != *web* ]] || fail "web still listed: $out"
"$LAB" pod del --dir "$DIR" --node node2 --pod shop/client
"$LAB" down --dir "$DIR" >/dev/null
echo "lab-kubectl: kubectl got, described, applied, watched and deleted against the lab"
