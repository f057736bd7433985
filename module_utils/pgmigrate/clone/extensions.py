"""The plan's phase 3, "Target Database Preparation": the extensions the target needs.

Needed: the plan's own list (uuid-ossp, pgcrypto) and every extension the source uses. One the target
server cannot provide that the application profile substitutes (migration_extension_substitutes) is left
out instead (common/extension_substitutes.py). For each, the
target server must offer it (pg_available_extension_versions) at the source's version, and the target's
login must have the right to create it (a superuser, or a trusted extension and CREATE on the
database). Everything is checked before anything is created, so a missing package or right is a clear
error that changes nothing. What is missing is then planned at the source's version, in the source's
schema when the target has it (else the schema copy creates it with the schema); the role extensions
creates it with community.postgresql.postgresql_ext.
"""

from ..common.errors import PgmigrateError

SOURCE_EXTENSIONS = """
SELECT e.extname, e.extversion, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname <> 'plpgsql' ORDER BY 1
"""

TARGET_STATE = """
SELECT v.name, array_agg(v.version ORDER BY v.version) AS versions,
       bool_or(v.trusted) FILTER (WHERE v.version = a.default_version) AS trusted,
       a.default_version, e.extversion AS installed_version, n.nspname AS installed_schema
FROM pg_available_extension_versions v
JOIN pg_available_extensions a ON a.name = v.name
LEFT JOIN pg_extension e ON e.extname = v.name
LEFT JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE v.name = ANY(%s)
GROUP BY v.name, a.default_version, e.extversion, n.nspname
"""

RIGHTS = """
SELECT rolsuper, has_database_privilege(current_database(), 'CREATE'), current_user, current_database()
FROM pg_roles WHERE rolname = current_user
"""


class ExtensionsError(PgmigrateError):
    pass


def needed_extensions(source_conn, required=(), from_source=True):
    """{name: {"version": source version or None, "schema": source schema or None}}, sorted by name."""
    needed = {name: {"version": None, "schema": None} for name in required}
    if from_source:
        with source_conn.cursor() as cur:
            cur.execute(SOURCE_EXTENSIONS)
            for name, version, schema in cur.fetchall():
                needed[name] = {"version": version, "schema": schema}
    source_conn.rollback()
    return dict(sorted(needed.items()))


def plan(needed, target_conn, substitutes=None):
    """One entry per needed extension: what the target has, what will be done, and the problem (if any).
    substitutes (migration_extension_substitutes): extensions that, when the target server cannot provide them,
    are left out (the assessment checked that their substitutes cover what the schema uses; the copy creates
    those), not created and not a problem."""
    with target_conn.cursor() as cur:
        cur.execute(TARGET_STATE, (list(needed),))
        state = {row[0]: row[1:] for row in cur.fetchall()}
        cur.execute(RIGHTS)
        superuser, can_create, user, database = cur.fetchone()
        cur.execute("SELECT nspname FROM pg_namespace")
        schemas = {row[0] for row in cur.fetchall()}
    target_conn.rollback()
    entries = []
    for name, source in needed.items():
        entry = {"name": name, "source_version": source["version"], "source_schema": source["schema"],
                 "target_default_version": None, "target_installed_version": None, "action": "none",
                 "problem": None, "note": None}
        entries.append(entry)
        if name not in state and name in (substitutes or {}):
            entry["action"] = "left out"
            entry["note"] = ("not available on the target server: the copy leaves it out and creates in its place "
                             "what migration_extension_substitutes gives")
            continue
        if name not in state:
            entry["problem"] = (
                f"extension {name} is not available on the target server: install its package there "
                f"(for PostgreSQL's own extensions postgresql-contrib, else e.g. postgresql-<major>-{name})")
            continue
        versions, trusted, default_version, installed_version, installed_schema = state[name]
        entry.update(target_default_version=default_version, target_installed_version=installed_version,
                     target_available_versions=list(versions))
        wanted = source["version"] or default_version
        if installed_version:
            if source["version"] and installed_version != source["version"]:
                entry["note"] = (f"installed at version {installed_version} on the target, {source['version']} "
                                 "on the source")
            continue
        if wanted not in versions:
            entry["problem"] = (
                f"extension {name} {wanted} (the source's version) is not available on the target server, "
                f"which offers {', '.join(versions)}: install the matching package on the target server, or "
                f"run ALTER EXTENSION {name} UPDATE on the source first")
            continue
        if not superuser and not (trusted and can_create):
            why = "is not a trusted extension" if not trusted else f"lacks CREATE on database {database}"
            entry["problem"] = (
                f"the target login {user} may not create extension {name}: it is no superuser and {name} {why}. "
                f'Ask a superuser to run CREATE EXTENSION IF NOT EXISTS "{name}" VERSION \'{wanted}\' in '
                f"database {database} on the target, then rerun")
            continue
        schema = source["schema"] if source["schema"] in schemas else None
        if source["schema"] and schema is None:
            entry["action"] = "left to the schema copy"
            entry["note"] = f"schema {source['schema']} does not exist on the target yet; the schema copy creates both"
            continue
        entry.update(action="create", version=wanted, schema=schema)
    return entries


def problems(entries):
    return [e["problem"] for e in entries if e["problem"]]


def report_lines(entries):
    lines = []
    for e in entries:
        source = f"{e['source_version']} in {e['source_schema']}" if e["source_version"] else "not on the source"
        target = (f"installed {e['target_installed_version']}" if e["target_installed_version"]
                  else f"available {e['target_default_version']}" if e["target_default_version"] else "unavailable")
        outcome = e["problem"] and f"PROBLEM: {e['problem']}" or e["action"]
        lines.append(f"{e['name']}: source {source}; target {target}; {outcome}"
                     + (f" ({e['note']})" if e.get("note") else ""))
    return lines
