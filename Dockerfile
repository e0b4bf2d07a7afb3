# syntax=docker/dockerfile:1
# One image with the three binaries; the chart picks the command:
#   bulk-import-api (also `bulk-import-api migrate`), bulk-import-operator, bulk-import-importer.
#
#   docker build -t bulk-import:dev .
#
# No database is needed at build time: the code uses sqlx's runtime query functions, not the
# compile-time checked query! macros, so there is no .sqlx/ offline data to commit and
# SQLX_OFFLINE only guards against a macro sneaking in. The migrations/ directory is embedded
# into the binaries (sqlx::migrate!) and so must be in the build context.

FROM rust:1-bookworm AS builder
WORKDIR /src
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never
COPY . .
# The cache mounts keep the crate registry and target/ between builds; the binaries are copied
# out of target/ in the same step because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p bulk-import-api -p bulk-import-operator -p bulk-import-importer \
 && mkdir -p /out \
 && cp target/release/bulk-import-api target/release/bulk-import-operator \
       target/release/bulk-import-importer /out/

FROM debian:bookworm-slim AS runtime
# ca-certificates: the system trust roots, for TLS to Postgres, Redis and S3 endpoints. Not
# pinned: it should track Debian's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 bulkimport \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin bulkimport
COPY --from=builder /out/ /usr/local/bin/
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
ENV BIND_ADDR=0.0.0.0:8000 \
    OPERATOR_BIND_ADDR=0.0.0.0:8080 \
    LOG_FORMAT=json
EXPOSE 8000 8080
CMD ["bulk-import-api"]
