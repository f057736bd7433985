#!/usr/bin/env bash
# Build the systemd host image the Molecule scenarios boot: Debian 12 made with debootstrap and
# imported into podman (no registry, no Docker), named localhost/pgmigrate-systemd:bookworm.
#
#   scripts/build_test_image.sh            build it unless podman already has it
#   scripts/build_test_image.sh --rebuild  remove the image and the cached root file system, build again
#
# Idempotent: nothing is done when the image exists; the root file system is cached as a tarball
# under .cache/test-image/, so a removed image is re-imported in seconds without debootstrap.
# The cache is keyed on the recipe (suite, mirror, packages, customisation): change any and it is rebuilt.
# Needs root (debootstrap) or a user with sudo; podman, runc and debootstrap come from scripts/install.sh.
# Concurrent runs wait for each other (flock), so two scenarios never build at once.
set -euo pipefail

PROJECT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$PROJECT_DIR"
say() { printf '[test-image] %s\n' "$*"; }

IMAGE=${PGMIGRATE_TEST_IMAGE:-localhost/pgmigrate-systemd:bookworm}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What the CDP application host needs: systemd as PID 1, python3 with psycopg2 for Ansible and the
# stand-in application, nginx for the maintenance page, cron for scheduled jobs, curl for checks.
# The monitoring host: Prometheus (with promtool) and postgres_exporter; the database hosts:
# PostgreSQL 15. All disabled until a scenario configures them (every container shares the machine's
# network and its ports).
PACKAGES=systemd,systemd-sysv,dbus,python3,python3-psycopg2,nginx-light,curl,cron,ca-certificates,iproute2,procps,sudo,prometheus,prometheus-postgres-exporter,postgresql-15
CACHE_DIR="$PROJECT_DIR/.cache/test-image"
RECIPE_VERSION=3   # bump when customise_rootfs changes
recipe_hash=$(printf '%s\n' "$RECIPE_VERSION" "$SUITE" "$MIRROR" "$PACKAGES" | sha256sum | cut -c1-12)
TARBALL="$CACHE_DIR/pgmigrate-systemd-$SUITE-$recipe_hash.tar.gz"

if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo -n); fi
started=$(date +%s)
elapsed() { echo "$(($(date +%s) - started)) s"; }

rebuild=false
case "${1:-}" in
  "") ;;
  --rebuild) rebuild=true ;;
  *) echo "usage: $0 [--rebuild]" >&2; exit 2 ;;
esac

for tool in podman debootstrap tar gzip; do
  command -v "$tool" >/dev/null || { echo "[test-image] ERROR: $tool is missing: run scripts/install.sh" >&2; exit 1; }
done

mkdir -p "$CACHE_DIR"
# One build at a time on this machine, from any checkout (they share podman's image): a second caller finds
# the image made by the first.
lock_file="/tmp/pgmigrate-test-image-$(id -u).lock"
exec 9>>"$lock_file"
flock 9

if $rebuild; then
  say "--rebuild: removing $IMAGE and the cached root file systems"
  podman image rm -f "$IMAGE" >/dev/null 2>&1 || true
  rm -f "$CACHE_DIR"/pgmigrate-systemd-*.tar.gz
fi

# The image carries its recipe's hash: an image made from another recipe is replaced.
if podman image exists "$IMAGE"; then
  image_recipe=$(podman image inspect --format '{{ index .Labels "pgmigrate.recipe" }}' "$IMAGE" 2>/dev/null || true)
  if [ "$image_recipe" = "$recipe_hash" ]; then
    say "$IMAGE exists (recipe $recipe_hash): nothing to do (scripts/build_test_image.sh --rebuild builds it again)"
    exit 0
  fi
  say "$IMAGE was made from another recipe (${image_recipe:-unlabelled}, now $recipe_hash): replacing it"
  podman image rm -f "$IMAGE" >/dev/null
fi

# The image boots systemd on the host's network (--network host): nothing may listen on a port by
# itself, the machine id is made at first boot, and apt's caches are left out of the image.
customise_rootfs() {
  local root=$1
  "${SUDO[@]}" rm -f "$root/etc/nginx/sites-enabled/default"
  "${SUDO[@]}" sh -c ": > '$root/etc/machine-id'; rm -f '$root/var/lib/dbus/machine-id'"
  "${SUDO[@]}" sh -c "rm -rf '$root'/var/cache/apt/archives/*.deb '$root'/var/lib/apt/lists/*_Packages"
  # A container has no consoles, udev or time to synchronise.
  "${SUDO[@]}" chroot "$root" systemctl mask getty@tty1.service console-getty.service \
    systemd-udevd.service systemd-timesyncd.service >/dev/null 2>&1 || true
  # Nothing listens by itself: the monitoring scenario enables these with ports of its own.
  "${SUDO[@]}" chroot "$root" systemctl disable prometheus.service prometheus-postgres-exporter.service \
    postgresql.service >/dev/null 2>&1 || true
}

if [ ! -s "$TARBALL" ]; then
  rootfs="$CACHE_DIR/rootfs.$$"
  "${SUDO[@]}" rm -rf "$rootfs"
  trap '"${SUDO[@]}" rm -rf "$rootfs" "$TARBALL.tmp"' EXIT
  say "debootstrap --variant=minbase $SUITE from $MIRROR with: $PACKAGES (a minute or two)"
  if ! "${SUDO[@]}" debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" \
      > "$CACHE_DIR/debootstrap.log" 2>&1; then
    tail -n 20 "$CACHE_DIR/debootstrap.log" >&2
    echo "[test-image] ERROR: debootstrap failed (full log: $CACHE_DIR/debootstrap.log)" >&2
    exit 1
  fi
  say "debootstrap done after $(elapsed); customising the root file system"
  customise_rootfs "$rootfs"
  say "caching the root file system as $TARBALL"
  "${SUDO[@]}" tar --numeric-owner -C "$rootfs" -c . | gzip -1 > "$TARBALL.tmp"
  mv "$TARBALL.tmp" "$TARBALL"
  "${SUDO[@]}" rm -rf "$rootfs"
  trap - EXIT
  # Older recipes' tarballs are of no further use.
  find "$CACHE_DIR" -maxdepth 1 -name 'pgmigrate-systemd-*.tar.gz' ! -path "$TARBALL" -delete
else
  say "reusing the cached root file system $TARBALL"
fi

say "importing $TARBALL as $IMAGE"
podman import --quiet --change 'CMD ["/lib/systemd/systemd"]' --change 'STOPSIGNAL SIGRTMIN+3' \
  --change "LABEL pgmigrate.recipe=$recipe_hash" \
  "$TARBALL" "$IMAGE" >/dev/null
say "built $IMAGE in $(elapsed) ($(podman image inspect --format '{{.Size}}' "$IMAGE" | numfmt --to=iec))"
