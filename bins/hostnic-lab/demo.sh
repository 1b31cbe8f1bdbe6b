#!/usr/bin/env bash
# The lab demo on a fresh Debian/Ubuntu machine with only Rust installed:
# installs the few system packages it needs, builds the three binaries the lab
# runs (hostnic-lab, hostnic-agent, the hostnic CNI plugin) and runs
# `hostnic-lab demo` (2 nodes × 6 pods, check, delete, leak checks, down).
#
#   sudo bins/hostnic-lab/demo.sh [--nodes N] [--pods-per-node M]
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ "$(id -u)" -ne 0 ]]; then
    echo "the lab creates network namespaces: run as root (sudo $0)" >&2
    exit 1
fi
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v ping >/dev/null || need+=(iputils-ping)
if ((${#need[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
cargo build --release -p hostnic-lab -p hostnic-agent -p hostnic
exec "${CARGO_TARGET_DIR:-target}/release/hostnic-lab" demo "$@"
