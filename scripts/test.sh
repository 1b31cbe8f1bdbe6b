#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, the dependency rule, every
# test (the root-only ones too when run as root), then the extra steps in .ci/steps/.
#
#   sudo scripts/test.sh        # everything
#   scripts/test.sh             # as a normal user: root-only tests are listed as ignored
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "hostnic-core purity (cargo tree)"
scripts/check-core-purity.sh

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build"
cargo build --workspace --all-targets --locked

ignored=()
if [ "$(id -u)" -eq 0 ]; then
    ignored=(--include-ignored)
else
    echo "not root: tests that need network namespaces stay ignored (run with sudo to include them)"
fi

step "cargo test ${ignored[*]}"
cargo test --workspace --locked --no-fail-fast -- "${ignored[@]}"

if [ "$(id -u)" -eq 0 ]; then
    for s in .ci/steps/*.sh; do
        [ -e "$s" ] || continue
        step "$s"
        bash "$s"
    done
fi
step "all tests passed"
