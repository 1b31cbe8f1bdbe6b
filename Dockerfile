# syntax=docker/dockerfile:1
# The hostnic node image: hostnic-agent (the DaemonSet's process), the hostnic CNI
# plugin (installed by the agent into the host's /opt/cni/bin) and hostnicctl.
#
#   docker build -t ghcr.io/hostnic/hostnic:0.1.0 .
#
# Binaries are static (musl): the plugin is copied to and run on the host, whatever
# its libc. TLS uses rustls with ring (no OpenSSL, no aws-lc).

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl \
        -p hostnic -p hostnic-agent -p hostnicctl \
    && mkdir -p /out \
    && cp target/x86_64-unknown-linux-musl/release/hostnic \
          target/x86_64-unknown-linux-musl/release/hostnic-agent \
          target/x86_64-unknown-linux-musl/release/hostnicctl /out/

FROM docker.io/library/debian:bookworm-slim
# nftables: the agent drives `nft -j` for the `hostnic` table; iproute2 for debugging.
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends nftables iproute2 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /etc/qingcloud /etc/hostnic /run/hostnic /var/lib/hostnic
# The agent installs the plugin from next to its own binary (`plugin_binary` unset).
COPY --from=build /out/hostnic /out/hostnic-agent /out/hostnicctl /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/hostnic-agent"]
