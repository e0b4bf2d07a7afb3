#!/usr/bin/env bash
# Runs bulk-import on this machine in local mode: installs and starts Postgres and Redis if
# needed, builds the binaries, applies migrations and serves the API, which runs each import
# as a child process. Files are stored under .local/storage unless S3 is configured
# (set S3_ENDPOINT_URL etc., or `source .local/env` after scripts/services.sh for Garage).
#
#   scripts/run-local.sh            # http://127.0.0.1:8000, Swagger UI at /docs
#   BIND_ADDR=0.0.0.0:8000 scripts/run-local.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null || {
  echo "run-local: needs a Rust toolchain (cargo); install it with rustup, then run this again" >&2
  exit 1
}

bash scripts/services.sh db
echo "run-local: building (release; the first build takes several minutes)"
cargo build --release --locked -p bulk-import-api -p bulk-import-importer

export APP_ENV="${APP_ENV:-dev}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/bulk_import}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export EXECUTOR="${EXECUTOR:-local}"
if [ -z "${S3_ENDPOINT_URL:-}" ]; then
  export STORAGE="${STORAGE:-fs}"
  export STORAGE_DIR="${STORAGE_DIR:-$PWD/.local/storage}"
fi
export BIND_ADDR="${BIND_ADDR:-127.0.0.1:8000}"

target/release/bulk-import-api migrate
echo "run-local: bulk-import API on http://$BIND_ADDR (Swagger UI: http://$BIND_ADDR/docs); Ctrl-C stops it"
exec target/release/bulk-import-api serve
