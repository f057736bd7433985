"""Checks made before anything changes: each failure says what is wrong and how to fix it."""

import psycopg2
import psycopg2.errors

from . import client_tools, extension_substitutes
from .catalog import STATE_SCHEMA, excluded_schemas
from .connection import ConfigError, connect_or_raise, describe
from .errors import PgmigrateError


class PreflightError(PgmigrateError):
    """The migration must not start; the message says why and how to fix it."""


def connect_or_explain(params, variable, application_name="pgmigrate", **options):
    """connect(), or a PreflightError naming the setting (variable) and how to fix the connection."""
    return connect_or_raise(params, variable, PreflightError, application_name, **options)


def server_identity(conn):
    """What identifies a database: the server's system identifier (when readable), its address,
    port, start time, and the database name."""
    identity = {}
    with conn.cursor() as cur:
        cur.execute("SAVEPOINT identity")
        try:
            cur.execute("SELECT system_identifier::text FROM pg_control_system()")
            identity["system_identifier"] = cur.fetchone()[0]
        except Exception:  # noqa: BLE001 - not readable by every role; the rest still identifies
            cur.execute("ROLLBACK TO SAVEPOINT identity")
        cur.execute(
            "SELECT current_database(), COALESCE(host(inet_server_addr()), 'local'), "
            "COALESCE(inet_server_port(), current_setting('port')::int), pg_postmaster_start_time()::text, "
            "current_setting('server_version_num')::int, pg_encoding_to_char(d.encoding), "
            "(SELECT oid FROM pg_database WHERE datname = current_database())::int "
            "FROM pg_database d WHERE d.datname = current_database()"
        )
        database, address, port, started, version, encoding, database_oid = cur.fetchone()
    identity.update({"database": database, "address": address, "port": port, "postmaster_start": started,
                     "server_version_num": version, "encoding": encoding, "database_oid": database_oid})
    return identity


def same_database(a, b):
    if a["database"] != b["database"] or a["database_oid"] != b["database_oid"]:
        return False
    if a.get("system_identifier") and b.get("system_identifier"):
        return a["system_identifier"] == b["system_identifier"] and a["postmaster_start"] == b["postmaster_start"]
    return a["port"] == b["port"] and a["postmaster_start"] == b["postmaster_start"]


def check_not_same(source_identity, target_identity, source, target):
    if same_database(source_identity, target_identity):
        raise PreflightError(
            f"Source {describe(source)} and target {describe(target)} are the same database on the same server: "
            "refusing to copy a database onto itself. Point migration_target at another database."
        )


def check_versions(source_identity, target_identity):
    source_major = source_identity["server_version_num"] // 10000
    target_major = target_identity["server_version_num"] // 10000
    if target_major < source_major:
        raise PreflightError(
            f"The target runs PostgreSQL {target_major}, older than the source's {source_major}: a schema and "
            "data copied down a major version may not load. Upgrade the target to "
            f"PostgreSQL {source_major} or newer."
        )


def use_client_tools(bin_dir):
    """Take the client programs from bin_dir (migration_pg_bin_dir; empty: the newest installed)."""
    try:
        client_tools.use_bin_dir(bin_dir)
    except client_tools.ToolError as error:
        raise PreflightError(str(error)) from None


def check_client_tools(source_identity, target_identity):
    """pg_dump, pg_restore and psql of the newer server's major version or newer (client_tools.check_fits)."""
    try:
        client_tools.check_fits(source_identity["server_version_num"], target_identity["server_version_num"])
    except client_tools.ToolError as error:
        raise PreflightError(str(error)) from None


def check_production_confirmation(target, is_production, confirmation):
    if is_production and confirmation != target["dbname"]:
        raise PreflightError(
            f"The target {describe(target)} is marked production (migration_target_is_production): confirm by "
            f"setting migration_confirm_target to the target's database name ('{target['dbname']}'), e.g. "
            f"-e migration_confirm_target={target['dbname']}"
        )


def missing_extensions(target_conn, extensions):
    """Extensions the source uses that the target server cannot provide."""
    with target_conn.cursor() as cur:
        cur.execute("SELECT name, default_version FROM pg_available_extensions")
        available = dict(cur.fetchall())
        cur.execute("SELECT extname, extversion FROM pg_extension")
        installed = dict(cur.fetchall())
    missing = []
    for ext in extensions:
        if ext["name"] in installed:
            continue
        if ext["name"] not in available:
            missing.append(ext["name"])
    return missing


def check_extensions(target_conn, catalog, target, substitutes=None, source_conn=None, source=None,
                     exclude_schemas=()):
    """Refuse, before anything changes, an extension the source uses that the target server cannot provide,
    unless the application profile's substitutes (migration_extension_substitutes: {extension: {function: SQL
    body}}) say how the target does without it and cover every use the source's schema makes of it
    (extension_substitutes). Returns extension_substitutes.plan's result (None when nothing is missing): what
    the copy leaves out and creates instead. The source is read on source_conn, else on a connection to source."""
    missing = missing_extensions(target_conn, catalog["extensions"])
    if not missing:
        return None
    with target_conn.cursor() as cur:
        cur.execute("SELECT current_setting('server_version_num')::int / 10000")
        major = cur.fetchone()[0]
    target_conn.rollback()
    result = substitution_plan(missing, substitutes, source_conn, source, exclude_schemas)
    if extension_substitutes.problem(result):
        refused = result["unsubstituted"] + sorted({item["extension"] for item in result["uncovered"]})
        uncovered = ""
        if result["uncovered"]:
            uncovered = (" The application profile's substitutes (migration_extension_substitutes) do not cover "
                         "what the schema uses: " + "; ".join(
                             f"{item['member']} of {item['extension']} (used by "
                             f"{extension_substitutes.shown(item['used_by'])})" for item in result["uncovered"])
                         + ".")
        raise PreflightError(
            f"The target server {describe(target)} (PostgreSQL {major}) lacks extension(s) the source uses: "
            f"{', '.join(refused)}. Nothing was changed.{uncovered} Install them on the target server before "
            f"migrating: PostgreSQL's own (contrib: uuid-ossp, pgcrypto, hstore, ...) come with its contrib package "
            f"(Debian: postgresql-{major}; RHEL: postgresql{major}-contrib), others with their own (Debian: "
            f"postgresql-{major}-<name>). An application using uuid-ossp or pgcrypto only for random UUIDs can "
            "do without them: gen_random_uuid() is built in since PostgreSQL 13; say so in "
            "migration_extension_substitutes (the application profile's), e.g. {uuid-ossp: {uuid_generate_v4: "
            "SELECT pg_catalog.gen_random_uuid()}, pgcrypto: {}}.")
    return result


def substitution_plan(missing, substitutes, source_conn=None, source=None, exclude_schemas=()):
    """extension_substitutes.plan for the extensions the target lacks (missing), reading the source on
    source_conn or, when only some are substituted, on a connection of its own to source."""
    if not missing or not any(name in (substitutes or {}) for name in missing):
        return extension_substitutes.plan(None, missing, substitutes, exclude_schemas)
    conn = source_conn or connect_or_explain(source, "migration_source", "pgmigrate extension substitutes")
    try:
        return extension_substitutes.plan(conn, missing, substitutes, exclude_schemas)
    finally:
        if source_conn is None:
            conn.close()


def icu_collations(source_conn):
    """The ICU collations the source's schemas define or its columns use (qualified names)."""
    with source_conn.cursor() as cur:
        # The columns' collations read once: a server built with ICU lists hundreds of its own.
        cur.execute("""
            WITH used AS (
                SELECT DISTINCT a.attcollation AS oid
                FROM pg_attribute a JOIN pg_class r ON r.oid = a.attrelid
                JOIN pg_namespace rn ON rn.oid = r.relnamespace
                WHERE a.attcollation <> 0 AND a.attnum > 0 AND rn.nspname NOT IN %s)
            SELECT format('%%I.%%I', n.nspname, c.collname)
            FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace
            WHERE c.collprovider = 'i' AND (n.nspname NOT IN %s OR c.oid IN (SELECT oid FROM used))
            ORDER BY 1""", (excluded_schemas(), excluded_schemas()))
        return [row[0] for row in cur.fetchall()]


def check_collations(target_conn, collations, target):
    """ICU collations need a server built with ICU: refuse a target without, before anything changes."""
    if not collations:
        return
    with target_conn.cursor() as cur:
        cur.execute("SELECT current_setting('server_version_num')::int / 10000")
        major = cur.fetchone()[0]
        # A server built without ICU still lists ICU collations of its own: ask it to make one (rolled back).
        cur.execute("SAVEPOINT icu_probe")
        try:
            cur.execute("CREATE COLLATION pg_temp.pgmigrate_icu_probe (provider = icu, locale = 'und')")
            has_icu = True
        except psycopg2.errors.FeatureNotSupported:
            has_icu = False
        except psycopg2.Error:  # no TEMP privilege, say: unknown, and the schema restore will tell
            has_icu = True
        cur.execute("ROLLBACK TO SAVEPOINT icu_probe")
    target_conn.rollback()
    if not has_icu:
        raise PreflightError(
            f"The target server {describe(target)} (PostgreSQL {major}) is built without ICU, and the source uses "
            f"ICU collation(s): {', '.join(collations)}. Nothing was changed. Migrate to a PostgreSQL built with "
            "ICU (the packages of Debian, RHEL and the cloud providers are), or change those columns to a libc "
            "collation on the source first.")


def populated_tables(target_conn, tables):
    """Tables of the list (qualified names) that exist in the target and hold at least one row."""
    found = []
    with target_conn.cursor() as cur:
        for qualname in tables:
            cur.execute("SELECT to_regclass(%s)", (qualname,))
            if cur.fetchone()[0] is None:
                continue
            try:
                cur.execute(f"SELECT EXISTS (SELECT 1 FROM {qualname})")  # noqa: S608 - quoted by format('%I')
            except psycopg2.errors.LockNotAvailable:
                target_conn.rollback()
                raise PreflightError(
                    f"Target table {qualname} is locked by another session (lock timeout): find it with "
                    "SELECT * FROM pg_locks JOIN pg_stat_activity USING (pid), end it, then rerun.") from None
            if cur.fetchone()[0]:
                found.append(qualname)
    target_conn.rollback()
    return found


def existing_user_tables(target_conn, schemas):
    """User tables already in the target in any of the given schemas (the tool's own excluded)."""
    with target_conn.cursor() as cur:
        cur.execute(
            "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON "
            "n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%s) "
            "AND n.nspname NOT IN %s ORDER BY 1",
            (list(schemas), excluded_schemas() + (STATE_SCHEMA,)),
        )
        rows = [r[0] for r in cur.fetchall()]
    target_conn.rollback()
    return rows


def can_set_replication_role(conn):
    with conn.cursor() as cur:
        cur.execute("SAVEPOINT replication_role")
        try:
            cur.execute("SET LOCAL session_replication_role = replica")
            allowed = True
        except Exception:  # noqa: BLE001 - permission denied means: not allowed
            allowed = False
        cur.execute("ROLLBACK TO SAVEPOINT replication_role")
    conn.rollback()
    return allowed


def check_options(options):
    if options["schema_mode"] not in ("copy", "existing"):
        raise ConfigError(f"migration_schema_mode must be 'copy' or 'existing', not {options['schema_mode']!r}")
    if int(options["workers"]) < 1:
        raise ConfigError(f"migration_workers must be at least 1, not {options['workers']}")


def unreadable_relations(source_conn, include_schemas=(), exclude_schemas=()):
    """Tables and sequences (qualified names) of the source the login may not SELECT: the catalog reading,
    the copy, pg_dump and the sequence step all need to read them; checked before any of them."""
    schemas = list(include_schemas) or None
    with source_conn.cursor() as cur:
        cur.execute(
            "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'S') AND n.nspname NOT IN %s "
            "AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%' "
            "AND (%s::text[] IS NULL OR n.nspname = ANY(%s::text[])) "
            "AND NOT (has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT')) ORDER BY 1",
            (excluded_schemas(exclude_schemas), schemas, schemas),
        )
        found = [r[0] for r in cur.fetchall()]
    return found


def check_source_rights(source_conn, source, include_schemas=(), exclude_schemas=()):
    unreadable = unreadable_relations(source_conn, include_schemas, exclude_schemas)
    if unreadable:
        shown = ", ".join(unreadable[:8]) + (f" and {len(unreadable) - 8} more" if len(unreadable) > 8 else "")
        raise PreflightError(
            f"The source login {source['user']} may not read {len(unreadable)} table(s) or sequence(s) of "
            f"{describe(source)}: {shown}. GRANT pg_read_all_data TO {source['user']} (or USAGE on their schemas "
            "and SELECT on them); docs/security.md, \"Least privilege\", lists the grants.")


def check_target_rights(target_conn, target, schemas, schema_mode):
    """The target login must create the tool's state schema (CREATE on the database) and, in schema mode
    copy, the source's objects in the schemas the target already has (e.g. public)."""
    problems = []
    with target_conn.cursor() as cur:
        cur.execute("SELECT has_database_privilege(current_database(), 'CREATE'), "
                    "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)")
        may_create, superuser = cur.fetchone()
        if not may_create:
            problems.append(f"CREATE on database {target['dbname']}")
        if schema_mode == "copy" and not superuser:
            cur.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s) "
                        "AND NOT has_schema_privilege(oid, 'CREATE') ORDER BY 1", (list(schemas),))
            problems.extend(f"CREATE on schema {r[0]}" for r in cur.fetchall())
    target_conn.rollback()
    if problems:
        raise PreflightError(
            f"The target login {target['user']} lacks {', '.join(problems)} on {describe(target)}: make it the "
            f"database's owner (ALTER DATABASE ... OWNER TO {target['user']}) or grant those rights; "
            "docs/security.md, \"Least privilege\", lists the grants.")
