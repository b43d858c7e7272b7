#!/usr/bin/env bash
# Run a command with PostgreSQL and NATS JetStream available to Slipway's tests.
#
#   scripts/test-services.sh <command...>      e.g. scripts/test-services.sh cargo test --workspace
#
# Integration tests use real servers (DESIGN.md, "Testing"). slipway-testkit can start
# throwaway ones itself, but then every test process starts its own; this script gives
# `make test` and CI one server of each for the whole run, through the variables
# SLIPWAY_TEST_DATABASE_URL and SLIPWAY_TEST_NATS_URL. For each server, in order:
#
#   1. the variable, when it is already set;
#   2. the server this kind of machine runs already: PostgreSQL on 127.0.0.1:5432
#      (database `test`, user `postgres`, trust auth), NATS with JetStream on 127.0.0.1:4222;
#   3. a throwaway server under target/test-services, on a free port, stopped and removed
#      when the command ends. Missing binaries are installed with apt-get (Debian, as root).
#
# SLIPWAY_TEST_SERVICES=throwaway skips 1 and 2 (to test step 3, or to isolate a run);
# SLIPWAY_TEST_SERVICES=running fails instead of starting anything. Default: auto.
# Exits with the command's status.
set -euo pipefail

log() { echo "test-services: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$#" -gt 0 ] || { echo "usage: $0 <command...>" >&2; exit 2; }

mode="${SLIPWAY_TEST_SERVICES:-auto}"
case "$mode" in auto | running | throwaway) ;; *) die "SLIPWAY_TEST_SERVICES must be auto, running or throwaway, not '$mode'" ;; esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base="${CARGO_TARGET_DIR:-$root/target}/test-services"
run_dir="$base/run-$$"

# ---------------------------------------------------------------------------- probes

# Whether something accepts TCP connections on host $1, port $2.
tcp_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null; }

# Whether a NATS server with JetStream answers on host $1, port $2: its first line to a
# client is `INFO {...}`, which says "jetstream":true when JetStream is enabled.
nats_ready() {
  timeout 3 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    IFS= read -r line <&3 || exit 1
    [[ $line == INFO* && $line == *"\"jetstream\":true"* ]]' "$1" "$2" 2>/dev/null
}

# Whether PostgreSQL accepts `postgres` without a password into database `test` on
# 127.0.0.1:5432. Without psql, an open port is taken on trust.
pg_running_ready() {
  if command -v psql >/dev/null 2>&1; then
    PGCONNECT_TIMEOUT=3 psql -w -X -Atq "postgres://postgres@127.0.0.1:5432/test" -c 'SELECT 1' >/dev/null 2>&1
  else
    tcp_open 127.0.0.1 5432
  fi
}

# A URL with its password masked, for printing.
redact() { sed -E 's#(://[^:/@]*):[^@]*@#\1:***@#' <<<"$1"; }

# ----------------------------------------------------------------- installs, binaries

apt_updated=""
apt_install() { # <package> <why>
  local package="$1" why="$2"
  [ "$(id -u)" = 0 ] || die "$why; install the Debian package '$package' (needs root), or set the URL variable"
  command -v apt-get >/dev/null 2>&1 || die "$why, and apt-get is not available to install '$package'"
  log "$why: installing '$package' with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  # Package scripts are chatty; their output is shown only if the install fails.
  local out; out="$(mktemp)"
  if [ -z "$apt_updated" ]; then
    apt-get update -qq >"$out" 2>&1 || { cat "$out" >&2; rm -f "$out"; die "apt-get update failed"; }
    apt_updated=1
  fi
  apt-get install -y -qq --no-install-recommends "$package" >"$out" 2>&1 \
    || { cat "$out" >&2; rm -f "$out"; die "apt-get install $package failed"; }
  rm -f "$out"
}

# The folder holding initdb, pg_ctl and postgres: next to pg_ctl on PATH, else the newest
# /usr/lib/postgresql/*/bin (where Debian installs them, off PATH).
pg_bin_dir() {
  local dir candidate
  if candidate="$(command -v pg_ctl 2>/dev/null)"; then
    dir="$(dirname "$(readlink -f "$candidate")")"
    if [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ]; then echo "$dir"; return 0; fi
  fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then echo "$dir"; return 0; fi
  done
  return 1
}

nats_bin() {
  command -v nats-server 2>/dev/null && return 0
  local candidate
  for candidate in /usr/sbin/nats-server /usr/local/bin/nats-server; do
    [ -x "$candidate" ] && { echo "$candidate"; return 0; }
  done
  return 1
}

# A TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
  local port
  for _ in $(seq 1 50); do
    port=$((30000 + RANDOM % 30000))
    tcp_open 127.0.0.1 "$port" || { echo "$port"; return 0; }
  done
  die "no free port found"
}

# ------------------------------------------------------------------ throwaway servers

pg_user=""       # account the throwaway PostgreSQL runs as ("" = this one)
pg_bin=""
pg_data=""
pg_tmp=""        # set when PostgreSQL's folder had to live outside target/
nats_pid=""

as_pg() { if [ -n "$pg_user" ]; then runuser -u "$pg_user" -- "$@"; else "$@"; fi; }

cleanup() {
  local status=$?
  if [ -n "$nats_pid" ]; then
    kill "$nats_pid" 2>/dev/null || true
    wait "$nats_pid" 2>/dev/null || true
  fi
  if [ -n "$pg_data" ] && [ -f "$pg_data/postmaster.pid" ]; then
    as_pg "$pg_bin/pg_ctl" -D "$pg_data" stop -m fast -w >/dev/null 2>&1 || true
  fi
  [ -n "$pg_tmp" ] && rm -rf "$pg_tmp"
  rm -rf "$run_dir"
  rmdir "$base" 2>/dev/null || true
  exit "$status"
}

# Stop and remove what an earlier run left when it was killed outright (no trap ran).
reap_stale_runs() {
  local dir pid
  for dir in "$base"/run-*; do
    [ -d "$dir" ] || continue
    pid="${dir##*-}"
    kill -0 "$pid" 2>/dev/null && continue
    log "removing a stale run folder: $dir"
    if [ -f "$dir/nats.pid" ]; then kill "$(cat "$dir/nats.pid")" 2>/dev/null || true; fi
    if [ -f "$dir/pg/data/postmaster.pid" ] && [ -n "$(pg_bin_dir || true)" ]; then
      local owner; owner="$(stat -c %U "$dir/pg/data")"
      if [ "$(id -u)" = 0 ] && [ "$owner" != root ]; then
        runuser -u "$owner" -- "$(pg_bin_dir)/pg_ctl" -D "$dir/pg/data" stop -m immediate >/dev/null 2>&1 || true
      else
        "$(pg_bin_dir)/pg_ctl" -D "$dir/pg/data" stop -m immediate >/dev/null 2>&1 || true
      fi
    fi
    rm -rf "$dir"
  done
}

start_postgres() {
  pg_bin="$(pg_bin_dir)" || { apt_install postgresql "PostgreSQL server binaries (initdb, pg_ctl) not found"; pg_bin="$(pg_bin_dir)" || die "postgresql installed, but initdb/pg_ctl still not found"; }

  local pg_dir="$run_dir/pg"
  mkdir -p "$pg_dir"
  if [ "$(id -u)" = 0 ]; then
    # initdb and postgres refuse to run as root.
    if id postgres >/dev/null 2>&1; then pg_user=postgres; else pg_user=nobody; fi
    chown "$pg_user" "$pg_dir"
    if ! runuser -u "$pg_user" -- test -w "$pg_dir"; then
      # A parent folder of the checkout is closed to other users: use /tmp instead.
      pg_tmp="$(mktemp -d /tmp/slipway-test-services-pg.XXXXXX)"
      chown "$pg_user" "$pg_tmp"
      pg_dir="$pg_tmp"
    fi
  fi
  pg_data="$pg_dir/data"
  as_pg "$pg_bin/initdb" -D "$pg_data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
    >"$pg_dir/initdb.log" 2>&1 || { cat "$pg_dir/initdb.log" >&2; die "initdb failed"; }

  local port attempt
  for attempt in 1 2 3 4 5; do
    port="$(free_port)"
    # Throwaway: speed over durability, loopback only, no Unix socket (path length).
    if as_pg "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_dir/postgres.log" -w -t 60 -o \
      "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
      start >/dev/null 2>&1; then
      if [ -x "$pg_bin/createdb" ]; then
        as_pg "$pg_bin/createdb" -h 127.0.0.1 -p "$port" -U postgres test >/dev/null 2>&1 \
          || die "createdb test failed"
        pg_url="postgres://postgres@127.0.0.1:$port/test"
      else
        pg_url="postgres://postgres@127.0.0.1:$port/postgres"
      fi
      return 0
    fi
    log "PostgreSQL did not start on port $port (attempt $attempt); log tail:"
    tail -n 5 "$pg_dir/postgres.log" >&2 2>/dev/null || true
  done
  die "could not start a throwaway PostgreSQL (see $pg_dir/postgres.log)"
}

start_nats() {
  local bin
  bin="$(nats_bin)" || { apt_install nats-server "nats-server not found"; bin="$(nats_bin)" || die "nats-server installed, but not found"; }
  local dir="$run_dir/nats" port attempt
  mkdir -p "$dir"
  for attempt in 1 2 3 4 5; do
    port="$(free_port)"
    "$bin" -js -a 127.0.0.1 -p "$port" -sd "$dir/jetstream" -l "$dir/nats.log" </dev/null >/dev/null 2>&1 &
    nats_pid=$!
    echo "$nats_pid" >"$run_dir/nats.pid"
    for _ in $(seq 1 100); do
      if nats_ready 127.0.0.1 "$port"; then
        nats_url="nats://127.0.0.1:$port"
        return 0
      fi
      kill -0 "$nats_pid" 2>/dev/null || break
      sleep 0.1
    done
    log "NATS did not start on port $port (attempt $attempt); log tail:"
    tail -n 5 "$dir/nats.log" >&2 2>/dev/null || true
    kill "$nats_pid" 2>/dev/null || true
    wait "$nats_pid" 2>/dev/null || true
    nats_pid=""
  done
  die "could not start a throwaway NATS (see $dir/nats.log)"
}

# ---------------------------------------------------------------------------- choose

pg_url="" pg_how=""
nats_url="" nats_how=""

if [ "$mode" != throwaway ]; then
  if [ -n "${SLIPWAY_TEST_DATABASE_URL:-}" ]; then
    pg_url="$SLIPWAY_TEST_DATABASE_URL" pg_how="from SLIPWAY_TEST_DATABASE_URL"
  elif pg_running_ready; then
    pg_url="postgres://postgres@127.0.0.1:5432/test" pg_how="already running"
  fi
  if [ -n "${SLIPWAY_TEST_NATS_URL:-}" ]; then
    nats_url="$SLIPWAY_TEST_NATS_URL" nats_how="from SLIPWAY_TEST_NATS_URL"
  elif nats_ready 127.0.0.1 4222; then
    nats_url="nats://127.0.0.1:4222" nats_how="already running"
  fi
fi

if [ -z "$pg_url" ] || [ -z "$nats_url" ]; then
  if [ "$mode" = running ]; then
    [ -n "$pg_url" ] || die "SLIPWAY_TEST_SERVICES=running, but no PostgreSQL (database test, trust) on 127.0.0.1:5432"
    die "SLIPWAY_TEST_SERVICES=running, but no NATS with JetStream on 127.0.0.1:4222"
  fi
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  mkdir -p "$base"
  reap_stale_runs
  mkdir -p "$run_dir"
  if [ -z "$pg_url" ]; then start_postgres; pg_how="throwaway, $pg_bin"; fi
  if [ -z "$nats_url" ]; then start_nats; nats_how="throwaway"; fi
fi

export SLIPWAY_TEST_DATABASE_URL="$pg_url"
export SLIPWAY_TEST_NATS_URL="$nats_url"
log "PostgreSQL $(redact "$pg_url") ($pg_how); NATS $(redact "$nats_url") ($nats_how)"

set +e
"$@"
status=$?
set -e
exit "$status"
