#!/usr/bin/env bash
# The rules of the hexagon, enforced on the real dependency graph (`cargo tree`,
# normal dependencies only; dev-dependencies are free):
#
#  1. hostnic-core is the pure domain: no async runtime, netlink, nix, Kubernetes
#     client or HTTP stack.
#  2. Adapters (every crates/* except hostnic-core and hostnic-testkit) never depend
#     on each other: bins compose them.
#  3. The CNI plugin (bins/hostnic) links the core and no other workspace crate,
#     and none of the heavy stacks (runtime, netlink, Kubernetes, HTTP).
#  4. The test kit (crates/hostnic-testkit) is never a normal dependency, except of
#     hostnic-lab, which is test tooling itself (publish = false, not in the image).
#
# Each rule first proves it can fail on a dependency that really exists (a canary),
# then checks the real graph, and names the path that brings a forbidden crate in.
#
# To see it fail on a deliberately wrong dependency, add an adapter to another:
#
#   sed -i 's/^hostnic-core.workspace = true$/&\nhostnic-linux.workspace = true/' \
#       crates/hostnic-k8s/Cargo.toml
#   scripts/check-core-purity.sh    # FAIL: hostnic-k8s depends on hostnic-linux (exit 1)
#   git checkout crates/hostnic-k8s/Cargo.toml Cargo.lock
#
# (likewise `hostnic-linux.workspace = true` in bins/hostnic/Cargo.toml breaks rule 3,
# and `hostnic-testkit.workspace = true` under [dependencies] of any crate but the
# lab breaks rule 4).
set -euo pipefail
cd "$(dirname "$0")/.."

HEAVY='tokio|tokio-.*|rtnetlink|netlink-.*|kube|kube-.*|k8s-openapi|reqwest|hyper|hyper-.*'
FORBIDDEN_IN_CORE="^($HEAVY|nix)\$"
FORBIDDEN_IN_PLUGIN="^($HEAVY)\$"
status=0

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Normal dependencies of package $1, one crate name a line (read once, kept in
# $tmp). A failing `cargo tree` (a manifest that does not parse, a lock file out
# of date) fails the script: a check that cannot look must not pass.
load() {
    [ -f "$tmp/$1" ] && return
    if ! cargo tree -p "$1" -e normal --prefix none --no-dedupe >"$tmp/$1.out" 2>&1; then
        echo "cargo tree -p $1 failed:" >&2
        sed 's/^/  /' "$tmp/$1.out" >&2
        exit 2
    fi
    awk '{print $1}' "$tmp/$1.out" | sort -u >"$tmp/$1"
}
deps_of() { cat "$tmp/$1"; }

why() { # $1 package, $2 crate it links
    cargo tree -p "$1" -e normal -i "$2" 2>&1 | sed 's/^/      /' >&2 || true
}

fail() { # $1 package, $2 rule, $3 offending crates (lines)
    echo "FAIL: $1 $2:" >&2
    for crate in $3; do
        echo "  - $crate, through:" >&2
        why "$1" "$crate"
    done
    status=1
}

canary() { # $1 package, $2 regex its graph must match, $3 what it proves
    load "$1"
    if ! deps_of "$1" | grep -Eq "$2"; then
        echo "the dependency check is broken: it does not see $3" >&2
        exit 1
    fi
}

members() { # crate directories with a Cargo.toml under $1
    for d in "$1"/*/; do
        [ -f "$d/Cargo.toml" ] && basename "$d"
    done
}

all="$( (members crates; members bins) | sort -u)"
for m in $all; do load "$m"; done

# 1. The core.
canary hostnic-linux "$FORBIDDEN_IN_CORE" "tokio under hostnic-linux"
bad="$(deps_of hostnic-core | grep -E "$FORBIDDEN_IN_CORE" || true)"
[ -z "$bad" ] || fail hostnic-core "must stay free of runtimes and I/O stacks, but links" "$bad"

# 2. Adapters.
adapters="$(members crates | grep -Ev '^hostnic-(core|testkit)$')"
adapter_re="^($(echo "$adapters" | paste -sd'|'))\$"
canary hostnic-agent "$adapter_re" "the adapters under hostnic-agent"
for a in $adapters; do
    bad="$(deps_of "$a" | grep -Ev "^$a\$" | grep -E "$adapter_re" || true)"
    [ -z "$bad" ] || fail "$a" "is an adapter and must not depend on another adapter, but depends on" "$bad"
done

# 3. The CNI plugin.
workspace_re="^($(echo "$all" | paste -sd'|'))\$"
canary hostnic "^hostnic-core\$" "hostnic-core under the plugin"
bad="$(deps_of hostnic | grep -Ev '^hostnic(-core)?$' | grep -E "$workspace_re|$FORBIDDEN_IN_PLUGIN" || true)"
[ -z "$bad" ] || fail hostnic "(the CNI plugin) must link only hostnic-core, but links" "$bad"

# 4. The test kit.
if [ -d crates/hostnic-testkit ]; then
    canary hostnic-lab "^hostnic-testkit\$" "the test kit under hostnic-lab"
    for m in $(echo "$all" | grep -Ev '^hostnic-(testkit|lab)$'); do
        if deps_of "$m" | grep -q '^hostnic-testkit$'; then
            fail "$m" "must take hostnic-testkit as a dev-dependency only, but links" hostnic-testkit
        fi
    done
fi

[ "$status" -eq 0 ] || exit "$status"
echo "hexagon ok: hostnic-core links no runtime or I/O stack; adapters ($(echo $adapters)) depend on no other adapter; the CNI plugin links only hostnic-core; hostnic-testkit is a dev-dependency only (and the lab's)"
