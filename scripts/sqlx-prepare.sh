#!/usr/bin/env bash
# The offline query data of sqlx's compile-time checked queries (`.sqlx/`, used by every build
# through SQLX_OFFLINE=true in .cargo/config.toml), made against a fresh database migrated
# from migrations/:
#
#   scripts/sqlx-prepare.sh           regenerate .sqlx/ (after changing a query or a migration)
#   scripts/sqlx-prepare.sh --check   fail when .sqlx/ differs from what the queries and the
#                                     migrations give now (scripts/test.sh runs this)
#
# Needs Postgres (scripts/services.sh db). Creates and drops a database of its own.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
check=false
[ "${1:-}" = --check ] && check=true

[ -f .local/env ] && source .local/env
base_url="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/bulk_import}"
admin_url="${base_url%/*}/postgres"
db="bi_sqlx_$$"
db_url="${base_url%/*}/$db"
out=$(mktemp -d)
cleanup() {
  psql "$admin_url" -X -q -c "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || true
  rm -rf "$out"
}
trap cleanup EXIT

psql "$admin_url" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$db\"" >/dev/null
for f in migrations/*.sql; do
  psql "$db_url" -X -q -1 -v ON_ERROR_STOP=1 -f "$f" >/dev/null
done
# The macros only run when their crate is compiled: make sure it is.
touch core/src/lib.rs
SQLX_OFFLINE=false DATABASE_URL="$db_url" SQLX_OFFLINE_DIR="$out" \
  cargo build -q -p bulk-import-core --lib
if $check; then
  if ! diff -r .sqlx "$out" >/dev/null; then
    diff -r .sqlx "$out" | head -40 >&2 || true
    echo "sqlx-prepare: .sqlx/ is out of date with the queries or the migrations; run scripts/sqlx-prepare.sh and commit .sqlx/" >&2
    exit 1
  fi
  echo "sqlx-prepare: .sqlx/ matches the queries and the migrations ($(ls "$out" | wc -l) queries)"
else
  rm -rf .sqlx
  cp -r "$out" .sqlx
  echo "sqlx-prepare: wrote $(ls .sqlx | wc -l) queries to .sqlx/"
fi
