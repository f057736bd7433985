"""The plan's success criteria, checked after the migration (role post_checks): functional smoke tests
against the running application, page-load and query limits, access control, hardening, error logs.

Each check returns {"name", "title", "status": "pass"|"fail"|"warn"|"skip", "summary", "items", "seconds"}
like app_checks (report.py), every failing item naming what broke: the endpoint, the query, the team
member and permission code, the report and recipient, the integration.

* http_checks: a list of HTTP calls (method, url, json/body, headers, expected status, body_contains, a
  JSON subset, max_seconds), each timed: "functional" (status and body) and "page_load" (time) checks;
* check_access_control: every team member's effective permissions (a query returning email, permission
  code) on the source and on the target, the differences listed per member;
* check_recipients: the scheduled reports' recipients against the target environment's allowed domains;
* check_query_times: the checked queries on the target under their limit;
* harden_credentials / harden_passwords / harden_pgaudit: the plan's security hardening, idempotent;
* watch_error_log: new lines matching a pattern in a log file (and/or a systemd journal) for a window.

Secrets (the credentials key, passwords in request bodies) are passed as query parameters or substituted
into requests, and never appear in a check, an item or an error message.
"""

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import psycopg2
from psycopg2 import sql

from ..common.connection import connect, friendly_connect_error
from ..common.session import quiet_statement_logging
from .app_checks import (
    _counts_summary,
    _finish,
    _key_label,
    _key_refs,
    _key_select,
    _resolve_column_rule,
    _time_query,
    check_password_hashes,
    check_plaintext_credentials,
    password_hash_pattern,
    plaintext_reason,
    statement_timeout_for,
)

# --- HTTP checks -----------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z0-9_.]+)\}")


def _lookup(saved, secrets, scope, path):
    if scope == "secrets":
        if path not in secrets:
            raise KeyError(f"secrets.{path} is not defined")
        return secrets[path]
    if scope not in saved:
        raise KeyError(f"no earlier check saved its answer as {scope!r} (save_as)")
    value = saved[scope]
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(f"{scope}.{path} is not in the answer saved as {scope!r}")
    return value


def substitute(value, saved, secrets):
    """${name.path} in strings (recursively in lists and dicts): a field of an earlier check's JSON answer
    (save_as: name) or ${secrets.key}. A string that is exactly one token keeps the value's type."""
    if isinstance(value, str):
        whole = _TOKEN.fullmatch(value)
        if whole:
            return _lookup(saved, secrets, whole.group(1), whole.group(2))
        return _TOKEN.sub(lambda m: str(_lookup(saved, secrets, m.group(1), m.group(2))), value)
    if isinstance(value, list):
        return [substitute(v, saved, secrets) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, saved, secrets) for k, v in value.items()}
    return value


def json_subset(expected, actual):
    """Whether expected (dicts: these keys with these values, recursively; lists: these leading
    elements) is contained in actual; returns the path of the first difference or None."""
    def walk(exp, act, path):
        if isinstance(exp, dict):
            if not isinstance(act, dict):
                return path or "the body"
            for key, value in exp.items():
                if key not in act:
                    return f"{path}.{key}".lstrip(".")
                found = walk(value, act[key], f"{path}.{key}")
                if found:
                    return found.lstrip(".")
            return None
        if isinstance(exp, list):
            if not isinstance(act, list) or len(act) < len(exp):
                return path or "the body"
            for number, (e, a) in enumerate(zip(exp, act, strict=False)):
                found = walk(e, a, f"{path}[{number}]")
                if found:
                    return found
            return None
        return None if exp == act else (path.lstrip(".") or "the body")
    return walk(expected, actual, "")


def _join_url(base_url, url):
    if re.match(r"^[a-z][a-z0-9+.-]*://", url, re.I):
        return url
    if not base_url:
        raise ValueError(f"{url} is relative and no base URL is set (post_checks_base_url)")
    return base_url.rstrip("/") + "/" + url.lstrip("/")


def _shown_url(url):
    """The URL without user info or query string values (they may carry secrets)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "&".join(f"{p.split('=', 1)[0]}=..." for p in parts.query.split("&") if p) if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _call(method, url, data, headers, timeout):
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    began = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (configured URLs)
            body = answer.read()
            status = answer.status
    except urllib.error.HTTPError as error:
        body = error.read()
        status = error.code
    return status, body, time.perf_counter() - began


def run_http_check(check, base_url, saved, secrets, default_max_seconds, timeout):
    """One call: its item for "functional" and its item for "page_load"."""
    name = str(check.get("name") or f"{check.get('method', 'GET')} {check.get('url')}")
    method = str(check.get("method") or "GET").upper()
    expected = check.get("status", 200)
    expected = [int(s) for s in expected] if isinstance(expected, list) else [int(expected)]
    limit = float(check.get("max_seconds") or default_max_seconds)
    base = {"table": None, "name": name, "method": method, "expected_status": expected, "max_seconds": limit}
    try:
        url = _join_url(base_url, substitute(str(check["url"]), saved, secrets))
        base["url"] = _shown_url(url)
        headers = dict(substitute(check.get("headers") or {}, saved, secrets))
        data = None
        if check.get("json") is not None:
            data = json.dumps(substitute(check["json"], saved, secrets)).encode()
            headers.setdefault("Content-Type", "application/json")
        elif check.get("body") is not None:
            data = str(substitute(check["body"], saved, secrets)).encode()
        status, body, seconds = _call(method, url, data, headers, max(timeout, limit))
    except (KeyError, ValueError) as error:
        item = {**base, "status": "fail", "detail": f"{name}: cannot build the request: {error}"}
        return item, {**item}
    except (OSError, urllib.error.URLError) as error:
        reason = getattr(error, "reason", error)
        item = {**base, "status": "fail", "detail": f"{name}: {method} {base.get('url')} got no answer: {reason}"}
        return item, {**item}
    text = body.decode("utf-8", "replace")
    answer = None
    try:
        answer = json.loads(text) if text.strip() else None
    except ValueError:
        pass
    if check.get("save_as") and isinstance(answer, dict):
        saved[str(check["save_as"])] = answer
    where = f"{name} ({method} {base['url']})"
    problems = []
    if status not in expected:
        snippet = " ".join(text.split())[:200]
        problems.append(f"answered {status}, expected {'/'.join(map(str, expected))}"
                        + (f": {snippet}" if snippet else ""))
    for needle in [] if problems else ([check["body_contains"]] if isinstance(check.get("body_contains"), str)
                   else check.get("body_contains") or []):
        if str(needle) not in text:
            problems.append(f"the body does not contain {needle!r}")
    if check.get("json_subset") is not None and not problems:
        difference = json_subset(check["json_subset"], answer)
        if difference:
            problems.append(f"the JSON answer differs from the expected subset at {difference}")
    functional = {**base, "http_status": status, "seconds": round(seconds, 4)}
    if problems:
        functional.update(status="fail", detail=f"{where}: {'; '.join(problems)}")
    else:
        functional.update(status="pass", detail=f"{where}: {status} in {seconds:.3f} s")
    timing = {**base, "http_status": status, "seconds": round(seconds, 4)}
    if seconds > limit:
        timing.update(status="fail", detail=f"{where} took {seconds:.3f} s: over the limit of {limit:g} s")
    else:
        timing.update(status="pass", detail=f"{where}: {seconds:.3f} s (limit {limit:g} s)")
    return functional, timing


def http_checks(base_url, checks, secrets=None, default_max_seconds=3.0, timeout=30.0):
    """Runs the calls in order (a later one may use an earlier one's answer); returns the functional
    check and the page-load check."""
    started = time.monotonic()
    saved, functional, timing = {}, [], []
    for check in checks or []:
        item, timed = run_http_check(check, base_url, saved, dict(secrets or {}), float(default_max_seconds),
                                     float(timeout))
        functional.append(item)
        timing.append(timed)
    summary = _counts_summary(functional, "endpoints") if functional else "no HTTP checks configured"
    limit_summary = (_counts_summary(timing, "page loads") + f" (limit {float(default_max_seconds):g} s unless "
                     "the check sets max_seconds)") if timing else "no HTTP checks configured"
    summary += "".join(f"; {i['detail']}" for i in functional if i["status"] == "fail")
    limit_summary += "".join(f"; {i['detail']}" for i in timing if i["status"] == "fail")
    return (_finish("functional", "Functional checks against the application", functional, started, summary),
            _finish("page_load", "Page load times", timing, started, limit_summary))


# --- database checks -------------------------------------------------------------------------------------


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


# --- hardening -------------------------------------------------------------------------------------------


def harden_credentials(conn, rules, key, check_mode=False):
    """Encrypts, with pgcrypto encrypt(value, key, 'aes'), every value of the rules' bytea columns that
    looks like a plaintext credential (app_checks.plaintext_reason); values that look encrypted are left
    alone, so a second run changes nothing. Returns an item per rule naming the rows (by key) it encrypted."""
    items = []
    for rule in rules or []:
        with conn.cursor() as cur:
            spec = _resolve_column_rule(cur, rule, "encrypted column")
        where = f"{spec['table']}.{spec['column']}"
        if spec["type"] != "bytea":
            items.append({"table": spec["table"], "status": "fail", "changed": False,
                          "detail": f"{where} is {spec['type']}: only bytea columns are encrypted in place"})
            continue
        width = max(1, len(spec["keys"]))
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT {keys}, {column} FROM {table} WHERE {column} IS NOT NULL "
                                "ORDER BY {key_refs}").format(
                keys=_key_select(spec["keys"]), column=sql.Identifier(spec["column"]), table=spec["relation"],
                key_refs=_key_refs(spec["keys"])))
            plaintext = [row[:width] for row in cur.fetchall() if plaintext_reason(row[width])]
        labels = [_key_label(spec["keys"], row) for row in plaintext]
        if plaintext and not check_mode:
            if not key:
                items.append({"table": spec["table"], "status": "fail", "changed": False, "rows": labels,
                              "detail": f"{where}: {len(labels)} plaintext values ({'; '.join(labels)}) and no "
                                        "key to encrypt them with (post_checks_credentials_key, in ansible-vault)"})
                continue
            condition = sql.SQL(" AND ").join(
                sql.SQL("{} = %s").format(sql.Identifier(k)) for k in spec["keys"])
            with conn.cursor() as cur:
                still_logging = quiet_statement_logging(cur)
            if still_logging:
                conn.rollback()
                items.append({"table": spec["table"], "status": "fail", "changed": False, "rows": labels,
                              "detail": f"{where}: {len(labels)} plaintext values not encrypted: the target logs "
                                        f"data-changing statements ({', '.join(still_logging)}) and this login may "
                                        "not turn that off for its own transaction, so the key would be written to "
                                        "the server's log. Run the hardening as a superuser, or GRANT SET ON "
                                        "PARAMETER for those settings to this login, or turn them off, then rerun"})
                continue
            with conn.cursor() as cur:
                for row in plaintext:
                    cur.execute(sql.SQL("UPDATE {table} SET {column} = encrypt({column}, convert_to(%s, 'UTF8'), "
                                        "'aes') WHERE {condition}").format(
                        table=spec["relation"], column=sql.Identifier(spec["column"]), condition=condition),
                        (key, *row))
            conn.commit()
        verb = "would encrypt" if check_mode else "encrypted"
        items.append({"table": spec["table"], "status": "pass", "changed": bool(plaintext), "rows": labels,
                      "detail": (f"{where}: {verb} {len(labels)} plaintext values with pgcrypto: {'; '.join(labels)}"
                                 if plaintext else f"{where}: no plaintext value, nothing to encrypt")})
    conn.rollback()
    return items


def harden_passwords(conn, rules, check_mode=False):
    """Replaces every value of the rules' columns that is not a password hash (bcrypt, argon2, scrypt,
    pbkdf2) by its bcrypt hash, crypt(value, gen_salt('bf')): a hash is never hashed again."""
    items = []
    pattern = password_hash_pattern()
    for rule in rules or []:
        with conn.cursor() as cur:
            spec = _resolve_column_rule(cur, rule, "password hash")
            where = f"{spec['table']}.{spec['column']}"
            column = sql.Identifier(spec["column"])
            if check_mode:
                statement = sql.SQL("SELECT {keys} FROM {table} WHERE {column} IS NOT NULL AND NOT ({column} ~ %s) "
                                    "ORDER BY {key_refs}")
            else:
                statement = sql.SQL("UPDATE {table} SET {column} = crypt({column}, gen_salt('bf')) "
                                    "WHERE {column} IS NOT NULL AND NOT ({column} ~ %s) RETURNING {keys}")
            cur.execute(statement.format(keys=_key_select(spec["keys"]), table=spec["relation"], column=column,
                                         key_refs=_key_refs(spec["keys"])), (pattern,))
            labels = sorted(_key_label(spec["keys"], row) for row in cur.fetchall())
        if check_mode:
            conn.rollback()
        else:
            conn.commit()
        verb = "would hash" if check_mode else "hashed"
        items.append({"table": spec["table"], "status": "pass", "changed": bool(labels), "rows": labels,
                      "detail": (f"{where}: {verb} {len(labels)} plaintext passwords with bcrypt: {'; '.join(labels)}"
                                 if labels else f"{where}: every value is a password hash, nothing to hash")})
    return items


def harden_pgaudit(conn, log_classes, extra_settings=None, check_mode=False):
    """pgaudit on a self-managed target: the library preloaded (shared_preload_libraries, needs a restart),
    the extension created, pgaudit.log and the other settings set with ALTER SYSTEM and reloaded.

    Returns (item, restart_needed). Fails clearly when the server has no pgaudit library (package
    postgresql-<major>-pgaudit) or the login may not ALTER SYSTEM."""
    settings = {"pgaudit.log": ",".join(log_classes) if isinstance(log_classes, list) else str(log_classes)}
    settings.update({str(k): str(v) for k, v in (extra_settings or {}).items()})
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('server_version_num')::int / 10000, "
                    "EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pgaudit'), "
                    "current_setting('shared_preload_libraries'), "
                    "EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pgaudit')")
        major, available, preload, created = cur.fetchone()
    libraries = [lib.strip() for lib in preload.split(",") if lib.strip()]
    base = {"table": None, "name": "pgaudit"}
    if not available:
        return {**base, "status": "fail", "changed": False, "detail": (
            f"pgaudit is not installed on the target server (PostgreSQL {major}): install the Debian package "
            f"postgresql-{major}-pgaudit there (post_checks_pgaudit_install_package on the database host), "
            "then rerun")}, False
    changes = []
    if "pgaudit" not in libraries:
        changes.append("shared_preload_libraries += pgaudit (restart needed)")
        if not check_mode:
            with conn.cursor() as cur:
                cur.execute("ALTER SYSTEM SET shared_preload_libraries = %s", (",".join([*libraries, "pgaudit"]),))
        return {**base, "status": "pass", "changed": True, "restart_needed": True, "detail": (
            "pgaudit: " + ("would add" if check_mode else "added") + " pgaudit to shared_preload_libraries; "
            "PostgreSQL must restart before the extension and its settings take effect")}, True
    if not created:
        changes.append("CREATE EXTENSION pgaudit")
        if not check_mode:
            with conn.cursor() as cur:
                cur.execute("CREATE EXTENSION IF NOT EXISTS pgaudit")
    with conn.cursor() as cur:
        for name, value in settings.items():
            cur.execute("SELECT setting FROM pg_settings WHERE name = %s", (name,))
            row = cur.fetchone()
            if row is None or row[0] != value:
                changes.append(f"{name} = {value}")
                if not check_mode:
                    cur.execute(sql.SQL("ALTER SYSTEM SET {} = %s").format(sql.Identifier(*name.split("."))),
                                (value,))
        if changes and not check_mode:
            cur.execute("SELECT pg_reload_conf()")
    verb = "would apply" if check_mode else "applied"
    return {**base, "status": "pass", "changed": bool(changes), "restart_needed": False, "detail": (
        f"pgaudit: {verb} {'; '.join(changes)}" if changes else
        f"pgaudit: preloaded, extension created, {', '.join(f'{k} = {v}' for k, v in settings.items())}")}, False


# --- error log watch -------------------------------------------------------------------------------------


def _journal_lines(units, since_epoch):
    if not units:
        return [], None
    command = ["journalctl", "--no-pager", "-o", "short-iso", "--since", f"@{int(since_epoch)}"]
    for unit in units:
        command += ["-u", unit]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return [], f"journalctl failed: {error}"
    if done.returncode != 0:
        return [], f"journalctl failed: {done.stderr.strip()[:200]}"
    return [line for line in done.stdout.splitlines() if not line.startswith("-- ")], None


def mark_error_logs(paths):
    """Where a later watch_error_log begins: each file's current size (0 when it does not exist yet) and
    the time (for the journal). Taken before the HTTP checks, so that the errors they cause count too."""
    offsets = {}
    for path in paths or []:
        try:
            offsets[path] = os.path.getsize(path)
        except OSError:
            offsets[path] = 0
    return {"epoch": time.time(), "offsets": offsets}


def watch_error_log(paths, pattern, window_seconds, poll_seconds=1.0, journal_units=(), max_lines=20, mark=None):
    """Watches the files and the units' journal for window_seconds; every new line matching pattern (a
    Python regular expression) fails the check. New: written after `mark` (mark_error_logs), or after
    the watch began without one. A file smaller than its mark (rotated) is read from its start."""
    started = time.monotonic()
    title = "Error log watch"
    matcher = re.compile(pattern)
    mark = mark or {}
    began_epoch = float(mark.get("epoch") or time.time())
    marked = mark.get("offsets") or {}
    current = mark_error_logs(paths)["offsets"]
    offsets, notes = {}, []
    for path in paths or []:
        offsets[path] = marked.get(path, current[path])
        if current[path] < offsets[path]:
            offsets[path] = 0
            notes.append(f"{path} was rotated since the mark (read from its start)")
        if not os.path.exists(path):
            notes.append(f"{path} does not exist yet (watched from its creation)")
    found = {path: [] for path in offsets}
    deadline = started + float(window_seconds)
    while True:
        for path in offsets:
            try:
                with open(path, "rb") as handle:
                    handle.seek(offsets[path])
                    chunk = handle.read()
            except OSError:
                continue
            complete = chunk[:chunk.rfind(b"\n") + 1]
            offsets[path] += len(complete)
            for line in complete.decode("utf-8", "replace").splitlines():
                if matcher.search(line):
                    found[path].append(line.strip())
        if time.monotonic() >= deadline:
            break
        time.sleep(min(float(poll_seconds), max(0.0, deadline - time.monotonic())))
    journal, journal_error = _journal_lines(list(journal_units or []), began_epoch)
    if journal_units:
        found["journal: " + ", ".join(journal_units)] = [line for line in journal if matcher.search(line)]
    items = []
    for source, lines in found.items():
        if lines:
            shown = lines[:max_lines]
            more = f" (and {len(lines) - len(shown)} more)" if len(lines) > len(shown) else ""
            items.append({"table": None, "log": source, "lines": shown, "status": "fail",
                          "detail": f"{source}: {len(lines)} new error lines in {float(window_seconds):g} s{more}: "
                                    + " | ".join(shown)})
        else:
            items.append({"table": None, "log": source, "lines": [], "status": "pass",
                          "detail": f"{source}: no new line matching {pattern!r} in {float(window_seconds):g} s"})
    if journal_error:
        items.append({"table": None, "log": "journal", "status": "fail", "detail": journal_error})
    summary = _counts_summary(items, "logs") + f" for {float(window_seconds):g} s"
    failing = [i for i in items if i["status"] == "fail"]
    if failing:
        summary += ": " + "; ".join(i["detail"] for i in failing)
    if notes:
        summary += " (" + "; ".join(notes) + ")"
    return _finish("error_log", title, items, started, summary)


def failure_message(checks):
    """One line naming every failing check and what failed in it."""
    parts = []
    for check in checks:
        if check["status"] != "fail":
            continue
        details = [i["detail"] for i in check["items"] if i["status"] == "fail" and i["detail"] not in check["summary"]]
        parts.append(f"{check['name']}: {check['summary']}" + "".join(f"; {d}" for d in details))
    return "; ".join(parts)
