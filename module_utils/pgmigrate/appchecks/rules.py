"""What the application checks share: the rule error, a check's record, and resolving a rule's table,
columns and keys."""

import contextlib
import time
from collections import Counter

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from ..common.errors import PgmigrateError

# Offending rows named per rule (the count is always complete).
MAX_KEYS_SHOWN = 20


# Rows fetched per round trip when values are classified client-side.
FETCH_ROWS = 2000


class RuleError(PgmigrateError):
    """A rule that cannot be checked as written (missing table or column, bad shape)."""


def _finish(name, title, items, started, summary):
    if not items:
        status = "skip"
    elif any(item["status"] == "fail" for item in items):
        status = "fail"
    elif any(item["status"] == "warn" for item in items):
        status = "warn"
    else:
        status = "pass"
    return {"name": name, "title": title, "status": status, "summary": summary, "items": items,
            "seconds": round(time.monotonic() - started, 3)}


def _counts_summary(items, noun):
    counts = Counter(item["status"] for item in items)
    failing = counts.get("fail", 0)
    warning = counts.get("warn", 0)
    text = f"{len(items)} {noun} checked"
    if failing:
        text += f", {failing} failing"
    if warning:
        text += f", {warning} with warnings"
    return text if failing or warning else text + ", all pass"


def _error_text(error):
    """The first line of a database error: PostgreSQL's message, without the statement or values."""
    message = getattr(error, "pgerror", None) or str(error)
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return lines[0].removeprefix("ERROR:").strip() if lines else error.__class__.__name__


@contextlib.contextmanager
def _rule_scope(conn):
    """Run one rule's statements so that an error leaves the caller's transaction usable."""
    if conn.autocommit:
        yield
        return
    with conn.cursor() as cur:
        cur.execute("SAVEPOINT pgmigrate_app_check")
    try:
        yield
    except Exception:
        if not conn.closed:
            with conn.cursor() as cur:
                cur.execute("ROLLBACK TO SAVEPOINT pgmigrate_app_check")
                cur.execute("RELEASE SAVEPOINT pgmigrate_app_check")
        raise
    with conn.cursor() as cur:
        cur.execute("RELEASE SAVEPOINT pgmigrate_app_check")


def _names(value, what):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise RuleError(f"{what} must be a column name or a list of column names, not {value!r}")


def _resolve_table(cur, table):
    """{"oid", "table" (qualified name), "schema", "name"} of a table, or RuleError."""
    if not isinstance(table, str) or not table.strip():
        raise RuleError(f"the rule's table must be a table name such as public.team, not {table!r}")
    try:
        cur.execute("SELECT to_regclass(%s)::oid", (table,))
    except psycopg2.Error as error:
        raise RuleError(f"table {table}: {_error_text(error)}") from None
    oid = cur.fetchone()[0]
    if oid is None:
        raise RuleError(f"table {table} does not exist on the target")
    cur.execute("SELECT format('%%I.%%I', n.nspname, c.relname), n.nspname, c.relname, c.relkind FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s", (oid,))
    qualname, schema, name, relkind = cur.fetchone()
    if relkind not in ("r", "p", "m", "v", "f"):
        raise RuleError(f"{table} is not a table (relkind {relkind})")
    return {"oid": oid, "table": qualname, "schema": schema, "name": name}


def _resolve_column_rule(cur, rule, what):
    """Normalise a column rule: {"table", "column", "key"?} -> its table, column type and key columns."""
    if not isinstance(rule, dict) or not rule.get("table") or not rule.get("column"):
        raise RuleError(f"each {what} rule needs table and column (and key), e.g. "
                        "{table: public.team, column: password_hash, key: [id]}; got " + repr(rule))
    spec = _resolve_table(cur, rule["table"])
    oid, qualname = spec["oid"], spec["table"]
    cur.execute("SELECT attname, format_type(atttypid, NULL) FROM pg_attribute "
                "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (oid,))
    types = dict(cur.fetchall())
    column = rule["column"]
    if column not in types:
        raise RuleError(f"{qualname} has no column {column!r}")
    keys = _names(rule.get("key"), f"{qualname} rule key")
    for key in keys:
        if key not in types:
            raise RuleError(f"{qualname} has no key column {key!r}")
    if not keys:
        cur.execute("SELECT a.attname FROM pg_index i "
                    "CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) "
                    "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                    "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.ord", (oid,))
        keys = [row[0] for row in cur.fetchall()]
    return {**spec, "column": column, "type": types[column], "keys": keys,
            "relation": sql.Identifier(spec["schema"], spec["name"])}


def _key_select(keys):
    """SELECT-list expressions of the row key (the ctid when the table has no key)."""
    if not keys:
        return sql.SQL("ctid AS k0")
    return sql.SQL(", ").join(sql.SQL("{} AS {}").format(sql.Identifier(k), sql.Identifier(f"k{i}"))
                              for i, k in enumerate(keys))


def _key_refs(keys, cast_text=False):
    refs = [sql.Identifier(f"k{i}") for i in range(max(1, len(keys)))]
    if cast_text:  # named apart, so that ORDER BY k0 sorts by the key's own type
        return sql.SQL(", ").join(sql.SQL("{}::text AS {}").format(ref, sql.Identifier(f"t{i}"))
                                  for i, ref in enumerate(refs))
    return sql.SQL(", ").join(refs)


def _key_label(keys, values):
    names = keys or ["ctid"]
    return ", ".join(f"{name}={value}" for name, value in zip(names, values, strict=True))


def _run_rule(conn, rule, function):
    table = rule.get("table") if isinstance(rule, dict) else None
    column = rule.get("column") if isinstance(rule, dict) else None
    try:
        with _rule_scope(conn):
            return function(conn, rule)
    except RuleError as error:
        return {"table": table, "column": column, "status": "fail", "detail": f"cannot check: {error}"}
    except psycopg2.Error as error:
        return {"table": table, "column": column, "status": "fail", "detail": f"cannot check: {_error_text(error)}"}
