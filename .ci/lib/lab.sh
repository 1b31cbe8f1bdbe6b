# Sourced by the lab steps of .ci/steps: `lab_env NAME [PACKAGE-CHECK...]`.
# Sets BIN (the debug binaries of `cargo build --workspace`) and LAB, fails with
# a clear message when a binary is missing, and installs what the lab needs
# (iproute2, nftables, ping) plus the extra Debian packages named as
# `package:command-or-path` when that command or file is missing.
lab_env() {
    local name="$1"; shift
    local root target
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    target="${CARGO_TARGET_DIR:-target}"
    case "$target" in /*) ;; *) target="$root/$target" ;; esac
    BIN="$target/debug"
    LAB="$BIN/hostnic-lab"
    local b
    for b in hostnic-lab hostnic hostnic-agent; do
        [[ -x "$BIN/$b" ]] || { echo "$name: $BIN/$b missing: run cargo build --workspace" >&2; exit 1; }
    done
    local need=() want pkg what
    for want in iproute2:ip nftables:nft iputils-ping:ping "$@"; do
        pkg="${want%%:*}" what="${want#*:}"
        if [[ "$what" == /* ]]; then [[ -x "$what" ]] || need+=("$pkg")
        else command -v "$what" >/dev/null || need+=("$pkg"); fi
    done
    if ((${#need[@]})); then
        apt-get install -y --no-install-recommends "${need[@]}"
    fi
}

# `lab_dir NAME`: a temporary lab directory in DIR, taken down and removed on exit.
lab_dir() {
    DIR="$(mktemp -d "/tmp/hostnic-$1.XXXXXX")"
    trap '"$LAB" down --dir "$DIR" >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT
}
