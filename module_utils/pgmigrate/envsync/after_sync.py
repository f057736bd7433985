"""After the rows: the configured updates, the checks of the synced data, and the sequences."""


import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from psycopg2.extras import Json

from ..common.sequences import set_sequence_states
from .errors import SyncError
from .plan import resolve_name
from .table_steps import _qual

SAMPLE_VALUES = 3


def _column_value(value, column_type):
    if isinstance(value, (dict, list)) and column_type in ("json", "jsonb"):
        return Json(value)
    return value


def apply_updates(cur, plan, updates):
    """The environment's post-sync updates: [{name, table, set: {column: value}, set_sql: {column: SQL},
    where: SQL}] -> [{name, table, rows}]."""
    by_name = {t["table"]: t for t in plan["tables"]}
    results = []
    for index, update in enumerate(updates or ()):
        label = update.get("name") or f"update {index + 1}"
        qualname = resolve_name(str(update.get("table")), by_name, label)
        if qualname is None:
            raise SyncError(f"{label}: no such table {update.get('table')!r} in the sync")
        table = by_name[qualname]
        assignments, params = [], []
        for column, value in (update.get("set") or {}).items():
            if column not in table["types"]:
                raise SyncError(f"{label}: {qualname} has no column {column!r}")
            assignments.append(sql.SQL("{} = %s::{}").format(sql.Identifier(column), sql.SQL(table["types"][column])))
            params.append(_column_value(value, table["types"][column]))
        for column, expression in (update.get("set_sql") or {}).items():
            if column not in table["types"]:
                raise SyncError(f"{label}: {qualname} has no column {column!r}")
            assignments.append(sql.SQL("{} = ({})").format(sql.Identifier(column), sql.SQL(expression)))
        if not assignments:
            raise SyncError(f"{label}: nothing to set; give set or set_sql")
        where = sql.SQL(" WHERE ({})").format(sql.SQL(update["where"])) if update.get("where") else sql.SQL("")
        cur.execute(sql.SQL("UPDATE {} SET {}{}").format(_qual(qualname), sql.SQL(", ").join(assignments), where),
                    params)
        results.append({"name": label, "table": qualname, "rows": cur.rowcount})
    return results


def run_checks(cur, plan, checks):
    """The environment's checks: [{name, table, column, where, allowed_pattern | forbidden_pattern | expected,
    min_rows, secret}] -> (results, failures). Array columns are checked element by element."""
    by_name = {t["table"]: t for t in plan["tables"]}
    results, failures = [], []
    for index, check in enumerate(checks or ()):
        label = check.get("name") or f"check {index + 1}"
        qualname = resolve_name(str(check.get("table")), by_name, label)
        if qualname is None:
            raise SyncError(f"{label}: no such table {check.get('table')!r} in the sync")
        table, column = by_name[qualname], check.get("column")
        if column not in table["types"]:
            raise SyncError(f"{label}: {qualname} has no column {column!r}")
        value = (sql.SQL("unnest({})::text") if column in table["array_columns"] else sql.SQL("{}::text")).format(
            sql.Identifier(column))
        where = sql.SQL(" WHERE ({})").format(sql.SQL(check["where"])) if check.get("where") else sql.SQL("")
        if "allowed_pattern" in check:
            bad, argument, wanted = sql.SQL("v IS NOT NULL AND v !~ %s"), check["allowed_pattern"], \
                f"match {check['allowed_pattern']}"
        elif "forbidden_pattern" in check:
            bad, argument, wanted = sql.SQL("v ~ %s"), check["forbidden_pattern"], \
                f"not match {check['forbidden_pattern']}"
        elif "expected" in check:
            bad, argument = sql.SQL("v IS DISTINCT FROM %s"), None if check["expected"] is None else str(
                check["expected"])
            wanted = "be the expected value" if check.get("secret") else f"be {check['expected']!r}"
        else:
            raise SyncError(f"{label}: give allowed_pattern, forbidden_pattern or expected")
        cur.execute(sql.SQL("SELECT count(*), count(*) FILTER (WHERE {bad}), "
                            "(array_agg(DISTINCT v) FILTER (WHERE {bad}))[1:{n}] "
                            "FROM (SELECT {value} AS v FROM {table}{where}) x").format(
            bad=bad, n=sql.Literal(SAMPLE_VALUES), value=value, table=_qual(qualname), where=where),
            [argument, argument])
        checked, violations, samples = cur.fetchone()
        min_rows = int(check.get("min_rows", 1 if "expected" in check else 0))
        result = {"name": label, "table": qualname, "column": column, "checked": checked, "violations": violations}
        results.append(result)
        if violations:
            shown = "" if check.get("secret") else " (e.g. " + ", ".join(repr(s) for s in samples or []) + ")"
            failures.append(f"{label}: {violations} of {checked} values of {qualname}.{column} do not {wanted}{shown}")
        elif checked < min_rows:
            failures.append(f"{label}: {qualname}.{column} has {checked} values where at least {min_rows} are "
                            "expected" + (f" (where {check['where']})" if check.get("where") else ""))
    return results, failures


def _sync_sequences(source_cur, target_cur, plan):
    synced = []
    for entry in plan["sequences"]:
        name = _qual(entry["sequence"])
        try:
            source_cur.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(name))
        except psycopg2.errors.UndefinedTable:
            raise SyncError(f"sequence {entry['sequence']} feeds a synced table but the source lacks it") from None
        last_value, is_called = source_cur.fetchone()
        if entry["mode"] == "greatest":
            target_cur.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(name))
            target_value, target_called = target_cur.fetchone()
            if target_called and (not is_called or target_value > last_value):
                last_value, is_called = target_value, target_called
        synced.append({"sequence": entry["sequence"], "last_value": last_value, "is_called": is_called})
    set_sequence_states(target_cur, [(s["sequence"], s["last_value"], s["is_called"]) for s in synced])
    return synced
