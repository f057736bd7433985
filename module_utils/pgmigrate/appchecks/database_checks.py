"""The plan's success criteria read from the databases: access control, report recipients, query times,
security."""

import time

import psycopg2

from ..common.connection import connect, friendly_connect_error
from .credentials import check_plaintext_credentials
from .password_hashes import check_password_hashes
from .query_times import _time_query, statement_timeout_for
from .rules import _counts_summary, _finish


def _connection(params, label):
    try:
        return connect(params, application_name="pgmigrate-post-checks"), None
    except psycopg2.Error as error:
        return None, friendly_connect_error(error, params, label)


def effective_permissions(conn, query):
    """{member: set of permission codes} from a query returning (member, code) rows."""
    members = {}
    with conn.cursor() as cur:
        cur.execute(query)
        for member, code in cur.fetchall():
            codes = members.setdefault(str(member), set())
            if code is not None:
                codes.add(str(code))
    conn.rollback()
    return members


def check_access_control(source_params, target_params, query):
    """Every member's effective permissions are the same on the target as on the source."""
    started = time.monotonic()
    title = "Access control: effective permissions, source vs target"
    items, found = [], {}
    for label, params in (("migration_source", source_params), ("migration_target", target_params)):
        conn, failure = _connection(params, label)
        if failure:
            items.append({"table": None, "status": "fail", "detail": failure})
            continue
        try:
            found[label] = effective_permissions(conn, query)
        except psycopg2.Error as error:
            items.append({"table": None, "status": "fail",
                          "detail": f"the permissions query fails on {label}: {str(error).strip().splitlines()[0]}"})
        finally:
            conn.close()
    if len(found) == 2:
        source, target = found["migration_source"], found["migration_target"]
        for member in sorted(set(source) | set(target)):
            if member not in target:
                items.append({"table": None, "member": member, "status": "fail",
                              "detail": f"{member}: on the source, missing on the target"})
                continue
            if member not in source:
                items.append({"table": None, "member": member, "status": "fail",
                              "detail": f"{member}: on the target, not on the source"})
                continue
            missing, extra = sorted(source[member] - target[member]), sorted(target[member] - source[member])
            item = {"table": None, "member": member, "permissions": len(target[member]), "missing": missing,
                    "extra": extra}
            if missing or extra:
                parts = ([f"lost {', '.join(missing)}"] if missing else []) + (
                    [f"gained {', '.join(extra)}"] if extra else [])
                items.append({**item, "status": "fail", "detail": f"{member}: {'; '.join(parts)} on the target"})
            else:
                items.append({**item, "status": "pass",
                              "detail": f"{member}: the same {len(target[member])} permissions"})
    failing = [i for i in items if i["status"] == "fail"]
    summary = (f"{len(failing)} of {len(items)} team members differ: "
               + "; ".join(i["detail"] for i in failing[:10]) if failing
               else f"{len(items)} team members, the same effective permissions on source and target")
    return _finish("access_control", title, items, started, summary)


def check_recipients(target_params, query, allowed_domains):
    """Each (report, recipient) of the query has a domain in allowed_domains (a domain allows its
    subdomains; '*' allows everything). Empty allowed_domains: skipped."""
    started = time.monotonic()
    title = "Report recipients against the environment's allowed domains"
    allowed = [d.lower().lstrip("@.") for d in allowed_domains or []]
    if not allowed:
        return _finish("report_recipients", title, [], started,
                       "no allowed domains configured (post_checks_allowed_recipient_domains): not checked")
    conn, failure = _connection(target_params, "migration_target")
    if failure:
        item = {"table": None, "status": "fail", "detail": failure}
        return _finish("report_recipients", title, [item], started, failure)
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            rows = cur.fetchall()
    finally:
        conn.close()
    reports = {}
    for report, recipient in rows:
        if recipient is None:
            continue
        domain = str(recipient).rsplit("@", 1)[-1].lower() if "@" in str(recipient) else ""
        ok = "*" in allowed or any(domain == d or domain.endswith("." + d) for d in allowed)
        entry = reports.setdefault(str(report), {"ok": 0, "bad": []})
        if ok:
            entry["ok"] += 1
        else:
            entry["bad"].append(str(recipient))
    items = []
    for report, entry in sorted(reports.items()):
        if entry["bad"]:
            items.append({"table": None, "report": report, "recipients": entry["bad"], "status": "fail",
                          "detail": f"report {report!r}: recipients outside the allowed domains: "
                                    f"{', '.join(entry['bad'])}"})
        else:
            items.append({"table": None, "report": report, "status": "pass",
                          "detail": f"report {report!r}: {entry['ok']} recipients in the allowed domains"})
    failing = [i for i in items if i["status"] == "fail"]
    summary = _counts_summary(items, "reports") + f" (allowed: {', '.join(allowed)})"
    if failing:
        summary += ": " + "; ".join(i["detail"] for i in failing[:5])
    return _finish("report_recipients", title, items, started, summary)


def check_query_times(target_params, queries, limit_seconds=5.0, runs=1):
    """Each query ({name, sql, limit_seconds?}) runs on the target, read-only, under its limit."""
    started = time.monotonic()
    title = "Query times on the target"
    if not queries:
        return _finish("query_times", title, [], started, "no queries configured (post_checks_queries)")
    conn, failure = _connection(target_params, "migration_target")
    if failure:
        item = {"table": None, "status": "fail", "detail": failure}
        return _finish("query_times", title, [item], started, failure)
    conn.readonly = True
    items = []
    try:
        for number, query in enumerate(queries, 1):
            name = str(query.get("name") or f"query {number}")
            limit = float(query.get("limit_seconds") or limit_seconds)
            timeout = statement_timeout_for(limit)
            measured = _time_query(conn, query["sql"], timeout, runs)
            item = {"table": None, "name": name, "limit_seconds": limit, "seconds": measured.get("seconds"),
                    "rows": measured.get("rows")}
            if "error" in measured:
                item.update(status="fail", detail=f"query {name!r} fails on the target: {measured['error']}")
            elif measured.get("timed_out"):
                item.update(status="fail", detail=f"query {name!r} was cancelled after {timeout:g} s: over the "
                                                  f"limit of {limit:g} s")
            elif measured["seconds"] > limit:
                item.update(status="fail", detail=f"query {name!r} took {measured['seconds']:.3f} s: over the "
                                                  f"limit of {limit:g} s")
            else:
                item.update(status="pass", detail=f"query {name!r}: {measured['seconds']:.3f} s "
                                                  f"(limit {limit:g} s)")
            items.append(item)
    finally:
        conn.close()
    failing = [i for i in items if i["status"] == "fail"]
    summary = _counts_summary(items, "queries") + f" (limit {float(limit_seconds):g} s)"
    if failing:
        summary += ": " + "; ".join(i["detail"] for i in failing)
    return _finish("query_times", title, items, started, summary)


def check_security(target_params, encrypted_columns, password_hash_columns):
    """app_checks' plaintext-credential and password-hash checks on the target (rows named by the rules'
    key columns, e.g. the integration's name and the member's email)."""
    conn, failure = _connection(target_params, "migration_target")
    if failure:
        item = {"table": None, "status": "fail", "detail": failure}
        return [_finish(name, name, [item], time.monotonic(), failure)
                for name in ("plaintext_credentials", "password_hashes")]
    conn.autocommit = False
    try:
        return [check_plaintext_credentials(conn, encrypted_columns),
                check_password_hashes(conn, password_hash_columns)]
    finally:
        conn.rollback()
        conn.close()
