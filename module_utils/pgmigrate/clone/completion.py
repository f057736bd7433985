"""The record of finished copies: <artifacts_dir>/completed-runs.json, one entry per target.

A rerun of a copy that already finished (its playbook was killed after the copy, say) answers "nothing to
do" only while the target still holds what that copy put there: each table's exact row count is recorded
when the copy finishes and counted again before saying so. A target changed since (rows added or
removed, a table dropped) is refused, naming what differs, instead of being taken for the copy.
"""

import json
import os
import time

from psycopg2 import sql

from ..common.batching import consecutive_groups
from ..common.connection import describe
from ..common.preflight import PreflightError

FILE = "completed-runs.json"
COUNT_BATCH = 100


def _path(artifacts_dir):
    return os.path.join(artifacts_dir, FILE)


def target_key(target_identity):
    return "|".join(str(target_identity.get(k)) for k in ("system_identifier", "address", "port", "database",
                                                           "database_oid"))


def _records(artifacts_dir):
    try:
        with open(_path(artifacts_dir)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def find(artifacts_dir, source_key, target_identity):
    """The record of a finished copy of this source into this target, or None."""
    record = _records(artifacts_dir).get(target_key(target_identity))
    return record if record and record.get("source_identity") == source_key else None


def record(artifacts_dir, run_id, source_key, target_identity, target, table_rows):
    """Record the finished copy; table_rows: {table qualname: exact rows copied}."""
    records = _records(artifacts_dir)
    records[target_key(target_identity)] = {
        "run_id": run_id, "source_identity": source_key, "target": describe(target),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "table_rows": table_rows}
    temporary = f"{_path(artifacts_dir)}.{os.getpid()}.tmp"
    with open(temporary, "w") as handle:
        json.dump(records, handle, indent=1)
    os.replace(temporary, _path(artifacts_dir))


def differences(conn, table_rows, limit=5):
    """How the target differs from the recorded row counts: ["<table>: <n> rows, the copy left <m>", ...]
    (at most limit, then how many more); [] when every table is there with its count."""
    with conn.cursor() as cur:
        cur.execute("SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')")
        present = {row[0] for row in cur.fetchall()}
        found = [f"{name}: missing, the copy left {rows} rows" for name, rows in sorted(table_rows.items())
                 if name not in present]
        counted = sorted(name for name in table_rows if name in present)
        for batch in consecutive_groups(counted, lambda _name: 0, COUNT_BATCH, 1):
            cur.execute(sql.SQL(" UNION ALL ").join(
                sql.SQL("SELECT {}, count(*) FROM ONLY {}").format(sql.Literal(name), sql.SQL(name))
                for name in batch))
            found += [f"{name}: {rows} rows, the copy left {table_rows[name]}" for name, rows in cur.fetchall()
                      if rows != table_rows[name]]
    conn.rollback()
    found.sort()
    return found[:limit] + ([f"and {len(found) - limit} more"] if len(found) > limit else [])


def check_unchanged(conn, completed, target):
    """Raise PreflightError when the target no longer holds what the finished copy put there. Returns a
    warning (or None) when the record is from an earlier version, which kept no row counts."""
    if "table_rows" not in completed:
        return (f"run {completed['run_id']} recorded no row counts: the target is not checked against it; the "
                "validation compares it with the source")
    changed = differences(conn, completed["table_rows"])
    if changed:
        raise PreflightError(
            f"Run {completed['run_id']} finished this copy at {completed['finished_at']}, but the target "
            f"{describe(target)} has changed since: {'; '.join(changed)}. It is not that copy any more, so this "
            "run does not say 'nothing to do'. Nothing was changed. Set migration_target_overwrite=true to copy "
            "again (the target's tables are replaced), or restore it (playbooks/rollback.yml -e rollback_mode=data).")
    return None
