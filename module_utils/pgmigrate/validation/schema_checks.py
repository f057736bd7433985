"""The schema: every object of the source in the target, and nothing more than the run added on purpose.

Across major versions (a PostgreSQL 15 source, an 18 target), what the servers render differs where the
database does not: version 16 and later write a one-table view's columns without their table's name, and
version 18 records each NOT NULL as a constraint of its own, and the constraints a server derives for each
partition from its parent's foreign key are named differently. NOT NULL is compared as the columns'
property and a partitioned table's constraints as its own (a partition's derived ones follow) on every
version, and view definitions rendered by different major versions are compared without the
qualifiers of their names (version_neutral_definition); the summary says so.
"""

import re
import time
from concurrent.futures import ThreadPoolExecutor

from ..common import catalog as catalog_module
from .checks import _check, _finish

SCHEMA_QUERIES = {
    "tables": """
        SELECT format('%%I.%%I', n.nspname, c.relname), c.relkind::text, c.relrowsecurity, c.relforcerowsecurity
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'f') AND n.nspname NOT IN %(excluded)s""",
    "columns": """
        SELECT format('%%I.%%I', n.nspname, c.relname), a.attname, format_type(a.atttypid, a.atttypmod),
               pg_get_expr(d.adbin, d.adrelid), a.attnotnull, a.attidentity::text, a.attgenerated::text
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped
          AND n.nspname NOT IN %(excluded)s""",
    "constraints": """
        SELECT format('%%I.%%I', n.nspname, c.relname), con.conname, pg_get_constraintdef(con.oid),
               con.convalidated, con.condeferrable, con.condeferred
        FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE con.contype <> 'n' AND con.conparentid = 0 AND n.nspname NOT IN %(excluded)s""",
    "indexes": """
        SELECT format('%%I.%%I', tn.nspname, t.relname), ic.relname, pg_get_indexdef(i.indexrelid)
        FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_namespace tn ON tn.oid = t.relnamespace WHERE tn.nspname NOT IN %(excluded)s""",
    "triggers": """
        SELECT format('%%I.%%I', n.nspname, c.relname), tg.tgname, pg_get_triggerdef(tg.oid), tg.tgenabled::text
        FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT tg.tgisinternal AND n.nspname NOT IN %(excluded)s""",
    "views": """
        SELECT format('%%I.%%I', n.nspname, c.relname), c.relkind::text, pg_get_viewdef(c.oid)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN %(excluded)s""",
    "extensions": "SELECT e.extname, e.extversion FROM pg_extension e",
}

# A name's qualifier: `"Content".` of "Content".pages, `u.` of u.id.
QUALIFIER = re.compile(r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)\.(?=["A-Za-z_])')


def version_neutral_definition(definition):
    """A view's definition without the qualifiers of its names, as every major version renders it alike."""
    return QUALIFIER.sub("", definition)


class SchemaChecks:
    def __init__(self, run):
        self.run = run  # context.ValidationRun

    def check_schema(self):
        started = time.monotonic()
        check = _check("schema", "Schema: tables, columns, constraints, indexes, triggers, views, extensions")
        with ThreadPoolExecutor(2) as pool:
            s = pool.submit(schema_objects, self.run.src_pool, self.run.exclude_schemas)
            d = pool.submit(schema_objects, self.run.dst_pool, self.run.exclude_schemas)
            src, dst = s.result(), d.result()
        versions_note = ""
        if src["server_major"] != dst["server_major"]:
            for objects in (src, dst):
                objects["views"] = {key: (kind, version_neutral_definition(definition))
                                    for key, (kind, definition) in objects["views"].items()}
            versions_note = (f"; view definitions, rendered by PostgreSQL {src['server_major']} and "
                             f"{dst['server_major']}, compared without the qualifiers of their names")
        by_table = {}
        added = self._added_extensions(src, dst, check)
        substituted = self._substituted_extensions(src, dst, check)
        for kind in ("tables", "columns", "constraints", "indexes", "triggers", "views", "extensions"):
            for key in sorted(set(src[kind]) | set(dst[kind])):
                a, b = src[kind].get(key), dst[kind].get(key)
                if a == b or (kind == "extensions" and key[1] in added | substituted):
                    continue
                owner = key[0] if kind != "extensions" else "(database)"
                label = " ".join(str(k) for k in key[1:]) if kind not in ("tables", "views", "extensions") \
                    else str(key[-1])
                noun = "index" if kind == "indexes" else kind[:-1]
                if a is None:
                    text = f"{noun} {label} exists only in the target"
                elif b is None:
                    text = f"{noun} {label} missing in the target"
                else:
                    text = f"{noun} {label}: source {a} / target {b}"
                by_table.setdefault(owner, []).append(text)
        for table, name in dst["invalid_indexes"]:
            by_table.setdefault(table, []).append(f"index {name} is INVALID in the target (failed CONCURRENTLY build?)")
        for table, differences in sorted(by_table.items()):
            check["items"].append({"table": table, "status": "fail", "detail": "; ".join(differences),
                                   "differences": differences})
        compared = len(src["tables"])
        added_note = f"; extension(s) added by the run: {', '.join(sorted(added))}" if added else ""
        if substituted:
            added_note += (f"; extension(s) the target server cannot provide, substituted as "
                           f"migration_extension_substitutes says: {', '.join(sorted(substituted))}")
        return _finish(check, started, f"{compared} tables and their objects identical{added_note}{versions_note}",
                       lambda f: f"{sum(len(i['differences']) for i in f)} difference(s) in " +
                                 ", ".join(i["table"] for i in f))

    def _added_extensions(self, src, dst, check):
        """The extensions the run added on purpose that the target has and the source has not: each a
        passing item saying so, never a difference."""
        added = {key[1] for key in set(dst["extensions"]) - set(src["extensions"])
                 if key[1] in self.run.added_extensions}
        for name in sorted(added):
            version = dst["extensions"][("(database)", name)][0]
            check["items"].append({"table": "(database)", "status": "pass",
                                   "detail": f"extension {name} {version} added by the run (not in the source)"})
        return added


    def _substituted_extensions(self, src, dst, check):
        """The source's extensions the target lacks, whose server cannot provide them, and that the profile
        substitutes (migration_extension_substitutes): each a passing item naming the functions in its place
        (those of its substitute's names the target has, outside any extension), never a difference."""
        candidates = sorted(key[1] for key in set(src["extensions"]) - set(dst["extensions"])
                            if key[1] in self.run.extension_substitutes)
        if not candidates:
            return set()
        with self.run.dst_pool.reading("reading the substitutes of extensions") as conn, conn.cursor() as cur:
            cur.execute("SELECT name FROM pg_available_extensions WHERE name = ANY(%s)", (candidates,))
            available = {row[0] for row in cur.fetchall()}
            substituted = [name for name in candidates if name not in available]
            found = {}
            for name in substituted:
                functions = sorted(self.run.extension_substitutes[name] or {})
                cur.execute("""
                    SELECT pg_describe_object('pg_proc'::regclass, p.oid, 0) FROM pg_proc p
                    JOIN pg_namespace n ON n.oid = p.pronamespace
                    WHERE p.proname = ANY(%s) AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                      AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                                      AND d.objid = p.oid AND d.deptype = 'e')
                    ORDER BY 1""", (functions,))
                found[name] = [row[0] for row in cur.fetchall()]
        for name in substituted:
            version = src["extensions"][("(database)", name)][0]
            instead = (f"in its place: {', '.join(found[name])}" if found[name]
                       else "nothing in its place (the schema uses none of its functions)")
            check["items"].append({"table": "(database)", "status": "pass", "detail": (
                f"extension {name} {version} of the source left out: the target server cannot provide it, and "
                f"migration_extension_substitutes says how the target does without it; {instead}")})
        return set(substituted)


def schema_objects(pool, exclude_schemas=()):
    """Schema objects as {kind: {key tuple: value tuple}} for comparison. Definitions are rendered with
    search_path = pg_catalog, so every name carries its schema whatever search_path the database, the
    role or the session sets: source and target compare alike."""
    params = {"excluded": catalog_module.excluded_schemas(exclude_schemas)}
    objects = {}
    with pool.reading("reading the schema") as conn, conn.cursor() as cur:
        cur.execute("SET LOCAL search_path = pg_catalog")
        for kind, query in SCHEMA_QUERIES.items():
            cur.execute(query, params)
            rows = cur.fetchall()
            if kind in ("tables", "views"):
                objects[kind] = {(r[0], r[0]): r[1:] for r in rows}
            elif kind == "extensions":
                objects[kind] = {("(database)", r[0]): (r[1],) for r in rows}
            else:
                objects[kind] = {(r[0], r[1]): r[2:] for r in rows}
        cur.execute("""
            SELECT format('%%I.%%I', tn.nspname, t.relname), ic.relname
            FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
            JOIN pg_namespace tn ON tn.oid = t.relnamespace
            WHERE NOT i.indisvalid AND tn.nspname NOT IN %(excluded)s""", params)
        objects["invalid_indexes"] = cur.fetchall()
        cur.execute("SELECT current_setting('server_version_num')::int / 10000")
        objects["server_major"] = cur.fetchone()[0]
    return objects
