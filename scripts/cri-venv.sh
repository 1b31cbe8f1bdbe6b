#!/usr/bin/env bash
# The CRI client of the end-to-end suite (tests/cri/cri_driver.py) in a venv:
# PyPI's container-runtime-interface-api (generated CRI v1 stubs) with grpcio and
# protobuf wheels; nothing is compiled. Made at ${CARGO_TARGET_DIR:-target}/cri-venv,
# where the suite looks for it (HOSTNIC_CRI_PYTHON overrides). Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
VENV="$TARGET/cri-venv"
VERSION="${CRI_API_VERSION:-2.0.1}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import cri_api.v1.api_pb2_grpc' 2>/dev/null; then
    exit 0
fi
rm -rf "$VENV"
mkdir -p "$TARGET"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "container-runtime-interface-api==$VERSION"
"$VENV/bin/python" -c 'import cri_api.v1.api_pb2_grpc'
echo "cri-venv: $VENV"
