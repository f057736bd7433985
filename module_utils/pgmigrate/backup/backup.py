"""Backups of a database with pg_dump, their checksum manifests, verification, retention and restore.

One backup run of one database makes up to three *backups* (the plan's phase 2), each a directory
of its own so that each can be verified, kept or removed on its own:

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
"""

import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import psycopg2
from psycopg2 import sql

from ..clone.schema import find_tool
from ..common.connection import connect, describe, friendly_connect_error, libpq_environment

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

# Tables whose rows a dump holds: ordinary tables and partitions in user schemas, extension members
# excepted (CREATE EXTENSION makes those). FROM ONLY keeps inheritance children out of a parent's count.
# row_security_active: the login reads the table only through its row-level security policies (neither
# superuser nor BYPASSRLS, and not its owner or the table is under FORCE ROW LEVEL SECURITY).
USER_TABLES_SQL = """
    SELECT n.nspname, c.relname, format('%I.%I', n.nspname, c.relname), row_security_active(c.oid),
           pg_has_role(c.relowner, 'USAGE')
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind = 'r'
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
       AND NOT EXISTS (SELECT 1 FROM pg_depend d
                        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
     ORDER BY 1, 2
"""
# Tables counted per transaction. A count locks its table and the table's indexes until its
# transaction ends: counting every table in one transaction, beside pg_dump -j (whose leader and
# workers lock every table too), exhausts the server's lock table (max_locks_per_transaction) on a
# database of thousands of tables. One statement per batch also saves a round trip per table.
COUNT_BATCH = 200
# How long the count of a table under FORCE ROW LEVEL SECURITY waits for its lock (see _count_through_policies).
POLICY_LOCK_TIMEOUT = "60s"


class BackupError(Exception):
    """A backup, a verification or a restore cannot go on: the message says what and where."""


class PartialRestoreError(BackupError):
    """The restore failed after the database was dropped: it is missing or partly restored."""


# ----------------------------------------------------------------------------------- helpers ----
def _now():
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def variable_name(label):
    return f"migration_{label}" if label in ("source", "target") else str(label)


def _connect(params, label, **kwargs):
    try:
        return connect(params, application_name=APPLICATION_NAME, **kwargs)
    except psycopg2.Error as error:
        raise BackupError(friendly_connect_error(error, params, variable_name(label))) from None


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


def free_bytes(path):
    """(free bytes, directory measured) at path, or at its nearest existing parent when it does not exist."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return shutil.disk_usage(probe).free, probe


# ----------------------------------------------------------------------------------- inspect ----
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


# ---------------------------------------------------------------------------------- manifest ----
def _files(directory):
    """Relative paths of every file below directory, sorted; symlinks are not followed."""
    found = []
    for root, dirs, names in os.walk(directory):
        dirs.sort()
        for name in names:
            found.append(os.path.relpath(os.path.join(root, name), directory))
    return sorted(found)


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(unit):
    """Write SHA256SUMS (the format of `sha256sum`, so `sha256sum -c SHA256SUMS` checks it too)."""
    lines = [f"{sha256_file(os.path.join(unit, name))}  {name}\n" for name in _files(unit) if name != MANIFEST]
    temporary = os.path.join(unit, MANIFEST + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.writelines(lines)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, os.path.join(unit, MANIFEST))
    return len(lines)


def read_manifest(unit):
    entries = {}
    with open(os.path.join(unit, MANIFEST), encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            match = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)\n?", line)
            if not match:
                raise BackupError(f"{MANIFEST} line {number} is not '<sha256>  <file>'")
            entries[match[2]] = match[1]
    return entries


def verify_manifest(unit):
    """Problems found comparing the files of a backup with its manifest ([] when they all match)."""
    if not os.path.isfile(os.path.join(unit, MANIFEST)):
        return [f"no {MANIFEST} in {unit}: the backup never finished, or its manifest was removed"]
    try:
        expected = read_manifest(unit)
    except (BackupError, UnicodeDecodeError) as error:
        return [f"{MANIFEST} is unreadable: {error}"]
    problems = []
    present = set(_files(unit)) - {MANIFEST}
    for name, digest in sorted(expected.items()):
        path = os.path.join(unit, name)
        if name not in present:
            problems.append(f"{name} is missing")
            continue
        found = sha256_file(path)
        if found != digest:
            problems.append(f"{name} does not match its checksum (sha256 {found}, manifest says {digest})")
    problems += [f"{name} is not in the manifest" for name in sorted(present - set(expected))]
    if RECORD not in expected:
        problems.append(f"{RECORD} is not in the manifest")
    return problems


# ------------------------------------------------------------------------------- verification ----
def plain_dump_problems(path):
    """A plain SQL dump must be non-empty and end with pg_dump's 'dump complete' marker."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        return [f"{name} is missing"]
    size = os.path.getsize(path)
    if size == 0:
        return [f"{name} is empty"]
    with open(path, "rb") as handle:
        handle.seek(max(0, size - 64 * 1024))
        tail = handle.read().decode("utf-8", errors="replace")
    position = tail.rfind(DUMP_COMPLETE_MARKER)
    # After the marker pg_dump writes only comment dashes, blank lines and psql's \unrestrict line.
    rest = tail[position + len(DUMP_COMPLETE_MARKER):].splitlines() if position >= 0 else None
    if rest is None or any(line.strip() not in ("", "--") and not line.startswith("\\unrestrict ") for line in rest):
        return [f"{name} does not end with pg_dump's '{DUMP_COMPLETE_MARKER}' marker: the dump is truncated"]
    return []


def archive_problems(directory, pg_bin_dir=None):
    """A directory-format archive must list with pg_restore --list, and each table's data file exist."""
    if not os.path.isfile(os.path.join(directory, "toc.dat")):
        return [f"{ARCHIVE_DIR}/toc.dat is missing"]
    result = subprocess.run([tool("pg_restore", pg_bin_dir), "--list", directory],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return [f"pg_restore --list {ARCHIVE_DIR} failed: {result.stderr.strip()[-1000:]}"]
    # <dump id>.dat, or compressed <dump id>.dat.gz (.lz4, ...): the dump ids that have a data file.
    with_data = {name.split(".", 1)[0] for name in os.listdir(directory)
                 if name.split(".", 2)[1:2] == ["dat"]}
    problems = []
    for match in re.finditer(r"^(\d+); \d+ \d+ TABLE DATA (.*)$", result.stdout, re.MULTILINE):
        if match[1] not in with_data:
            problems.append(f"{ARCHIVE_DIR}/{match[1]}.dat* (data of {match[2].rsplit(' ', 1)[0]}) is missing")
    return problems


def read_record(unit):
    try:
        with open(os.path.join(unit, RECORD), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise BackupError(f"cannot read {os.path.join(unit, RECORD)}: {error}") from None


def verify_backup(unit, pg_bin_dir=None):
    """Check a backup: its manifest first, then its content. Returns {path, kind, ok, problems, record}."""
    unit = os.path.realpath(unit)  # what a latest/ symlink designates
    if not os.path.isdir(unit):
        return {"path": unit, "kind": None, "ok": False, "problems": [f"{unit} does not exist"], "record": {}}
    problems = verify_manifest(unit)
    record = {}
    if not problems:
        record = read_record(unit)
        kind = record.get("kind")
        if kind == "complete":
            problems += archive_problems(os.path.join(unit, ARCHIVE_DIR), pg_bin_dir)
        elif kind in PLAIN_FILES:
            problems += plain_dump_problems(os.path.join(unit, PLAIN_FILES[kind]))
        else:
            problems.append(f"{RECORD} names an unknown kind of backup {kind!r}")
    summary = {key: record.get(key) for key in ("label", "kind", "database", "run_id", "finished_at", "bytes",
                                                 "files", "snapshot", "server_version")}
    if "tables" in record:
        summary["table_count"] = len(record["tables"])
        summary["rows"] = sum(table["rows"] for table in record["tables"])
    return {"path": unit, "kind": record.get("kind"), "ok": not problems, "problems": problems, "record": summary}


# ------------------------------------------------------------------------------------- create ----
def _begin_in_snapshot(cur, snapshot, readonly=True):
    """Open a REPEATABLE READ transaction that sees the exported snapshot (the connection is in autocommit)."""
    cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ" + (" READ ONLY" if readonly else ""))
    cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))


def _counter(params, label):
    """A session that counts rows: every count in a short transaction importing the backup's snapshot."""
    conn = _connect(params, label, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0; SET row_security = off")
    return conn


def list_tables(conn, snapshot):
    """The user tables in the snapshot: [{schema, table, qualname, policies, owned}] (see USER_TABLES_SQL)."""
    with conn.cursor() as cur:
        _begin_in_snapshot(cur, snapshot)
        cur.execute(USER_TABLES_SQL)
        rows = cur.fetchall()
        cur.execute("COMMIT")
    return [{"schema": schema, "table": name, "qualname": qualname, "policies": policies, "owned": owned}
            for schema, name, qualname, policies, owned in rows]


def _count_statement(tables):
    return "SELECT " + ", ".join(f"(SELECT count(*) FROM ONLY {table['qualname']})" for table in tables)


def count_tables(conn, snapshot, tables):
    """Exact row counts of tables in the snapshot, COUNT_BATCH tables per transaction: [{schema, table, rows}]."""
    counts = []
    if not tables:
        return counts
    with conn.cursor() as cur:
        for start in range(0, len(tables), COUNT_BATCH):
            batch = tables[start:start + COUNT_BATCH]
            _begin_in_snapshot(cur, snapshot)
            cur.execute(_count_statement(batch))
            rows = cur.fetchone()
            cur.execute("COMMIT")
            counts += [{"schema": table["schema"], "table": table["table"], "rows": count}
                       for table, count in zip(batch, rows, strict=True)]
    return counts


def _not_readable(tables, params):
    """Tables under row-level security that the login does not own: it reads them only through their policies."""
    if not tables:
        return None
    names = ", ".join(table["qualname"] for table in tables)
    return (f"{params.get('user')} reads {names} on {describe(params)} only through its row-level security "
            f"policies (it is neither the owner, a superuser nor a role with BYPASSRLS), so a backup could miss "
            "rows: back up as the tables' owner, a superuser or a role with BYPASSRLS")


def count_through_policies(conn, snapshot, tables, params):
    """Tables the login owns but reads through their policies (FORCE ROW LEVEL SECURITY), counted twice in
    one transaction in the snapshot, rolled back: the rows the policies show (what pg_dump
    --enable-row-security dumps) and every row, FORCE being lifted inside that transaction only (no
    other session ever sees it lifted). Returns [{schema, table, rows, visible}]. It takes each table's
    ACCESS EXCLUSIVE lock for a moment: run it before any dump, whose locks it would wait for."""
    problem = _not_readable([table for table in tables if not table["owned"]], params)
    if problem:
        raise BackupError(problem)
    counts = []
    if not tables:
        return counts
    with conn.cursor() as cur:
        for start in range(0, len(tables), COUNT_BATCH):
            batch = tables[start:start + COUNT_BATCH]
            _begin_in_snapshot(cur, snapshot, readonly=False)
            try:
                cur.execute("SET LOCAL lock_timeout = %s", (POLICY_LOCK_TIMEOUT,))
                cur.execute("SET LOCAL row_security = on")
                cur.execute(_count_statement(batch))
                visible = cur.fetchone()
                for table in batch:
                    cur.execute(sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(
                        sql.SQL(table["qualname"])))
                cur.execute("SET LOCAL row_security = off")
                cur.execute(_count_statement(batch))
                every = cur.fetchone()
            finally:
                cur.execute("ROLLBACK")
            counts += [{"schema": table["schema"], "table": table["table"], "rows": count, "visible": shown}
                       for table, count, shown in zip(batch, every, visible, strict=True)]
    return counts


def _hidden_rows_problem(counts, params):
    hidden = [f"{table['schema']}.{table['table']} ({table['rows'] - table['visible']} of its {table['rows']} rows)"
              for table in counts if table["visible"] != table["rows"]]
    if not hidden:
        return None
    return (f"the row-level security policies of {', '.join(hidden)} hide rows from {params.get('user')}, the "
            f"tables' owner, under FORCE ROW LEVEL SECURITY on {describe(params)}: pg_dump reads a table "
            "through its policies, so the backup would miss them. Back up as a superuser or a role with "
            "BYPASSRLS, or give the owner a policy that shows it every row. Nothing was written")


def dump_arguments(kind, unit, pg_dump, snapshot, jobs, through_policies=False):
    """pg_dump's arguments. through_policies: some table is read through its row-level security policies
    (count_through_policies proved they show every row), so pg_dump must not set row_security off."""
    common = [f"--snapshot={snapshot}"] + (["--enable-row-security"] if through_policies else [])
    if kind == "complete":
        # Owners and privileges stay in the archive so that a restore is exact; pg_restore can leave them out.
        return [pg_dump, "--format=directory", f"--jobs={jobs}", *common, f"--file={os.path.join(unit, ARCHIVE_DIR)}"]
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


def create_backup(params, label, path, kinds, jobs=2, run_id="", pg_bin_dir=None, check_mode=False):
    """Dump one database into path/<kind>/ for each kind, all from one snapshot, with exact row counts.

    Returns {"backups": [{kind, path, files, bytes, seconds}], "tables", "rows", "snapshot", "warnings"}.
    A backup directory that already holds files is refused; on failure what this call created is removed,
    and the error raised is the first cause (a dump still running is stopped, its error left aside).
    """
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
            arguments = dump_arguments(kind, units[kind], pg_dump, snapshot, jobs, through_policies)
            with tempfile.TemporaryFile() as stderr_file:
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


# ------------------------------------------------------------------------------------- latest ----
def point_latest(latest_dir, backups):
    """latest_dir/<kind> -> each of backups ({kind, path}), once they verify: relative links, so that the
    backup directory can be moved or copied as a whole, each one replaced in one rename (a reader never
    finds it missing). latest_dir and its parents are created private (0700)."""
    previous_umask = os.umask(0o077)
    try:
        os.makedirs(latest_dir, mode=0o700, exist_ok=True)
    finally:
        os.umask(previous_umask)
    for one in backups:
        link = os.path.join(latest_dir, one["kind"])
        staged = f"{link}.{os.getpid()}.new"
        if os.path.lexists(staged):
            os.remove(staged)
        os.symlink(os.path.relpath(one["path"], latest_dir), staged)
        os.replace(staged, link)


# ---------------------------------------------------------------------------------- retention ----
def _finished_at(unit):
    try:
        return read_record(unit).get("finished_at") or ""
    except BackupError:
        return ""


def prune(backup_dir, key, keep, check_mode=False, pinned=()):
    """Keep the `keep` newest finished backups of database `key` per kind; remove the older ones.

    A backup directory without a manifest (a killed run) older than the oldest kept one goes too.
    What a `latest` pointer designates is never removed, nor any kind of the backups whose directories
    (<backup_dir>/<run>/<key>) are in pinned (the rollback points). Emptied run directories are removed.
    """
    pinned = {os.path.realpath(directory) for directory in pinned}
    if keep < 1:
        raise BackupError("backup_keep must be at least 1: the newest backup is what a rollback restores")
    backup_dir = os.path.realpath(backup_dir)
    if not os.path.isdir(backup_dir):
        return {"removed": [], "kept": []}
    protected = set()
    latest_dir = os.path.join(backup_dir, LATEST, key)
    if os.path.isdir(latest_dir):
        protected = {os.path.realpath(os.path.join(latest_dir, name)) for name in os.listdir(latest_dir)}
    removed, kept = [], []
    for kind in KINDS:
        finished, unfinished = [], []
        for run in sorted(os.listdir(backup_dir)):
            unit = os.path.join(backup_dir, run, key, kind)
            if run == LATEST or os.path.islink(unit) or not os.path.isdir(unit):
                continue
            if os.path.isfile(os.path.join(unit, MANIFEST)):
                finished.append((_finished_at(unit), run, unit))
            else:
                unfinished.append((os.path.getmtime(unit), unit))
        finished.sort(reverse=True)
        keeping = finished[:keep]
        kept += [unit for _at, _run, unit in keeping]
        doomed = [unit for _at, _run, unit in finished[keep:]]
        if keeping:
            oldest_kept = min(os.path.getmtime(unit) for _at, _run, unit in keeping)
            doomed += [unit for mtime, unit in unfinished if mtime < oldest_kept]
        for unit in doomed:
            if os.path.realpath(unit) in protected or os.path.realpath(os.path.dirname(unit)) in pinned \
                    or not os.path.realpath(unit).startswith(backup_dir + os.sep):
                kept.append(unit)
                continue
            removed.append(unit)
            if not check_mode:
                shutil.rmtree(unit)
    if not check_mode:
        for unit in removed:
            for parent in (os.path.dirname(unit), os.path.dirname(os.path.dirname(unit))):
                try:
                    os.rmdir(parent)  # the database's and the run's directories, once empty
                except OSError:
                    break
    return {"removed": removed, "kept": sorted(kept)}


# ------------------------------------------------------------------------------------ restore ----
def restore(params, unit, jobs=2, maintenance_db="postgres", terminate_connections=True, no_owner=False,
            no_privileges=False, analyze=True, pg_bin_dir=None, check_mode=False):
    """Replace the target database by the one in a complete backup.

    The database is dropped and recreated by pg_restore --create from the archive, which brings back
    everything the backup holds, database-level settings, comment and privileges included, and nothing
    that was added since (schemas, extensions, event triggers, publications, ...). Refused unless the
    backup verifies. Returns what was done.
    """
    verification = verify_backup(unit, pg_bin_dir)
    if not verification["ok"]:
        raise BackupError(f"Refusing to restore from {verification['path']}: the backup does not verify: "
                          + "; ".join(verification["problems"]))
    unit = verification["path"]
    record = read_record(unit)
    dbname = params["dbname"]
    if record.get("kind") != "complete":
        raise BackupError(f"Refusing to restore from {unit}: it is a {record.get('kind')} backup; "
                          "only a complete backup restores a database")
    if record["database"]["dbname"] != dbname:
        raise BackupError(f"Refusing to restore from {unit}: it is a backup of database "
                          f"{record['database']['dbname']!r}, not {dbname!r}")
    if maintenance_db == dbname:
        raise BackupError(f"the maintenance database cannot be {dbname!r}, the database being restored: "
                          "set backup_restore_maintenance_db to another database (e.g. template1)")
    admin_params = {**params, "dbname": maintenance_db}
    admin = _connect(admin_params, "target", autocommit=True)
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT rolsuper, rolcreatedb, current_setting('server_version_num')::int"
                        " FROM pg_roles WHERE rolname = current_user")
            superuser, createdb, version_num = cur.fetchone()
            cur.execute("SELECT pg_has_role(current_user, datdba, 'USAGE') FROM pg_database WHERE datname = %s",
                        (dbname,))
            row = cur.fetchone()
            exists, owner = row is not None, bool(row and row[0])
            if not (superuser or createdb):
                raise BackupError(f"{params['user']} may not create databases (CREATEDB) on {describe(params)}: "
                                  "the restore recreates the database; use a role with CREATEDB or a superuser")
            if exists and not (superuser or owner):
                raise BackupError(f"{params['user']} may not drop database {dbname} (only its owner or a "
                                  "superuser may): the restore recreates the database")
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                        (dbname,))
            sessions = cur.fetchone()[0]
            if sessions and not terminate_connections:
                raise BackupError(f"{sessions} sessions are connected to {dbname}: stop the application "
                                  "(maintenance mode) or set backup_restore_terminate_connections=true")
            result = {"path": unit, "database": describe(params), "existed": exists, "sessions_terminated": 0,
                      "backup": verification["record"], "seconds": 0.0, "warnings": []}
            if check_mode:
                result["sessions_terminated"] = sessions
                return result
            began = time.monotonic()
            name = sql.Identifier(dbname)
            if exists:
                if terminate_connections and version_num >= 130000:
                    cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(name))
                else:
                    if terminate_connections:
                        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                    " WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))
                    cur.execute(sql.SQL("DROP DATABASE {}").format(name))
            result["sessions_terminated"] = sessions
    except psycopg2.Error as error:
        raise BackupError(f"cannot drop database {dbname} on {describe(params)}: {str(error).strip()}") from None
    finally:
        admin.close()
    arguments = [tool("pg_restore", pg_bin_dir), "--create", f"--dbname={maintenance_db}", f"--jobs={jobs}"]
    arguments += ["--no-owner"] if no_owner else []
    arguments += ["--no-privileges"] if no_privileges else []
    arguments.append(os.path.join(unit, ARCHIVE_DIR))
    completed = subprocess.run(arguments, env=libpq_environment(admin_params, APPLICATION_NAME),
                               capture_output=True, text=True, check=False)
    messages = [line for line in completed.stderr.splitlines() if line.strip()]
    if completed.returncode != 0:
        raise PartialRestoreError(f"pg_restore into {describe(params)} failed (the database may be partly restored: "
                          f"fix the cause and run the restore again): {' | '.join(messages)[-3000:]}")
    result["warnings"] = messages
    if analyze:
        conn = _connect(params, "target", autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute("ANALYZE")
        except psycopg2.Error as error:
            raise PartialRestoreError(f"ANALYZE of the restored {describe(params)} failed: {error}") from None
        finally:
            conn.close()
    result["seconds"] = round(time.monotonic() - began, 3)
    return result


def compare_counts(params, unit):
    """Exact row counts of the database against those recorded in a backup: (differences, tables, rows)."""
    record = read_record(os.path.abspath(unit))
    if "tables" not in record:
        raise BackupError(f"{unit} records no row counts (a {record.get('kind')} backup)")
    expected = {(table["schema"], table["table"]): table["rows"] for table in record["tables"]}
    holder = _connect(params, "target")
    counter = None
    try:
        snapshot = _export_snapshot(holder)[0]
        counter = _counter(params, "target")
        tables = list_tables(counter, snapshot)
        found = count_through_policies(counter, snapshot, [table for table in tables if table["policies"]], params)
        found += count_tables(counter, snapshot, [table for table in tables if not table["policies"]])
    except psycopg2.Error as error:
        raise BackupError(f"counting the rows of {describe(params)} failed: {str(error).strip()}") from None
    finally:
        for conn in (counter, holder):
            if conn is not None:
                conn.close()
    actual = {(table["schema"], table["table"]): table["rows"] for table in found}
    differences = []
    for key in sorted(set(expected) | set(actual)):
        name = ".".join(key)
        if key not in actual:
            differences.append(f"{name}: missing (the backup holds {expected[key]} rows)")
        elif key not in expected:
            differences.append(f"{name}: not in the backup ({actual[key]} rows)")
        elif expected[key] != actual[key]:
            differences.append(f"{name}: {actual[key]} rows, the backup holds {expected[key]}")
    return differences, len(actual), sum(actual.values())
