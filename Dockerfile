# syntax=docker/dockerfile:1

# ---------------------------------------------------------------------------
# Build stage: compile the release binary with the pinned toolchain.
# ---------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder

WORKDIR /build

# .dockerignore allow-lists the build inputs: Cargo.toml, Cargo.lock, src/,
# and the benches/, tests/ and examples/ folders when they exist (Cargo
# insists that every target declared in Cargo.toml be present on disk).
# One COPY of the whole context keeps optional folders optional.
COPY . .

# The registry, git and target caches persist between builds (BuildKit cache
# mounts), so the binary is copied out of target/ within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/build/target,sharing=locked \
    cargo build --release --locked --bin medserve \
    && install -D -m 0755 target/release/medserve /out/medserve

# ---------------------------------------------------------------------------
# Runtime stage: slim Debian, non-root, CA roots for S3 over TLS, curl for
# the health check.
# ---------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

LABEL org.opencontainers.image.title="medserve" \
      org.opencontainers.image.description="HTTP service serving medical-imaging training data from a local folder or S3"

# DL3008 (pin apt package versions) is ignored on purpose: bookworm's mirrors
# only keep the newest build of each package, so an exact pin such as
# curl=7.88.1-10+deb12u<N> breaks the build as soon as the next security
# update lands. The base image tag is the pin; this layer takes the current
# security fixes of ca-certificates and curl.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 medserve \
    && useradd --system --uid 10001 --gid medserve \
        --home-dir /var/lib/medserve --create-home --shell /usr/sbin/nologin medserve \
    && install -d -o medserve -g medserve -m 0755 /sample /var/cache/medserve

COPY --from=builder /out/medserve /usr/local/bin/medserve

# /var/lib/medserve is the user's writable home: `serve` without --data
# generates its built-in sample dataset under MEDSERVE_SAMPLE_DIR (and, should
# that variable be unset, under ./medserve-sample-data relative to WORKDIR).
# /sample exists and belongs to the user so that an empty named volume mounted
# there (compose's `sample` volume) inherits that ownership and is writable by
# `medserve sample-data /sample`. /var/cache/medserve likewise, for the disk
# tier (--disk-cache-dir; compose mounts a named volume there).
WORKDIR /var/lib/medserve

ENV MEDSERVE_LISTEN=0.0.0.0:8080 \
    MEDSERVE_SAMPLE_DIR=/var/lib/medserve/sample-data \
    RUST_LOG=info

# Numeric ids, so that runtimes enforcing runAsNonRoot can verify them.
USER 10001:10001

EXPOSE 8080

# Liveness only: /healthz is cheap and independent of the data store. The
# compose file overrides this with /readyz for the S3-backed service.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["curl", "--fail", "--silent", "--show-error", "--output", "/dev/null", "http://127.0.0.1:8080/healthz"]

ENTRYPOINT ["medserve"]
CMD ["serve"]
