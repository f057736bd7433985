"""The application's representative queries: fast on the target, and not much slower than on the source."""

import time

import psycopg2
import psycopg2.errors

from ..common.connection import connect, friendly_connect_error
from .rules import _counts_summary, _error_text, _finish


def statement_timeout_for(limit_seconds):
    """The statement timeout of a query whose limit is limit_seconds: a bit above the limit, so that a
    query over the limit is measured rather than cancelled, and one far over it does not run on."""
    return limit_seconds * 1.1 + 0.25


def _time_query(conn, text, timeout_seconds, runs):
    """Best of `runs` runs of text in read-only transactions: {"seconds", "rows"} or {"error"} or
    {"timed_out": True} (then no further runs)."""
    best = rows = None
    for _ in range(runs):
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT set_config('statement_timeout', %s, true)",
                            (f"{int(timeout_seconds * 1000)}ms",))
                began = time.perf_counter()
                cur.execute(text)
                fetched = cur.fetchall() if cur.description else []
                elapsed = time.perf_counter() - began
        except psycopg2.errors.QueryCanceled:
            conn.rollback()
            if best is None:
                return {"timed_out": True}
            break
        except psycopg2.Error as error:
            conn.rollback()
            return {"error": _error_text(error)}
        conn.rollback()
        rows = len(fetched)
        best = elapsed if best is None else min(best, elapsed)
    return {"seconds": round(best, 4), "rows": rows}


def _timing_connection(params):
    conn = connect(params, application_name="pgmigrate-validate")
    conn.readonly = True  # every transaction BEGIN READ ONLY
    return conn


def _judge_query(query, source, target, limit, timeout, factor, slack):
    item = {"table": None, "name": query["name"], "limit_seconds": limit,
            "source_seconds": source.get("seconds"), "target_seconds": target.get("seconds"),
            "rows": target.get("rows")}
    label = f"query {query['name']!r}"
    if "error" in target:
        return {**item, "status": "fail", "detail": f"{label} fails on the target: {target['error']}"}
    if target.get("timed_out"):
        return {**item, "status": "fail", "detail": (
            f"{label} was cancelled on the target after {timeout:g} s (statement_timeout); limit {limit:g} s")}
    seconds = target["seconds"]
    if seconds > limit:
        return {**item, "status": "fail", "detail": f"{label} takes {seconds:.3f} s on the target: over the "
                                                    f"limit of {limit:g} s{_source_note(source)}"}
    if "seconds" in source:
        allowed = source["seconds"] * factor + slack
        if seconds > allowed:
            return {**item, "status": "fail", "detail": (
                f"{label} takes {seconds:.3f} s on the target, more than {factor:g} x the source's "
                f"{source['seconds']:.3f} s + {slack:g} s slack ({allowed:.3f} s)")}
        return {**item, "status": "pass", "detail": (
            f"{label}: {seconds:.3f} s on the target, {source['seconds']:.3f} s on the source (limit {limit:g} s)")}
    return {**item, "status": "warn", "detail": (
        f"{label}: {seconds:.3f} s on the target (limit {limit:g} s), not compared with the source: "
        f"{_source_note(source).strip(' ;')}")}


def _source_note(source):
    if "seconds" in source:
        return f"; {source['seconds']:.3f} s on the source"
    if source.get("timed_out"):
        return "; cancelled by the statement timeout on the source too"
    if "error" in source:
        return f"; it fails on the source: {source['error']}"
    return ""


def check_queries(source_params, target_params, queries, limit_seconds=5.0, slower_factor=2.0,
                  slack_seconds=0.05, runs=3):
    """The application's representative queries are fast enough on the target.

    queries: [{"name": "...", "sql": "SELECT ...", "limit_seconds": 5?}]. Each runs `runs` times on the
    source and then on the target (best run counts), each run in a read-only transaction with a
    statement_timeout a bit above its limit. A query fails when its target time exceeds the limit, or
    exceeds the source's time x slower_factor + slack_seconds; it warns when it could not be timed on the
    source. Items carry source_seconds, target_seconds and the target's row count.
    """
    started = time.monotonic()
    title = "Query performance"
    queries = list(queries or [])
    if not queries:
        return _finish("query_performance", title, [], started,
                       "no queries configured (validation_performance_queries)")
    try:
        target_conn = _timing_connection(target_params)
    except psycopg2.Error as error:
        item = {"table": None, "status": "fail",
                "detail": friendly_connect_error(error, target_params, "migration_target")}
        return _finish("query_performance", title, [item], started, item["detail"])
    source_conn, source_failure = None, None
    try:
        source_conn = _timing_connection(source_params)
    except psycopg2.Error as error:
        source_failure = friendly_connect_error(error, source_params, "migration_source")
    items = []
    try:
        for number, query in enumerate(queries, 1):
            if not isinstance(query, dict) or not isinstance(query.get("sql"), str) or not query["sql"].strip():
                name = query.get("name") if isinstance(query, dict) else None
                items.append({"table": None, "name": name or f"query {number}", "status": "fail",
                              "detail": f"query {number} needs name and sql, e.g. {{name: ..., sql: SELECT ...}}"})
                continue
            query = {**query, "name": str(query.get("name") or f"query {number}")}
            limit = float(query.get("limit_seconds", limit_seconds))
            timeout = statement_timeout_for(limit)
            if source_conn is not None:
                source = _time_query(source_conn, query["sql"], timeout, runs)
            else:
                source = {"error": source_failure}
            target = _time_query(target_conn, query["sql"], timeout, runs)
            items.append(_judge_query(query, source, target, limit, timeout, float(slower_factor),
                                      float(slack_seconds)))
    finally:
        target_conn.close()
        if source_conn is not None:
            source_conn.close()
    summary = _counts_summary(items, "queries") + f" (limit {float(limit_seconds):g} s, at most " \
        f"{float(slower_factor):g} x the source + {float(slack_seconds):g} s)"
    return _finish("query_performance", title, items, started, summary)
