"""The indexes the application relies on exist on their tables and are valid."""

import time

import psycopg2
import psycopg2.errors

from .rules import RuleError, _counts_summary, _error_text, _finish, _names, _resolve_table, _rule_scope

_INDEX_QUERY = """
SELECT format('%%I.%%I', tn.nspname, t.relname), t.oid, i.indisvalid, i.indisready, i.indislive,
       pg_get_indexdef(i.indexrelid),
       ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) AS k)
FROM pg_class ic
JOIN pg_namespace n ON n.oid = ic.relnamespace
JOIN pg_index i ON i.indexrelid = ic.oid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace tn ON tn.oid = t.relnamespace
WHERE ic.relkind IN ('i', 'I') AND ic.relname = %(name)s AND n.nspname = %(schema)s
"""


def _check_index_rule(conn, rule):
    if not isinstance(rule, dict) or not rule.get("name") or not rule.get("table"):
        raise RuleError("each required index needs name and table, e.g. {name: idx_team_email, table: public.team}; "
                        f"got {rule!r}")
    with conn.cursor() as cur:
        table = _resolve_table(cur, rule["table"])
        oid, qualname, schema = table["oid"], table["table"], table["schema"]
        name = rule["name"]
        if "." in name and not name.startswith('"'):
            schema, name = name.split(".", 1)
        cur.execute(_INDEX_QUERY, {"name": name, "schema": schema})
        found = cur.fetchone()
    item = {"table": qualname, "index": name}
    if found is None:
        return {**item, "status": "fail", "detail": f"index {name} on {qualname} is missing on the target"}
    table_name, table_oid, valid, ready, live, definition, columns = found
    item["definition"] = definition
    if table_oid != oid:
        return {**item, "status": "fail", "detail": f"index {name} is on {table_name}, not on {qualname}"}
    if not (valid and ready and live):
        return {**item, "status": "fail", "detail": (
            f"index {name} on {qualname} is invalid (left by a failed CREATE INDEX CONCURRENTLY or an "
            f"unfinished build): queries ignore it; drop it and build it again: {definition}")}
    expected = _names(rule.get("columns"), f"index {name} columns")
    if expected and [c.strip('"') for c in columns[:len(expected)]] != expected:
        return {**item, "status": "fail", "detail": (
            f"index {name} on {qualname} indexes ({', '.join(columns)}), expected ({', '.join(expected)})")}
    return {**item, "status": "pass", "detail": f"index {name} on {qualname} exists and is valid: {definition}"}


def check_required_indexes(conn, indexes):
    """The plan's indexes exist on the target, on their table, and are valid (pg_index.indisvalid).

    indexes: [{"name": "idx_team_email", "table": "public.team", "columns": ["email"]?}]; the index is looked
    up in its table's schema; columns (optional) are the leading key columns it must have.
    """
    started = time.monotonic()
    items = []
    for rule in indexes or []:
        try:
            with _rule_scope(conn):
                items.append(_check_index_rule(conn, rule))
        except (RuleError, psycopg2.Error) as error:
            text = str(error) if isinstance(error, RuleError) else _error_text(error)
            table = rule.get("table") if isinstance(rule, dict) else None
            index = rule.get("name") if isinstance(rule, dict) else None
            items.append({"table": table, "index": index, "status": "fail", "detail": f"cannot check: {text}"})
    summary = (_counts_summary(items, "indexes") if items
               else "no required indexes configured (validation_required_indexes)")
    return _finish("required_indexes", "Required indexes", items, started, summary)
