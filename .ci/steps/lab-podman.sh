#!/usr/bin/env bash
# A runtime we did not write: podman 4 (CNI backend) starts busybox containers on
# a lab node's hostnic network; each gets a VPC address on its own NIC and
# reaches the VPC client and the internet host. Assumes `cargo build --workspace`.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../lib/lab.sh"
lab_env lab-podman podman:podman runc:runc busybox-static:/bin/busybox containernetworking-plugins:/usr/lib/cni/portmap
lab_dir lab-podman

"$LAB" up --dir "$DIR" --nodes 2 >/dev/null
for node in node1 node2; do
    out="$("$LAB" podman --dir "$DIR" --node "$node" -- ip -4 addr show eth0)"
    echo "$out"
    grep -Eq 'inet 172\.16\.1\.[0-9]+/32' <<<"$out" || { echo "lab-podman: no VPC address on $node's container" >&2; exit 1; }
    "$LAB" podman --dir "$DIR" --node "$node" -- ping -c1 -W2 172.16.2.2
    "$LAB" podman --dir "$DIR" --node "$node" -- ping -c1 -W2 198.51.100.2
done
"$LAB" down --dir "$DIR"
echo "lab-podman: containers started by podman got hostnic NICs and reached the VPC and the internet"
