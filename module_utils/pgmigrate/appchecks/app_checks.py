"""The migration plan's application checks on the target: security and performance.

* check_password_hashes: columns that must hold password hashes (bcrypt, argon2, scrypt, pbkdf2) hold
  nothing else;
* check_plaintext_credentials: columns that must hold encrypted credentials hold no readable secret;
* check_queries: the application's representative queries are fast on the target, and not much slower
  than on the source;
* check_required_indexes: the indexes the plan relies on exist on their tables and are valid.

Each returns a check: {"name", "title", "status": "pass"|"fail"|"warn"|"skip", "summary",
"items": [{"table", "status", "detail", ...}], "seconds"} (see report.py). The cell values of the columns
inspected never appear in a check, nor in an error message: offending rows are named by their key only
(the rule's "key" columns, else the primary key, else the ctid).

Table names are SQL names as PostgreSQL reads them ("public.team", '"Mixed".table'); column and index
names are exact names. The checks only read. On a connection inside a transaction, each rule runs under
a savepoint, so an error (a missing table, a bad name) is reported as a failing item and leaves the
caller's transaction usable.
"""

import base64
import binascii
import contextlib
import json
import math
import re
import time
from collections import Counter

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from ..common.connection import connect, friendly_connect_error

# Offending rows named per rule (the count is always complete).
MAX_KEYS_SHOWN = 20
# Rows fetched per round trip when values are classified client-side.
FETCH_ROWS = 2000

# Password hash formats, as PostgreSQL regular expressions (one scan, matched with ~). The optional
# prefixes are Django's ("bcrypt$", "bcrypt_sha256$", "argon2$").
PASSWORD_HASH_FORMATS = {
    "bcrypt": r"(?:bcrypt(?:_sha256)?\$)?\$2[abxy]?\$[0-9]{2}\$[./A-Za-z0-9]{53}",
    "argon2": (r"(?:argon2)?\$argon2(?:id|i|d)\$(?:v=[0-9]+\$)?m=[0-9]+,t=[0-9]+,p=[0-9]+(?:,[a-z]+=[^$,]*)*"
               r"\$[A-Za-z0-9+/]{4,}={0,2}\$[A-Za-z0-9+/]{16,}={0,2}"),
    "scrypt": (r"\$scrypt\$[^$]+\$[^$]+\$[./A-Za-z0-9+]{16,}={0,2}"
               r"|\$7\$[./A-Za-z0-9]{11}[^$]*\$[./A-Za-z0-9]{43}"
               r"|scrypt\$[0-9]+\$[^$]+\$[0-9]+\$[0-9]+\$[A-Za-z0-9+/]{16,}={0,2}"),
    "pbkdf2": (r"pbkdf2_sha(?:1|256|512)\$[0-9]+\$[^$]+\$[A-Za-z0-9+/]{16,}={0,2}"
               r"|\$pbkdf2(?:-sha(?:1|256|512))?\$[0-9]+\$[./A-Za-z0-9+]+={0,2}\$[./A-Za-z0-9+]{16,}={0,2}"),
}


class RuleError(Exception):
    """A rule that cannot be checked as written (missing table or column, bad shape)."""


# --- check and item helpers ------------------------------------------------------------------------------


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


# --- password hashes -------------------------------------------------------------------------------------


def password_hash_pattern(formats=None):
    """The PostgreSQL regular expression a password hash of one of formats (default: all) matches."""
    names = list(formats or PASSWORD_HASH_FORMATS)
    unknown = [name for name in names if name not in PASSWORD_HASH_FORMATS]
    if unknown:
        raise RuleError(f"unknown password hash formats {', '.join(map(str, unknown))}; "
                        f"known: {', '.join(PASSWORD_HASH_FORMATS)}")
    return "^(?:" + "|".join(f"(?:{PASSWORD_HASH_FORMATS[name]})" for name in names) + ")$"


def _value_as_text(column, column_type):
    if column_type == "bytea":
        return sql.SQL("encode({}, 'escape')").format(sql.Identifier(column))
    return sql.SQL("{}::text").format(sql.Identifier(column))


def _check_hash_rule(conn, rule):
    with conn.cursor() as cur:
        spec = _resolve_column_rule(cur, rule, "password hash")
        formats = _names(rule.get("formats"), "formats") or list(PASSWORD_HASH_FORMATS)
        pattern = password_hash_pattern(formats)
        # One scan: each non-NULL value is matched once; the window counts ride along, and the sort keeps
        # only the first MAX_KEYS_SHOWN offenders.
        query = sql.SQL(
            "SELECT {key_text}, bad, count(*) OVER (), count(*) FILTER (WHERE bad) OVER () "
            "FROM (SELECT {keys}, NOT ({value} ~ %(pattern)s) AS bad FROM {table} WHERE {column} IS NOT NULL) s "
            "ORDER BY bad DESC, {key_refs} LIMIT %(limit)s"
        ).format(key_text=_key_refs(spec["keys"], cast_text=True), keys=_key_select(spec["keys"]),
                 value=_value_as_text(spec["column"], spec["type"]), table=spec["relation"],
                 column=sql.Identifier(spec["column"]), key_refs=_key_refs(spec["keys"]))
        cur.execute(query, {"pattern": pattern, "limit": MAX_KEYS_SHOWN})
        rows = cur.fetchall()
    width = max(1, len(spec["keys"]))
    checked = rows[0][width + 1] if rows else 0
    failing = rows[0][width + 2] if rows else 0
    offenders = [_key_label(spec["keys"], row[:width]) for row in rows if row[width]]
    item = {"table": spec["table"], "column": spec["column"], "formats": formats, "rows_checked": checked,
            "rows_failing": failing, "keys": offenders}
    where = f"{spec['table']}.{spec['column']}"
    if failing:
        shown = "; ".join(offenders) + (f"; and {failing - len(offenders)} more" if failing > len(offenders) else "")
        item.update(status="fail", detail=(
            f"{failing} of {checked} non-NULL values of {where} do not look like a password hash "
            f"({', '.join(formats)}): rows {shown}"))
    else:
        item.update(status="pass", detail=f"all {checked} non-NULL values of {where} look like password hashes "
                                          f"({', '.join(formats)})")
    return item


def check_password_hashes(conn, rules):
    """Every non-NULL value of each rule's column looks like a password hash, never a password.

    rules: [{"table": "public.team", "column": "password_hash", "key": ["id"], "formats": [...]?}];
    formats (optional) narrows the accepted ones among bcrypt, argon2, scrypt and pbkdf2.
    """
    started = time.monotonic()
    items = []
    for rule in rules or []:
        items.append(_run_rule(conn, rule, _check_hash_rule))
    summary = (_counts_summary(items, "password hash columns") if items
               else "no password hash columns configured (validation_password_hash_columns)")
    return _finish("password_hashes", "Password hashes", items, started, summary)


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


# --- plaintext credentials -------------------------------------------------------------------------------

_CREDENTIAL_WORDS = re.compile(
    r"passw(?:or)?d|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential", re.I)
# user:password@host, alone or in a URL.
_USERINFO = re.compile(r"(?:^|[/\s])[A-Za-z0-9._%+-]+:[^\s@/]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_KEY_VALUE = re.compile(r"(?:^|[\s;&,?{(])[A-Za-z_][A-Za-z0-9_.-]*\s*=\s*[^\s=]")
_YAML_KEY = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_.-]*\s*:\s+\S", re.M)
_BINARY_WORDS = re.compile(rb"(?i)passw(?:or)?d|passphrase|secret|token|api[_-]?key|access[_-]?key|credential")
_PEM_PRIVATE_KEY = re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH )?PRIVATE KEY-----")
_PGP_MESSAGE = "-----BEGIN PGP MESSAGE-----"
_HEX = re.compile(r"(?:\\x)?[0-9A-Fa-f]+")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_BASE64_URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
# Scheme prefixes of encrypted values: "vault:v1:", "enc:", "ENC(...)" (jasypt) and the like.
_PREFIX = re.compile(r"^(?:[A-Za-z][A-Za-z0-9_-]{0,20}:){1,3}")
_JASYPT = re.compile(r"^ENC\((.*)\)$", re.S)


def _expected_distinct(length, alphabet):
    return alphabet * (1 - (1 - 1 / alphabet) ** length)


def _entropy(symbols):
    counts = Counter(symbols)
    total = len(symbols)
    return -sum(n / total * math.log2(n / total) for n in counts.values())


def _readable(data):
    """data as text when it is valid UTF-8 and (almost) all printable, else None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(1 for ch in text if ch.isprintable() or ch in "\t\n\r")
    return text if printable >= 0.95 * len(text) else None


def _high_entropy(data):
    """Bytes as diverse as random bytes (ciphertext, keys, digests) of the same length."""
    return len(data) >= 12 and len(set(data)) >= 0.5 * _expected_distinct(len(data), 256)


def _decode_token(token):
    """The bytes of a hex or base64 token, or None when it is neither (or too short to be a cipher block)."""
    if len(token) >= 32 and _HEX.fullmatch(token):
        digits = token[2:] if token.startswith("\\x") else token
        if len(digits) % 2 == 0 and re.search(r"[0-9]", digits) and re.search(r"[A-Fa-f]", digits):
            return bytes.fromhex(digits)
    if len(token) >= 16 and (_BASE64.fullmatch(token) or _BASE64_URL.fullmatch(token)):
        core = token.rstrip("=")
        if len(core) % 4 == 1 or not (re.search(r"[A-Z]", core) and re.search(r"[a-z]", core)):
            return None
        if len(set(core)) < 0.6 * _expected_distinct(len(core), 64):
            return None  # a word-like string that merely uses the base64 alphabet
        padded = core + "=" * (-len(core) % 4)
        try:
            if "-" in core or "_" in core:
                return base64.urlsafe_b64decode(padded)
            return base64.b64decode(padded, validate=True)
        except (ValueError, binascii.Error):
            return None
    return None


def _encoded_payload(text):
    """The bytes an encoded value stands for (base64, hex, with a scheme prefix such as vault:v1:, several
    parts joined by "--" or "." as Rails and JWE do), or None when text is not such an encoding."""
    match = _JASYPT.match(text)
    if match:
        text = match.group(1)
    text = _PREFIX.sub("", text, count=1)
    text = re.sub(r"\s+", "", text)  # PEM-style line breaks
    whole = _decode_token(text)
    if whole is not None:
        return whole
    parts = [part for part in re.split(r"--|\.", text) if part]
    if len(parts) < 2:
        return None
    decoded = []
    for part in parts:
        data = _decode_token(part)
        if data is None and len(part) >= 16:
            return None
        decoded.append(data or b"")
    payload = max(decoded, key=len)
    return payload if payload else None


def _char_class(ch):
    return "d" if ch.isdigit() else "u" if ch.isupper() else "l" if ch.islower() else "p"


def _looks_random(text):
    """Printable ASCII as diverse as an encoding of random bytes (base85 ciphertext, say): at least three of
    digits, upper case, lower case and punctuation, interleaved, and a high character entropy."""
    if len(text) < 16 or not text.isascii() or " " in text:
        return False
    classes = [_char_class(ch) for ch in text]
    if len(set(classes)) < 3:
        return False
    switches = sum(1 for a, b in zip(classes, classes[1:], strict=False) if a != b) / (len(text) - 1)
    return switches >= 0.4 and _entropy(text) >= 0.75 * math.log2(min(len(text), 85))


def plaintext_reason(value, _depth=0):
    """Why value (bytes or str) looks like a readable credential, or None when it looks encrypted.

    Passes: binary data (pgcrypto encrypt(), pgp_sym_encrypt()), PGP armor, base64 or hex of high-entropy
    bytes (optionally prefixed, e.g. vault:v1:...), JWE, text as diverse as random bytes. Flags: a JSON
    object, key=value or password/secret/token patterns, a JWT, an unencrypted PEM private key, readable
    text, base64/hex of any of these, and binary data carrying credential field names (a serialised map).
    The reason never quotes the value.
    """
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if not data.strip():
        return None
    text = _readable(data)
    if text is None:
        if _BINARY_WORDS.search(data):
            return "binary data with readable credential field names"
        return None
    stripped = text.strip()
    if stripped.startswith(_PGP_MESSAGE):
        return None
    if _PEM_PRIVATE_KEY.search(stripped):
        return "an unencrypted PEM private key"
    parts = stripped.split(".")
    if stripped.startswith("eyJ") and len(parts) == 3:
        return "a JWT (bearer token)"
    if stripped.startswith("eyJ") and len(parts) == 5:
        return None  # JWE: encrypted
    payload = _encoded_payload(stripped)
    if payload is not None:
        inner = _readable(payload)
        if inner is None and _high_entropy(payload):
            return None
        if inner is not None and _depth < 2:
            reason = plaintext_reason(payload, _depth + 1)
            return f"base64/hex encoding of {reason}" if reason else None
    if stripped.startswith("{"):
        try:
            if isinstance(json.loads(stripped), dict):
                return "a JSON object"
        except ValueError:
            pass
    if _CREDENTIAL_WORDS.search(stripped):
        return "a password/secret/token pattern"
    if _USERINFO.search(stripped):
        return "a user:password@host pattern"
    if _looks_random(stripped):
        return None
    if _KEY_VALUE.search(stripped) or _YAML_KEY.search(stripped):
        return "a key=value pattern"
    return "readable text"


def _check_plaintext_rule(conn, rule):
    with conn.cursor() as cur:
        spec = _resolve_column_rule(cur, rule, "encrypted column")
    column = sql.Identifier(spec["column"])
    value = column if spec["type"] == "bytea" else sql.SQL("{}::text").format(column)
    query = sql.SQL("SELECT {key_text}, v FROM (SELECT {keys}, {value} AS v FROM {table} "
                    "WHERE {column} IS NOT NULL) s ORDER BY {key_refs}").format(
        key_text=_key_refs(spec["keys"], cast_text=True), keys=_key_select(spec["keys"]), value=value,
        table=spec["relation"], column=column, key_refs=_key_refs(spec["keys"]))
    width = max(1, len(spec["keys"]))
    checked = failing = 0
    offenders, reasons = [], Counter()
    # A server-side cursor: values stream through in batches and are never kept.
    with conn.cursor(name="pgmigrate_plaintext_scan", withhold=conn.autocommit) as cur:
        cur.itersize = FETCH_ROWS
        cur.execute(query)
        for row in cur:
            checked += 1
            reason = plaintext_reason(row[width])
            if reason:
                failing += 1
                reasons[reason] += 1
                if len(offenders) < MAX_KEYS_SHOWN:
                    offenders.append(_key_label(spec["keys"], row[:width]))
    where = f"{spec['table']}.{spec['column']}"
    item = {"table": spec["table"], "column": spec["column"], "rows_checked": checked, "rows_failing": failing,
            "keys": offenders, "reasons": dict(reasons)}
    if failing:
        why = ", ".join(f"{reason}: {count}" for reason, count in reasons.most_common())
        shown = "; ".join(offenders) + (f"; and {failing - len(offenders)} more" if failing > len(offenders) else "")
        item.update(status="fail", detail=(
            f"{failing} of {checked} non-NULL values of {where} look like plaintext credentials, not ciphertext "
            f"({why}): rows {shown}"))
    else:
        item.update(status="pass", detail=f"all {checked} non-NULL values of {where} look encrypted")
    return item


def check_plaintext_credentials(conn, rules):
    """No value of each rule's column (bytea or text) is a readable credential: each must look encrypted.

    rules: [{"table": "public.integrations", "column": "encrypted_credentials", "key": ["id"]}].
    See plaintext_reason for what counts as plaintext. Values are classified client-side, streamed in
    batches through a server-side cursor and never kept.
    """
    started = time.monotonic()
    items = [_run_rule(conn, rule, _check_plaintext_rule) for rule in rules or []]
    summary = (_counts_summary(items, "encrypted columns") if items
               else "no encrypted columns configured (validation_encrypted_columns)")
    return _finish("plaintext_credentials", "Encrypted credentials are not plaintext", items, started, summary)


# --- query performance -----------------------------------------------------------------------------------


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


# --- required indexes ------------------------------------------------------------------------------------

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
