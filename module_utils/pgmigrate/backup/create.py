"""One backup run of one database: up to three backups from one exported snapshot."""

import json
import os
import shutil
import subprocess
import tempfile
import time

import psycopg2

from ..common.connection import describe, libpq_environment
from .base import (
    APPLICATION_NAME,
    ARCHIVE_DIR,
    DATA_KINDS,
    FORMAT_VERSION,
    KINDS,
    PLAIN_FILES,
    RECORD,
    BackupError,
    _connect,
    _now,
    tool,
    tool_version,
)
from .counts import _counter, _hidden_rows_problem, count_tables, count_through_policies, list_tables
from .manifest import _files, write_manifest
from .progress import BackupProgress

# pg_dump's gzip level for the complete backup. Measured on a 205 MB CDP database (scale 2, -j2, 2 cores):
# level 0 1.5 s and 178 MB, 1 2.7 s and 70 MB, 3 3.3 s and 68 MB, 6 (pg_dump's default) 5.6 s and 64 MB; a
# restore takes the same time from each. Level 1 keeps nearly all of the saving in space at half the time.
DEFAULT_COMPRESS_LEVEL = 1


def dump_arguments(kind, unit, pg_dump, snapshot, jobs, through_policies=False,
                   compress_level=DEFAULT_COMPRESS_LEVEL):
    """pg_dump's arguments. through_policies: some table is read through its row-level security policies
    (count_through_policies proved they show every row), so pg_dump must not set row_security off.
    compress_level: gzip's level (0-9) for the complete backup's directory archive."""
    common = [f"--snapshot={snapshot}"] + (["--enable-row-security"] if through_policies else [])
    if kind == "complete":
        # Owners and privileges stay in the archive so that a restore is exact; pg_restore can leave them out.
        return [pg_dump, "--format=directory", f"--jobs={jobs}", f"--compress={int(compress_level)}", *common,
                f"--file={os.path.join(unit, ARCHIVE_DIR)}"]
    flag = "--schema-only" if kind == "schema-only" else "--data-only"
    return [pg_dump, flag, "--no-owner", "--no-privileges", "--format=plain", *common,
            f"--file={os.path.join(unit, PLAIN_FILES[kind])}"]


def _tree_size(directory):
    files = _files(directory)
    return len(files), sum(os.path.getsize(os.path.join(directory, name)) for name in files)


def _write_json(path, data):
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def _finish_dump(process, stderr_file, kind, params):
    process.wait()
    stderr_file.seek(0)
    message = stderr_file.read().decode(errors="replace").strip()
    if process.returncode != 0:
        hint = ""
        if "out of shared memory" in message:
            hint = (" (the server's lock table is full: pg_dump locks every table, and with --jobs its workers "
                    "lock them again; raise max_locks_per_transaction on the server, or lower backup_jobs to 1)")
        raise BackupError(f"pg_dump ({kind}) of {describe(params)} failed{hint}: {message[-2000:]}")
    return [line for line in message.splitlines() if line.strip()]


def _stop_dump(process):
    """Stop a pg_dump whose backup failed for another reason (its leader stops its workers)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _export_snapshot(holder):
    """Open the transaction whose exported snapshot every dump and count shares, held until the last
    dump has finished: (snapshot, server_version, server_version_num, database bytes). It takes no
    table lock: the counts are made by another session (count_tables)."""
    holder.set_session(isolation_level="REPEATABLE READ", readonly=True)
    with holder.cursor() as cur:
        cur.execute("SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0")
        cur.execute("SELECT pg_export_snapshot(), current_setting('server_version'),"
                    " current_setting('server_version_num')::int, pg_database_size(current_database())")
        return cur.fetchone()


def _release(holder):
    """End the snapshot's transaction once every backup is written: the backups are whole even if this fails
    (a connection lost now), so its failure must not remove them."""
    try:
        holder.rollback()
    except psycopg2.Error:
        pass


def _count_guarded_first(counter, snapshot, params):
    """Before any dump: the tables, and the counts of those read through their policies (refused when the
    policies hide rows). Returns (tables, their counts so far, the tables still to count)."""
    tables = list_tables(counter, snapshot)
    guarded = [table for table in tables if table["policies"]]
    counts = count_through_policies(counter, snapshot, guarded, params)
    problem = _hidden_rows_problem(counts, params)
    if problem:
        raise BackupError(problem)
    return tables, counts, [table for table in tables if not table["policies"]]


def _in_table_order(tables, counts):
    rows = {(count["schema"], count["table"]): count["rows"] for count in counts}
    return [{"schema": table["schema"], "table": table["table"], "rows": rows[(table["schema"], table["table"])]}
            for table in tables]


def _record(kind, label, params, snapshot_facts, dump_version, result, run_id, times, unit):
    snapshot, server_version, server_version_num, database_bytes = snapshot_facts
    files, size = _tree_size(unit)
    return {
        "format_version": FORMAT_VERSION,
        "label": label,
        "kind": kind,
        "format": "directory" if kind == "complete" else "plain",
        "content": ARCHIVE_DIR if kind == "complete" else PLAIN_FILES[kind],
        "database": {key: params.get(key) for key in ("host", "port", "dbname", "user")},
        "server_version": server_version,
        "server_version_num": server_version_num,
        "database_bytes": database_bytes,
        "pg_dump_version": dump_version,
        "pg_dump_options": [option for option in result["options"]
                            if not option.startswith(("--file=", "--snapshot="))],
        "snapshot": snapshot,
        "run_id": run_id,
        "started_at": times[0],
        "finished_at": times[1],
        "seconds": result["seconds"],
        "files": files,
        "bytes": size,
    }


def create_backup(params, label, path, kinds, jobs=2, run_id="", pg_bin_dir=None, check_mode=False, progress=None,
                  compress_level=DEFAULT_COMPRESS_LEVEL):
    """Dump one database into path/<kind>/ for each kind, all from one snapshot, with exact row counts.

    Returns {"backups": [{kind, path, files, bytes, seconds}], "tables", "rows", "snapshot", "warnings"}.
    A backup directory that already holds files is refused; on failure what this call created is removed,
    and the error raised is the first cause (a dump still running is stopped, its error left aside).
    progress: a progress.BackupProgress, told what is dumped while it is.
    """
    progress = progress or BackupProgress(None, label)
    kinds = [kind for kind in KINDS if kind in kinds]  # the plan's order, no duplicates
    path = os.path.abspath(path)
    units = {kind: os.path.join(path, kind) for kind in kinds}
    for unit in units.values():
        if os.path.exists(unit) and os.listdir(unit):
            raise BackupError(f"{unit} already holds files: a backup is never written over another one")
    if check_mode:
        return {"backups": [{"kind": kind, "path": unit} for kind, unit in units.items()], "tables": 0,
                "rows": 0, "snapshot": None, "warnings": []}
    pg_dump = tool("pg_dump", pg_bin_dir)
    _major, dump_version = tool_version(pg_dump)
    holder = _connect(params, label)
    counter = None
    previous_umask = os.umask(0o077)
    created = []
    try:
        for unit in units.values():
            if not os.path.isdir(unit):
                os.makedirs(unit, mode=0o700)
                created.append(unit)
        snapshot_facts = _export_snapshot(holder)
        snapshot = snapshot_facts[0]
        started_at = _now()
        # Row counts only matter to the backups holding data.
        tables, counts, pending = [], [], []
        if any(kind in DATA_KINDS for kind in kinds):
            counter = _counter(params, label)
            tables, counts, pending = _count_guarded_first(counter, snapshot, params)
        through_policies = len(counts) > 0
        env = libpq_environment(params, APPLICATION_NAME)
        results = {}
        warnings = []
        # The complete dump (parallel, the longest) runs while the counter counts the other tables.
        for kind in sorted(kinds, key=lambda kind: kind != "complete"):
            began = time.monotonic()
            arguments = dump_arguments(kind, units[kind], pg_dump, snapshot, jobs, through_policies, compress_level)
            with tempfile.TemporaryFile() as stderr_file, progress.dumping(kind, units[kind]):
                process = subprocess.Popen(arguments, env=env, stdout=subprocess.DEVNULL, stderr=stderr_file)
                try:
                    counts += count_tables(counter, snapshot, pending)
                    pending = []
                except BaseException:
                    _stop_dump(process)
                    raise
                warnings += [f"{kind}: {line}" for line in _finish_dump(process, stderr_file, kind, params)]
            results[kind] = {"seconds": round(time.monotonic() - began, 3), "options": arguments[1:]}
        tables = _in_table_order(tables, counts)
        times = (started_at, _now())
        backups = []
        for kind in kinds:
            unit = units[kind]
            record = _record(kind, label, params, snapshot_facts, dump_version, results[kind], run_id, times, unit)
            if kind in DATA_KINDS:
                record["tables"] = tables
            _write_json(os.path.join(unit, RECORD), record)
            write_manifest(unit)
            backups.append({"kind": kind, "path": unit, "files": record["files"] + 2, "bytes": record["bytes"],
                            "seconds": record["seconds"]})
        _release(holder)
    except psycopg2.Error as error:
        _remove(created)
        raise BackupError(f"backup of {describe(params)} failed: {str(error).strip()}") from None
    except BaseException:
        _remove(created)
        raise
    finally:
        for conn in (counter, holder):
            if conn is not None:
                conn.close()
        os.umask(previous_umask)
    return {"backups": backups, "tables": len(tables), "rows": sum(t["rows"] for t in tables),
            "snapshot": snapshot, "warnings": warnings}


def _remove(directories):
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)
    for parent in {os.path.dirname(directory) for directory in directories}:
        try:
            os.rmdir(parent)  # only when empty
        except OSError:
            pass
