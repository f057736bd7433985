#!/usr/bin/env bash
# Molecule with container names, databases, logins and ports of the run's own, so that runs of the
# scenarios go side by side on one machine (a CI clone and a working copy, or two runs of one checkout):
#
#   scripts/molecule.sh test --all                 (any molecule arguments, passed on as they are)
#   PGM_MOLECULE_RUN=ci42 PGM_MOLECULE_PORT_OFFSET=10000 scripts/molecule.sh test -s migration
#
#   PGM_MOLECULE_RUN          the run's id, 1 to 12 of [a-z0-9]: the containers' names end in -<run>, the
#                             scenarios' databases and logins on the embedded servers in _<run>. Unset: a new
#                             one (r + 4 random hex digits). Set but empty: the names written in the scenarios.
#   PGM_MOLECULE_PORT_OFFSET  added to every port the scenarios listen on (25400-25499, 28000-29999; the
#                             containers share the machine's network). Unset: the first of 0, 10000, 20000
#                             whose ports are free and that no other run of this script holds.
#
# molecule.yml and the testinfra tests read PGM_MOLECULE_SUFFIX (-<run>, set here) and the offset. Each run
# with an id keeps molecule's state (its ephemeral directories) under ANSIBLE_HOME=~/.ansible/pgmigrate-molecule/
# <run>, removed after a successful run whose id was made here; to act on a failed run's containers, give its
# id and offset again (scripts/molecule.sh destroy --all). Two runs never share an id or an offset: each holds
# a lock on both (/tmp/pgmigrate-molecule-*.lock) until molecule ends.
set -euo pipefail

PROJECT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$PROJECT_DIR"
say() { printf '[molecule] %s\n' "$*" >&2; }
die() { printf '[molecule] ERROR: %s\n' "$*" >&2; exit 2; }

[ -x "$PROJECT_DIR/.venv/bin/molecule" ] && export PATH="$PROJECT_DIR/.venv/bin:$PATH"
command -v molecule >/dev/null || die "molecule is missing: run scripts/install.sh"
command -v ss >/dev/null || die "ss (iproute2) is missing: it checks that the run's ports are free"
command -v flock >/dev/null || die "flock (util-linux) is missing"
# One directory for all scenarios would mix their state (molecule honours it for every scenario of --all).
[ -z "${MOLECULE_EPHEMERAL_DIRECTORY:-}" ] \
  || die "MOLECULE_EPHEMERAL_DIRECTORY is set: unset it (each run keeps its state under ANSIBLE_HOME, see $0)"

# The ports a scenario listens on, before the offset (molecule/*/molecule.yml).
PORT_RANGES=("25400 25499" "28000 29999")
OFFSETS=(0 10000 20000)
MAX_OFFSET=35536   # 29999 + 35536 = 65535
# The embedded servers the scenarios use must stay outside the shifted ranges (25432 + 30000 = 55432).
EMBEDDED_PORTS=("${PGM_SOURCE_PORT:-55432}" "${PGM_TARGET_PORT:-55433}")

# lock NAME: a non-blocking lock held until molecule ends (the descriptor is inherited); fails when held.
lock() {
  local file="/tmp/pgmigrate-molecule-$1.lock" fd
  [ -e "$file" ] || (umask 0 && : >"$file") 2>/dev/null || true
  exec {fd}<"$file" || die "cannot open the lock file $file"
  if flock -n "$fd"; then LOCK_FD=$fd; return 0; fi
  exec {fd}<&-
  return 1
}

# busy_ports OFFSET: the ports of the shifted ranges something listens on (TCP), one a line.
busy_ports() {
  local range low high
  for range in "${PORT_RANGES[@]}"; do
    read -r low high <<<"$range"
    ss -ltnH | awk -v lo=$((low + $1)) -v hi=$((high + $1)) \
      '{ n = split($4, a, ":"); p = a[n] + 0; if (p >= lo && p <= hi) print p }'
  done | sort -nu
}

# covers_embedded OFFSET: the first embedded server port inside a shifted range, if any.
covers_embedded() {
  local range low high port
  for range in "${PORT_RANGES[@]}"; do
    read -r low high <<<"$range"
    for port in "${EMBEDDED_PORTS[@]}"; do
      if [ "$port" -ge $((low + $1)) ] && [ "$port" -le $((high + $1)) ]; then echo "$port"; return 0; fi
    done
  done
  return 1
}

# --- the run's id ------------------------------------------------------------------------------------------
made_run=false
if [ -z "${PGM_MOLECULE_RUN+set}" ]; then
  PGM_MOLECULE_RUN="r$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')"
  made_run=true
elif [ -n "$PGM_MOLECULE_RUN" ] && ! [[ "$PGM_MOLECULE_RUN" =~ ^[a-z0-9]{1,12}$ ]]; then
  die "PGM_MOLECULE_RUN='$PGM_MOLECULE_RUN' is not a run id: 1 to 12 lower-case letters and digits ([a-z0-9]),
  empty for the scenarios' own names, or unset for a new one"
fi
lock "run-$(id -u)-${PGM_MOLECULE_RUN:-default}" \
  || die "PGM_MOLECULE_RUN='$PGM_MOLECULE_RUN': another scripts/molecule.sh run uses this id (same containers and
  databases); give another id, or leave PGM_MOLECULE_RUN unset for a new one"

# --- the port offset ---------------------------------------------------------------------------------------
if [ -n "${PGM_MOLECULE_PORT_OFFSET:-}" ]; then
  offset=$PGM_MOLECULE_PORT_OFFSET
  [[ "$offset" =~ ^[0-9]{1,5}$ ]] && [ "$((10#$offset))" -le "$MAX_OFFSET" ] \
    || die "PGM_MOLECULE_PORT_OFFSET='$offset' is not a port offset: a whole number from 0 to $MAX_OFFSET
  (the scenarios' ports 25400-25499 and 28000-29999 shifted by it must stay below 65536), e.g. 0, 10000, 20000"
  offset=$((10#$offset))
  if port=$(covers_embedded "$offset"); then
    die "PGM_MOLECULE_PORT_OFFSET=$offset shifts the scenarios' ports onto the embedded server's port $port:
  choose another offset (e.g. 0, 10000, 20000)"
  fi
  lock "ports-$offset" || die "PGM_MOLECULE_PORT_OFFSET=$offset: another scripts/molecule.sh run uses these ports;
  give another offset (0, 10000, 20000), or leave PGM_MOLECULE_PORT_OFFSET unset to have a free one chosen"
  busy=$(busy_ports "$offset" | tr '\n' ' ')
  [ -z "$busy" ] || die "PGM_MOLECULE_PORT_OFFSET=$offset: ports the run needs are in use: $busy(ss -ltnp shows by
  what); give another offset, or leave PGM_MOLECULE_PORT_OFFSET unset to have a free one chosen"
else
  offset=
  for candidate in "${OFFSETS[@]}"; do
    covers_embedded "$candidate" >/dev/null && continue
    lock "ports-$candidate" || continue
    if [ -z "$(busy_ports "$candidate")" ]; then offset=$candidate; break; fi
    exec {LOCK_FD}<&-
  done
  [ -n "$offset" ] || die "no free ports for the run: each of the offsets ${OFFSETS[*]} is held by another
  scripts/molecule.sh run or has ports in use (ss -ltnp); set PGM_MOLECULE_PORT_OFFSET to a free offset"
fi

# --- the run -----------------------------------------------------------------------------------------------
export PGM_MOLECULE_RUN PGM_MOLECULE_PORT_OFFSET=$offset
export PGM_MOLECULE_SUFFIX=${PGM_MOLECULE_RUN:+-$PGM_MOLECULE_RUN}
state=
if [ -n "$PGM_MOLECULE_RUN" ]; then
  # molecule keys its state on the project directory's name only: a run of its own gets an Ansible home of its
  # own (the collections of the usual one stay visible).
  ansible_home=${ANSIBLE_HOME:-$HOME/.ansible}
  export ANSIBLE_COLLECTIONS_PATH=${ANSIBLE_COLLECTIONS_PATH:-$ansible_home/collections:/usr/share/ansible/collections}
  state="$ansible_home/pgmigrate-molecule/$PGM_MOLECULE_RUN"
  mkdir -p "$state"
  export ANSIBLE_HOME=$state
fi
names="run $PGM_MOLECULE_RUN"
[ -n "$PGM_MOLECULE_RUN" ] || names="the scenarios' own names"
say "$names, port offset $offset: molecule $*"
status=0
molecule "$@" || status=$?
# A made id is not given again: its lock file goes, and after a success its state.
$made_run && rm -f "/tmp/pgmigrate-molecule-run-$(id -u)-$PGM_MOLECULE_RUN.lock"
if [ "$status" -eq 0 ] && $made_run && [ -n "$state" ]; then
  rm -rf "$state"
elif [ "$status" -ne 0 ] && [ -n "$PGM_MOLECULE_RUN" ]; then
  say "molecule failed (exit $status); the run's state is in $state. Its containers, if any are left:" \
    "PGM_MOLECULE_RUN=$PGM_MOLECULE_RUN PGM_MOLECULE_PORT_OFFSET=$offset scripts/molecule.sh destroy --all"
fi
exit "$status"
