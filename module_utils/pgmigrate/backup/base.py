"""What every part of the backups shares: the layout's names, the errors, the tools and the space check."""

import datetime
import os
import re
import shutil
import subprocess

from ..clone.schema import find_tool
from ..common.connection import connect_or_raise, describe
from ..common.errors import PgmigrateError

KINDS = ("schema-only", "data-only", "complete")
# Kinds that hold the table data (the others hold only the schema).
DATA_KINDS = ("data-only", "complete")
PLAIN_FILES = {"schema-only": "schema.sql", "data-only": "data.sql"}
ARCHIVE_DIR = "dump"
MANIFEST = "SHA256SUMS"
RECORD = "backup.json"
LATEST = "latest"
FORMAT_VERSION = 1
DUMP_COMPLETE_MARKER = "-- PostgreSQL database dump complete"
# The schema-only dump is small but not nothing: this share of the database size, at least 1 MiB.
SCHEMA_ONLY_SHARE = 0.01
CHUNK = 1024 * 1024
APPLICATION_NAME = "pgmigrate-backup"


class BackupError(PgmigrateError):
    """A backup, a verification or a restore cannot go on: the message says what and where."""


class PartialRestoreError(BackupError):
    """The restore failed after the database was dropped: it is missing or partly restored."""


def _now():
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def variable_name(label):
    return f"migration_{label}" if label in ("source", "target") else str(label)


def _connect(params, label, **kwargs):
    return connect_or_raise(params, variable_name(label), BackupError, APPLICATION_NAME, **kwargs)


def tool(name, pg_bin_dir=None):
    """Path of a PostgreSQL client program: from pg_bin_dir if given, else the newest installed."""
    if pg_bin_dir:
        path = os.path.join(pg_bin_dir, name)
        if not os.access(path, os.X_OK):
            raise BackupError(f"{name} not found in {pg_bin_dir}: fix backup_pg_bin_dir or leave it empty")
        return path
    try:
        return find_tool(name)
    except Exception as error:  # schema.ToolError
        raise BackupError(str(error)) from None


def tool_version(path):
    """(major version, full version text) of a PostgreSQL client program."""
    text = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    match = re.search(r"\) (\d+)(?:\.(\d+))?", text)
    if not match:
        raise BackupError(f"cannot read the version of {path}: {text!r}")
    major = int(match[1])
    return (major if major >= 10 else float(f"{major}.{match[2]}")), text


def server_major(version_num):
    return version_num // 10000 if version_num >= 100000 else version_num / 10000


def estimate_bytes(database_bytes, kinds):
    """Disk space the backups of one database may need, before any safety factor.

    pg_database_size counts heap, TOAST and indexes; a dump holds no index and the directory format is
    compressed, so each kind holding data is estimated at the database's size (the safety factor covers
    the odd plain dump larger than its tables, e.g. bytea written as hex); the schema-only one at a small share.
    """
    total = 0
    for kind in kinds:
        if kind in DATA_KINDS:
            total += database_bytes
        else:
            total += max(CHUNK, int(database_bytes * SCHEMA_ONLY_SHARE))
    return total


def make_private_directory(path):
    """path (and its missing parents) created, and path itself set to mode 0700 even when it existed: backups
    hold whole databases."""
    previous_umask = os.umask(0o077)
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    finally:
        os.umask(previous_umask)
    os.chmod(path, 0o700)


def free_bytes(path):
    """(free bytes, directory measured) at path, or at its nearest existing parent when it does not exist."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return shutil.disk_usage(probe).free, probe


def inspect(params, label, path, kinds, pg_bin_dir=None):
    """Read-only pre-checks of one database: reachable, its size, the client tools fit its server."""
    conn = _connect(params, label)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('server_version'), current_setting('server_version_num')::int,"
                        " pg_database_size(current_database())")
            version, version_num, size = cur.fetchone()
        conn.rollback()
    finally:
        conn.close()
    dump_path = tool("pg_dump", pg_bin_dir)
    restore_path = tool("pg_restore", pg_bin_dir)
    dump_major, dump_version = tool_version(dump_path)
    if dump_major < server_major(version_num):
        raise BackupError(
            f"{dump_path} ({dump_version}) cannot dump the {label} server {describe(params)} (PostgreSQL {version}): "
            f"install the PostgreSQL {server_major(version_num)} client or set backup_pg_bin_dir to it")
    free, measured = free_bytes(path)
    return {
        "label": label,
        "database": describe(params),
        "server_version": version,
        "server_version_num": version_num,
        "database_bytes": size,
        "estimated_bytes": estimate_bytes(size, kinds),
        "free_bytes": free,
        "free_bytes_at": measured,
        "pg_dump": dump_path,
        "pg_dump_version": dump_version,
        "pg_restore": restore_path,
    }
