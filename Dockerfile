# syntax=docker/dockerfile:1
# One image with the three binaries and the CLI; the chart picks the command:
#   bulk-import-api (also `bulk-import-api migrate`), bulk-import-operator, bulk-import-importer,
#   and bulk-import (the CLI: the chart's `helm test` import runs it).
#
#   docker build -t bulk-import:dev .
#
# No database is needed at build time: the compile-time checked queries (sqlx::query!) read
# the offline data committed in .sqlx/ (SQLX_OFFLINE=true, also set in .cargo/config.toml).
# The migrations/ directory is embedded into the binaries (sqlx::migrate!) and so must be in
# the build context.
#
# Both base images are pinned by digest, so a rebuild starts from the bytes that were
# reviewed; bump the tag and the digest together (`docker buildx imagetools inspect <tag>`).

FROM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS builder
WORKDIR /src
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never
COPY . .
# The cache mounts keep the crate registry and target/ between builds; the binaries are copied
# out of target/ in the same step because a cache mount is not part of the image. The release
# profile strips debug info (Cargo.toml); symbol names stay for backtraces.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p bulk-import-api -p bulk-import-operator -p bulk-import-importer -p bulk-import-cli \
 && mkdir -p /out \
 && cp target/release/bulk-import-api target/release/bulk-import-operator \
       target/release/bulk-import-importer target/release/bulk-import /out/

# distroless/cc: glibc, libgcc, CA certificates, tzdata — what a Rust binary built against
# glibc needs, and no shell or package manager. The `nonroot` variant's default user is 65532;
# the image runs as 10001 instead, the uid the chart's securityContext names.
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f AS runtime
COPY --from=builder /out/ /usr/local/bin/
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# APP_ENV=prod: a bare `docker run` refuses to start without JWT_SECRET (at least 32
# characters, not the development value) and PUBLIC_API_URL, instead of signing tokens with
# the public development secret. Compose and scripts/run-local.sh set APP_ENV=dev.
ENV APP_ENV=prod \
    BIND_ADDR=0.0.0.0:8000 \
    OPERATOR_BIND_ADDR=0.0.0.0:8080 \
    LOG_FORMAT=json
EXPOSE 8000 8080
CMD ["bulk-import-api"]
