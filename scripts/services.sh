#!/usr/bin/env bash
# Local services for tests, the demo and the benchmark: PostgreSQL and Redis.
#
#   services.sh ensure-packages   install (as root) or name the missing Debian packages
#   services.sh ensure-postgres   print a Postgres URL: the one on 127.0.0.1:5432 if it answers
#                                 with trust auth, else a private cluster under target/services/
#   services.sh ensure-redis      print a Redis URL: the one on 127.0.0.1:6379 if it answers,
#                                 else a private redis-server
#   services.sh private-redis     always start (or reuse) a private redis-server; print its URL
#   services.sh stop [WHAT...]    stop what this script started (WHAT: postgres, redis,
#                                 private-redis; default all); safe when nothing runs
#
# Only URLs go to stdout; progress goes to stderr. Paths are relative to the repository root.
# TCCD_FORCE_PRIVATE=1 skips the shared 5432/6379 servers and always uses private ones.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SVC="$ROOT/target/services"
PG_MARKER="$SVC/pg.started"
SHARED_PG_URL="postgres://postgres@127.0.0.1:5432/postgres"
FORCE_PRIVATE=${TCCD_FORCE_PRIVATE:-0}

log() { echo "services: $*" >&2; }
die() { echo "services: error: $*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

# Serialise concurrent invocations (two `make` runs) on one lock file.
lock() {
  mkdir -p "$SVC"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$SVC/.lock"
    flock 9
  fi
}

free_port() {
  if command -v python3 >/dev/null 2>&1 &&
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null; then
    return
  fi
  local port
  for _ in $(seq 1 200); do
    port=$((20000 + RANDOM % 40000))
    if ! ss -Htln "sport = :$port" 2>/dev/null | grep -q .; then
      echo "$port"
      return
    fi
  done
  die "no free TCP port found"
}

# --- packages -------------------------------------------------------------------------------

# The directory holding initdb and pg_ctl (PATH first, else the newest Debian install).
pg_bindir() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"
    return
  fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
    echo "$d"
    return
  fi
  return 1
}

deb_installed() {
  if command -v dpkg-query >/dev/null 2>&1; then
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
  else
    return 1
  fi
}

cmd_ensure_packages() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  if ! pg_bindir >/dev/null || ! command -v psql >/dev/null 2>&1 ||
    ! command -v pg_isready >/dev/null 2>&1; then
    missing+=(postgresql)
  fi
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  # The DTM-compatibility tests run DTM's Python client in a virtual environment.
  if ! command -v python3 >/dev/null 2>&1; then
    missing+=(python3 python3-venv)
  elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
  fi
  local pkg pc
  for pkg in libpq-dev:libpq libsqlite3-dev:sqlite3 libssl-dev:openssl; do
    pc=${pkg#*:}
    pkg=${pkg%%:*}
    deb_installed "$pkg" || pkg-config --exists "$pc" 2>/dev/null || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  if ! is_root; then
    echo "missing: install with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  log "installing ${missing[*]}"
  apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2
}

# --- postgres -------------------------------------------------------------------------------

# Run a Postgres server program as a user it accepts (initdb and postgres refuse root).
as_pg() {
  if is_root; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

marker_get() { # marker_get FILE KEY
  sed -n "s/^$2=//p" "$1" 2>/dev/null | head -n 1 || true
}

pg_running() { # pg_running DATADIR
  local bin
  bin=$(pg_bindir) || return 1
  [ -f "$1/postmaster.pid" ] && as_pg "$bin/pg_ctl" -D "$1" status >/dev/null 2>&1
}

pg_answers() { # pg_answers URL
  PGCONNECT_TIMEOUT=3 psql "$1" -Atqc 'select 1' >/dev/null 2>&1
}

# Where the private cluster lives: target/services/pg, unless the postgres user cannot reach it
# (a checkout under /root); then a directory under /tmp named after the checkout.
pg_base() {
  local base="$SVC"
  if is_root && ! runuser -u postgres -- test -x "$base" 2>/dev/null; then
    base="/tmp/tccd-services-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
  fi
  echo "$base"
}

ensure_pg_user() {
  is_root || return 0
  id -u postgres >/dev/null 2>&1 && return 0
  log "creating system user postgres"
  useradd --system --user-group --home-dir /nonexistent --no-create-home \
    --shell /usr/sbin/nologin postgres
}

pg_stop_private() {
  [ -f "$PG_MARKER" ] || return 0
  local data sock bin
  data=$(marker_get "$PG_MARKER" datadir)
  sock=$(marker_get "$PG_MARKER" socketdir)
  if [ -n "$data" ] && pg_running "$data"; then
    bin=$(pg_bindir)
    log "stopping private postgres ($data)"
    as_pg "$bin/pg_ctl" -D "$data" -m fast -w stop >&2 || log "pg_ctl stop failed"
  fi
  # Only directories this script made: the data dir is named pg, the socket dir pgsock*.
  [ -n "$data" ] && [ "$(basename "$data")" = pg ] && rm -rf "$data"
  case "$sock" in */pgsock*) rm -rf "$sock" ;; esac
  rm -f "$PG_MARKER"
}

cmd_ensure_postgres() {
  if [ "$FORCE_PRIVATE" != 1 ] && pg_isready -q -h 127.0.0.1 -p 5432 -t 3 2>/dev/null &&
    pg_answers "$SHARED_PG_URL"; then
    log "using the postgres on 127.0.0.1:5432"
    echo "$SHARED_PG_URL"
    return
  fi
  lock
  local port url
  if [ -f "$PG_MARKER" ]; then
    port=$(marker_get "$PG_MARKER" port)
    url="postgres://postgres@127.0.0.1:$port/postgres"
    if pg_running "$(marker_get "$PG_MARKER" datadir)" && pg_answers "$url"; then
      log "reusing private postgres on port $port"
      echo "$url"
      return
    fi
    pg_stop_private
  fi

  local bin base data sock logf
  bin=$(pg_bindir) || die "initdb/pg_ctl not found; run: $0 ensure-packages"
  ensure_pg_user
  base=$(pg_base)
  data="$base/pg"
  logf="$base/pg.log"
  mkdir -p "$base"
  chmod 755 "$base"
  # A cluster left running without a marker (killed script): stop it before starting afresh.
  if pg_running "$data"; then
    as_pg "$bin/pg_ctl" -D "$data" -m fast -w stop >&2 || true
  fi
  rm -rf "$data"
  # Unix socket paths are limited to ~107 bytes; fall back to /tmp for deep checkouts.
  sock="$base/pgsock"
  if [ ${#sock} -gt 80 ]; then
    sock=$(mktemp -d /tmp/pgsock.XXXXXX)
  fi
  mkdir -p "$data" "$sock"
  : >"$logf"
  chmod 700 "$data"
  if is_root; then
    chown postgres: "$data" "$sock" "$logf"
  fi
  port=$(free_port)
  {
    echo "port=$port"
    echo "datadir=$data"
    echo "socketdir=$sock"
  } >"$PG_MARKER"

  log "initdb $data"
  if ! as_pg "$bin/initdb" -D "$data" -A trust -U postgres --no-sync >"$base/initdb.log" 2>&1; then
    cat "$base/initdb.log" >&2
    die "initdb failed"
  fi
  log "starting private postgres on 127.0.0.1:$port (log: $logf)"
  # 9>&-: the server must not inherit (and so hold) this script's lock.
  if ! as_pg "$bin/pg_ctl" -D "$data" -l "$logf" -w -t 60 \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $sock -c fsync=on" start >&2 9>&-; then
    tail -n 20 "$logf" >&2 || true
    pg_stop_private
    die "postgres did not start"
  fi
  url="postgres://postgres@127.0.0.1:$port/postgres"
  pg_answers "$url" || die "private postgres does not answer at $url"
  echo "$url"
}

# --- redis ----------------------------------------------------------------------------------

redis_answers() { # redis_answers PORT
  [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]
}

redis_pid_alive() { # redis_pid_alive PIDFILE
  local pid
  [ -f "$1" ] || return 1
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
    grep -q redis "/proc/$pid/comm" 2>/dev/null
}

redis_stop() { # redis_stop NAME
  local pidf="$SVC/$1.pid" pid
  if redis_pid_alive "$pidf"; then
    pid=$(cat "$pidf")
    log "stopping private $1 (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidf" "$SVC/$1.port"
}

redis_start() { # redis_start NAME  -> prints URL
  local name=$1 pidf="$SVC/$1.pid" portf="$SVC/$1.port" port
  lock
  if redis_pid_alive "$pidf" && [ -f "$portf" ] && redis_answers "$(cat "$portf")"; then
    port=$(cat "$portf")
    log "reusing private $name on port $port"
    echo "redis://127.0.0.1:$port"
    return
  fi
  redis_stop "$name"
  command -v redis-server >/dev/null 2>&1 || die "redis-server not found; run: $0 ensure-packages"
  port=$(free_port)
  log "starting private $name on 127.0.0.1:$port (log: $SVC/$name.log)"
  redis-server --save "" --appendonly no --daemonize yes --dir "$SVC" \
    --pidfile "$pidf" --logfile "$SVC/$name.log" --bind 127.0.0.1 --port "$port" >&2 9>&- ||
    die "redis-server failed to start"
  echo "$port" >"$portf"
  for _ in $(seq 1 100); do
    if redis_answers "$port"; then
      echo "redis://127.0.0.1:$port"
      return
    fi
    sleep 0.1
  done
  tail -n 20 "$SVC/$name.log" >&2 || true
  redis_stop "$name"
  die "private $name did not answer on port $port"
}

cmd_ensure_redis() {
  if [ "$FORCE_PRIVATE" != 1 ] && redis_answers 6379; then
    log "using the redis on 127.0.0.1:6379"
    echo "redis://127.0.0.1:6379"
    return
  fi
  redis_start redis
}

cmd_stop() {
  [ -d "$SVC" ] || return 0
  lock
  [ $# -gt 0 ] || set -- postgres redis private-redis
  local what
  for what in "$@"; do
    case "$what" in
      postgres) pg_stop_private ;;
      redis) redis_stop redis ;;
      private-redis) redis_stop redis-private ;;
      *) die "stop: unknown service '$what' (postgres, redis, private-redis)" ;;
    esac
  done
}

usage() {
  sed -n '2,14s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
  exit 2
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
  ensure-packages) cmd_ensure_packages ;;
  ensure-postgres) cmd_ensure_postgres ;;
  ensure-redis) cmd_ensure_redis ;;
  private-redis) redis_start redis-private ;;
  stop) cmd_stop "$@" ;;
  -h | --help | help) usage ;;
  *) usage ;;
esac
