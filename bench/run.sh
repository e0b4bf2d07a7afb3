#!/usr/bin/env bash
# The importer benchmark (docs/benchmarks.md): the importer against psql on the same machine, in the
# same run, reported as ratios.
#
#   bench/run.sh                 full run: 1M-row clean, sorted and dirty files and a 5M-row file,
#                                read from Garage (S3); writes bench/results/latest.md.
#                                About 80 s on 2 cores, plus ~45 s to generate the data
#                                (420 MB, once) and the release build (~6 min, once)
#   bench/run.sh --rows 20000    quick smoke run on small files (20k rows, 100k for the "5M"
#                                step); writes bench/results/rows-20000.md.tmp
#   bench/run.sh --skip-5m       leave out the 5M-row file (and the 1M-into-5M case)
#   bench/run.sh --skip-growth   leave out the growth cases (bench/growth.sh: eight imports at
#                                once, 1M rows into a table holding 5M, the upload path)
#   bench/run.sh --with-10m      add the 10M-row file (618 MB, about 3 min more): importer
#                                against psql, and the importer's rate in each tenth
#   bench/run.sh --repeat 3      run the 1M measurements 3 times, report the medians (~150 s)
#   bench/run.sh --no-build      do not run `cargo build --release` first
#   bench/run.sh --storage fs    read from a local directory instead of Garage (development)
#   bench/run.sh --sample        also sample pg_stat_activity every 0.25 s during each
#                                measurement (wait events of the busiest backend, in the table)
#
# What it does, in one invocation:
#   1. generates bench/data/{clean_1m,sorted_1m,dirty_1m,clean_5m}.csv if missing (bench/gen.py,
#      fixed seed; sorted = the clean rows ordered by email, as an export `ORDER BY email`;
#      dirty = 1% invalid rows + 1% repeats of emails seen earlier in the file), the two
#      halves of clean_1m for the two-stream reference, and sorted_1m with the bookkeeping
#      columns (whole, and in alternate 5000-row blocks) for a4 and a5;
#   2. starts the services (scripts/services.sh), sources .local/env, and recreates its own
#      database bulk_import_bench (drop, create, `bulk-import-api migrate`); objects go under
#      the key prefix bench/<run>/ and are deleted after each job;
#   3. measures, each right after a CHECKPOINT once Postgres and Garage are idle (autovacuum is
#      off for the loaded tables, so that it cannot start inside one step and not another):
#        a. psql \copy of clean_1m into a fresh table like customers          (reference insert)
#        a2. the same with sorted_1m                                  (reference, sorted keys)
#        a3. two psql \copy at once, one per half of clean_1m   (the physical limit, 2 cores)
#        a4. psql \copy of sorted_1m with the importer's two bookkeeping columns added
#            (last_import_id, last_import_line): what they cost on sorted keys
#        a5. two psql \copy at once of a4's rows, in alternate 5000-row blocks (the importer's
#            two streams): the physical limit for the sorted file with those columns
#        b. COPY into a temp table + INSERT … ON CONFLICT DO UPDATE, all rows update  (ref upsert)
#        c. importer insert_only of clean_1m into an empty customers
#        c2. importer insert_only of sorted_1m into an empty customers
#        d. importer upsert of clean_1m right after (every row updates)
#        e. importer insert_only of dirty_1m into an empty customers
#        f. importer insert_only of clean_5m into an empty customers
#        g, h, u, t. the growth cases, described in bench/growth.sh
#      (`submit`, the upload, is not timed; the `--job-id` run is, with its peak RSS), and
#      checks every job's final row: done, exact processed/inserted/updated/error counts;
#   4. prints the table of times, ratios and peak RSS with PASS/MISS per target.
#
# Environment: BATCH_SIZE, PROGRESS_EVERY are passed to the importer as set (defaults
# otherwise). APP_ENV must be unset, dev or test. Needs psql, python3, GNU time (/usr/bin/time).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$REPO/bench"
DATA="$BENCH/data"
RESULTS="$BENCH/results"
BIN="${CARGO_TARGET_DIR:-$REPO/target}/release"
DB=bulk_import_bench

ROWS=1000000
SKIP_5M=0
REPEAT=1
BUILD=1
STORAGE_KIND=s3
SAMPLE=0
GROWTH=1
WITH_10M=0

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "bench: error: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --rows) ROWS=${2:?--rows needs a number}; shift 2 ;;
    --rows=*) ROWS=${1#*=}; shift ;;
    --skip-5m) SKIP_5M=1; shift ;;
    --skip-growth) GROWTH=0; shift ;;
    --with-10m) WITH_10M=1; shift ;;
    --repeat) REPEAT=${2:?--repeat needs a number}; shift 2 ;;
    --repeat=*) REPEAT=${1#*=}; shift ;;
    --no-build) BUILD=0; shift ;;
    --sample) SAMPLE=1; shift ;;
    --storage) STORAGE_KIND=${2:?--storage needs s3 or fs}; shift 2 ;;
    --storage=*) STORAGE_KIND=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[[ "$ROWS" =~ ^[1-9][0-9]*$ ]] || die "--rows must be a positive integer"
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || die "--repeat must be a positive integer"
[ "$ROWS" -ge 1000 ] || die "--rows must be at least 1000 (the dirty file needs 1% of each kind)"
case "$STORAGE_KIND" in s3|fs) ;; *) die "--storage must be s3 or fs" ;; esac
case "${APP_ENV:-dev}" in dev|test) ;; *) die "refusing to run with APP_ENV=$APP_ENV (it drops and recreates database $DB)" ;; esac
for tool in psql python3 /usr/bin/time curl; do
  command -v "$tool" >/dev/null || die "$tool is required"
done

# 1000000 -> 1m, 20000 -> 20k, 1234 -> 1234
label() {
  local n=$1
  if [ $((n % 1000000)) = 0 ]; then echo "$((n / 1000000))m"
  elif [ $((n % 1000)) = 0 ]; then echo "$((n / 1000))k"
  else echo "$n"; fi
}
ROWS_BIG=$((ROWS * 5))
L1=$(label "$ROWS")
L5=$(label "$ROWS_BIG")
CLEAN="$DATA/clean_$L1.csv"
SORTED="$DATA/sorted_$L1.csv"
DIRTY="$DATA/dirty_$L1.csv"
HALF1="$DATA/clean_$L1.half1.csv"
HALF2="$DATA/clean_$L1.half2.csv"
# The sorted rows with the importer's two bookkeeping columns (last_import_id, last_import_line),
# whole and split in alternate 5000-row blocks, for the sorted file's limits (a4, a5).
SORTED7="$DATA/sorted_$L1.7cols.csv"
SORTED7A="$DATA/sorted_$L1.7cols.blocks1.csv"
SORTED7B="$DATA/sorted_$L1.7cols.blocks2.csv"
BIG="$DATA/clean_$L5.csv"
FULL=0
[ "$ROWS" = 1000000 ] && FULL=1
if [ "$FULL" = 1 ]; then OUT="$RESULTS/latest.md"; else OUT="$RESULTS/rows-$ROWS.md.tmp"; fi
RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)-$$
LOGS="$DATA/logs/$RUN_ID"
mkdir -p "$DATA" "$RESULTS" "$LOGS"
# Keep the logs of the last 10 runs.
ls -1d "$DATA"/logs/*/ 2>/dev/null | sort | head -n -10 | while read -r old; do rm -rf -- "$old"; done
T_START=$EPOCHREALTIME
# How busy the machine is before we start (CPU use over one second, all cores).
cpu_busy() {
  local a b
  a=$(head -n 1 /proc/stat); sleep 1; b=$(head -n 1 /proc/stat)
  echo "$a" "$b" | awk '{ for (i = 2; i <= 11; i++) { t0 += $i; t1 += $(i + 11) }
    idle = ($(16) + $(17)) - ($5 + $6); printf "%.0f", 100 * (1 - idle / (t1 - t0)) }'
}
BUSY_START=$(cpu_busy)
LOAD_START="CPU ${BUSY_START}% busy, load average $(cut -d ' ' -f 1-3 /proc/loadavg)"
if [ "$BUSY_START" -gt 15 ]; then
  log "warning: $LOAD_START before the benchmark starts: other work on this machine skews the times"
fi

# --- 1. data --------------------------------------------------------------------------------

# gen KIND ROWS FILE: generates FILE (and FILE.json, its counts) unless both exist.
gen() {
  local kind=$1 rows=$2 file=$3
  if [ -s "$file" ] && [ -s "$file.json" ]; then return; fi
  log "generating $(basename "$file") ($rows rows)"
  local t0=$EPOCHREALTIME
  python3 "$BENCH/gen.py" "$kind" "$rows" "$file.part" >"$file.json.part"
  mv -f "$file.part" "$file"
  mv -f "$file.json.part" "$file.json"
  log "  $(du -m "$file" | cut -f1) MB in $(secs_since "$t0") s"
}
secs_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }
json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

gen clean "$ROWS" "$CLEAN"
gen sorted "$ROWS" "$SORTED"
gen dirty "$ROWS" "$DIRTY"
# The halves of the clean file (each with the header), for the two-stream reference.
if [ ! -s "$HALF1" ] || [ ! -s "$HALF2" ] || [ "$HALF1" -ot "$CLEAN" ]; then
  awk -v n="$ROWS" -v a="$HALF1.part" -v b="$HALF2.part" \
    'NR == 1 { print > a; print > b; next } { print > (NR - 1 <= n / 2 ? a : b) }' "$CLEAN"
  mv -f "$HALF1.part" "$HALF1"
  mv -f "$HALF2.part" "$HALF2"
fi
if [ ! -s "$SORTED7" ] || [ ! -s "$SORTED7A" ] || [ ! -s "$SORTED7B" ] || [ "$SORTED7" -ot "$SORTED" ]; then
  awk -F, -v all="$SORTED7.part" -v a="$SORTED7A.part" -v b="$SORTED7B.part" '
    NR == 1 { h = $0 ",last_import_id,last_import_line"; print h > all; print h > a; print h > b; next }
    { r = $0 ",0e9d7c6a-3b1f-4d2e-9a8b-1c2d3e4f5a6b," NR; print r > all
      print r > (int((NR - 2) / 5000) % 2 == 0 ? a : b) }' "$SORTED"
  mv -f "$SORTED7.part" "$SORTED7"
  mv -f "$SORTED7A.part" "$SORTED7A"
  mv -f "$SORTED7B.part" "$SORTED7B"
fi
[ "$SKIP_5M" = 1 ] || gen clean "$ROWS_BIG" "$BIG"
# shellcheck source=bench/growth.sh
source "$BENCH/growth.sh"
[ "$GROWTH" = 0 ] || growth_data
[ "$WITH_10M" = 0 ] || gen clean "$ROWS_10M" "$HUGE"
DIRTY_INVALID=$(json_field "$DIRTY.json" invalid)
DIRTY_DUPS=$(json_field "$DIRTY.json" duplicates)

# --- 2. build, services, database -----------------------------------------------------------

if [ "$BUILD" = 1 ]; then
  log "cargo build --release (importer, api)"
  (cd "$REPO" && cargo build --release -q -p bulk-import-importer -p bulk-import-api) ||
    die "the release build failed (bench/run.sh --no-build runs the binaries already in $BIN)"
fi
[ -x "$BIN/bulk-import-importer" ] && [ -x "$BIN/bulk-import-api" ] ||
  die "release binaries missing in $BIN (run without --no-build)"

if [ "$STORAGE_KIND" = s3 ]; then
  [ -x "$REPO/scripts/services.sh" ] || die "scripts/services.sh is missing"
  log "starting services (scripts/services.sh; log in ${LOGS#"$REPO/"}/services.log)"
  "$REPO/scripts/services.sh" >"$LOGS/services.log" 2>&1 ||
    { tail -n 20 "$LOGS/services.log" >&2; die "scripts/services.sh failed"; }
  # shellcheck disable=SC1091
  source "$REPO/.local/env"
  [ "${STORAGE:-}" = s3 ] || die ".local/env does not set STORAGE=s3"
else
  export DATABASE_URL=${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/bulk_import}
  export STORAGE=fs STORAGE_DIR="$DATA/storage"
fi
# Our own database and key prefix, whatever .local/env says.
BASE_URL=${DATABASE_URL%/*}
export DATABASE_URL="$BASE_URL/$DB"
ADMIN_URL="$BASE_URL/postgres"
export STORAGE_KEY_PREFIX="bench/$RUN_ID/"
export APP_ENV=${APP_ENV:-dev}
export RUST_LOG=${RUST_LOG:-info}
export PGOPTIONS="-c client_min_messages=warning"

pg() { psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }
pg_val() { pg -tA -c "$1"; }

log "recreating database $DB"
psql "$ADMIN_URL" -X -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
"$BIN/bulk-import-api" migrate >"$LOGS/migrate.log" 2>&1 ||
  { cat "$LOGS/migrate.log" >&2; die "bulk-import-api migrate failed"; }
# Autovacuum would start on a freshly loaded table at a random point of the next step (or not);
# it is off for the two loaded tables, the same for the references and the importer.
pg -c "ALTER TABLE customers SET (autovacuum_enabled = false)"

# Objects of the jobs this run submitted, deleted after each job and on exit.
SUBMITTED=()
delete_object() {
  local key="$STORAGE_KEY_PREFIX$1"
  if [ "$STORAGE" = fs ]; then
    rm -f "$STORAGE_DIR/$key"
  else
    curl -sS -f --max-time 30 -X DELETE -o /dev/null \
      --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
      -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$S3_ENDPOINT_URL/$S3_BUCKET/$key" ||
      log "warning: could not delete object $key"
  fi
}
cleanup_job() {
  local id=$1 objects
  objects=$(pg_val "SELECT source_object || ' ' || coalesce(report_object, '') FROM import_jobs WHERE id = '$id'" 2>/dev/null) || return 0
  for key in $objects; do delete_object "$key"; done
}
cleanup() {
  local id
  [ -z "${API_PID:-}" ] || { kill "$API_PID" 2>/dev/null || true; }
  for id in "${SUBMITTED[@]}"; do cleanup_job "$id"; done
  SUBMITTED=()
}
trap cleanup EXIT

# --- 3. measurements ------------------------------------------------------------------------

# CPU accounting from /proc, read before and after each measurement (no sampling needed):
# Postgres = postmaster and its live children plus the children it has reaped (cutime/cstime),
# so backends that exit with the importer are counted; Garage = this checkout's server.
TCK=$(getconf CLK_TCK)
POSTMASTER=$(awk '{ print $4 }' "/proc/$(pg_val "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")/stat" 2>/dev/null || true)
GARAGE=""
if [ "$STORAGE" = s3 ] && [ -f "$REPO/.local/garage/garage.pid" ]; then
  GARAGE=$(cat "$REPO/.local/garage/garage.pid")
  [ -r "/proc/$GARAGE/stat" ] || GARAGE=""
fi
pg_ticks() {
  [ -n "$POSTMASTER" ] || { echo 0; return; }
  local pids
  pids="$POSTMASTER $(pgrep -P "$POSTMASTER" | tr '\n' ' ')"
  # A backend may exit between pgrep and cat: its stat file is then missing, which is fine.
  { (cd /proc && cat $(for p in $pids; do echo "$p/stat"; done) 2>/dev/null) || true; } |
    awk '{ sub(/^[0-9]+ \([^)]*\) /, ""); t += $12 + $13; if (NR == 1) t += $14 + $15 } END { print t + 0 }'
}
garage_ticks() { [ -n "$GARAGE" ] && awk '{ sub(/^[0-9]+ \([^)]*\) /, ""); print $12 + $13 }' "/proc/$GARAGE/stat" 2>/dev/null || echo 0; }
# Transactions of other databases on the same Postgres (other people's tests, for example): work
# that shares the server with the step. Postgres publishes these counters with some delay
# (up to ~10 s), so this is an indication only; the first of the two queries counts for two
# (its connection and its statement).
other_xacts() {
  psql "$ADMIN_URL" -X -tA -c "SELECT coalesce(sum(xact_commit + xact_rollback), 0) FROM pg_stat_database \
    WHERE datname IS DISTINCT FROM '$DB'" 2>/dev/null || echo 0
}
# Busy ticks of the whole machine (all cores), from /proc/stat.
machine_ticks() { awk 'NR == 1 { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
ticks_to_s() { awk -v a="$1" -v b="$2" -v t="$TCK" 'BEGIN { printf "%.1f", (b - a) / t }'; }

SAMPLER=""
sampler_start() {
  [ "$SAMPLE" = 1 ] || return 0
  local out="$LOGS/$1.samples"
  (
    while :; do
      PGAPPNAME=bench-sampler psql "$DATABASE_URL" -X -tA -F ' ' -c "SELECT pid, state, coalesce(wait_event_type, '-'), \
          coalesce(wait_event, '-') FROM pg_stat_activity WHERE datname = '$DB' AND pid <> pg_backend_pid() \
          AND application_name IN ('bulk-import-importer', 'psql')" 2>/dev/null |
        while read -r pid state wtype wevent; do
          echo "$pid $(awk '{ sub(/^[0-9]+ \([^)]*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || echo 0) $state $wtype:$wevent"
        done
      sleep 0.25
    done
  ) >"$out" 2>/dev/null &
  SAMPLER=$!
}
# sampler_stop NAME: stops the sampler and prints the wait profile of the busiest backend.
sampler_stop() {
  [ -n "$SAMPLER" ] || return 0
  kill "$SAMPLER" 2>/dev/null || true
  wait "$SAMPLER" 2>/dev/null || true
  SAMPLER=""
  awk '
    { st = $3; w = $4; if (st == "active" && w == "-:-") w = "CPU"; else if (st != "active") w = st " (" w ")"
      n[$1]++; c[$1 SUBSEP w]++; if ($2 > cpu[$1]) cpu[$1] = $2 }
    END {
      for (p in cpu) if (best == "" || cpu[p] > cpu[best]) best = p
      if (best == "") exit
      for (k in c) { split(k, a, SUBSEP); if (a[1] == best) printf "%d %s\n", 100 * c[k] / n[best], a[2] }
    }' "$LOGS/$1.samples" | sort -rn | head -n 4 | awk '{ p = $1; $1 = ""; printf "%s%s %d%%", (NR > 1 ? ", " : ""), substr($0, 2), p }'
}

declare -A WALL RSS CPU PGCPU GCPU OCPU OXACT PROFILE
FAILURES=()

# record NAME SECONDS RSS_KB CLIENT_CPU_S PG_CPU_S GARAGE_CPU_S PROFILE: appends one sample
# (and T_OTHER, the CPU used by everything else on the machine meanwhile).
record() {
  OCPU[$1]="${OCPU[$1]:-} $T_OTHER"
  OXACT[$1]="${OXACT[$1]:-} $T_OXACT"
  WALL[$1]="${WALL[$1]:-} $2"
  [ -z "${3:-}" ] || RSS[$1]="${RSS[$1]:-} $3"
  [ -z "${4:-}" ] || CPU[$1]="${CPU[$1]:-} $4"
  [ -z "${5:-}" ] || PGCPU[$1]="${PGCPU[$1]:-} $5"
  [ -z "${6:-}" ] || GCPU[$1]="${GCPU[$1]:-} $6"
  [ -z "${7:-}" ] || PROFILE[$1]=$7
}

# timed NAME COMMAND...: runs COMMAND under GNU time with CPU accounting; sets T_WALL, T_RSS
# (KiB), T_CPU (the command's own CPU s), T_PG (Postgres CPU s), T_GARAGE, T_PROFILE, T_RC.
timed() {
  local name=$1; shift
  local pg0 g0 m0 x0 t0
  x0=$(other_xacts)
  pg0=$(pg_ticks); g0=$(garage_ticks); m0=$(machine_ticks)
  sampler_start "$name"
  t0=$EPOCHREALTIME
  T_RC=0
  /usr/bin/time -f '%e %M %U %S' -o "$LOGS/$name.time" "$@" || T_RC=$?
  T_WALL=$(secs_since "$t0")
  T_PROFILE=$(sampler_stop "$name")
  T_PG=$(ticks_to_s "$pg0" "$(pg_ticks)")
  T_GARAGE=$(ticks_to_s "$g0" "$(garage_ticks)")
  local machine; machine=$(ticks_to_s "$m0" "$(machine_ticks)")
  T_RSS=$(tail -n 1 "$LOGS/$name.time" | awk '{ print $2 }')
  T_CPU=$(tail -n 1 "$LOGS/$name.time" | awk '{ printf "%.1f", $3 + $4 }')
  T_OXACT=$(($(other_xacts) - x0 - 2))
  [ "$T_OXACT" -ge 0 ] || T_OXACT=0
  T_OTHER=$(awk -v m="$machine" -v a="$T_CPU" -v b="$T_PG" -v c="$T_GARAGE" 'BEGIN { o = m - a - b - c; printf "%.1f", o < 0 ? 0 : o }')
}

# Before each timed step: a CHECKPOINT, then wait (up to 30 s) until Postgres and Garage are
# quiet (under 5% of a core over half a second), so that no background work left over from
# the previous step or from the untimed upload runs inside the measurement.
checkpoint() {
  psql "$ADMIN_URL" -X -q -c CHECKPOINT
  local i p0 g0
  for ((i = 0; i < 60; i++)); do
    p0=$(pg_ticks); g0=$(garage_ticks)
    sleep 0.5
    [ $(($(pg_ticks) - p0 + $(garage_ticks) - g0)) -gt $((TCK / 40)) ] || return 0
  done
  log "  warning: Postgres or Garage still busy after 30 s; measuring anyway"
}

# A fresh ref_customers like customers, for a reference: the organization (the key's first
# column, as the importer writes it) is filled by a constant default, so the reference writes
# the same key; autovacuum off, as for customers.
fresh_ref_table() {
  pg -c "DROP TABLE IF EXISTS ref_customers" -c "CREATE TABLE ref_customers (LIKE customers INCLUDING ALL)" \
    -c "ALTER TABLE ref_customers ALTER COLUMN org_id SET DEFAULT 1" \
    -c "ALTER TABLE ref_customers SET (autovacuum_enabled = false)" "$@"
}

# ref_insert NAME FILE [FILE2]: psql \copy of FILE into a fresh customers-like table; with
# FILE2, two psql at once, one per file (into the same table). REF_COLUMNS (set for the call):
# the files' columns, by default the five of the CSV files.
ref_insert() {
  local name=$1 file=$2 file2=${3:-} columns=${REF_COLUMNS:-email, first_name, last_name, phone, city}
  fresh_ref_table
  checkpoint
  copy_of() { echo "\\copy ref_customers ($columns) FROM '$1' CSV HEADER"; }
  if [ -z "$file2" ]; then
    timed "$name" psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 -c "$(copy_of "$file")"
  else
    timed "$name" sh -c 'psql "$1" -X -q -v ON_ERROR_STOP=1 -c "$2" & a=$!
      psql "$1" -X -q -v ON_ERROR_STOP=1 -c "$3"; b=$?; wait $a && [ $b = 0 ]' sh \
      "$DATABASE_URL" "$(copy_of "$file")" "$(copy_of "$file2")"
  fi
  [ "$T_RC" = 0 ] || die "reference insert $name: psql failed"
  local n; n=$(pg_val "SELECT count(*) FROM ref_customers")
  [ "$n" = "$ROWS" ] || die "reference insert $name loaded $n rows, expected $ROWS"
  record "$name" "$T_WALL" "" "$T_CPU" "$T_PG" "" "$T_PROFILE"
  log "  $name (psql \\copy$([ -z "$file2" ] || echo ", two at once")): $T_WALL s (CPU s: psql $T_CPU, Postgres $T_PG, other $T_OTHER; other DBs' xacts $T_OXACT)"
}

ref_upsert() {
  checkpoint
  cat >"$LOGS/ref_upsert.sql" <<SQL
CREATE TEMP TABLE tmp_customers (email text, first_name text, last_name text, phone text, city text);
\\copy tmp_customers FROM '$CLEAN' CSV HEADER
\\set QUIET off
INSERT INTO ref_customers (email, first_name, last_name, phone, city)
SELECT email, first_name, last_name, phone, city FROM tmp_customers
ON CONFLICT (org_id, email) DO UPDATE SET first_name = EXCLUDED.first_name,
  last_name = EXCLUDED.last_name, phone = EXCLUDED.phone, city = EXCLUDED.city, updated_at = now();
SQL
  timed ref_upsert sh -c 'psql "$1" -X -q -v ON_ERROR_STOP=1 -f "$2" >"$3"' sh \
    "$DATABASE_URL" "$LOGS/ref_upsert.sql" "$LOGS/ref_upsert.out"
  local out; out=$(cat "$LOGS/ref_upsert.out")
  [ "$T_RC" = 0 ] && [ "$out" = "INSERT 0 $ROWS" ] ||
    die "reference upsert: psql said '$out', expected 'INSERT 0 $ROWS'"
  record ref_upsert "$T_WALL" "" "$T_CPU" "$T_PG" "" "$T_PROFILE"
  log "  temp table + ON CONFLICT DO UPDATE: $T_WALL s (CPU s: psql $T_CPU, Postgres $T_PG, other $T_OTHER; other DBs' xacts $T_OXACT)"
  pg -c "DROP TABLE ref_customers"
}

# importer NAME FILE MODE ROWS EXP_INSERTED EXP_UPDATED EXP_ERRORS [truncate]
importer() {
  local name=$1 file=$2 mode=$3 rows=$4 exp_ins=$5 exp_upd=$6 exp_err=$7 truncate=${8:-}
  [ -z "$truncate" ] || pg -c "TRUNCATE customers"
  local id
  id=$("$BIN/bulk-import-importer" submit --file "$file" --mode "$mode" 2>"$LOGS/$name.submit.log") ||
    { cat "$LOGS/$name.submit.log" >&2; die "$name: submit failed"; }
  [[ "$id" =~ ^[0-9a-f-]{36}$ ]] || die "$name: submit printed '$id', not a job id"
  SUBMITTED+=("$id")
  checkpoint
  timed "$name" sh -c 'exec "$1" --job-id "$2" >"$3" 2>&1' sh \
    "$BIN/bulk-import-importer" "$id" "$LOGS/$name.log"
  local s=$T_WALL rss=$T_RSS cpu=$T_CPU rc=$T_RC
  local row
  row=$(pg_val "SELECT status, processed_rows, inserted_rows, updated_rows, error_rows, \
                  (report_object IS NOT NULL), coalesce(error, '') FROM import_jobs WHERE id = '$id'")
  local status processed inserted updated errors report error
  IFS='|' read -r status processed inserted updated errors report error <<<"$row"
  if [ "$rc" != 0 ] || [ "$status" != done ] || [ "$processed" != "$rows" ]; then
    echo "---- importer output (last 30 lines of ${LOGS#"$REPO/"}/$name.log)" >&2
    tail -n 30 "$LOGS/$name.log" >&2
    die "$name: job $id exit code $rc, status '$status', processed_rows $processed (expected done, $rows)${error:+, error: $error}"
  fi
  if [ "$exp_err" -gt 0 ] && [ "$errors" = 0 ]; then
    die "$name: job $id reported no error rows on a file with $exp_err bad rows"
  fi
  local want="inserted=$exp_ins updated=$exp_upd errors=$exp_err" got="inserted=$inserted updated=$updated errors=$errors"
  if [ "$want" != "$got" ]; then
    FAILURES+=("$name: job $id counters $got, expected $want")
    log "  CHECK FAILED: counters $got, expected $want"
  fi
  if [ "$exp_err" -gt 0 ] && [ "$report" != t ]; then
    FAILURES+=("$name: job $id has error rows but no errors.csv")
  fi
  record "$name" "$s" "$rss" "$cpu" "$T_PG" "$T_GARAGE" "$T_PROFILE"
  log "  $name: $s s, peak RSS $((rss / 1024)) MiB, CPU s: importer $cpu, Postgres $T_PG, Garage $T_GARAGE, other $T_OTHER; other DBs' xacts $T_OXACT ($got)"
  cleanup_job "$id"
}

PG_VERSION=$(pg_val "SHOW server_version")
PG_SETTINGS=$(pg_val "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' ORDER BY name) FROM pg_settings \
  WHERE name IN ('shared_buffers', 'synchronous_commit', 'fsync', 'wal_level', 'max_wal_size', 'checkpoint_timeout')")

DIRTY_ERRORS=$((DIRTY_INVALID + DIRTY_DUPS))
if [ "$GROWTH" = 1 ]; then
  # The upload case sends the biggest file of the run (the API runs it as a dry run, cancelled).
  if [ "$SKIP_5M" = 0 ]; then UPLOAD_FILE=$BIG; UPLOAD_ROWS=$ROWS_BIG; else UPLOAD_FILE=$CLEAN; UPLOAD_ROWS=$ROWS; fi
  log "starting the API for the upload case (log in ${LOGS#"$REPO/"}/api.log)"
  api_start
fi
for ((r = 1; r <= REPEAT; r++)); do
  [ "$REPEAT" = 1 ] || log "round $r of $REPEAT"
  log "a+b. references (psql) on $(basename "$CLEAN") and $(basename "$SORTED")"
  ref_insert ref_sorted "$SORTED"
  ref_insert ref_two "$HALF1" "$HALF2"
  with_bookkeeping="email, first_name, last_name, phone, city, last_import_id, last_import_line"
  REF_COLUMNS=$with_bookkeeping ref_insert ref_sorted7 "$SORTED7"
  REF_COLUMNS=$with_bookkeeping ref_insert ref_sorted7_two "$SORTED7A" "$SORTED7B"
  ref_insert ref_insert "$CLEAN"
  ref_upsert
  log "c+d. importer on $(basename "$CLEAN") and $(basename "$SORTED")"
  importer sorted "$SORTED" insert_only "$ROWS" "$ROWS" 0 0 truncate
  importer insert "$CLEAN" insert_only "$ROWS" "$ROWS" 0 0 truncate
  importer upsert "$CLEAN" upsert "$ROWS" 0 "$ROWS" 0
  log "e. importer on $(basename "$DIRTY") ($DIRTY_INVALID invalid, $DIRTY_DUPS duplicate rows)"
  importer dirty "$DIRTY" insert_only "$ROWS" $((ROWS - DIRTY_ERRORS)) 0 "$DIRTY_ERRORS" truncate
  if [ "$GROWTH" = 1 ]; then
    log "g. eight importers at once, an eighth of $(basename "$CLEAN") each"
    growth_eight
    log "u. upload of $(basename "$UPLOAD_FILE") through the API and straight to the backend"
    growth_upload "$r"
  fi
done
api_stop
if [ "$SKIP_5M" = 0 ]; then
  log "f. importer on $(basename "$BIG")"
  importer big "$BIG" insert_only "$ROWS_BIG" "$ROWS_BIG" 0 0 truncate
  if [ "$GROWTH" = 1 ]; then
    log "h. $(basename "$FRESH") into the $ROWS_BIG rows f left"
    growth_into_big
  fi
fi
if [ "$WITH_10M" = 1 ]; then
  log "t. importer and psql on $(basename "$HUGE")"
  growth_huge
fi
pg -c "TRUNCATE customers"

# --- 4. report ------------------------------------------------------------------------------

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
maxof() { tr ' ' '\n' | grep . | sort -g | tail -n 1; }
wall() { [ -n "${WALL[$1]:-}" ] && echo "${WALL[$1]}" | median || echo; }
# " (min–max)" of a step measured more than once, else nothing.
spread_of() {
  [ -n "${WALL[$1]:-}" ] || return 0
  echo "${WALL[$1]}" | tr ' ' '\n' | grep . | sort -g |
    awk '{ v[NR] = $1 } END { if (NR > 1) printf " (%s–%s)", v[1], v[NR] }'
}
rss_mib() { [ -n "${RSS[$1]:-}" ] && echo "${RSS[$1]}" | maxof | awk '{ printf "%.1f\n", $1 / 1024 }' || echo; }
cpu() { [ -n "${CPU[$1]:-}" ] && echo "${CPU[$1]}" | median || echo; }
pgcpu() { [ -n "${PGCPU[$1]:-}" ] && echo "${PGCPU[$1]}" | median || echo; }
gcpu() { [ -n "${GCPU[$1]:-}" ] && echo "${GCPU[$1]}" | median || echo; }
ocpu() { [ -n "${OCPU[$1]:-}" ] && echo "${OCPU[$1]}" | maxof || echo; }
oxact() { [ -n "${OXACT[$1]:-}" ] && echo "${OXACT[$1]}" | maxof || echo; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# verdict VALUE OP LIMIT -> PASS/MISS
verdict() { awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN { ok = (op == "<=") ? v <= l : v < l; print ok ? "PASS" : "MISS" }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }

W_REF_INS=$(wall ref_insert)
W_REF_SORTED=$(wall ref_sorted)
W_REF_TWO=$(wall ref_two)
W_REF_SORTED7=$(wall ref_sorted7)
W_REF_SORTED7_TWO=$(wall ref_sorted7_two)
W_SORTED=$(wall sorted)
W_REF_UPS=$(wall ref_upsert)
W_INS=$(wall insert)
W_UPS=$(wall upsert)
W_DIRTY=$(wall dirty)
W_BIG=$(wall big)
R_INS=$(ratio "$W_INS" "$W_REF_INS")
R_SORTED=$(ratio "$W_SORTED" "$W_REF_SORTED")
R_TWO=$(ratio "$W_REF_TWO" "$W_REF_INS")
R_SORTED7=$(ratio "$W_REF_SORTED7" "$W_REF_SORTED")
R_SORTED7_TWO=$(ratio "$W_REF_SORTED7_TWO" "$W_REF_SORTED")
R_SORTED_LIMIT=$(ratio "$W_SORTED" "$W_REF_SORTED7_TWO")
R_UPS=$(ratio "$W_UPS" "$W_REF_UPS")
R_DIRTY=$(ratio "$W_DIRTY" "$W_INS")
RSS_1M=$(for n in insert sorted upsert dirty; do rss_mib $n; done | maxof)
RSS_5M=$(rss_mib big)
TOTAL=$(secs_since "$T_START")

samples_note=""
[ "$REPEAT" = 1 ] || samples_note=" (wall: median of $REPEAT rounds, min–max; RSS: max)"
{
  echo "# Benchmark results"
  echo
  echo "\`bench/run.sh$( [ "$FULL" = 1 ] || echo " --rows $ROWS")$( [ "$SKIP_5M" = 0 ] || echo " --skip-5m")$( [ "$GROWTH" = 1 ] || echo " --skip-growth")$( [ "$WITH_10M" = 0 ] || echo " --with-10m")$( [ "$REPEAT" = 1 ] || echo " --repeat $REPEAT")$( [ "$STORAGE_KIND" = s3 ] || echo " --storage fs")\`"
  echo "on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(
    [ -z "$(git -C "$REPO" status --porcelain -- core importer Cargo.lock 2>/dev/null)" ] ||
      echo " (with uncommitted changes in core/, importer/ or Cargo.lock)")."
  echo
  echo "- machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr); at start $LOAD_START"
  echo "- PostgreSQL $PG_VERSION on 127.0.0.1 (TCP; $PG_SETTINGS)"
  echo "- storage: $( [ "$STORAGE" = s3 ] && echo "Garage S3 at $S3_ENDPOINT_URL" || echo "local directory (STORAGE=fs)"); importer BATCH_SIZE=${BATCH_SIZE:-5000 (default)}"
  echo "- files: $(basename "$CLEAN") ($(du -m "$CLEAN" | cut -f1) MB; $(basename "$SORTED"): the same rows by email), $(basename "$DIRTY") ($DIRTY_INVALID invalid + $DIRTY_DUPS duplicate rows)$( [ "$SKIP_5M" = 1 ] || echo ", $(basename "$BIG") ($(du -m "$BIG" | cut -f1) MB)")"
  echo
  prof_h=""; prof_sep=""
  [ "$SAMPLE" = 0 ] || { prof_h=" busiest backend (sampled) |"; prof_sep="---|"; }
  line() { # NAME LABEL ROWS
    local w; w=$(wall "$1")
    echo "| $2 | $3 | $w$(spread_of "$1") | $(rate "$3" "$w") | $(rss_mib "$1") | $(cpu "$1") | $(pgcpu "$1") | $(gcpu "$1") | $(ocpu "$1") | $(oxact "$1") |$( [ "$SAMPLE" = 0 ] || echo " ${PROFILE[$1]:-} |")"
  }
  echo "| measurement$samples_note | rows | wall s | rows/s | peak RSS MiB | client CPU s | Postgres CPU s | Garage CPU s | other CPU s | other DBs' xacts |$prof_h"
  echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|$prof_sep"
  line ref_insert "a. psql \\copy into a fresh customers-like table" "$ROWS"
  line ref_sorted "a2. psql \\copy, sorted by email" "$ROWS"
  line ref_two "a3. two psql \\copy at once, a half each" "$ROWS"
  line ref_sorted7 "a4. psql \\copy, sorted, with the importer's two bookkeeping columns" "$ROWS"
  line ref_sorted7_two "a5. two psql \\copy at once of a4's rows, alternate 5000-row blocks" "$ROWS"
  line ref_upsert "b. COPY to temp table + INSERT … ON CONFLICT DO UPDATE (all update)" "$ROWS"
  line insert "c. importer insert_only, clean" "$ROWS"
  line sorted "c2. importer insert_only, sorted by email" "$ROWS"
  line upsert "d. importer upsert, clean (all update)" "$ROWS"
  line dirty "e. importer insert_only, 1% bad + 1% duplicate" "$ROWS"
  if [ "$SKIP_5M" = 0 ]; then
    line big "f. importer insert_only, clean" "$ROWS_BIG"
  else
    echo "| f. importer insert_only, clean | $ROWS_BIG | skipped | | | | | | | |"
  fi
  [ "$GROWTH" = 0 ] || growth_report_measurements
  echo
  echo "| target | measured | limit | result |"
  echo "|---|--:|--:|---|"
  echo "| importer insert / psql \\copy, random order (c / a) | ${R_INS}× | ≤ 0.7× | $(verdict "$R_INS" "<=" 0.7) |"
  echo "| importer insert / psql \\copy, sorted by email (c2 / a2) | ${R_SORTED}× | ≤ 0.9× | $(verdict "$R_SORTED" "<=" 0.9) |"
  echo "| importer upsert / reference upsert (d / b) | ${R_UPS}× | ≤ 0.8× | $(verdict "$R_UPS" "<=" 0.8) |"
  echo "| dirty / clean insert (e / c) | ${R_DIRTY}× | ≤ 1.0× | $(verdict "$R_DIRTY" "<=" 1.0) |"
  echo "| peak RSS, $L1-row files (c, d, e) | $RSS_1M MiB | < 64 MiB | $(verdict "$RSS_1M" "<" 64) |"
  if [ "$SKIP_5M" = 0 ]; then
    echo "| peak RSS, $L5-row file (f) | $RSS_5M MiB | < 64 MiB | $(verdict "$RSS_5M" "<" 64) |"
  fi
  [ "$GROWTH" = 0 ] || growth_report_targets
  echo "| (the physical limit) two psql streams / one (a3 / a) | ${R_TWO}× | | info |"
  echo "| (sorted) the bookkeeping columns: psql with them / without (a4 / a2) | ${R_SORTED7}× | | info |"
  echo "| (sorted, the physical limit) two psql streams with them / one without (a5 / a2) | ${R_SORTED7_TWO}× | | info |"
  echo "| (sorted) importer / that limit (c2 / a5) | ${R_SORTED_LIMIT}× | | info |"
  echo
  echo "Wall times are end to end for the \`--job-id\` run (the upload by \`submit\` is not timed),"
  echo "each measured right after a CHECKPOINT once Postgres and Garage are idle, with autovacuum off"
  echo "for customers and ref_customers. Client CPU is psql's or the importer's own; Postgres CPU is"
  echo "every Postgres process's (backends, WAL writer, checkpointer) during the step. Other CPU is"
  echo "everything else on the machine meanwhile, other DBs' xacts the transactions other databases"
  echo "ran on the same server meanwhile (counters lag by up to ~10 s): more than a few tenths of a"
  echo "second or a handful of transactions means the step was disturbed; rerun on a quiet machine."
  echo "Whole benchmark: ${TOTAL} s."
  if [ "${#FAILURES[@]}" -gt 0 ]; then
    echo
    echo "**Checks failed:**"
    for f in "${FAILURES[@]}"; do echo "- $f"; done
  fi
} >"$OUT.part"
mv -f "$OUT.part" "$OUT"

echo
cat "$OUT"
echo
log "written to ${OUT#"$REPO/"}; importer logs in ${LOGS#"$REPO/"}"
[ "${#FAILURES[@]}" = 0 ] || die "${#FAILURES[@]} check(s) failed (see above)"
