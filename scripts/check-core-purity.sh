#!/usr/bin/env bash
# The dependency rule, enforced: hostnic-core is the pure domain and must not link an
# async runtime, netlink, nix, a Kubernetes client or an HTTP stack. Fails loudly,
# naming the offending crates and the path that brings them in.
set -euo pipefail
cd "$(dirname "$0")/.."

FORBIDDEN='^(tokio|tokio-.*|rtnetlink|netlink-.*|nix|kube|kube-.*|k8s-openapi|reqwest|hyper|hyper-.*)$'

deps_of() {
    cargo tree --locked -p "$1" -e normal --prefix none --no-dedupe 2>/dev/null \
        | awk '{print $1}' | sort -u
}

# The check itself must be able to fail: an adapter that links tokio is caught.
if ! deps_of hostnic-linux | grep -Eq "$FORBIDDEN"; then
    echo "purity check is broken: it does not see tokio under hostnic-linux" >&2
    exit 1
fi

bad="$(deps_of hostnic-core | grep -E "$FORBIDDEN" || true)"
if [ -n "$bad" ]; then
    echo "FAIL: hostnic-core must stay free of runtimes and I/O stacks, but links:" >&2
    echo "$bad" | sed 's/^/  - /' >&2
    for crate in $bad; do
        echo "  path to $crate:" >&2
        cargo tree --locked -p hostnic-core -e normal -i "$crate" 2>&1 | sed 's/^/      /' >&2 || true
    done
    exit 1
fi
echo "hostnic-core links none of: tokio, rtnetlink/netlink-*, nix, kube, k8s-openapi, reqwest, hyper"
