"""The plan's schema-only and data-only backups derived from a complete one, on demand.

A backup run dumps each database once, complete (directory format, parallel): the plan's plain
schema_backup.sql and data_backup.sql hold nothing that archive lacks, and dumping them as well read the
whole database twice more before every migration. pg_restore writes either one from the archive, with
the plan's --no-owner --no-privileges, without touching the database: beside the complete backup, in
the same run directory, with its own backup.json (the same snapshot, row counts and origin, and what it
was derived from) and SHA256SUMS, so that verify, retention and latest/ treat it as any other backup.
"""

import os
import shutil
import subprocess
import tempfile
import time

from .base import FORMAT_VERSION, PLAIN_FILES, RECORD, BackupError, _now, tool, tool_version
from .create import _tree_size, _write_json
from .manifest import read_record, verify_backup, write_manifest

DERIVABLE = ("schema-only", "data-only")
SECTION_FLAGS = {"schema-only": "--schema-only", "data-only": "--data-only"}


# pg_restore --schema-only keeps the archive's REFRESH MATERIALIZED VIEW entries, which pg_dump --schema-only
# leaves out (they would run on empty tables before any data): the derived file leaves them out too.
LEFT_OUT_OF_SCHEMA_ONLY = " MATERIALIZED VIEW DATA "


def restore_arguments(kind, archive, output, pg_restore, use_list=None):
    """pg_restore writing kind's plain SQL from the archive: the plan's pg_dump options, as pg_restore's;
    use_list: the archive's entries to write (pg_restore --use-list)."""
    return [pg_restore, SECTION_FLAGS[kind], "--no-owner", "--no-privileges", f"--file={output}",
            *([f"--use-list={use_list}"] if use_list else []), archive]


def _schema_only_list(archive, pg_restore, path):
    """The archive's table of contents without the entries pg_dump --schema-only would not write, at path."""
    listing = subprocess.run([pg_restore, "--list", archive], capture_output=True, text=True, check=False)
    if listing.returncode != 0:
        raise BackupError(f"pg_restore --list {archive} failed: {listing.stderr.strip()[-2000:]}")
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in listing.stdout.splitlines()
                          if LEFT_OUT_OF_SCHEMA_ONLY not in line)
    return path


def _derived_record(complete, kind, pg_restore_version, arguments, times, seconds, unit):
    record = {key: value for key, value in complete.items()
              if key not in ("kind", "format", "content", "files", "bytes", "seconds", "started_at",
                             "finished_at", "pg_dump_options", "tables")}
    files, size = _tree_size(unit)
    record.update({
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "format": "plain",
        "content": PLAIN_FILES[kind],
        "derived_from": "../complete",
        "pg_restore_version": pg_restore_version,
        "pg_restore_options": [a for a in arguments[1:-1] if not a.startswith(("--file=", "--use-list="))],
        "started_at": times[0],
        "finished_at": times[1],
        "seconds": seconds,
        "files": files,
        "bytes": size,
    })
    if kind == "data-only" and "tables" in complete:
        record["tables"] = complete["tables"]
    return record


def _existing(unit, pg_bin_dir):
    """A backup already at unit (derived by an earlier call, or dumped by the backup run itself): kept, if it
    verifies; one that does not is an error (a backup is never written over)."""
    verification = verify_backup(unit, pg_bin_dir)
    if not verification["ok"]:
        raise BackupError(f"{unit} already holds a backup that does not verify ("
                          + "; ".join(verification["problems"]) + "): remove it to derive it again")
    record = read_record(unit)
    return {"kind": record["kind"], "path": unit, "files": record["files"] + 2, "bytes": record["bytes"],
            "seconds": 0, "existing": True}


def _write_plain(kind, complete, complete_unit, unit, pg_restore, pg_restore_version):
    """kind's plain SQL written into a staging directory beside unit, with its record and manifest, then
    renamed to unit: a backup directory under its kind's name is always whole."""
    staging = f"{unit}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging, mode=0o700)
    try:
        archive = os.path.join(complete_unit, complete["content"])
        started_at, began = _now(), time.monotonic()
        with tempfile.TemporaryDirectory() as work, tempfile.TemporaryFile() as stderr_file:
            use_list = _schema_only_list(archive, pg_restore, os.path.join(work, "toc.list")) \
                if kind == "schema-only" else None
            arguments = restore_arguments(kind, archive, os.path.join(staging, PLAIN_FILES[kind]), pg_restore,
                                          use_list)
            if subprocess.run(arguments, stdout=subprocess.DEVNULL, stderr=stderr_file).returncode != 0:
                stderr_file.seek(0)
                message = stderr_file.read().decode(errors="replace").strip()
                raise BackupError(f"pg_restore could not write the {kind} backup from {archive}: {message[-2000:]}")
        seconds = round(time.monotonic() - began, 3)
        record = _derived_record(complete, kind, pg_restore_version, arguments, (started_at, _now()), seconds,
                                 staging)
        _write_json(os.path.join(staging, RECORD), record)
        write_manifest(staging)
        os.rename(staging, unit)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"kind": kind, "path": unit, "files": record["files"] + 2, "bytes": record["bytes"], "seconds": seconds}


def _remove_stale_staging(database_dir):
    """Staging directories of derivations that were killed (their process is gone)."""
    for name in os.listdir(database_dir):
        kind, _, pid = name.partition(".partial-")
        if kind in DERIVABLE and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(os.path.join(database_dir, name), ignore_errors=True)


def derive_backups(complete_unit, kinds=DERIVABLE, pg_bin_dir=None, check_mode=False):
    """Write the kinds (schema-only, data-only) beside the complete backup at complete_unit (a path or a
    latest/ link to one), after verifying it. Returns {"backups": [{kind, path, files, bytes, seconds,
    existing}], "from": the complete backup's real path}. A kind already there that verifies is kept (a
    repeated call does nothing); one that does not is an error."""
    unknown = [kind for kind in kinds if kind not in DERIVABLE]
    if unknown:
        raise BackupError(f"cannot derive {', '.join(unknown)}: only {' and '.join(DERIVABLE)} come from a "
                          "complete backup")
    given, complete_unit = complete_unit, os.path.realpath(complete_unit)
    if not os.path.isdir(complete_unit):
        raise BackupError(f"there is no complete backup at {given}: make one first (playbooks/backup.yml), or name "
                          "one in backup_derive_paths")
    complete = read_record(complete_unit)
    if complete.get("kind") != "complete":
        raise BackupError(f"{complete_unit} is a {complete.get('kind')} backup: derive from a complete one")
    database_dir = os.path.dirname(complete_unit)
    units = {kind: os.path.join(database_dir, kind) for kind in DERIVABLE if kind in kinds}
    if check_mode:
        return {"backups": [{"kind": kind, "path": unit, "existing": os.path.isdir(unit)}
                            for kind, unit in units.items()], "from": complete_unit}
    existing = [_existing(unit, pg_bin_dir) for unit in units.values() if os.path.isdir(unit)]
    todo = {kind: unit for kind, unit in units.items() if not os.path.isdir(unit)}
    if not todo:
        return {"backups": existing, "from": complete_unit}
    verification = verify_backup(complete_unit, pg_bin_dir)
    if not verification["ok"]:
        raise BackupError(f"the complete backup {complete_unit} does not verify, nothing was derived from it: "
                          + "; ".join(verification["problems"]))
    pg_restore = tool("pg_restore", pg_bin_dir)
    _major, pg_restore_version = tool_version(pg_restore)
    previous_umask = os.umask(0o077)
    try:
        _remove_stale_staging(database_dir)
        written = [_write_plain(kind, complete, complete_unit, unit, pg_restore, pg_restore_version)
                   for kind, unit in todo.items()]
    finally:
        os.umask(previous_umask)
    return {"backups": existing + written, "from": complete_unit}
