"""The plan's security hardening, idempotent: credentials encrypted, passwords hashed. (pgaudit is enabled by
roles/post_checks/tasks/pgaudit.yml with community.postgresql's postgresql_alter_system and postgresql_ext.)"""


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
