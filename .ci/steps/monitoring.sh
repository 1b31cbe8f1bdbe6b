#!/usr/bin/env bash
# deploy/monitoring holds up: promtool checks the rules and runs their unit tests
# (every alert has a test in which it fires), the PrometheusRule copy is checked by
# the manifests test, and every metric the rules and the dashboard name exists in
# a live lab agent's /metrics (a family, or a histogram's _bucket/_sum/_count).
# Assumes `cargo build --workspace`.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib/lab.sh
lab_env monitoring prometheus:promtool
lab_dir monitoring

promtool check rules deploy/monitoring/alerts.yaml
promtool test rules deploy/monitoring/alerts_test.yaml
python3 - <<'PY'
import yaml
rules = yaml.safe_load(open("deploy/monitoring/alerts.yaml"))["groups"]
alerts = {r["alert"] for g in rules for r in g["rules"]}
tests = yaml.safe_load(open("deploy/monitoring/alerts_test.yaml"))["tests"]
fired = {t["alertname"] for case in tests for t in case["alert_rule_test"] if t.get("exp_alerts")}
missing = sorted(alerts - fired)
assert not missing, f"alerts without a test in which they fire: {missing}"
print(f"monitoring: {len(alerts)} alerts, each fires in a promtool test")
PY

"$LAB" up --dir "$DIR" --nodes 1 >/dev/null
url="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nodes"][0]["metrics_url"])' "$DIR/lab.json")"
curl -sf "$url" >"$DIR/metrics.txt"
python3 - "$DIR/metrics.txt" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
families = {}
for line in text.splitlines():
    m = re.match(r"# TYPE (\S+) (\S+)", line)
    if m:
        families[m.group(1)] = m.group(2)
exported = set(families)
for name, kind in families.items():
    if kind == "histogram":
        exported |= {name + "_bucket", name + "_sum", name + "_count"}
for line in text.splitlines():
    if line and not line.startswith("#"):
        exported.add(re.split(r"[{ ]", line, 1)[0])
pattern = re.compile(r"\b((?:hostnic|process)_[a-z0-9_]+)\b")
used = {}
for path in ["deploy/monitoring/alerts.yaml", "deploy/monitoring/dashboard.json"]:
    for name in pattern.findall(open(path).read()):
        used.setdefault(name, set()).add(path)
missing = {n: sorted(p) for n, p in used.items() if n not in exported}
assert not missing, f"metrics the rules or the dashboard use that the agent does not export: {missing}"
print(f"monitoring: {len(used)} metric names used by the rules and the dashboard, all in a live agent's /metrics")
PY
"$LAB" down --dir "$DIR" >/dev/null
echo "monitoring: ok"
