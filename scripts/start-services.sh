#!/usr/bin/env bash
# Start what the tests and the demo need on this machine (Debian 12, no systemd), idempotently:
#   1. virtlogd and libvirtd, without autostarting any libvirt network;
#   2. a private, test-only PostgreSQL cluster on 127.0.0.1:55432 (data under /var/tmp/virtfleet-pg)
#      with a database `virtfleet_test`;
#   3. .test-env in the repo root, exporting VIRTFLEET_TEST_PG_URL for the store tests.
# Run as root from anywhere (`make services`). `start-services.sh libvirt|postgres` does one part.
# Anything already running is left alone; leftovers of a killed run (stale pid files) are cleared.
set -euo pipefail

# The daemons started here (libvirtd, virtlogd, postgres) outlive this script, and would keep any
# file descriptor it inherited: one started by `flock /tmp/vf-integ.lock make ...` held the
# integration tests' lock for as long as it ran, and every later test run waited for ever. So
# everything above stderr is closed first (bash reads this script on 255: that one stays).
for fd in /proc/$$/fd/*; do
  fd="${fd##*/}"
  if [ "$fd" -gt 2 ] && [ "$fd" -ne 255 ]; then eval "exec $fd>&-"; fi
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_BASE=/var/tmp/virtfleet-pg
PG_DATA="$PG_BASE/data"
PG_RUN="$PG_BASE/run"            # unix socket directory (and its lock file)
PG_LOG="$PG_BASE/postgres.log"
PG_PORT=55432
PG_DB=virtfleet_test
PG_URL="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/$PG_DB"

say() { echo "virtfleet services: $*"; }
die() { echo "virtfleet services: $*" >&2; exit 1; }

# pids of processes named exactly $1 that live in this machine's own mount namespace: the lab runs
# its own libvirtd daemons inside private namespaces, and those must not count as "running here".
local_pids() {
  local self pid
  self="$(readlink /proc/self/ns/mnt)"
  for pid in $(pgrep -x "$1" || true); do
    [ "$(readlink "/proc/$pid/ns/mnt" 2>/dev/null)" = "$self" ] && echo "$pid"
  done
  return 0
}

start_libvirt() {
  [ "$(id -u)" = 0 ] || die "libvirtd needs root; run this script as root"
  command -v libvirtd >/dev/null || die "libvirtd not found; run scripts/install-deps.sh"
  if [ -z "$(local_pids virtlogd)" ]; then
    virtlogd -d
    say "started virtlogd"
  fi
  if [ -z "$(local_pids libvirtd)" ]; then
    # libvirt autostarts networks (Debian's `default` NAT network) once per boot unless the
    # driver's state dir already holds an `autostarted` marker; the lab must be the only thing
    # that creates networks, so claim that marker before libvirtd starts.
    mkdir -p /run/libvirt/network
    touch /run/libvirt/network/autostarted
    # A pid file left by a killed libvirtd is harmless: libvirtd holds a lock on it while it runs,
    # and takes over an unlocked one.
    libvirtd -d
    local i
    for i in $(seq 1 50); do
      [ -S /run/libvirt/libvirt-sock ] && break
      sleep 0.1
    done
    [ -S /run/libvirt/libvirt-sock ] || die "libvirtd did not create /run/libvirt/libvirt-sock"
    say "started libvirtd"
  fi
}

# Run a command as the cluster owner (from /, which that user can always enter).
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && "$@")
  fi
}

pg_bindir() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] || die "PostgreSQL not found; run scripts/install-deps.sh"
  echo "$dir"
}

# The pid of this cluster's running postmaster, or nothing. A pid file is only believed if that
# pid is a postgres process whose working directory is this data dir (pids get reused).
pg_running_pid() {
  local pid
  [ -f "$PG_DATA/postmaster.pid" ] || return 0
  pid="$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ] \
      && [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$PG_DATA" ]; then
    echo "$pid"
  fi
  return 0
}

start_postgres() {
  local bin owner
  bin="$(pg_bindir)"
  owner=postgres
  [ "$(id -u)" = 0 ] || owner="$(id -un)"

  mkdir -p "$PG_BASE" "$PG_RUN"
  chown "$owner" "$PG_BASE" "$PG_RUN"
  chmod 700 "$PG_BASE" "$PG_RUN"

  if [ ! -f "$PG_DATA/PG_VERSION" ] || [ ! -f "$PG_DATA/postgresql.conf" ]; then
    # Never initialised, or an initdb that was killed half-way: start from nothing.
    rm -rf "$PG_DATA"
    as_pg "$bin/initdb" -D "$PG_DATA" -U postgres --auth=trust --encoding=UTF8 --locale=C --no-sync \
      >/dev/null
    echo "include_if_exists = 'virtfleet.conf'" >>"$PG_DATA/postgresql.conf"
    say "initialised a test cluster in $PG_DATA"
  fi
  # Settings live in their own file, rewritten every run, so a changed script takes effect on the
  # next start. Test-only cluster: durability is traded for speed.
  cat >"$PG_DATA/virtfleet.conf" <<EOF
# written by scripts/start-services.sh
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_RUN'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
  chown "$owner" "$PG_DATA/virtfleet.conf"

  if [ -z "$(pg_running_pid)" ]; then
    # Not running: whatever lock files are left belong to a dead server.
    rm -f "$PG_DATA/postmaster.pid" "$PG_RUN/.s.PGSQL.$PG_PORT" "$PG_RUN/.s.PGSQL.$PG_PORT.lock"
    if ! as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >/dev/null; then
      tail -n 20 "$PG_LOG" >&2 || true
      die "PostgreSQL did not start (log: $PG_LOG)"
    fi
    say "started PostgreSQL on 127.0.0.1:$PG_PORT"
  fi
  local i
  for i in $(seq 1 100); do
    as_pg "$bin/pg_isready" -q -h "$PG_RUN" -p "$PG_PORT" && break
    sleep 0.1
  done
  as_pg "$bin/pg_isready" -q -h "$PG_RUN" -p "$PG_PORT" || die "PostgreSQL is not accepting connections"

  if [ "$(as_pg "$bin/psql" -h "$PG_RUN" -p "$PG_PORT" -U postgres -d postgres -tAq \
          -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]; then
    as_pg "$bin/createdb" -h "$PG_RUN" -p "$PG_PORT" -U postgres "$PG_DB"
    say "created database $PG_DB"
  fi

  printf 'export VIRTFLEET_TEST_PG_URL=%s\n' "$PG_URL" >"$ROOT/.test-env"
}

case "${1:-all}" in
  all) start_libvirt; start_postgres ;;
  libvirt) start_libvirt ;;
  postgres) start_postgres ;;
  *) die "usage: $0 [all|libvirt|postgres]" ;;
esac
