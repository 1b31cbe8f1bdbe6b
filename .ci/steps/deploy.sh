#!/usr/bin/env bash
# The install as users get it: `kubectl kustomize deploy/` renders the base (the
# machine's kubectl has kustomize built in), `images:` sets the image, and the
# conflist the agent would write from the rendered ConfigMap is cniVersion 1.0.0
# (what containerd 1.6/1.7 and podman 4 accept). The CRI suite (tests/cri.rs)
# runs on lab agents configured with the same ConfigMap (hostnic-lab serve.rs).
# Assumes `cargo build --workspace`.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
agent="$target/debug/hostnic-agent"
[[ -x "$agent" ]] || { echo "deploy: $agent missing: run cargo build --workspace" >&2; exit 1; }
command -v kubectl >/dev/null || { echo "deploy: kubectl missing" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

kubectl kustomize deploy/ >"$tmp/rendered.yaml"
kubectl kustomize deploy/monitoring >"$tmp/monitoring.yaml"
python3 - "$tmp" <<'PY'
import sys, yaml
tmp = sys.argv[1]
docs = [d for d in yaml.safe_load_all(open(f"{tmp}/rendered.yaml")) if d]
kinds = sorted(d["kind"] for d in docs)
want = sorted(["ClusterRole", "ClusterRole", "ClusterRoleBinding", "ClusterRoleBinding",
               "ConfigMap", "CustomResourceDefinition", "DaemonSet", "Deployment",
               "PodDisruptionBudget", "Role", "RoleBinding", "Service", "ServiceAccount",
               "ServiceAccount"])
assert kinds == want, f"rendered kinds {kinds}, want {want}"
k = yaml.safe_load(open("deploy/kustomization.yaml"))["images"][0]
for kind in ("DaemonSet", "Deployment"):
    w = next(d for d in docs if d["kind"] == kind)
    image = w["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f'{k["newName"]}:{k["newTag"]}', f"{kind} image {image} is not images: {k}"
# Controller mode: only the controller's Deployment mounts the credentials.
def secrets(w):
    return [v for v in w["spec"]["template"]["spec"].get("volumes", []) if "secret" in v]
ds = next(d for d in docs if d["kind"] == "DaemonSet")
assert not secrets(ds), f"the agents mount {secrets(ds)}"
assert secrets(next(d for d in docs if d["kind"] == "Deployment")), "the controller mounts qcsecret"
cm = next(d for d in docs if d["kind"] == "ConfigMap")
open(f"{tmp}/agent.yaml", "w").write(cm["data"]["agent.yaml"])
mon = sorted(d["kind"] for d in yaml.safe_load_all(open(f"{tmp}/monitoring.yaml")) if d)
assert mon == ["ConfigMap", "PodMonitor", "PrometheusRule"], mon
print(f"deploy: rendered {len(docs)} objects, image {image}")
PY
# With and without portmap in cni_bin_dir.
mkdir -p "$tmp/bin"
"$agent" --config "$tmp/agent.yaml" --cni-bin-dir "$tmp/bin" --print-conflist 2>/dev/null >"$tmp/conflist.json"
cp /usr/lib/cni/portmap "$tmp/bin/portmap" 2>/dev/null || touch "$tmp/bin/portmap"
"$agent" --config "$tmp/agent.yaml" --cni-bin-dir "$tmp/bin" --print-conflist 2>/dev/null >"$tmp/conflist-portmap.json"
python3 - "$tmp" <<'PY'
import json, sys
tmp = sys.argv[1]
plain = json.load(open(f"{tmp}/conflist.json"))
with_portmap = json.load(open(f"{tmp}/conflist-portmap.json"))
for c in (plain, with_portmap):
    assert c["cniVersion"] == "1.0.0", f"the shipped ConfigMap writes cniVersion {c['cniVersion']}"
assert [p["type"] for p in plain["plugins"]] == ["hostnic"], plain
assert [p["type"] for p in with_portmap["plugins"]] == ["hostnic", "portmap"], with_portmap
print("deploy: the shipped ConfigMap's conflist is cniVersion 1.0.0; portmap chained only when present")
PY
echo "deploy: ok"
