# The growth cases of the benchmark, sourced by bench/run.sh (they use its functions: gen,
# timed, record, checkpoint, importer, pg, cleanup_job …). Each is measured against its own
# reference in the same invocation, as alternating rounds where the case allows:
#   g.  eight imports of an eighth of the clean file started together / one import of it all
#       (c, the same round), and the spread of the eight (slowest / median)
#   h.  importer insert_only of 1M fresh rows into customers holding the 5M-row file / psql
#       \copy of the same rows into ref_customers holding the same 5M rows (once, after f)
#   u.  upload through the API (curl multipart POST /imports, until its 201) / writing the same
#       bytes to the backend directly: `cp` into the storage directory (fs) or one signed PUT
#       with curl (s3), with the API's peak RSS
#   t.  (--with-10m) a 10M-row file: importer / psql \copy into a fresh table, and the
#       importer's rate in each tenth of the file (from processed_rows, polled every 0.5 s)

FRESH="$DATA/fresh_$L1.csv"
ROWS_10M=$((ROWS * 10))
L10=$(label "$ROWS_10M")
HUGE="$DATA/clean_$L10.csv"
# The eight parts of the clean file (each with the header).
part_file() { echo "$DATA/clean_$L1.part$1.csv"; }

growth_data() {
  gen fresh "$ROWS" "$FRESH"
  if [ ! -s "$(part_file 8)" ] || [ "$(part_file 8)" -ot "$CLEAN" ]; then
    awk -v n="$ROWS" -v base="$DATA/clean_$L1.part" '
      NR == 1 { h = $0; for (i = 1; i <= 8; i++) print h > (base i ".csv.part"); next }
      { i = int((NR - 2) * 8 / n) + 1; print > (base i ".csv.part") }' "$CLEAN"
    for i in 1 2 3 4 5 6 7 8; do mv -f "$(part_file "$i").part" "$(part_file "$i")"; done
  fi
}

# g. Eight importers at once, each on one part; every job checked exact.
EIGHT_SPREADS=""
growth_eight() {
  pg -c "TRUNCATE customers"
  local ids=() i id
  for i in 1 2 3 4 5 6 7 8; do
    id=$("$BIN/bulk-import-importer" submit --file "$(part_file "$i")" --mode insert_only 2>"$LOGS/eight$i.submit.log") ||
      { cat "$LOGS/eight$i.submit.log" >&2; die "eight: submit of part $i failed"; }
    ids+=("$id"); SUBMITTED+=("$id")
  done
  checkpoint
  timed eight sh -c 'bin=$1 logs=$2; shift 2; n=0; pids=""
    for id in "$@"; do n=$((n + 1))
      /usr/bin/time -f "%e" -o "$logs/eight$n.time" "$bin" --job-id "$id" >"$logs/eight$n.log" 2>&1 &
      pids="$pids $!"; done
    rc=0; for p in $pids; do wait "$p" || rc=1; done; exit $rc' sh "$BIN/bulk-import-importer" "$LOGS" "${ids[@]}"
  [ "$T_RC" = 0 ] || die "eight: an importer failed (logs in ${LOGS#"$REPO/"}/eight*.log)"
  local total=0 rows got each=""
  for i in 1 2 3 4 5 6 7 8; do
    rows=$(($(wc -l <"$(part_file "$i")") - 1)); total=$((total + rows))
    got=$(pg_val "SELECT status || ' ' || processed_rows || ' ' || inserted_rows || ' ' || error_rows FROM import_jobs WHERE id = '${ids[$((i - 1))]}'")
    [ "$got" = "done $rows $rows 0" ] || FAILURES+=("eight: part $i ended '$got', expected 'done $rows $rows 0'")
    each="$each $(cat "$LOGS/eight$i.time")"
  done
  [ "$total" = "$ROWS" ] || die "eight: the parts hold $total rows, not $ROWS"
  record eight "$T_WALL" "" "$T_CPU" "$T_PG" "$T_GARAGE" "$T_PROFILE"
  # The spread of this round's eight: the slowest over their median.
  local spread; spread=$(echo "$each" | tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { printf "%.2f", v[NR] / ((v[4] + v[5]) / 2) }')
  EIGHT_SPREADS="$EIGHT_SPREADS $spread"
  log "  eight at once: $T_WALL s in all, each$each s (slowest / median ${spread}×)"
  for id in "${ids[@]}"; do cleanup_job "$id"; done
}

# h. 1M fresh rows into the 5M rows f left in customers, and the reference into the same.
growth_into_big() {
  fresh_ref_table -c "\\copy ref_customers (email, first_name, last_name, phone, city) FROM '$BIG' CSV HEADER"
  checkpoint
  timed ref_into_big psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 \
    -c "\\copy ref_customers (email, first_name, last_name, phone, city) FROM '$FRESH' CSV HEADER"
  [ "$T_RC" = 0 ] || die "ref_into_big: psql failed"
  [ "$(pg_val "SELECT count(*) FROM ref_customers")" = $((ROWS_BIG + ROWS)) ] || die "ref_into_big: wrong row count"
  record ref_into_big "$T_WALL" "" "$T_CPU" "$T_PG" "" "$T_PROFILE"
  log "  psql \\copy of $(basename "$FRESH") into $ROWS_BIG rows: $T_WALL s"
  pg -c "DROP TABLE ref_customers"
  [ "$(pg_val "SELECT count(*) FROM customers")" = "$ROWS_BIG" ] || die "into_big: customers does not hold f's rows"
  importer into_big "$FRESH" insert_only "$ROWS" "$ROWS" 0 0
}

# u. The upload path: the API (release build, this run's database and storage) on a free port.
API_PID=""
API_URL=""
API_TOKEN=""
api_start() {
  local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  API_URL="http://127.0.0.1:$port"
  BIND_ADDR="127.0.0.1:$port" JWT_SECRET="bench-$RUN_ID-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
    IMPORTER_BIN="$BIN/bulk-import-importer" JOBS_CREATED_MAX_PER_ORG=100000000 RUST_LOG=warn \
    "$BIN/bulk-import-api" >"$LOGS/api.log" 2>&1 &
  API_PID=$!
  local i
  for ((i = 0; i < 150; i++)); do curl -fs "$API_URL/health" >/dev/null && break; sleep 0.2; done
  curl -fs "$API_URL/health" >/dev/null || { cat "$LOGS/api.log" >&2; die "the API did not start"; }
  curl -fs -X POST "$API_URL/auth/register" -H 'Content-Type: application/json' \
    -d '{"email":"bench@example.com","password":"bench-pass-123"}' >/dev/null || die "register failed"
  API_TOKEN=$(curl -fs -X POST "$API_URL/auth/token" -H 'Content-Type: application/json' \
    -d '{"email":"bench@example.com","password":"bench-pass-123"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])') || die "login failed"
}
api_stop() {
  [ -n "$API_PID" ] || return 0
  API_RSS_KB=$(awk '/VmHWM/ { print $2 }' "/proc/$API_PID/status" 2>/dev/null || echo 0)
  kill "$API_PID" 2>/dev/null || true
  wait "$API_PID" 2>/dev/null || true
  API_PID=""
}
UPLOAD_FILE=""
growth_upload() {
  local file=$UPLOAD_FILE key="bench-upload-$RUN_ID-$1"
  checkpoint
  if [ "$STORAGE" = fs ]; then
    mkdir -p "$STORAGE_DIR/$STORAGE_KEY_PREFIX"
    timed upload_ref cp "$file" "$STORAGE_DIR/${STORAGE_KEY_PREFIX}cp-$1.csv"
    rm -f "$STORAGE_DIR/${STORAGE_KEY_PREFIX}cp-$1.csv"
  else
    timed upload_ref curl -sS -f --max-time 300 -X PUT -T "$file" -o /dev/null \
      --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
      -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$S3_ENDPOINT_URL/$S3_BUCKET/${STORAGE_KEY_PREFIX}put-$1.csv"
    delete_object "put-$1.csv"
  fi
  [ "$T_RC" = 0 ] || die "upload reference failed"
  record upload_ref "$T_WALL" "" "$T_CPU"
  checkpoint
  # Dry run: the job that follows the upload reads the file but writes no customers.
  timed upload curl -sS -f --max-time 600 -o "$LOGS/upload-$1.json" -H "Authorization: Bearer $API_TOKEN" \
    -H "Idempotency-Key: $key" -F "file=@$file;type=text/csv" "$API_URL/imports?mode=insert_only&dry_run=true"
  [ "$T_RC" = 0 ] || { cat "$LOGS/upload-$1.json" >&2 || true; die "upload through the API failed"; }
  record upload "$T_WALL" "" "$T_CPU"
  local id; id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$LOGS/upload-$1.json")
  SUBMITTED+=("$id")
  # Untimed: the job is cancelled and must end before the next step.
  curl -sS -o /dev/null -X POST -H "Authorization: Bearer $API_TOKEN" "$API_URL/imports/$id/cancel" || true
  local i
  for ((i = 0; i < 600; i++)); do
    case "$(pg_val "SELECT status FROM import_jobs WHERE id = '$id'")" in done|failed|cancelled) break ;; esac
    sleep 0.5
  done
  log "  upload of $(basename "$file"): API $(awk -v s="$T_WALL" 'BEGIN { printf "%.2f", s }') s, direct ${WALL[upload_ref]##* } s"
  cleanup_job "$id"
}

# t. The 10M-row file: psql, then the importer with its progress polled.
growth_huge() {
  fresh_ref_table
  checkpoint
  timed ref_huge psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 \
    -c "\\copy ref_customers (email, first_name, last_name, phone, city) FROM '$HUGE' CSV HEADER"
  [ "$T_RC" = 0 ] || die "ref_huge: psql failed"
  record ref_huge "$T_WALL" "" "$T_CPU" "$T_PG"
  pg -c "DROP TABLE ref_customers"
  # processed_rows over time of the job submitted next (the poller stops with the import).
  local since; since=$(pg_val "SELECT now()")
  (
    while :; do
      echo "$EPOCHREALTIME $(pg_val "SELECT coalesce(max(processed_rows), 0) FROM import_jobs WHERE created_at > '$since'" 2>/dev/null || echo 0)"
      sleep 0.5
    done
  ) >"$LOGS/huge.progress" &
  local poller=$!
  importer huge "$HUGE" insert_only "$ROWS_10M" "$ROWS_10M" 0 0 truncate
  kill "$poller" 2>/dev/null || true
  wait "$poller" 2>/dev/null || true
  # Rows per second in each tenth: the time processed_rows took to cross each tenth.
  HUGE_TENTHS=$(awk -v n="$ROWS_10M" '
    { t[NR] = $1; r[NR] = $2 }
    END { k = 1; prev_t = 0; prev_r = 0
      for (i = 1; i <= NR; i++) {
        if (r[i] > 0 && prev_t == 0) { prev_t = t[i]; prev_r = r[i] }
        while (k <= 10 && r[i] >= n * k / 10 && prev_t > 0) {
          if (t[i] > prev_t) printf "%s%.0f", (k > 1 ? " " : ""), (r[i] - prev_r) / (t[i] - prev_t)
          else printf "%s-", (k > 1 ? " " : "")
          prev_t = t[i]; prev_r = r[i]; k++ } } }' "$LOGS/huge.progress")
  log "  10M: rows/s per tenth: $HUGE_TENTHS"
}

# The report's lines for the growth cases (inside run.sh's report block).
growth_report_measurements() {
  line eight "g. eight importers at once, an eighth each (wall of all)" "$ROWS"
  [ "$SKIP_5M" = 1 ] || {
    line ref_into_big "h0. psql \\copy of $(basename "$FRESH") into a table holding $ROWS_BIG rows" "$ROWS"
    line into_big "h. importer insert_only of $(basename "$FRESH") into customers holding $ROWS_BIG rows" "$ROWS"
  }
  [ -z "${WALL[upload]:-}" ] || {
    line upload_ref "u0. $( [ "$STORAGE" = fs ] && echo "cp" || echo "one signed curl PUT") of $(basename "$UPLOAD_FILE") to the backend" "$UPLOAD_ROWS"
    line upload "u. upload of $(basename "$UPLOAD_FILE") through the API (until its 201)" "$UPLOAD_ROWS"
  }
  [ "$WITH_10M" = 0 ] || {
    line ref_huge "t0. psql \\copy of $(basename "$HUGE") into a fresh table" "$ROWS_10M"
    line huge "t. importer insert_only of $(basename "$HUGE")" "$ROWS_10M"
  }
}
growth_report_targets() {
  local spread r
  spread=$(echo "$EIGHT_SPREADS" | maxof)
  r=$(ratio "$(wall eight)" "$W_INS")
  echo "| eight at once: all / one import of all their rows (g / c) | ${r}× | ≤ 1.0× | $(verdict "$r" "<=" 1.0) |"
  echo "| eight at once: slowest / median of the eight (the worst round) | ${spread}× | ≤ 1.5× | $(verdict "$spread" "<=" 1.5) |"
  if [ "$SKIP_5M" = 0 ]; then
    r=$(ratio "$(wall into_big)" "$(wall ref_into_big)")
    echo "| into a table holding $L5 rows: importer / psql \\copy (h / h0) | ${r}× | ≤ 1.0× | $(verdict "$r" "<=" 1.0) |"
  fi
  if [ -n "${WALL[upload]:-}" ]; then
    r=$(ratio "$(wall upload_ref)" "$(wall upload)")
    local rss; rss=$(awk -v k="${API_RSS_KB:-0}" 'BEGIN { printf "%.1f", k / 1024 }')
    echo "| upload speed: through the API / straight to the backend (u0 / u) | ${r}× | ≥ 0.7× | $(awk -v v="$r" 'BEGIN { print v >= 0.7 ? "PASS" : "MISS" }') |"
    echo "| the API's peak RSS over the run | $rss MiB | < 100 MiB | $(verdict "$rss" "<" 100) |"
  fi
  if [ "$WITH_10M" = 1 ]; then
    r=$(ratio "$(wall huge)" "$(wall ref_huge)")
    echo "| $L10 rows: importer / psql \\copy (t / t0) | ${r}× | ≤ 1.0× | $(verdict "$r" "<=" 1.0) |"
    echo "| $L10 rows: importer rows/s in each tenth | $HUGE_TENTHS | | info |"
  fi
}
