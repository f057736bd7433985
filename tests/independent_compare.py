"""An independent check that a target database equals its source, for the corpus tests.

It shares no code with the engine's validator (module_utils/pgmigrate/validation/) nor with its
copier: what it compares is what PostgreSQL's own tools print.

    differences = compare(src_params, dst_params, owners=False, privileges=False)
    assert differences == [], "\\n".join(differences)

* rows: for every user table (partitions and inheritance children on their own, FROM ONLY) and every
  populated materialized view, the text of ``COPY (SELECT * FROM ...) TO STDOUT``, its lines sorted,
  so the comparison is of multisets of rows exactly as COPY transfers them;
* sequences: ``last_value`` and ``is_called`` of every sequence (identity ones included);
* schema: the text of ``pg_dump --schema-only`` of both databases, with ``--no-owner`` and
  ``--no-privileges`` unless owners and privileges are meant to be kept, and without the lines that
  legitimately differ (the dump's header: server and pg_dump versions, the ``\\restrict`` key);
* large objects: oids, an md5 of each one's contents (``lo_get``), comment, and under ``owners`` /
  ``privileges`` the owner and the ACL;
* database settings: ``pg_db_role_setting`` of the database (``ALTER DATABASE ... SET`` and
  ``ALTER ROLE ... IN DATABASE ... SET``);
* extensions: name, version and schema (a dump never writes an extension's version).

Across major versions (a target on a newer server), a schema dump differs by what the newer pg_dump and
server write, not by the migration: ``compare(..., schema_reference=ref, pg_bin=dir)`` then compares the
target's schema with that of ``ref``, the copy the newer version's own ``pg_dump | pg_restore`` made of the
same source on the target's server, both dumped by ``dir``'s pg_dump; everything else is still compared
with the source.

Sessions pin every setting that changes how values print (TimeZone, DateStyle, IntervalStyle,
extra_float_digits, bytea_output, lc_monetary, search_path) and turn row_security off, so a policy can
never hide rows silently (it raises instead). The caller's role must read everything: a superuser.
"""

import concurrent.futures
import difflib
import hashlib
import io
import os
import shutil
import subprocess

import psycopg2
from psycopg2 import sql

SESSION_SETTINGS = (
    ("search_path", "pg_catalog"),
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("lc_monetary", "C"),
    ("xmloption", "content"),
    ("row_security", "off"),
    ("statement_timeout", "0"),
)

# Header lines of a pg_dump text that depend on the servers and the run, not on the database.
_DUMP_VOLATILE_PREFIXES = ("-- Dumped from database version", "-- Dumped by pg_dump version",
                           "\\restrict ", "\\unrestrict ")

_USER_RELATIONS = """
    SELECT n.nspname, c.relname, c.relkind
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind = ANY(%s)
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
       AND (c.relkind <> 'm' OR c.relispopulated)
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                       AND d.objid = c.oid AND d.deptype = 'e')
     ORDER BY 1, 2
"""

_LARGE_OBJECTS = """
    SELECT m.oid, md5(lo_get(m.oid)), obj_description(m.oid, 'pg_largeobject'),
           pg_get_userbyid(m.lomowner), m.lomacl::text
      FROM pg_largeobject_metadata m ORDER BY m.oid
"""

_DATABASE_SETTINGS = """
    SELECT coalesce('role ' || r.rolname, 'for every role'),
           array_to_string(ARRAY(SELECT unnest(s.setconfig) ORDER BY 1), ' | ')
      FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole
     WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
     ORDER BY 1
"""


def connect(params):
    keys = ("host", "port", "user", "password", "dbname")
    conn = psycopg2.connect(**{k: params[k] for k in keys if params.get(k) is not None})
    conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
    with conn.cursor() as cur:
        for name, value in SESSION_SETTINGS:
            cur.execute("SELECT set_config(%s, %s, false)", (name, value))
    return conn


def _copy_lines(cur, schema, name, relkind):
    """The rows of one relation as COPY prints them, sorted."""
    only = sql.SQL("") if relkind == "m" else sql.SQL("ONLY ")
    statement = sql.SQL("COPY (SELECT * FROM {}{}) TO STDOUT").format(only, sql.Identifier(schema, name))
    buffer = io.BytesIO()
    cur.copy_expert(statement, buffer)
    lines = buffer.getvalue().split(b"\n")
    lines.pop()  # the text after the last newline is empty
    lines.sort()
    return lines


def _row_summary(lines):
    digest = hashlib.md5(b"\n".join(lines), usedforsecurity=False).hexdigest()
    return len(lines), digest


def _rows(cur):
    """{schema.name: (row count, md5 of the sorted COPY lines, sorted lines kept for a diff)}."""
    cur.execute(_USER_RELATIONS, (["r", "m"],))
    result = {}
    for schema, name, relkind in cur.fetchall():
        lines = _copy_lines(cur, schema, name, relkind)
        count, digest = _row_summary(lines)
        result[f"{schema}.{name}"] = (count, digest, lines if count <= 2000 else None)
    return result


def _sequences(cur):
    cur.execute(_USER_RELATIONS, (["S"],))
    result = {}
    for schema, name, _ in cur.fetchall():
        cur.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(schema, name)))
        result[f"{schema}.{name}"] = cur.fetchone()
    return result


def _large_objects(cur, owners, privileges):
    cur.execute(_LARGE_OBJECTS)
    result = {}
    for oid, digest, comment, owner, acl in cur.fetchall():
        entry = {"md5": digest, "comment": comment}
        if owners:
            entry["owner"] = owner
        if privileges:
            entry["acl"] = acl
        result[oid] = entry
    return result


def _extensions(cur):
    cur.execute("SELECT e.extname, e.extversion, n.nspname FROM pg_extension e"
                " JOIN pg_namespace n ON n.oid = e.extnamespace")
    return {name: f"version {version} in schema {schema}" for name, version, schema in cur.fetchall()}


def _settings(cur):
    cur.execute(_DATABASE_SETTINGS)
    return dict(cur.fetchall())


def _read(params, owners, privileges):
    conn = connect(params)
    try:
        with conn.cursor() as cur:
            return {
                "rows": _rows(cur),
                "sequence": _sequences(cur),
                "large object": _large_objects(cur, owners, privileges),
                "database setting": _settings(cur),
                "extension": _extensions(cur),
            }
    finally:
        conn.close()


def pg_dump_path(pg_bin=None):
    if pg_bin:
        return os.path.join(pg_bin, "pg_dump")
    for candidate in ("/usr/lib/postgresql/15/bin/pg_dump", shutil.which("pg_dump")):
        if candidate and os.path.exists(candidate):
            return candidate
    raise RuntimeError("pg_dump not found (install postgresql-client-15)")


def schema_dump(params, owners=False, privileges=False, pg_bin=None):
    """pg_dump --schema-only text of a database, its volatile header lines removed."""
    args = [pg_dump_path(pg_bin), "--schema-only", "--host", params["host"], "--port", str(params["port"]),
            "--username", params["user"], "--dbname", params["dbname"]]
    if not owners:
        args.append("--no-owner")
    if not privileges:
        args.append("--no-privileges")
    # The password reaches pg_dump through its environment, never its command line.
    env = {**os.environ, "PGPASSWORD": params["password"], "PGCONNECT_TIMEOUT": "10"}
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pg_dump of {params['dbname']} failed: {done.stderr.strip()}")
    return [line for line in done.stdout.splitlines() if not line.startswith(_DUMP_VOLATILE_PREFIXES)]


def _diff_rows(source, target):
    differences = []
    for key in sorted(source.keys() | target.keys()):
        if key not in target:
            differences.append(f"rows {key}: table missing in target")
            continue
        if key not in source:
            differences.append(f"rows {key}: table only in target")
            continue
        (src_count, src_md5, src_lines), (dst_count, dst_md5, dst_lines) = source[key], target[key]
        if (src_count, src_md5) == (dst_count, dst_md5):
            continue
        detail = f"rows {key}: source {src_count} rows md5 {src_md5}, target {dst_count} rows md5 {dst_md5}"
        if src_lines is not None and dst_lines is not None:
            only_src = sorted(set(src_lines) - set(dst_lines))[:2]
            only_dst = sorted(set(dst_lines) - set(src_lines))[:2]
            detail += f"; only in source {[line[:200] for line in only_src]}"
            detail += f"; only in target {[line[:200] for line in only_dst]}"
        differences.append(detail)
    return differences


def _diff_mapping(category, source, target):
    differences = []
    for key in sorted(source.keys() | target.keys(), key=str):
        if key not in target:
            differences.append(f"{category} {key}: missing in target (source {source[key]!r:.300})")
        elif key not in source:
            differences.append(f"{category} {key}: only in target ({target[key]!r:.300})")
        elif source[key] != target[key]:
            differences.append(f"{category} {key}: source {source[key]!r:.300} != target {target[key]!r:.300}")
    return differences


def _diff_dumps(source, target, context_lines=60):
    if source == target:
        return []
    diff = list(difflib.unified_diff(source, target, "source pg_dump --schema-only", "target pg_dump --schema-only",
                                     n=1, lineterm=""))
    shown = "\n".join(diff[:context_lines])
    more = f"\n... {len(diff) - context_lines} more diff lines" if len(diff) > context_lines else ""
    return [f"schema (pg_dump --schema-only) differs:\n{shown}{more}"]


def compare(src_params, dst_params, owners=False, privileges=False, schema_reference=None, pg_bin=None):
    """Human-readable differences between two databases; [] when the target equals the source.
    schema_reference, pg_bin: across major versions (see the module's documentation)."""
    schema_of = (schema_reference or src_params, dst_params)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        reads = pool.map(_read, (src_params, dst_params), (owners,) * 2, (privileges,) * 2)
        dumps = pool.map(schema_dump, schema_of, (owners,) * 2, (privileges,) * 2, (pg_bin,) * 2)
        source, target = reads
        source_dump, target_dump = dumps
    differences = _diff_rows(source.pop("rows"), target.pop("rows"))
    for category in source:
        differences += _diff_mapping(category, source[category], target[category])
    differences += _diff_dumps(source_dump, target_dump)
    return differences
