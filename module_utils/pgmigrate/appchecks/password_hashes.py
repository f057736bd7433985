"""Columns that must hold password hashes (bcrypt, argon2, scrypt, pbkdf2) hold nothing else."""

import time

from psycopg2 import sql

from .rules import (
    MAX_KEYS_SHOWN,
    RuleError,
    _counts_summary,
    _finish,
    _key_label,
    _key_refs,
    _key_select,
    _names,
    _resolve_column_rule,
    _run_rule,
)

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
