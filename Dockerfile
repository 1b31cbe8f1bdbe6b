# syntax=docker/dockerfile:1
# The hostnic node image: hostnic-agent (the DaemonSet's process), the hostnic CNI
# plugin and Debian's portmap (both installed by the agent into the host's
# /opt/cni/bin; portmap only when the node has none) and hostnicctl.
#
#   docker build --build-arg HOSTNIC_COMMIT=$(git rev-parse --short=12 HEAD) \
#       -t registry.example.com/platform/hostnic:0.1.0 .
#   docker push registry.example.com/platform/hostnic:0.1.0
#
# The same image as scripts/build-image.sh makes with podman from a debootstrapped
# Debian 12 (which CI runs): the plugin is static (glibc with crt-static: it is
# copied to and run on the host, whatever its libc), the agent and hostnicctl run
# on the image's Debian 12. TLS uses rustls with ring (no OpenSSL, no aws-lc).
# Keep the runtime stage's packages and paths in step with the script
# (.ci/steps/image.sh checks them).

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
# The commit for --version and hostnic_build_info (the build context has no .git).
ARG HOSTNIC_COMMIT=unknown
ENV HOSTNIC_COMMIT=${HOSTNIC_COMMIT}
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    triple="$(rustc -vV | sed -n 's/^host: //p')" \
    && RUSTFLAGS="-C target-feature=+crt-static" \
       cargo build --release --locked --target "$triple" -p hostnic \
    && cargo build --release --locked -p hostnic-agent -p hostnicctl \
    && mkdir -p /out \
    && cp "target/$triple/release/hostnic" target/release/hostnic-agent \
          target/release/hostnicctl /out/

FROM docker.io/library/debian:bookworm-slim
# nftables: the agent drives `nft -j`; iproute2 for debugging; ca-certificates for
# the QingCloud API over TLS; containernetworking-plugins for its portmap only.
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends \
       nftables iproute2 ca-certificates containernetworking-plugins \
    && install -m 0755 /usr/lib/cni/portmap /usr/local/bin/portmap \
    && rm -rf /usr/lib/cni /var/lib/apt/lists/* /usr/share/doc /usr/share/man \
    && mkdir -p /etc/qingcloud /etc/hostnic /run/hostnic /var/lib/hostnic
# The agent installs the plugin and portmap from next to its own binary
# (`plugin_binary` unset).
COPY --from=build /out/hostnic /out/hostnic-agent /out/hostnicctl /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/hostnic-agent"]
