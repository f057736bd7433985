"""A complete backup restored in place of the target database, and its row counts compared."""

import os
import subprocess
import time

import psycopg2
from psycopg2 import sql

from ..common.connection import describe, libpq_environment
from .base import APPLICATION_NAME, ARCHIVE_DIR, BackupError, PartialRestoreError, _connect, tool
from .counts import _counter, count_tables, count_through_policies, list_tables
from .create import _export_snapshot
from .manifest import read_record, verify_backup


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
