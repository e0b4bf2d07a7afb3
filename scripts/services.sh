#!/usr/bin/env bash
# Starts the services the tests and a local run need — Postgres, Redis and a single-node Garage
# (S3) on loopback — installing what is missing, and writes their settings to .local/env.
#
#   scripts/services.sh        install/start whatever is not running, then print .local/env
#   scripts/services.sh db     only Postgres (with the bulk_import database) and Redis
#   scripts/services.sh env    only print .local/env
#   scripts/services.sh stop   stop the Garage started from this checkout (nothing else)
#
# Safe to run again at any time: steps that are already done are skipped.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCAL_DIR="$REPO/.local"
ENV_FILE="$LOCAL_DIR/env"
GARAGE_DIR="$LOCAL_DIR/garage"
GARAGE_CONF="$GARAGE_DIR/garage.toml"
GARAGE_PID="$GARAGE_DIR/garage.pid"
GARAGE_LOG="$GARAGE_DIR/garage.log"

PG_HOST=127.0.0.1
PG_PORT=5432
PG_DB=bulk_import
PG_ADMIN_URL="postgres://postgres:postgres@$PG_HOST:$PG_PORT/postgres"
REDIS_PORT=6379
S3_PORT=3900
S3_REGION=us-east-1
S3_BUCKET=imports
# Fixed development credentials, imported into Garage, so that .local/env is the same on every
# run and on every machine. Garage serves loopback only; these are not secrets.
S3_KEY_NAME=bulk-import-dev
S3_ACCESS_KEY=GK000000000000000000000001
S3_SECRET_KEY=0000000000000000000000000000000000000000000000000000000000000001

# `cargo install` puts garage here, and a fresh login shell may not have it on PATH.
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"

log() { echo "services: $*"; }
die() { echo "services: error: $*" >&2; exit 1; }

# Runs a command silently; shows its output only if it fails.
quiet() {
  local out
  if ! out=$("$@" 2>&1); then
    printf '%s\n' "$out" >&2
    return 1
  fi
}

# wait_for SECONDS COMMAND...: polls COMMAND until it succeeds or the deadline passes.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

print_env() {
  [ -f "$ENV_FILE" ] || die "$ENV_FILE does not exist yet: run scripts/services.sh first"
  cat "$ENV_FILE"
}

# --- installation -------------------------------------------------------------------------

install_missing() {
  local pkgs=()
  { command -v pg_ctlcluster && command -v psql && command -v pg_isready; } >/dev/null ||
    pkgs+=(postgresql)
  { command -v redis-server && command -v redis-cli; } >/dev/null || pkgs+=(redis-server)
  command -v curl >/dev/null || pkgs+=(curl)
  if [ ${#pkgs[@]} -gt 0 ]; then
    log "installing ${pkgs[*]} with apt-get (a minute or two)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
  fi
  if [ "${1:-}" != no-garage ] && ! command -v garage >/dev/null; then
    # One install at a time on the machine: a second checkout (a git worktree, a parallel
    # test run) waits for the first instead of compiling Garage again beside it.
    local lock="${CARGO_HOME:-$HOME/.cargo}/.bulk-import-garage-install.lock"
    mkdir -p "$(dirname "$lock")"
    exec 9>"$lock"
    if ! flock -n 9; then
      log "garage: another checkout is installing it; waiting"
      flock 9
    fi
    if ! command -v garage >/dev/null; then
      log "installing garage with cargo install (about 10 minutes the first time)"
      cargo install garage --locked --no-default-features --features bundled-libs,sqlite
    fi
    exec 9>&-
  fi
}

# --- Postgres -----------------------------------------------------------------------------

# psql as the postgres superuser through the local socket (peer or trust auth), for the one step
# that must work before the password is known to be set.
psql_superuser() {
  if [ "$(id -u)" = 0 ]; then
    (cd / && runuser -u postgres -- psql -p "$PG_PORT" -X -q -v ON_ERROR_STOP=1 "$@")
  else
    (cd / && sudo -u postgres psql -p "$PG_PORT" -X -q -v ON_ERROR_STOP=1 "$@")
  fi
}

pg_admin() { psql "$PG_ADMIN_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }

start_postgres() {
  if ! pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then
    local ver
    ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$ver" ]; then
      ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
      log "postgres: creating cluster $ver/main"
      as_root pg_createcluster "$ver" main
    fi
    log "postgres: starting cluster $ver/main"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start
    wait_for 30 pg_isready -q -h "$PG_HOST" -p "$PG_PORT" ||
      die "postgres did not accept connections on $PG_HOST:$PG_PORT within 30 s"
  fi
  # With trust auth (as on the CI machines) any password logs in; with scram (stock Debian)
  # the password has to be set once.
  if ! PGCONNECT_TIMEOUT=5 pg_admin -tAc 'select 1' >/dev/null 2>&1; then
    log "postgres: setting the password of user postgres"
    psql_superuser -d postgres -c "ALTER USER postgres PASSWORD 'postgres'"
    PGCONNECT_TIMEOUT=5 quiet pg_admin -tAc 'select 1' ||
      die "cannot log in as postgres:postgres@$PG_HOST:$PG_PORT (check pg_hba.conf)"
  fi
  if [ "$(pg_admin -tAc "select 1 from pg_database where datname = '$PG_DB'")" != 1 ]; then
    log "postgres: creating database $PG_DB"
    pg_admin -c "CREATE DATABASE $PG_DB"
  fi
  log "postgres: ready on $PG_HOST:$PG_PORT"
}

# --- Redis --------------------------------------------------------------------------------

redis_up() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

start_redis() {
  if ! redis_up; then
    log "redis: starting"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
      --dir "${TMPDIR:-/tmp}" >/dev/null
    wait_for 20 redis_up || die "redis did not answer on 127.0.0.1:$REDIS_PORT within 20 s"
  fi
  log "redis: ready on 127.0.0.1:$REDIS_PORT"
}

# --- Garage -------------------------------------------------------------------------------

g() { garage -c "$GARAGE_CONF" "$@"; }
garage_up() { g status >/dev/null 2>&1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The pid in the pid file, if that process is alive and is a garage.
garage_pid() {
  local pid
  [ -f "$GARAGE_PID" ] || return 1
  pid=$(cat "$GARAGE_PID")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q garage &&
    echo "$pid"
}

# Writes the config, keeping the rpc_secret generated on the first run. Rewritten only if its
# content changed, so a checkout that moved gets fresh paths.
write_garage_config() {
  local secret=""
  mkdir -p "$GARAGE_DIR/meta" "$GARAGE_DIR/data"
  [ -f "$GARAGE_CONF" ] && secret=$(sed -n 's/^rpc_secret = "\([0-9a-f]*\)"$/\1/p' "$GARAGE_CONF")
  [ ${#secret} -eq 64 ] || secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  local conf
  conf=$(cat <<EOF
# Written by scripts/services.sh: a single-node Garage on loopback for development and tests.
metadata_dir = "$GARAGE_DIR/meta"
data_dir = "$GARAGE_DIR/data"
db_engine = "sqlite"
replication_factor = 1

rpc_bind_addr = "127.0.0.1:3901"
rpc_public_addr = "127.0.0.1:3901"
rpc_secret = "$secret"

[s3_api]
s3_region = "$S3_REGION"
api_bind_addr = "127.0.0.1:$S3_PORT"

[admin]
api_bind_addr = "127.0.0.1:3903"
EOF
)
  if [ ! -f "$GARAGE_CONF" ] || [ "$(cat "$GARAGE_CONF")" != "$conf" ]; then
    (umask 077 && printf '%s\n' "$conf" >"$GARAGE_CONF")
  fi
}

# A signed PUT, GET and DELETE of a small object with the dev key: S3 works end to end.
# curl older than 7.75 cannot sign; then only check that the S3 port answers like Garage.
s3_check() {
  local url="http://127.0.0.1:$S3_PORT/$S3_BUCKET/_services_check/$$.txt"
  if curl --help all 2>/dev/null | grep -q -- --aws-sigv4; then
    local sign=(--aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY"
      -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -sS -f --max-time 10)
    printf 'ok\n' | curl "${sign[@]}" -T - "$url" -o /dev/null &&
      [ "$(curl "${sign[@]}" "$url")" = ok ] &&
      curl "${sign[@]}" -X DELETE "$url" -o /dev/null
  else
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' -I --max-time 10 "http://127.0.0.1:$S3_PORT/$S3_BUCKET")
    [ "$code" = 403 ] || [ "$code" = 404 ]
  fi
}

start_garage() {
  write_garage_config
  if ! garage_up; then
    if ! garage_pid >/dev/null; then
      if port_open "$S3_PORT" || port_open 3901; then
        # Another checkout's Garage: with the same fixed key and bucket it serves us as well.
        if s3_check 2>/dev/null; then
          log "garage: another Garage on 127.0.0.1:$S3_PORT already serves bucket $S3_BUCKET with the dev key; using it"
          return
        fi
        die "ports $S3_PORT/3901 are taken by something that is not this checkout's Garage"
      fi
      log "garage: starting (log: ${GARAGE_LOG#"$REPO/"})"
      [ -f "$GARAGE_LOG" ] && mv -f "$GARAGE_LOG" "$GARAGE_LOG.old"
      nohup garage -c "$GARAGE_CONF" server </dev/null >"$GARAGE_LOG" 2>&1 &
      echo $! >"$GARAGE_PID"
    fi
    if ! wait_for 30 garage_up; then
      tail -n 20 "$GARAGE_LOG" >&2 || true
      die "garage did not answer 'garage status' within 30 s"
    fi
  fi

  local version node
  version=$(g layout show 2>/dev/null | sed -n 's/^Current cluster layout version: //p')
  if [ "$version" = 0 ]; then
    node=$(g node id -q 2>/dev/null)
    node=${node%%@*}
    log "garage: assigning a 1G role in zone dc1 to node ${node:0:16}"
    quiet g layout assign -z dc1 -c 1G "$node"
    quiet g layout apply --version 1
  fi
  if ! g key info "$S3_ACCESS_KEY" >/dev/null 2>&1; then
    log "garage: importing the development key $S3_ACCESS_KEY"
    quiet g key import --yes -n "$S3_KEY_NAME" "$S3_ACCESS_KEY" "$S3_SECRET_KEY"
  fi
  if ! g bucket info "$S3_BUCKET" >/dev/null 2>&1; then
    log "garage: creating bucket $S3_BUCKET"
    quiet g bucket create "$S3_BUCKET"
  fi
  quiet g bucket allow --read --write --owner "$S3_BUCKET" --key "$S3_ACCESS_KEY"

  s3_check || die "S3 check failed: signed PUT/GET/DELETE on http://127.0.0.1:$S3_PORT/$S3_BUCKET"
  log "garage: ready, S3 on http://127.0.0.1:$S3_PORT (bucket $S3_BUCKET)"
}

stop_garage() {
  local pid
  if ! pid=$(garage_pid); then
    log "garage: not running (no live pid in ${GARAGE_PID#"$REPO/"})"
    rm -f "$GARAGE_PID"
    return
  fi
  log "garage: stopping pid $pid"
  kill "$pid"
  wait_for 30 sh -c "! kill -0 $pid" || die "garage (pid $pid) did not stop within 30 s"
  rm -f "$GARAGE_PID"
}

write_env() {
  local tmp="$ENV_FILE.tmp"
  cat >"$tmp" <<EOF
export DATABASE_URL=postgres://postgres:postgres@$PG_HOST:$PG_PORT/$PG_DB
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
export STORAGE=s3
export S3_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export S3_PUBLIC_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export S3_ACCESS_KEY=$S3_ACCESS_KEY
export S3_SECRET_KEY=$S3_SECRET_KEY
export S3_BUCKET=$S3_BUCKET
export S3_REGION=$S3_REGION
EOF
  mv -f "$tmp" "$ENV_FILE"
}

case "${1:-start}" in
  start)
    mkdir -p "$LOCAL_DIR"
    install_missing
    start_postgres
    start_redis
    start_garage
    write_env
    log "settings in ${ENV_FILE#"$REPO/"} (source it):"
    print_env
    ;;
  db)
    mkdir -p "$LOCAL_DIR"
    install_missing no-garage
    start_postgres
    start_redis
    ;;
  env) print_env ;;
  stop) stop_garage ;;
  *)
    echo "usage: $0 [start|db|env|stop]" >&2
    exit 2
    ;;
esac
