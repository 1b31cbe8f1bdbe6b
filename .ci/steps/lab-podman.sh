#!/usr/bin/env bash
# A runtime we did not write: podman 4 (CNI backend) starts busybox containers on
# a lab node's hostnic network; each gets a VPC address on its own NIC and
# reaches the VPC client and the internet host. Assumes `cargo build --workspace`.
set -euo pipefail

BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/debug"
LAB="$BIN/hostnic-lab"
for b in hostnic-lab hostnic hostnic-agent; do
    [[ -x "$BIN/$b" ]] || { echo "lab-podman: $BIN/$b missing: run cargo build --workspace" >&2; exit 1; }
done
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
[[ -x /bin/busybox ]] || need+=(busybox-static)
[[ -x /usr/lib/cni/portmap ]] || need+=(containernetworking-plugins)
if ((${#need[@]})); then
    apt-get install -y --no-install-recommends "${need[@]}"
fi

DIR="$(mktemp -d /tmp/hostnic-lab-podman.XXXXXX)"
cleanup() {
    "$LAB" down --dir "$DIR" >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap cleanup EXIT

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
