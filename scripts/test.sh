#!/usr/bin/env bash
# The project's one test command: starts the services, then runs every test phase in turn.
# Arguments are passed to `cargo test` (e.g. `scripts/test.sh -p bulk-import-core -- --nocapture`).
# To add a phase, append a `step "what it does"` line and its commands at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

step "services (scripts/services.sh)"
bash scripts/services.sh
# shellcheck source=/dev/null
source .local/env
export APP_ENV=test

step "dropping leftover test databases (bi_test_*)"
# Only databases nobody is connected to, so a test run going on beside this one keeps its own.
admin_url="${DATABASE_URL%/*}/postgres"
leftovers=$(psql "$admin_url" -X -q -tA -v ON_ERROR_STOP=1 -c "
  select datname from pg_database d
  where datname like 'bi\_test\_%'
    and not exists (select 1 from pg_stat_activity a where a.datname = d.datname)")
for db in $leftovers; do
  psql "$admin_url" -X -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS \"$db\""
done
echo "dropped $(wc -w <<<"$leftovers") database(s)"

step "sqlx offline query data against the migrations (scripts/sqlx-prepare.sh --check)"
bash scripts/sqlx-prepare.sh --check

step "programs the tests run (scripts/test-tools.sh: tmux, script, pgrep, kill, runuser)"
bash scripts/test-tools.sh

step "browser for the web page tests (scripts/browser.sh: chromium, chromium-driver)"
bash scripts/browser.sh

step "cargo test --workspace --all-targets $*"
cargo test --workspace --all-targets "$@"

step "chart tests (charts/tests/run.sh)"
bash charts/tests/run.sh

step "docs tests (docs/tests/run.sh)"
bash docs/tests/run.sh
