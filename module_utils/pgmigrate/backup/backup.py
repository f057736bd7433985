"""Backups of a database with pg_dump, their checksum manifests, verification, retention and restore.

One backup run of one database makes up to three *backups* (the plan's phase 2; by default the complete
one only, the other two derived from it on demand, see derive), each a directory of its own so that each
can be verified, kept or removed on its own:

    <run dir>/<database key>/schema-only/  schema.sql   plain SQL, --schema-only --no-owner --no-privileges
                            /data-only/    data.sql     plain SQL, --data-only --no-owner --no-privileges
                            /complete/     dump/        directory format (pg_dump -Fd -j N): everything
    each with backup.json (what, where from, when, exact row counts) and SHA256SUMS (sha256sum format).

All three are taken from one exported snapshot, and the row counts recorded in backup.json are
counted inside that same snapshot: they are exactly what the backup holds, even while the database
takes writes. The session holding the snapshot locks no table; the counts are made by another one, in
short transactions that import the snapshot (COUNT_BATCH). SHA256SUMS is written last: a backup
directory without it never finished.

Passwords reach pg_dump and pg_restore through their environment only (never their command line),
psycopg2 through its connect() arguments. Every file and directory is created private (umask 077).

The parts, each a module of this package: base (layout, errors, tools, space), manifest (checksums,
records, verification), counts, create, derive (the plain backups from a complete one, on demand),
retention (latest/ and pruning), restore. This module is their
one entry point: callers use backup.<name>.
"""

from .base import (
    APPLICATION_NAME,
    ARCHIVE_DIR,
    CHUNK,
    DATA_KINDS,
    DUMP_COMPLETE_MARKER,
    FORMAT_VERSION,
    KINDS,
    LATEST,
    MANIFEST,
    PLAIN_FILES,
    RECORD,
    SCHEMA_ONLY_SHARE,
    BackupError,
    PartialRestoreError,
    estimate_bytes,
    free_bytes,
    inspect,
    make_private_directory,
    server_major,
    tool,
    tool_version,
    variable_name,
)
from .counts import COUNT_BATCH, POLICY_LOCK_TIMEOUT, USER_TABLES_SQL, count_tables, count_through_policies, list_tables
from .create import create_backup, dump_arguments
from .derive import DERIVABLE, derive_backups
from .manifest import (
    archive_problems,
    plain_dump_problems,
    read_manifest,
    read_record,
    sha256_file,
    verify_backup,
    verify_manifest,
    write_manifest,
)
from .restore import compare_counts, restore
from .retention import point_latest, prune

__all__ = [
    "APPLICATION_NAME",
    "ARCHIVE_DIR",
    "BackupError",
    "CHUNK",
    "COUNT_BATCH",
    "DATA_KINDS",
    "DERIVABLE",
    "DUMP_COMPLETE_MARKER",
    "FORMAT_VERSION",
    "KINDS",
    "LATEST",
    "MANIFEST",
    "PLAIN_FILES",
    "POLICY_LOCK_TIMEOUT",
    "PartialRestoreError",
    "RECORD",
    "SCHEMA_ONLY_SHARE",
    "USER_TABLES_SQL",
    "archive_problems",
    "compare_counts",
    "count_tables",
    "count_through_policies",
    "create_backup",
    "derive_backups",
    "dump_arguments",
    "estimate_bytes",
    "free_bytes",
    "inspect",
    "list_tables",
    "make_private_directory",
    "plain_dump_problems",
    "point_latest",
    "prune",
    "read_manifest",
    "read_record",
    "restore",
    "server_major",
    "sha256_file",
    "tool",
    "tool_version",
    "variable_name",
    "verify_backup",
    "verify_manifest",
    "write_manifest",
]
