"""The plan's security hardening, idempotent: credentials encrypted, passwords hashed, pgaudit on."""


from psycopg2 import sql

from ..common.session import quiet_statement_logging
from .credentials import plaintext_reason
from .password_hashes import password_hash_pattern
from .rules import _key_label, _key_refs, _key_select, _resolve_column_rule


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
