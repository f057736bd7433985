"""Which PostgreSQL client programs (pg_dump, pg_restore, psql) a run uses, and whether they fit its servers.

By default the newest installed: Debian's /usr/lib/postgresql/<major>/bin, newest major first, then PATH.
With migration_pg_bin_dir set (use_bin_dir), that directory only. A schema is dumped and restored by the
client of the newer server's major version or a newer one: an older pg_dump refuses a newer server, and
an older pg_restore may write what a newer server no longer accepts, so check_fits() refuses an older
client before anything changes.
"""

import os
import re
import shutil
import subprocess

from .errors import PgmigrateError

DEBIAN_ROOT = "/usr/lib/postgresql"
SETTING = "migration_pg_bin_dir"

_bin_dir = None
_majors = {}


class ToolError(PgmigrateError):
    pass


def use_bin_dir(path):
    """Take every client program from this directory (None or "": the newest installed)."""
    global _bin_dir
    if path and not os.path.isdir(path):
        raise ToolError(f"{SETTING} is {path!r}, which is not a directory: set it to the directory of "
                        "pg_dump, pg_restore and psql (e.g. /usr/lib/postgresql/18/bin), or leave it empty "
                        "for the newest installed")
    _bin_dir = path or None


def _installed(name):
    """Paths of the program, newest Debian major first, then the one on PATH."""
    candidates = []
    if os.path.isdir(DEBIAN_ROOT):
        versions = sorted(os.listdir(DEBIAN_ROOT), reverse=True,
                          key=lambda v: float(v) if v.replace(".", "").isdigit() else 0)
        for version in versions:
            path = os.path.join(DEBIAN_ROOT, version, "bin", name)
            if os.access(path, os.X_OK):
                candidates.append(path)
    found = shutil.which(name)
    if found:
        candidates.append(found)
    return candidates


def find_tool(name):
    """Path of pg_dump, pg_restore or psql."""
    if _bin_dir:
        path = os.path.join(_bin_dir, name)
        if not os.access(path, os.X_OK):
            raise ToolError(f"{name} is not in {_bin_dir} ({SETTING}): point {SETTING} at the directory of the "
                            "PostgreSQL client programs, or leave it empty for the newest installed")
        return path
    candidates = _installed(name)
    if not candidates:
        raise ToolError(f"{name} is not installed: install the PostgreSQL client (postgresql-client-15 or newer) "
                        f"or set {SETTING}")
    return candidates[0]


def tool_major(path):
    """The major version of a client program (its --version), e.g. 15 or 18."""
    if path not in _majors:
        text = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout.strip()
        match = re.search(r"\) (\d+)", text)
        if not match:
            raise ToolError(f"cannot read the version of {path}: {text!r}")
        _majors[path] = int(match[1])
    return _majors[path]


def server_major(version_num):
    """15 of 150020."""
    return version_num // 10000


def check_fits(*server_version_nums):
    """Refuse client programs older than the newest of the servers (ToolError, before anything changes)."""
    newest = max(server_major(v) for v in server_version_nums)
    for name in ("pg_dump", "pg_restore", "psql"):
        path = find_tool(name)
        major = tool_major(path)
        if major < newest:
            raise ToolError(
                f"{path} is version {major}, older than the PostgreSQL {newest} server of this migration: a "
                f"schema is dumped and restored with the newer server's client programs. Install them "
                f"(Debian: postgresql-client-{newest}) or set {SETTING} to their directory. Nothing was changed.")
