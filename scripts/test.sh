#!/usr/bin/env bash
# The whole test suite: install what is missing, start the embedded servers (the PostgreSQL 15 source
# and target, the PostgreSQL 18 target and the PostgreSQL 14 source of the major-version tests), then the quality gates
# (ansible-lint production profile, ruff) and pytest against the real servers.
#   scripts/test.sh [extra pytest arguments]
set -euo pipefail

PROJECT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$PROJECT_DIR"
say() { printf '[test] %s\n' "$*"; }

scripts/install.sh
scripts/embedded_pg.sh start
scripts/embedded_pg.sh start target18
scripts/embedded_pg.sh start source14
export PATH="$PROJECT_DIR/.venv/bin:$PATH"
say "ruff check"
ruff check .
say "ansible-lint --profile production"
ansible-lint --profile production -q --nocolor
say "pytest"
pytest "$@"
say "molecule test --all (systemd hosts on podman; the test image is built once by scripts/build_test_image.sh)"
scripts/molecule.sh test --all
