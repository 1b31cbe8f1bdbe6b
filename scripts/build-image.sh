#!/usr/bin/env bash
# Builds the hostnic node image with podman, without a registry or a base image
# from one, and proves it: the agent's --version inside it is the build's, and
# its CNI install step puts the plugin (static) and Debian's portmap into a
# mounted directory as the DaemonSet's does.
#
#   sudo scripts/build-image.sh                      # release build, tag localhost/hostnic:<version>-<commit>
#   sudo IMAGE=registry.example.com/platform/hostnic:0.1.0 scripts/build-image.sh
#   podman push registry.example.com/platform/hostnic:0.1.0   # then images: in deploy/kustomization.yaml
#
# Steps, the same as the Dockerfile's (for docker and a registry):
#   1. the binaries: the CNI plugin static (glibc, -C target-feature=+crt-static: it
#      is copied to and run on the host, whatever its libc), the agent and
#      hostnicctl for the image's Debian 12;
#   2. a minimal Debian 12 root file system from Debian's mirror (debootstrap
#      --variant=minbase with nftables, iproute2, ca-certificates, and
#      containernetworking-plugins for portmap), cached as a tarball under the
#      target dir, so a machine pays for it once;
#   3. `podman import` of it as the base, `podman build` of the image on it;
#   4. the checks above.
#
# Environment: IMAGE (the tag), HOSTNIC_IMAGE_PROFILE (release, or debug to use the
# agent and hostnicctl `cargo build --workspace` made: what CI does), CARGO_TARGET_DIR,
# DEBIAN_MIRROR, HOSTNIC_IMAGE_CACHE (where the rootfs tarball is kept).
set -euo pipefail
cd "$(dirname "$0")/.."

[[ "$(id -u)" -eq 0 ]] || { echo "build-image: run as root (debootstrap, podman)" >&2; exit 1; }
for tool in podman debootstrap; do
    command -v "$tool" >/dev/null || { echo "build-image: $tool missing: apt-get install $tool" >&2; exit 1; }
done

profile="${HOSTNIC_IMAGE_PROFILE:-release}"
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
export CARGO_TARGET_DIR="$target_dir"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
commit="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
image="${IMAGE:-localhost/hostnic:${version}-${commit}}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
cache="${HOSTNIC_IMAGE_CACHE:-$target_dir/image-cache}"
# Keep in step with the Dockerfile's runtime stage (.ci/steps/image.sh checks it).
packages="nftables iproute2 ca-certificates containernetworking-plugins"
host_triple="$(rustc -vV | sed -n 's/^host: //p')"
started=$SECONDS
step() { printf '==> %s (%d s)\n' "$*" $((SECONDS - started)); }

step "binaries ($profile)"
cargo_profile=(--profile "$profile")
[[ "$profile" == debug ]] && cargo_profile=()
out_dir="$target_dir/$profile"
# The plugin for an explicit target: RUSTFLAGS then reach it (and its small
# dependency tree) but not build scripts and proc macros of the host.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --locked "${cargo_profile[@]}" \
    --target "$host_triple" -p hostnic
if [[ "$profile" == debug ]]; then
    # What `cargo build --workspace` built (CI's build step): rebuilding the two with
    # `-p` would unify other features and rebuild their dependencies for minutes.
    for b in hostnic-agent hostnicctl; do
        [[ -x "$out_dir/$b" ]] || {
            echo "build-image: $out_dir/$b missing: run cargo build --workspace first" >&2; exit 1; }
    done
else
    cargo build --locked "${cargo_profile[@]}" -p hostnic-agent -p hostnicctl
fi
plugin="$target_dir/$host_triple/$profile/hostnic"
if readelf -l "$plugin" | grep -q 'Requesting program interpreter'; then
    echo "build-image: $plugin is dynamically linked" >&2
    exit 1
fi

step "base root file system"
mkdir -p "$cache"
key="$(printf '%s %s bookworm minbase' "$packages" "$mirror" | sha256sum | cut -c1-12)"
rootfs_tar="$cache/rootfs-bookworm-$key.tar"
base="localhost/hostnic-base:bookworm-$key"
if [[ ! -s "$rootfs_tar" ]]; then
    work="$(mktemp -d "$cache/rootfs.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    debootstrap --variant=minbase --include="${packages// /,}" bookworm "$work/root" "$mirror" \
        >"$cache/debootstrap.log" 2>&1 || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
    # Debian's portmap next to where the plugin goes; the other reference plugins,
    # caches and documentation out.
    install -m 0755 "$work/root/usr/lib/cni/portmap" "$work/root/usr/local/bin/portmap"
    rm -rf "$work/root/usr/lib/cni" "$work/root/var/cache/apt/archives/"*.deb \
        "$work/root/var/lib/apt/lists/"* "$work/root/usr/share/doc" "$work/root/usr/share/man" \
        "$work/root/usr/share/info" "$work/root/usr/share/locale"
    mkdir -p "$work/root/etc/qingcloud" "$work/root/etc/hostnic" "$work/root/run/hostnic" \
        "$work/root/var/lib/hostnic"
    tar --numeric-owner -C "$work/root" -cf "$rootfs_tar.tmp" .
    mv "$rootfs_tar.tmp" "$rootfs_tar"
    rm -rf "$work"
    trap - EXIT
fi
if ! podman image exists "$base"; then
    podman import "$rootfs_tar" "$base" >/dev/null
fi

step "image $image"
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$plugin" "$context/hostnic"
cp "$out_dir/hostnic-agent" "$out_dir/hostnicctl" "$context/"
# Line tables help backtraces on the build machine, not in the image.
strip --strip-debug "$context/hostnic-agent" "$context/hostnicctl"
cat >"$context/Containerfile" <<EOF
FROM $base
COPY hostnic hostnic-agent hostnicctl /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/hostnic-agent"]
LABEL org.opencontainers.image.title="hostnic" \\
      org.opencontainers.image.version="$version" \\
      org.opencontainers.image.revision="$commit" \\
      org.opencontainers.image.licenses="Apache-2.0"
EOF
podman build --pull=never --network=none -q -t "$image" "$context" >/dev/null

step "checks"
# Limits within any sandbox's (podman's defaults raise them, which a container in
# a container may not do); nothing here needs more.
run=(podman run --rm --network=none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
want="$("$out_dir/hostnic-agent" --version)"
got="$("${run[@]}" "$image" --version)"
if [[ "$got" != "$want" || "$got" != "hostnic-agent $version (commit $commit)" ]]; then
    echo "build-image: the image's agent says '$got'; the build is '$want' (commit $commit)" >&2
    exit 1
fi
bin_dir="$(mktemp -d)"
"${run[@]}" -v "$bin_dir:/host/opt/cni/bin" "$image" \
    --install-cni-only --cni-bin-dir /host/opt/cni/bin
for b in hostnic portmap; do
    [[ -x "$bin_dir/$b" ]] || { echo "build-image: the install step did not install $b" >&2; exit 1; }
done
plugin_version="$("$bin_dir/hostnic" --version | head -1)"
[[ "$plugin_version" == "hostnic $version (commit $commit)" ]] || {
    echo "build-image: the installed plugin says '$plugin_version'" >&2; exit 1; }
if readelf -l "$bin_dir/hostnic" | grep -q 'Requesting program interpreter'; then
    echo "build-image: the installed plugin is not static" >&2
    exit 1
fi
CNI_COMMAND=VERSION "$bin_dir/portmap" </dev/null | grep -q supportedVersions || {
    echo "build-image: the installed portmap does not run on this host" >&2; exit 1; }
"${run[@]}" --entrypoint /usr/sbin/nft "$image" --version >/dev/null
"${run[@]}" --entrypoint /usr/local/bin/hostnicctl "$image" --version >/dev/null
rm -rf "$bin_dir"
size="$(podman image inspect --format '{{.Size}}' "$image")"
step "done"
echo "image: $image ($((size / 1024 / 1024)) MiB; agent: $got)"
