#!/usr/bin/env bash
# A bounded load run on loopback: wrk against GET /imports/{id} and against POST /imports
# with a small file (10 rows, 1 bad, a fresh Idempotency-Key and fresh emails per request),
# then a check that every job submitted during the run finished `done` with exact counts.
# Writes bench/results/load.md (latency p50/p99, throughput, errors, the job check).
#
#   bench/load.sh                       15 s per phase, 2 connections
#   DURATION=30 CONNECTIONS=4 bench/load.sh
#
# Uses the services of scripts/services.sh (Postgres, Redis, Garage), a database of its own
# (dropped at the end) and a key prefix of its own; the release binaries; wrk (apt-get).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
DURATION=${DURATION:-15}
CONNECTIONS=${CONNECTIONS:-2}
OUT=${OUT:-bench/results/load.md}

log() { echo "load: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

command -v wrk >/dev/null || { log "installing wrk"; as_root apt-get install -y -qq wrk >/dev/null; }
command -v jq >/dev/null || { log "installing jq"; as_root apt-get install -y -qq jq >/dev/null; }
bash scripts/services.sh >/dev/null
# shellcheck source=/dev/null
source .local/env
log "building the release binaries"
cargo build --release -q -p bulk-import-api -p bulk-import-importer

run_id=$(date +%s)-$$
db=bi_load_${run_id//-/_}
admin_url="${DATABASE_URL%/*}/postgres"
psql "$admin_url" -X -q -c "CREATE DATABASE $db"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
work=$(mktemp -d)
api_pid=""
cleanup() {
  [ -n "$api_pid" ] && kill "$api_pid" 2>/dev/null && wait "$api_pid" 2>/dev/null || true
  psql "$admin_url" -X -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
  rm -rf "$work"
}
trap cleanup EXIT

export APP_ENV=test DATABASE_URL="${DATABASE_URL%/*}/$db" STORAGE_KEY_PREFIX="load-$run_id/"
export BIND_ADDR="127.0.0.1:$port" RUST_LOG=warn JWT_SECRET="load-$run_id-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export IMPORTER_BIN="$REPO/target/release/bulk-import-importer"
# One organization creates every job of the run: lift its new-jobs window (docs/configuration.md).
export JOBS_CREATED_MAX_PER_ORG=100000000
target/release/bulk-import-api >"$work/api.log" 2>&1 &
api_pid=$!
for _ in $(seq 1 150); do curl -fs "$base/health" >/dev/null && break; sleep 0.2; done
curl -fs "$base/health" >/dev/null || { cat "$work/api.log"; exit 1; }

curl -fs -X POST "$base/auth/register" -H 'Content-Type: application/json' \
  -d '{"email":"load@example.com","password":"pass12345"}' >/dev/null
token=$(curl -fs -X POST "$base/auth/token" -H 'Content-Type: application/json' \
  -d '{"email":"load@example.com","password":"pass12345"}' | jq -r .access_token)
printf 'email,first_name,last_name,phone,city\nseed@example.com,A,B,,C\n' >"$work/seed.csv"
job=$(curl -fs -X POST "$base/imports" -H "Authorization: Bearer $token" \
  -H 'Idempotency-Key: seed' -F "file=@$work/seed.csv;type=text/csv" | jq -r .id)

cat >"$work/post.lua" <<'EOF'
-- One small file per request: 10 rows (the 10th bad), emails and key unique to it.
-- wrk runs it with one thread (-t1), so a counter makes keys unique.
local n = 0
local token, run = os.getenv("TOKEN"), os.getenv("RUN")
function request()
  n = n + 1
  local key = string.format("%s-%d", run, n)
  local rows = {"email,first_name,last_name,phone,city"}
  for i = 1, 9 do rows[#rows + 1] = string.format("u%d-%s@example.com,F%d,L,,C", i, key, i) end
  rows[#rows + 1] = "not-an-email,X,,,"
  local body = "--BOUNDARY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.csv\"\r\n"
    .. "Content-Type: text/csv\r\n\r\n" .. table.concat(rows, "\n") .. "\n\r\n--BOUNDARY--\r\n"
  return wrk.format("POST", "/imports?mode=insert_only", {
    ["Authorization"] = "Bearer " .. token,
    ["Idempotency-Key"] = key,
    ["Content-Type"] = "multipart/form-data; boundary=BOUNDARY",
  }, body)
end
EOF

# wrk's --latency gives the distribution; requests/s and errors are in its summary.
log "GET /imports/{id}: ${DURATION}s, $CONNECTIONS connections"
wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Authorization: Bearer $token" \
  "$base/imports/$job" >"$work/get.txt"
log "POST /imports (10-row file): ${DURATION}s, $CONNECTIONS connections"
TOKEN=$token RUN=$run_id wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$work/post.lua" \
  "$base/imports" >"$work/post.txt"

q() { psql "$DATABASE_URL" -X -q -tA -c "$1"; }
# An upload wrk cut off when its time was up never became a job (status `uploading`).
submitted=$(q "select count(*) from import_jobs where idempotency_key <> 'seed' and status <> 'uploading'")
log "$submitted jobs submitted; waiting for every one to finish"
started=$SECONDS
until [ "$(q "select count(*) from import_jobs where status in ('pending','processing')")" = 0 ]; do
  [ $((SECONDS - started)) -lt 900 ] || { log "jobs still unfinished after 900 s"; exit 1; }
  sleep 1
done
drain=$((SECONDS - started))
exact=$(q "select count(*) from import_jobs where idempotency_key <> 'seed' and status = 'done'
  and processed_rows = 10 and inserted_rows = 9 and updated_rows = 0 and error_rows = 1")
customers=$(q "select count(*) from customers where email <> 'seed@example.com'")
cut_off=$(q "select count(*) from import_jobs where status = 'uploading'")

field() { awk -v k="$2" '$1 == k {print $2}' "$1"; }
summary() { # file -> "p50 | p99 | req/s | errors"
  local f=$1 errs
  errs=$(grep -E 'Non-2xx|Socket errors' "$f" | tr '\n' ' ' || true)
  printf '%s | %s | %s | %s' "$(field "$f" 50%)" "$(field "$f" 99%)" \
    "$(awk '/^Requests\/sec/ {print $2}' "$f")" "${errs:-0}"
}
get_line=$(summary "$work/get.txt")
post_line=$(summary "$work/post.txt")
post_requests=$(awk '/requests in/ {print $1}' "$work/post.txt")
mkdir -p "$(dirname "$OUT")"
{
  echo "# Load run ($(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD))"
  echo
  echo "\`bench/load.sh\` on loopback, $(nproc) cores; wrk, 1 thread, $CONNECTIONS connections,"
  echo "${DURATION} s per phase; release build, local executor (2 importers at once), S3 on Garage."
  echo
  echo "| phase | p50 | p99 | requests/s | errors |"
  echo "|---|---|---|---|---|"
  echo "| GET /imports/{id} | $get_line |"
  echo "| POST /imports (10-row file) | $post_line |"
  echo
  echo "Jobs submitted during the POST phase: $submitted (wrk counted $post_requests responses);"
  echo "finished \`done\` with exactly 10 processed / 9 inserted / 1 error: $exact;"
  echo "customers inserted: $customers (expected $((submitted * 9))); all jobs drained $drain s after the run."
  echo "Uploads cut off by wrk at the end of the run (left \`uploading\`, never jobs): $cut_off."
  echo
  echo '<details><summary>wrk output</summary>'
  echo
  echo '```'
  cat "$work/get.txt"
  echo
  cat "$work/post.txt"
  echo '```'
  echo '</details>'
} >"$OUT"
cat "$OUT"
if [ "$exact" != "$submitted" ] || [ "$customers" != $((submitted * 9)) ] || grep -qE 'Non-2xx|Socket errors' "$work/get.txt" "$work/post.txt"; then
  log "FAILED: errors during the run or inexact jobs"
  exit 1
fi
log "ok"
