"""Database-level settings: ALTER DATABASE ... SET and ALTER ROLE ... IN DATABASE ... SET.

They live in pg_db_role_setting, outside any schema, so neither pg_dump --schema-only nor the data
copy carries them; an application whose unqualified names resolve through the database's search_path
breaks without them. The copy reads the source database's settings (those of every role in it too),
checks before anything changes that the target login may set them, and applies them to the target
database at the very end (in the transaction that drops the run's state), so that a setting such as
default_transaction_read_only never affects the copy's own sessions. Settings of roles the target
does not have are skipped with a warning, and so are the settings named in `skipped` (the playbooks name
default_transaction_read_only there when the run's maintenance window sets it on the source: carried, it
would leave the new database refusing every write).
"""

from psycopg2 import errors as pg_errors
from psycopg2 import sql

from .errors import PgmigrateError

# GUCs whose value is a list of identifiers, given element by element (as pg_dump does, fe_utils'
# variable_is_guc_list_quote); any other value is given as one literal.
LIST_QUOTE_SETTINGS = {"local_preload_libraries", "search_path", "session_preload_libraries",
                       "shared_preload_libraries", "temp_tablespaces", "unix_socket_directories"}

SETTINGS_QUERY = """
SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE r.rolname END, c.entry
FROM pg_db_role_setting s
JOIN pg_database d ON d.oid = s.setdatabase AND d.datname = current_database()
LEFT JOIN pg_roles r ON r.oid = s.setrole
CROSS JOIN LATERAL unnest(s.setconfig) WITH ORDINALITY AS c(entry, position)
WHERE s.setrole = 0 OR r.oid IS NOT NULL
ORDER BY 1 NULLS FIRST, c.position
"""


class SettingsError(PgmigrateError):
    """The target login may not apply a setting."""


def read_settings(conn):
    """[{"role": name or None (the whole database), "name", "value"}] of the connection's database."""
    with conn.cursor() as cur:
        cur.execute(SETTINGS_QUERY)
        rows = cur.fetchall()
    settings = []
    for role, entry in rows:
        name, _, value = entry.partition("=")
        settings.append({"role": role, "name": name, "value": value})
    return settings


def describe_setting(setting):
    if setting["role"] is None:
        return f"database setting {setting['name']}"
    return f"setting {setting['name']} of role {setting['role']} in the database"


def split_list(value):
    """The elements of a list setting as stored, double quotes removed: the stored form of the list
    '"abc"' and public (a quote inside a quoted name is doubled) gives ['"abc"', 'public']."""
    items, i, n = [], 0, len(value)
    while i < n:
        while i < n and value[i].isspace():
            i += 1
        if i < n and value[i] == '"':
            i += 1
            item = []
            while i < n:
                if value[i] == '"':
                    if i + 1 < n and value[i + 1] == '"':
                        item.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                item.append(value[i])
                i += 1
            items.append("".join(item))
            while i < n and value[i] != ",":
                i += 1
        else:
            start = i
            while i < n and value[i] != ",":
                i += 1
            items.append(value[start:i].strip())
        i += 1
    return items


def value_sql(setting):
    if setting["name"].lower() in LIST_QUOTE_SETTINGS:
        return sql.SQL(", ").join(sql.Literal(item) for item in split_list(setting["value"]))
    return sql.Literal(setting["value"])


def statement(setting, dbname):
    name = sql.Identifier(setting["name"]) if "." not in setting["name"] else sql.SQL(".").join(
        sql.Identifier(part) for part in setting["name"].split("."))
    if setting["role"] is None:
        return sql.SQL("ALTER DATABASE {} SET {} TO {}").format(sql.Identifier(dbname), name, value_sql(setting))
    return sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} TO {}").format(
        sql.Identifier(setting["role"]), sql.Identifier(dbname), name, value_sql(setting))


def existing_roles(conn, names):
    with conn.cursor() as cur:
        cur.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(names),))
        return {r[0] for r in cur.fetchall()}


def is_skipped(setting, skipped):
    return setting["name"].lower() in {name.lower() for name in skipped}


def plan(source_settings, target_conn, skipped=()):
    """(settings to apply, warnings): the source's settings whose role exists in the target, but those
    named in skipped."""
    roles = existing_roles(target_conn, {s["role"] for s in source_settings if s["role"]})
    apply, warnings = [], []
    for setting in source_settings:
        if is_skipped(setting, skipped):
            warnings.append(f"{describe_setting(setting)} ({setting['name']}={setting['value']}) is not carried: "
                            "it is in migration_database_settings_skipped (set it on the target yourself if the "
                            "new database needs it)")
            continue
        if setting["role"] is not None and setting["role"] not in roles:
            warnings.append(f"{describe_setting(setting)} ({setting['name']}={setting['value']}) is not carried: "
                            f"role {setting['role']} does not exist in the target")
            continue
        apply.append(setting)
    return apply, warnings


def rights_problems(target_conn, settings):
    """What the target login lacks to apply these settings (checked before anything changes)."""
    if not settings:
        return []
    problems = []
    with target_conn.cursor() as cur:
        cur.execute("SELECT r.rolsuper, r.rolcreaterole, pg_has_role(d.datdba, 'USAGE') FROM pg_roles r, pg_database d "
                    "WHERE r.rolname = current_user AND d.datname = current_database()")
        superuser, createrole, owns_database = cur.fetchone()
        if superuser:
            return []
        if any(s["role"] is None for s in settings) and not owns_database:
            problems.append("ALTER DATABASE ... SET needs the target database's owner (or a superuser)")
        role_names = sorted({s["role"] for s in settings if s["role"]})
        if role_names:
            cur.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) AND rolsuper", (role_names,))
            superusers = [r[0] for r in cur.fetchall()]
            if not createrole:
                problems.append(f"ALTER ROLE ... IN DATABASE ... SET (roles {', '.join(role_names)}) needs CREATEROLE")
            elif superusers:
                problems.append(f"settings of superuser role(s) {', '.join(superusers)} need a superuser")
        names = sorted({s["name"] for s in settings})
        cur.execute("SELECT current_setting('server_version_num')::int >= 150000")
        # GRANT SET ON PARAMETER (and has_parameter_privilege) came with PostgreSQL 15.
        granted = "has_parameter_privilege(name, 'SET')" if cur.fetchone()[0] else "false"
        cur.execute("SELECT name FROM pg_settings WHERE name = ANY(%s) AND context IN ('superuser', 'postmaster', "
                    f"'sighup', 'superuser-backend', 'internal') AND NOT {granted} ORDER BY 1", (names,))
        restricted = [r[0] for r in cur.fetchall()]
        if restricted:
            problems.append(f"setting {', '.join(restricted)} needs a superuser or GRANT SET ON PARAMETER")
    target_conn.rollback()
    return problems


def apply(cur, settings, dbname):
    """Apply every setting inside the caller's transaction."""
    for setting in settings:
        try:
            cur.execute(statement(setting, dbname))
        except (pg_errors.InsufficientPrivilege, pg_errors.InvalidParameterValue, pg_errors.UndefinedObject,
                pg_errors.CantChangeRuntimeParam) as error:
            raise SettingsError(f"{describe_setting(setting)} ({setting['name']}={setting['value']}) could not be "
                                f"set on the target: {str(error).strip()}. Set migration_copy_database_settings="
                                "false to leave the database's settings, or fix the cause and rerun.") from None
