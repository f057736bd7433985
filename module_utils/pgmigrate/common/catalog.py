"""Read what the migration needs to know from a database's catalog.

Everything is read from pg_catalog so it works for any database: several schemas, quoted and
mixed-case names, partitioned tables, generated and identity columns, sequences shared by several
tables or living in other schemas, foreign keys (including cycles and self-references).
"""

from psycopg2 import sql

# Schemas never migrated: PostgreSQL's own, and the tool's own state schema.
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
STATE_SCHEMA = "_pgmigrate"
FIRST_NORMAL_OID = 16384

TABLES_QUERY = """
SELECT c.oid, n.nspname, c.relname, c.relkind, c.relispartition,
       format('%%I.%%I', n.nspname, c.relname) AS qualname,
       CASE WHEN c.relispartition THEN (
           SELECT format('%%I.%%I', pn.nspname, pc.relname)
           FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhparent
           JOIN pg_namespace pn ON pn.oid = pc.relnamespace WHERE i.inhrelid = c.oid) END AS parent,
       {sizes},
       current_setting('block_size')::int AS block_size,
       c.reltuples::bigint AS row_estimate,
       c.relrowsecurity, c.relforcerowsecurity,
       c.relpersistence,
       EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal) AS has_user_triggers
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN %(excluded)s AND n.nspname NOT LIKE 'pg_temp%%' AND n.nspname NOT LIKE 'pg_toast%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
ORDER BY n.nspname, c.relname
"""

# Each table's sizes: exact (what the assessment reports and the copy plans by; total_bytes, as
# pg_total_relation_size, is table_bytes + index_bytes, read without sizing the table twice), or, for a reader
# that only orders and batches its reads (the validator), the table's data and TOAST without their free-space
# and visibility maps and without indexes: a third of the cost on thousands of tables (each size function
# opens the relation and its files).
EXACT_SIZES = ("pg_table_size(c.oid) AS table_bytes, pg_indexes_size(c.oid) AS index_bytes, "
               "pg_relation_size(c.oid) AS heap_bytes")
DATA_SIZES = ("pg_relation_size(c.oid) + COALESCE(pg_relation_size(NULLIF(c.reltoastrelid, 0)), 0) AS table_bytes, "
              "0 AS index_bytes, pg_relation_size(c.oid) AS heap_bytes")

COLUMNS_QUERY = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
       a.attgenerated <> '' AS generated, a.attidentity, pg_get_expr(d.adbin, d.adrelid) AS default_expr,
       t.oid AS type_oid, t.typtype, t.typcategory, t.typelem, t.typbasetype,
       CASE WHEN t.typelem <> 0 THEN (SELECT e.typtype FROM pg_type e WHERE e.oid = t.typelem) END AS elem_typtype,
       t.typsend <> 0 AND t.typreceive <> 0 AS binary_io
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = ANY(%(oids)s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

KEYS_QUERY = """
SELECT con.conrelid, con.conname, con.contype,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.ord) AS columns
FROM pg_constraint con
WHERE con.contype IN ('p', 'u') AND con.conrelid = ANY(%(oids)s)
ORDER BY con.conrelid, con.contype, con.conname
"""

# Primary and unique keys whose index can be built first and attached afterwards (ALTER TABLE ... ADD
# CONSTRAINT ... USING INDEX): ordinary tables that are no partitions nor inheritance children, indexes in the default
# tablespace. Run with search_path = pg_catalog so that the definitions name every table with its schema.
KEY_INDEXES_QUERY = """
SELECT format('%%I.%%I', n.nspname, c.relname) AS table_qualname, con.conname, quote_ident(con.conname),
       con.contype, con.condeferrable, con.condeferred, pg_get_indexdef(con.conindid) AS index_definition
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class ic ON ic.oid = con.conindid
WHERE con.contype IN ('p', 'u') AND con.conrelid = ANY(%(oids)s)
  AND c.relkind = 'r' AND NOT c.relispartition AND ic.reltablespace = 0
  -- An inheritance child's key is added as the dump writes it: from PostgreSQL 18 on, a key attached
  -- USING INDEX makes the NOT NULL the child inherits a constraint of its own (pg_dump then writes it).
  AND NOT EXISTS (SELECT FROM pg_inherits i WHERE i.inhrelid = c.oid)
ORDER BY 1, 2
"""

FOREIGN_KEYS_QUERY = """
SELECT con.conname, con.conrelid, con.confrelid,
       format('%%I.%%I', n.nspname, c.relname) AS child, format('%%I.%%I', fn.nspname, fc.relname) AS parent,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.ord) AS columns,
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum ORDER BY k.ord)
         AS parent_columns,
       con.condeferrable, con.convalidated, pg_get_constraintdef(con.oid) AS definition,
       con.conparentid <> 0 AS inherited
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class fc ON fc.oid = con.confrelid JOIN pg_namespace fn ON fn.oid = fc.relnamespace
WHERE con.contype = 'f' AND n.nspname NOT IN %(excluded)s
ORDER BY child, con.conname
"""

# Every sequence with the columns it feeds: through a column default (nextval), an identity
# column, or OWNED BY. A sequence may feed several tables, in other schemas than its own.
SEQUENCES_QUERY = """
WITH feeds AS MATERIALIZED (
    SELECT d.refobjid AS seq, ad.adrelid AS rel, ad.adnum AS attnum        -- a default calls nextval()
    FROM pg_depend d JOIN pg_attrdef ad ON ad.oid = d.objid
    WHERE d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_class'::regclass
    UNION
    SELECT d.objid, d.refobjid, d.refobjsubid                             -- identity column or OWNED BY
    FROM pg_depend d
    WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
      AND d.refobjsubid > 0
), feed_lists AS (
    SELECT f.seq, json_agg(DISTINCT jsonb_build_object(
               'table', format('%%I.%%I', tn.nspname, tc.relname), 'column', a.attname)) AS feeds
    FROM feeds f JOIN pg_class tc ON tc.oid = f.rel JOIN pg_namespace tn ON tn.oid = tc.relnamespace
    JOIN pg_attribute a ON a.attrelid = f.rel AND a.attnum = f.attnum
    GROUP BY f.seq
)
SELECT s.oid, format('%%I.%%I', n.nspname, s.relname) AS qualname, n.nspname, s.relname,
       sq.seqincrement, sq.seqmin, sq.seqmax, COALESCE(fl.feeds, '[]'::json) AS feeds
FROM pg_class s JOIN pg_namespace n ON n.oid = s.relnamespace JOIN pg_sequence sq ON sq.seqrelid = s.oid
LEFT JOIN feed_lists fl ON fl.seq = s.oid
WHERE s.relkind = 'S' AND n.nspname NOT IN %(excluded)s
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = s.oid
                  AND d.deptype = 'e')
ORDER BY qualname
"""

EXTENSIONS_QUERY = """
SELECT e.extname, e.extversion, n.nspname AS schema
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace ORDER BY e.extname
"""

VIEWS_QUERY = """
SELECT format('%%I.%%I', n.nspname, c.relname) AS qualname, c.relkind, c.relispopulated, c.oid
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN %(excluded)s
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
ORDER BY c.oid
"""

INDEXES_QUERY = """
SELECT format('%%I.%%I', n.nspname, ic.relname) AS qualname, n.nspname, ic.relname,
       format('%%I.%%I', tn.nspname, tc.relname) AS table, i.indisvalid, i.indisprimary, i.indisunique
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace
JOIN pg_class tc ON tc.oid = i.indrelid JOIN pg_namespace tn ON tn.oid = tc.relnamespace
WHERE tn.nspname NOT IN %(excluded)s
ORDER BY qualname
"""

# The plan's phase 1 query: per-column statistics of the application's schema.
PG_STATS_QUERY = """
SELECT schemaname, tablename, attname, n_distinct, null_frac, avg_width
FROM pg_stats WHERE schemaname NOT IN %(excluded)s
ORDER BY schemaname, tablename, attname
"""


def excluded_schemas(extra=()):
    return tuple(SYSTEM_SCHEMAS) + (STATE_SCHEMA,) + tuple(extra)


# The reg* types (regclass, regtype, regproc, ...): binary COPY sends the object's OID, which differs
# between servers; text COPY sends its name.
OID_ALIAS_TYPES = {24, 2202, 2203, 2204, 2205, 2206, 3734, 3769, 4089, 4096, 4191}


def _binary_copy_safe(columns):
    """COPY's binary format embeds type OIDs for arrays and composites: those of user-defined
    types differ between two servers, so such tables travel in text format (as do reg* columns)."""
    for column in columns:
        if OID_ALIAS_TYPES & {column["type_oid"], column["typelem"], column["typbasetype"]}:
            return False
        # Types without binary send/receive functions (isn's isbn13, seg, ...): COPY refuses binary.
        if not column.get("binary_io", True):
            return False
        if column["typtype"] == "c" and column["type_oid"] >= FIRST_NORMAL_OID:
            return False
        if column["typelem"] and column["typcategory"] == "A" and (
            column["typelem"] >= FIRST_NORMAL_OID or column["elem_typtype"] in ("c", "d", "e")
        ):
            return False
        if column["type_oid"] >= FIRST_NORMAL_OID and column["typtype"] not in ("e", "d", "b"):
            return False
        if column["typtype"] == "d" and column["typbasetype"] >= FIRST_NORMAL_OID:
            return False
    return True


# Sequences whose state is read in one statement (one round trip per sequence was most of the time of a
# catalog of thousands of them).
# A UNION ALL of many sequences costs more to plan than to run (2,400 sequences: 0.32 s at 500 a statement,
# 0.09-0.17 s at 50, 2.5 s at 2,400).
SEQUENCE_STATE_BATCH = 50


def read_sequence_states(cur, sequences):
    """Set each sequence's last_value and is_called, from a UNION ALL of SEQUENCE_STATE_BATCH at a time."""
    for start in range(0, len(sequences), SEQUENCE_STATE_BATCH):
        batch = sequences[start:start + SEQUENCE_STATE_BATCH]
        cur.execute(sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}, last_value, is_called FROM {}").format(
                sql.Literal(i), sql.Identifier(sequence["schema"], sequence["name"]))
            for i, sequence in enumerate(batch)))
        for i, last_value, is_called in cur.fetchall():
            batch[i]["last_value"], batch[i]["is_called"] = last_value, is_called


def read_catalog(conn, exclude_schemas=(), include_schemas=(), sequence_states=True, exact_sizes=True):
    """Return a JSON-serialisable description of the database behind conn. sequence_states=False leaves
    out each sequence's last_value and is_called (one read of every sequence), for a reader that only plans.
    exact_sizes=False: table_bytes (and total_bytes) is the table's data and TOAST only, database_bytes is not
    read (0), for a reader that only orders its reads by size."""
    params = {"excluded": excluded_schemas(exclude_schemas)}
    with conn.cursor() as cur:
        cur.execute(
            "SELECT current_database(), current_setting('server_version_num')::int, "
            "current_setting('server_version'), " + ("pg_database_size(current_database())" if exact_sizes else "0")
        )
        database, version_num, version, database_bytes = cur.fetchone()

        cur.execute(TABLES_QUERY.format(sizes=EXACT_SIZES if exact_sizes else DATA_SIZES), params)
        tables = {}
        for row in cur.fetchall():
            (oid, schema, name, relkind, is_partition, qualname, parent, table_bytes, index_bytes, heap_bytes,
             block_size, row_estimate, rls, force_rls, persistence, has_triggers) = row
            total_bytes = table_bytes + index_bytes
            if include_schemas and schema not in include_schemas:
                continue
            tables[oid] = {
                "oid": oid, "schema": schema, "name": name, "qualname": qualname,
                "partitioned": relkind == "p", "is_partition": is_partition, "parent": parent,
                "table_bytes": table_bytes, "total_bytes": total_bytes, "heap_bytes": heap_bytes,
                "pages": heap_bytes // block_size, "row_estimate": max(row_estimate, 0),
                "row_security": rls, "force_row_security": force_rls, "unlogged": persistence == "u",
                "has_user_triggers": has_triggers, "columns": [], "primary_key": None, "unique_keys": [],
            }
        oids = list(tables)

        cur.execute(COLUMNS_QUERY, {"oids": oids})
        for (relid, name, type_, notnull, generated, identity, default, type_oid, typtype, typcategory,
             typelem, typbasetype, elem_typtype, binary_io) in cur.fetchall():
            tables[relid]["columns"].append({
                "name": name, "type": type_, "not_null": notnull, "generated": generated,
                "identity": {"a": "always", "d": "by default"}.get(identity), "default": default,
                "type_oid": type_oid, "typtype": typtype, "typcategory": typcategory, "typelem": typelem,
                "typbasetype": typbasetype, "elem_typtype": elem_typtype, "binary_io": binary_io,
            })

        cur.execute(KEYS_QUERY, {"oids": oids})
        for relid, conname, contype, columns in cur.fetchall():
            if contype == "p":
                tables[relid]["primary_key"] = {"name": conname, "columns": list(columns)}
            else:
                tables[relid]["unique_keys"].append({"name": conname, "columns": list(columns)})

        cur.execute("SET LOCAL search_path = pg_catalog")
        cur.execute(KEY_INDEXES_QUERY, {"oids": oids})
        key_indexes = [
            {"table": t, "name": n, "quoted_name": q, "type": "PRIMARY KEY" if k == "p" else "UNIQUE",
             "deferrable": d, "deferred": dd, "index_definition": definition}
            for t, n, q, k, d, dd, definition in cur.fetchall()
        ]
        cur.execute("SET LOCAL search_path TO DEFAULT")

        for table in tables.values():
            table["copy_columns"] = [c["name"] for c in table["columns"] if not c["generated"]]
            table["generated_columns"] = [c["name"] for c in table["columns"] if c["generated"]]
            table["binary_copy"] = _binary_copy_safe(table["columns"])

        cur.execute(FOREIGN_KEYS_QUERY, params)
        foreign_keys = []
        for (name, child_oid, parent_oid, child, parent, columns, parent_columns, deferrable, validated,
             definition, inherited) in cur.fetchall():
            if child_oid not in tables:
                continue
            foreign_keys.append({
                "name": name, "child": child, "parent": parent, "columns": list(columns),
                "parent_columns": list(parent_columns), "deferrable": deferrable, "validated": validated,
                "definition": definition, "self_reference": child_oid == parent_oid, "inherited": inherited,
            })

        # Right after a restore the catalogs' statistics are stale (autovacuum has not analyzed them yet), and a
        # nested loop over the dependencies then takes minutes on thousands of sequences: hash joins only.
        cur.execute("SET enable_nestloop = off")
        cur.execute(SEQUENCES_QUERY, params)
        rows = cur.fetchall()
        cur.execute("RESET enable_nestloop")
        sequences = []
        for _oid, qualname, schema, name, increment, minimum, maximum, feeds in rows:
            sequences.append({
                "qualname": qualname, "schema": schema, "name": name, "increment": increment,
                "min": minimum, "max": maximum, "feeds": sorted(feeds, key=lambda f: (f["table"], f["column"])),
            })
        if sequence_states:
            read_sequence_states(cur, sequences)

        cur.execute(EXTENSIONS_QUERY)
        extensions = [{"name": n, "version": v, "schema": s} for n, v, s in cur.fetchall()]

        cur.execute(VIEWS_QUERY, params)
        views = [{"qualname": q, "materialized": k == "m", "populated": p} for q, k, p, _ in cur.fetchall()]

        cur.execute(INDEXES_QUERY, params)
        indexes = [
            {"qualname": q, "schema": s, "name": n, "table": t, "valid": v, "primary": p, "unique": u}
            for q, s, n, t, v, p, u in cur.fetchall()
        ]

    table_list = sorted(tables.values(), key=lambda t: t["qualname"])
    return {
        "database": database,
        "server_version_num": version_num,
        "server_version": version,
        "database_bytes": database_bytes,
        "schemas": sorted({t["schema"] for t in table_list}),
        "tables": table_list,
        "foreign_keys": foreign_keys,
        "sequences": sequences,
        "extensions": extensions,
        "views": views,
        "indexes": indexes,
        "key_indexes": key_indexes,
    }


def read_pg_stats(conn, exclude_schemas=()):
    """The plan's phase 1 query (per-column n_distinct, null_frac, avg_width)."""
    with conn.cursor() as cur:
        cur.execute(PG_STATS_QUERY, {"excluded": excluded_schemas(exclude_schemas)})
        return [
            {"schema": s, "table": t, "column": c, "n_distinct": float(nd) if nd is not None else None,
             "null_frac": float(nf) if nf is not None else None, "avg_width": aw}
            for s, t, c, nd, nf, aw in cur.fetchall()
        ]
