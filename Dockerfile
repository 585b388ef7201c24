# syntax=docker/dockerfile:1
# One image, both binaries: `ftp-operator` (controller, node tuner) and `ftp-server` (the daemon
# the operator's StatefulSets run). Tagged ghcr.io/ftp-operator/ftp-operator:<crate version>, the
# tag the chart's appVersion and the controller's default FTP server image both point at; no
# image is published yet, so build it and push it to your registry (docs/quickstart.md).
#
#   docker build -t ghcr.io/ftp-operator/ftp-operator:0.1.0 .
#
# Without a registry to pull base images from, scripts/image.sh assembles the same layout
# FROM scratch with buildah from binaries built on the host.

ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and build artefacts between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
    && install -D -m 0755 target/release/ftp-operator target/release/ftp-server -t /out/usr/local/bin

# distroless/cc: glibc, libgcc and CA certificates, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/ /
# 65532 is distroless's "nonroot"; the chart and the operator's StatefulSets also set runAsNonRoot.
USER 65532:65532
ENV PATH=/usr/local/bin:/usr/bin:/bin
LABEL org.opencontainers.image.source="https://github.com/ftp-operator/ftp-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.title="ftp-operator" \
      org.opencontainers.image.description="Kubernetes operator and FTP server for FTP behind cloud load balancers"
# Each workload names its binary (the chart runs `ftp-operator controller`, the operator's
# StatefulSets run `ftp-server`); without one, the operator starts.
ENTRYPOINT []
CMD ["ftp-operator", "controller"]
