#!/usr/bin/env bash
# The demo, on a fresh Debian 12 machine: install everything, start the embedded source and target
# PostgreSQL 15 servers, load the CDP reference database into the source, then run the migration
#   ansible-playbook migrate.yml -i inventories/local
# Idempotent: a second run reuses the install and the servers and migrates again.
#   CDP_SCALE=10 scripts/setup.sh   loads about 1 GB instead of about 100 MB
set -euo pipefail

PROJECT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$PROJECT_DIR"
say() { printf '[setup] %s\n' "$*"; }

scripts/install.sh
scripts/embedded_pg.sh start
say "loading the CDP reference database into the source (scale ${CDP_SCALE:-1})"
.venv/bin/python -m cdp_reference.generate --host 127.0.0.1 --port "${PGM_SOURCE_PORT:-55432}" \
  --dbname cdp --user postgres --password-file "${PGM_EMBEDDED_DIR:-.embedded}/secrets/source.password" \
  --scale "${CDP_SCALE:-1}" --drop
say "running: ansible-playbook migrate.yml -i inventories/local (source port ${PGM_SOURCE_PORT:-55432}, target port ${PGM_TARGET_PORT:-55433})"
# The demo target is the project's own scratch server: inventories/local overwrites it on a rerun, and
# only it (the run checks the server's identity, recorded by scripts/embedded_pg.sh, first). The inventory
# reads PGM_SOURCE_PORT, PGM_TARGET_PORT and PGM_EMBEDDED_DIR as the two scripts do.
.venv/bin/ansible-playbook migrate.yml -i inventories/local
