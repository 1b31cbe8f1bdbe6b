#!/usr/bin/env bash
# The lab end to end, as root: `hostnic-lab demo`, then a scripted scenario
# (up, 12 pods, check, kill -9 one agent, restart it, check, NIC vanish +
# repair, delete all, leak checks, down). Assumes `cargo build --workspace`
# (debug binaries in ${CARGO_TARGET_DIR:-target}/debug). Exits non-zero on any
# failure or leak. Takes well under a minute once built.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../lib/lab.sh"
lab_env lab-demo

step() { echo; echo "=== $* ($(date -u +%T))"; }

step "demo"
"$LAB" demo --nodes 2 --pods-per-node 6

lab_dir lab-ci

step "up"
"$LAB" up --dir "$DIR" --nodes 2 >/dev/null

step "12 pods"
for i in 0 1 2 3 4 5; do
    for n in node1 node2; do
        "$LAB" pod add --dir "$DIR" --node "$n" --pod "default/p$i" >/dev/null
    done
done

step "check"
"$LAB" check --dir "$DIR"

step "kill -9 the agent of node1, restart it"
"$LAB" agent --dir "$DIR" --node node1 kill
"$LAB" agent --dir "$DIR" --node node1 start

step "check after the restart"
"$LAB" check --dir "$DIR"

# How many warm NICs node1 holds; the agent must refill after a vanish.
free_on() { "$LAB" nic list --dir "$DIR" | awk -v i="$1" '$4 == i && $5 == "free"' | wc -l; }
has_free() { test "$(free_on "$1")" -ge "$2"; }
wait_for() { # DESCRIPTION COMMAND...: retry for $WAIT_S seconds (default 30)
    local what="$1"; shift
    for _ in $(seq 1 $((${WAIT_S:-30} * 10))); do "$@" && return 0; sleep 0.1; done
    echo "lab-demo: timed out waiting for $what" >&2
    return 1
}

step "a warm NIC of node1 vanishes; the agent copes"
wait_for "a warm NIC on node1" has_free i-sim00001 1
line="$("$LAB" nic list --dir "$DIR" | awk '$4 == "i-sim00001" && $5 == "free" { print $1, $2; exit }')"
read -r victim victim_ip <<<"$line"
"$LAB" nic vanish --dir "$DIR" --nic "$victim"
if "$LAB" nic list --dir "$DIR" | grep -qi "^$victim"; then
    echo "lab-demo: $victim is still in the cloud" >&2; exit 1
fi
# The agent forgets it before it could hand it to a pod. The agent notices a
# vanished NIC in its periodic reconcile (every 3 s in the lab, 60 s by default):
# allow for one.
agent_port() { # NODE_INDEX (1-based)
    grep -o '"metrics_url": "http://127.0.0.1:[0-9]*' "$DIR/lab.json" | sed -n "${1}p" | grep -o '[0-9]*$'
}
agent_get() { # PORT PATH
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
    cat <&3
    exec 3<&-
}
agent_forgot() { ! agent_get "$1" /v1/nics | grep -qi "$2"; }
WAIT_S=30 wait_for "node1's agent to forget $victim" agent_forgot "$(agent_port 1)" "$victim"
# The pool is back at min_free (5, the agent's default) and a new pod gets a live NIC.
wait_for "node1's pool to hold 5 warm NICs" has_free i-sim00001 5
"$LAB" pod add --dir "$DIR" --node node1 --pod default/p6 >/dev/null
p6_ip="$("$LAB" nic list --dir "$DIR" | awk '$5 == "pod:default/p6" { print $2 }')"
if [[ -z "$p6_ip" || "$p6_ip" == "$victim_ip" ]]; then
    echo "lab-demo: p6 got ${p6_ip:-no NIC} (vanished: $victim_ip)" >&2
    "$LAB" nic list --dir "$DIR" >&2
    exit 1
fi

step "the NIC of pod default/p0 on node2 vanishes; DEL still succeeds, a new ADD works"
pod_nic="$("$LAB" nic list --dir "$DIR" | awk '$5 == "pod:default/p0" && $4 == "i-sim00002" { print $1; exit }')"
[[ -n "$pod_nic" ]] || { echo "lab-demo: no NIC for default/p0 on node2" >&2; exit 1; }
"$LAB" nic vanish --dir "$DIR" --nic "$pod_nic"
"$LAB" pod del --dir "$DIR" --node node2 --pod default/p0
"$LAB" pod add --dir "$DIR" --node node2 --pod default/p0 >/dev/null
WAIT_S=30 wait_for "node2's agent to forget $pod_nic" agent_forgot "$(agent_port 2)" "$pod_nic"

step "check after the vanish and repair"
"$LAB" check --dir "$DIR"

step "delete all pods"
"$LAB" pod del --dir "$DIR" --node node1 --pod default/p6
for i in 0 1 2 3 4 5; do
    for n in node1 node2; do
        "$LAB" pod del --dir "$DIR" --node "$n" --pod "default/p$i"
    done
done
# The agents may still be releasing surplus NICs (detach, then delete): let them settle.
unowned() { "$LAB" nic list --dir "$DIR" | awk '$5 == "detached" || $5 ~ /^pod:/'; }
settled() { [[ -z "$(unowned)" ]]; }
if ! wait_for "every NIC to have an owner" settled; then
    leaks="$(unowned)"
    echo "lab-demo: NICs without an owner or still held for deleted pods:" >&2
    echo "$leaks" >&2
    exit 1
fi
# No pod plumbing left on the nodes (veths other than NICs, pod rules). DEL
# removes the rules before it answers and leaves the veth pair to the kernel's
# cleanup of the sandbox namespace (or to the agent's batched reaping when the
# namespace outlives DEL): allow that a moment.
pod_plumbing() { # NODE-NETNS: prints what is left
    local extra rules
    extra="$(ip -n "$1" -o link show type veth | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -v -e '^eth0$' -e '^hn' || true)"
    rules="$(ip -n "$1" rule show | grep -E '^(512|1536):' || true)"
    echo "$extra$rules"
}
for n in $(grep -o '"netns": "/run/netns/[^"]*node[0-9]*"' "$DIR/lab.json" | grep -o 'hl-[^"]*'); do
    clean() { [[ -z "$(pod_plumbing "$n")" ]]; }
    if ! WAIT_S=15 wait_for "$n to drop the deleted pods' veths" clean; then
        echo "lab-demo: $n keeps pod plumbing: $(pod_plumbing "$n")" >&2
        exit 1
    fi
done

step "down"
"$LAB" down --dir "$DIR"
echo
echo "lab-demo: all steps held"
