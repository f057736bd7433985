"""Compare two PostgreSQL databases, for test assertions (plain psycopg2, no project code).

    differences = compare_databases(src_params, dst_params)
    assert differences == [], "\\n".join(differences)

``params`` are dicts with host, port, user, password and dbname (the conftest fixtures' shape).
Both sides are read concurrently, in one REPEATABLE READ read-only transaction each, as a role that
can read every table (a superuser in the tests).

What is compared (user objects only: system schemas and extension members are skipped):

* schemas and extensions (name, version, schema);
* relations: kind, persistence (unlogged), partition key and bound, inheritance parents, the RLS
  flags relrowsecurity / relforcerowsecurity;
* columns of tables, views and composite types: position, type, NOT NULL, default, identity,
  generated expression, collation;
* rows of every table of relkind 'r' (partitions included, partitioned parents not, and FROM ONLY so
  inheritance children are not counted twice): a multiset digest computed by the server, count(*) and
  the exact sum of the first 64 bits of md5(row text) as signed integers, so duplicates count and row
  order does not matter;
* sequences: data type, start, increment, bounds, cache, cycle, owning column, last_value, is_called;
* constraints (pg_get_constraintdef), indexes (pg_get_indexdef, validity), triggers
  (pg_get_triggerdef, enabled state; internal ones skipped), policies;
* views (definition), materialized views (definition, populated flag, row count and digest);
* enums (labels in sort order), domains (base type, NOT NULL, default, constraints), functions
  (pg_get_functiondef).

Row text depends on session settings, so every session pins TimeZone, DateStyle, IntervalStyle,
extra_float_digits, bytea_output and search_path, and turns row_security off (a table whose
policies would hide rows raises an error instead of silently comparing a subset).
"""

import collections
import concurrent.futures
import pathlib

import psycopg2
from psycopg2 import sql

HARD_CASES_SQL = pathlib.Path(__file__).resolve().parent / "fixtures" / "hard_cases.sql"

SESSION_SETTINGS = (
    ("search_path", "pg_catalog"),
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("lc_monetary", "C"),
    ("row_security", "off"),
    ("statement_timeout", "0"),
)

TableDigest = collections.namedtuple("TableDigest", "rows digest")

# Relations in user schemas that are not members of an extension. Alias c = pg_class, n = namespace.
_USER_REL = """
    n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
    AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
"""
_QUALNAME = "quote_ident(n.nspname) || '.' || quote_ident(c.relname)"


def connect(params):
    keys = ("host", "port", "user", "password", "dbname")
    conn = psycopg2.connect(**{k: params[k] for k in keys if params.get(k) is not None})
    conn.set_client_encoding("UTF8")  # psycopg2 quotes non-ASCII identifiers wrongly on a LATIN1 connection
    conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
    with conn.cursor() as cur:
        for name, value in SESSION_SETTINGS:
            cur.execute("SELECT set_config(%s, %s, false)", (name, value))
    return conn


def load_hard_cases(params, path=HARD_CASES_SQL):
    """Run tests/fixtures/hard_cases.sql (or another script) into the database, in one transaction."""
    keys = ("host", "port", "user", "password", "dbname")
    conn = psycopg2.connect(**{k: params[k] for k in keys if params.get(k) is not None})
    try:
        with conn, conn.cursor() as cur:
            cur.execute(pathlib.Path(path).read_text(encoding="utf-8"))
    finally:
        conn.close()


def _rows(cur, query, args=None):
    cur.execute(query, args)
    return cur.fetchall()


# (r.*)::text, never r::text: with a column named like the alias, "r" would be that column.
# sum(bigint) accumulates exactly (numeric result), so the digest is a true multiset sum.
_DIGEST_SQL = """
    SELECT count(*), coalesce(sum(('x' || left(md5((r.*)::text), 16))::bit(64)::bigint), 0)
      FROM ONLY {} AS r
"""


def _digest_query(schema, name):
    return sql.SQL(_DIGEST_SQL).format(sql.Identifier(schema, name))


def _digest(cur, schema, name):
    cur.execute(_digest_query(schema, name))
    rows, digest = cur.fetchone()
    return TableDigest(rows, str(digest))


def _tables(cur, relkinds=("r",)):
    return _rows(
        cur,
        f"SELECT {_QUALNAME}, n.nspname, c.relname, c.relispopulated FROM pg_class c"
        f" JOIN pg_namespace n ON n.oid = c.relnamespace"
        f" WHERE c.relkind = ANY(%s) AND {_USER_REL} ORDER BY 1",
        (list(relkinds),),
    )


def _table_digests(cur):
    return {qual: _digest(cur, schema, name) for qual, schema, name, _ in _tables(cur)}


def table_digests(params):
    """{qualified table name: TableDigest(rows, digest)} for every user table of relkind 'r'."""
    conn = connect(params)
    try:
        with conn.cursor() as cur:
            return _table_digests(cur)
    finally:
        conn.close()


def _keyed(cur, query, args=None):
    """{key: {column: value}} from a query whose first column is the key; other columns are named."""
    cur.execute(query, args)
    names = [column.name for column in cur.description[1:]]
    return {row[0]: dict(zip(names, row[1:], strict=True)) for row in cur.fetchall()}


def _snapshot(cur):
    """Everything compared, as {category: {key: value}}; a value is a {field: value} dict or a scalar."""
    snap = {}
    snap["schema"] = _keyed(
        cur,
        "SELECT quote_ident(nspname) FROM pg_namespace"
        " WHERE nspname NOT IN ('pg_catalog', 'information_schema')"
        " AND nspname !~ '^pg_(toast|temp_|toast_temp_)'",
    )
    snap["extension"] = _keyed(
        cur,
        "SELECT e.extname, e.extversion AS version, n.nspname AS schema FROM pg_extension e"
        " JOIN pg_namespace n ON n.oid = e.extnamespace",
    )
    snap["relation"] = _keyed(
        cur,
        f"""SELECT {_QUALNAME}, c.relkind, c.relpersistence,
                   CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partition_key,
                   pg_get_expr(c.relpartbound, c.oid) AS partition_bound,
                   (SELECT string_agg(p.oid::regclass::text, ', ' ORDER BY i.inhseqno)
                      FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
                     WHERE i.inhrelid = c.oid) AS inherits,
                   c.relrowsecurity, c.relforcerowsecurity
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 'c') AND {_USER_REL}""",
    )
    # position = rank among live columns: dropped columns leave attnum gaps that a copy need not keep
    snap["column"] = _keyed(
        cur,
        f"""SELECT {_QUALNAME} || ' column ' || quote_ident(a.attname),
                   rank() OVER (PARTITION BY c.oid ORDER BY a.attnum) AS position,
                   format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
                   pg_get_expr(ad.adbin, ad.adrelid) AS default, a.attidentity AS identity,
                   a.attgenerated AS generated,
                   CASE WHEN a.attcollation <> t.typcollation THEN co.collname END AS collation
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
              JOIN pg_type t ON t.oid = a.atttypid
              LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
              LEFT JOIN pg_collation co ON co.oid = a.attcollation
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c') AND {_USER_REL}""",
    )
    snap["constraint"] = _keyed(
        cur,
        f"""SELECT {_QUALNAME} || ' constraint ' || quote_ident(con.conname),
                   con.contype AS type, pg_get_constraintdef(con.oid) AS definition
              FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {_USER_REL}""",
    )
    snap["index"] = _keyed(
        cur,
        f"""SELECT {_QUALNAME} || ' index ' || quote_ident(ic.relname),
                   pg_get_indexdef(i.indexrelid) AS definition, i.indisvalid AS valid,
                   i.indisclustered AS clustered
              FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
              JOIN pg_class ic ON ic.oid = i.indexrelid
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {_USER_REL}""",
    )
    snap["trigger"] = _keyed(
        cur,
        f"""SELECT {_QUALNAME} || ' trigger ' || quote_ident(tg.tgname),
                   pg_get_triggerdef(tg.oid) AS definition, tg.tgenabled AS enabled
              FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE NOT tg.tgisinternal AND {_USER_REL}""",
    )
    snap["policy"] = _keyed(
        cur,
        f"""SELECT {_QUALNAME} || ' policy ' || quote_ident(p.polname),
                   p.polcmd AS command, p.polpermissive AS permissive,
                   ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r)::text END
                           FROM unnest(p.polroles) AS r ORDER BY 1) AS roles,
                   pg_get_expr(p.polqual, p.polrelid) AS using,
                   pg_get_expr(p.polwithcheck, p.polrelid) AS with_check
              FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {_USER_REL}""",
    )
    snap["sequence"] = _keyed(
        cur,
        f"""SELECT {_QUALNAME}, n.nspname, c.relname, format_type(s.seqtypid, NULL) AS type,
                   s.seqstart AS start, s.seqincrement AS increment, s.seqmin AS min, s.seqmax AS max,
                   s.seqcache AS cache, s.seqcycle AS cycle,
                   (SELECT d.refobjid::regclass::text || '.' || quote_ident(a.attname)
                      FROM pg_depend d JOIN pg_attribute a
                        ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                     WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                       AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0
                       AND d.deptype IN ('a', 'i')) AS owned_by
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              JOIN pg_sequence s ON s.seqrelid = c.oid
             WHERE c.relkind = 'S' AND {_USER_REL}""",
    )
    for state in snap["sequence"].values():
        schema, name = state.pop("nspname"), state.pop("relname")
        cur.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(schema, name)))
        state["last_value"], state["is_called"] = cur.fetchone()
    snap["view"] = _keyed(
        cur,
        f"""SELECT {_QUALNAME}, c.relkind, pg_get_viewdef(c.oid, true) AS definition
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('v', 'm') AND {_USER_REL}""",
    )
    snap["materialized view contents"] = {
        qual: _digest(cur, schema, name) if populated else "not populated"
        for qual, schema, name, populated in _tables(cur, ("m",))
    }
    snap["enum"] = {
        qual: labels
        for qual, labels in _rows(
            cur,
            """SELECT quote_ident(n.nspname) || '.' || quote_ident(t.typname),
                      ARRAY(SELECT e.enumlabel FROM pg_enum e WHERE e.enumtypid = t.oid
                            ORDER BY e.enumsortorder)
                 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                WHERE t.typtype = 'e' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                                  AND d.objid = t.oid AND d.deptype = 'e')""",
        )
    }
    snap["domain"] = _keyed(
        cur,
        """SELECT quote_ident(n.nspname) || '.' || quote_ident(t.typname),
                  format_type(t.typbasetype, t.typtypmod) AS base_type, t.typnotnull AS not_null,
                  t.typdefault AS default,
                  ARRAY(SELECT con.conname || ' ' || pg_get_constraintdef(con.oid)
                          FROM pg_constraint con WHERE con.contypid = t.oid ORDER BY 1) AS constraints
             FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE t.typtype = 'd' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                              AND d.objid = t.oid AND d.deptype = 'e')""",
    )
    snap["function"] = {
        signature: definition
        for signature, definition in _rows(
            cur,
            """SELECT quote_ident(n.nspname) || '.' || quote_ident(p.proname)
                      || '(' || pg_get_function_identity_arguments(p.oid) || ')',
                      pg_get_functiondef(p.oid)
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE p.prokind IN ('f', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                                  AND d.objid = p.oid AND d.deptype = 'e')""",
        )
    }
    snap["large object"] = _keyed(
        cur,
        """SELECT m.oid, pg_get_userbyid(m.lomowner) AS owner, m.lomacl::text AS acl,
                  obj_description(m.oid, 'pg_largeobject') AS comment, md5(lo_get(m.oid)) AS md5
             FROM pg_largeobject_metadata m""",
    )
    snap["rows"] = _table_digests(cur)
    return snap


def _read_snapshot(params):
    conn = connect(params)
    try:
        with conn.cursor() as cur:
            return _snapshot(cur)
    finally:
        conn.close()


def _show(value, limit=300):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


def _diff(category, source, target):
    differences = []
    for key in sorted(source.keys() | target.keys()):
        if key not in target:
            differences.append(f"{category} {key}: missing in target")
        elif key not in source:
            differences.append(f"{category} {key}: only in target, not in source")
        elif source[key] != target[key]:
            src, dst = source[key], target[key]
            if isinstance(src, dict) and isinstance(dst, dict):
                fields = [f for f in src.keys() | dst.keys() if src.get(f) != dst.get(f)]
                detail = "; ".join(
                    f"{f}: source {_show(src.get(f))} != target {_show(dst.get(f))}" for f in sorted(fields)
                )
            else:
                detail = f"source {_show(src)} != target {_show(dst)}"
            differences.append(f"{category} {key}: {detail}")
    return differences


def _diff_rows(source, target):
    differences = []
    for key in sorted(source.keys() & target.keys()):  # missing tables are reported as relations
        src, dst = source[key], target[key]
        if src != dst:
            what = "row counts" if src.rows != dst.rows else "contents (same row count)"
            differences.append(
                f"rows {key}: {what} differ: source {src.rows} rows digest {src.digest},"
                f" target {dst.rows} rows digest {dst.digest}"
            )
    return differences


def compare_databases(src_params, dst_params):
    """Human-readable differences between two databases; [] when they are equal."""
    # The two servers are read concurrently (psycopg2 releases the GIL while a query runs).
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        source, target = pool.map(_read_snapshot, (src_params, dst_params))
    differences = []
    for category in source:
        if category == "rows":
            differences += _diff_rows(source[category], target[category])
        else:
            differences += _diff(category, source[category], target[category])
    return differences
