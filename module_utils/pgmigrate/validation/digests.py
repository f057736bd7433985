"""How rows are digested: each column as COPY transfers it, the row hash, the key and bucket expressions."""

import threading
from collections import namedtuple

from psycopg2 import sql

BUCKETS = 1024


BUCKETS_PER_PASS = 32


# Built-in types whose hash is exact (equal hash input only for identical values, whatever the collation
# once text-like ones are hashed under "C") and the same on every server. Every other type is hashed by
# its output function: the text COPY transfers (xml without its declaration, numeric with its scale,
# jsonb as written out, floats to the last digit), rendered identically on both sides (SESSION_SETTINGS).
EXACT_HASH_TYPES = {
    "bool", "int2", "int4", "int8", "text", "varchar", "name", "uuid", "date", "timestamp",
    "timestamptz", "time", "bytea", "oid", "char",
}


# The columns of several tables at once (the tables' names in order as a text[]; ordinality i from 1).
TYPES_QUERY = """
SELECT q.i, a.attname, t.typname, n.nspname, t.typtype, t.typcategory,
       et.typname AS elem_typname, en.nspname AS elem_nspname,
       bt.typname AS base_typname, bn.nspname AS base_nspname,
       a.attcollation <> 0 AS collatable, format('%%I.%%I', pn.nspname, p.proname) AS output_function
FROM unnest(%s::text[]) WITH ORDINALITY AS q(name, i)
JOIN pg_attribute a ON a.attrelid = q.name::regclass
JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace n ON n.oid = t.typnamespace
JOIN pg_proc p ON p.oid = t.typoutput JOIN pg_namespace pn ON pn.oid = p.pronamespace
LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
LEFT JOIN pg_namespace en ON en.oid = et.typnamespace
LEFT JOIN pg_type bt ON bt.oid = t.typbasetype AND t.typtype = 'd'
LEFT JOIN pg_namespace bn ON bn.oid = bt.typnamespace
WHERE a.attnum > 0 AND NOT a.attisdropped
ORDER BY q.i, a.attnum
"""


# Tables up to this size are digested together, up to DIGEST_BATCH_TABLES (and DIGEST_BATCH_BYTES) in one
# statement: on thousands of small tables the round trips, not the scans, were the cost.
DIGEST_SMALL_TABLE_BYTES = 1 << 20


DIGEST_BATCH_TABLES = 100


DIGEST_BATCH_BYTES = 8 << 20


Column = namedtuple("Column", "name typname nsp typtype category elem elem_nsp base base_nsp collatable output")


def _exact(typname, nspname):
    return nspname == "pg_catalog" and typname in EXACT_HASH_TYPES


def _is_exact(column):
    if column.category == "A":
        return column.elem is not None and _exact(column.elem, column.elem_nsp)
    if column.typtype == "d":
        return column.base is not None and _exact(column.base, column.base_nsp)
    return _exact(column.typname, column.nsp)


def column_expressions(column, alias="r", utf8=False):
    """How one column enters a row hash: an exact type by its value (text-like ones under "C", whose hash
    is bytewise; an array with its bounds too, which its hash ignores), any other by its output function.
    utf8 (the two servers' encodings differ): every text-like or text-output value by its UTF8 bytes, as the
    copy's text COPY carried it; hashed in each server's own encoding, equal text would differ."""
    column = Column(*column)
    ref = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(column.name))
    if utf8 and (column.collatable or not _is_exact(column)):
        return [sql.SQL("convert_to({}({})::text, 'UTF8')").format(sql.SQL(column.output), ref)]
    if not _is_exact(column):
        return [sql.SQL("{}({})::text").format(sql.SQL(column.output), ref)]
    value = sql.SQL('{} COLLATE "C"').format(ref) if column.collatable else ref
    if column.category == "A":
        return [value, sql.SQL("pg_catalog.array_dims({})").format(ref)]
    return [value]


def row_hash_expression(columns, alias="r", utf8=False):
    """SQL for a 64-bit hash of a row of the given columns (rows of TYPES_QUERY); utf8: column_expressions'."""
    parts = [part for column in columns for part in column_expressions(column, alias, utf8)]
    if not parts:
        return sql.SQL("0::bigint")
    # ROW() of one column is still a record; hash_record_extended is strict, so all-NULL rows hash to 0.
    return sql.SQL("COALESCE(hash_record_extended(ROW({}), 0), 0)").format(sql.SQL(", ").join(parts))


def _key_expression(key_columns, columns, alias="r", utf8=False):
    """The key's columns as they enter a hash (a key of a type without a hash function, money or bit
    varying, is hashed by its text)."""
    by_name = {column[0]: column for column in columns}
    return sql.SQL(", ").join(part for c in key_columns for part in column_expressions(by_name[c], alias, utf8))


def _bucket_expression(key_columns, columns, row_hash, alias="r", utf8=False):
    if key_columns:
        source = sql.SQL("hash_record_extended(ROW({}), 1)").format(
            _key_expression(key_columns, columns, alias, utf8))
    else:
        source = row_hash
    return sql.SQL("(COALESCE({}, 0) & {})").format(source, sql.Literal(BUCKETS - 1))


def uuid_key_column(key_columns, columns):
    """The key column when the key is one uuid: its rows are then bucketed by the uuid's top 10 bits,
    which follow the key's order, so a differing bucket is read back by an index range scan."""
    if not key_columns or len(key_columns) != 1:
        return None
    for name, typname, nsp, *_rest in columns:
        if name == key_columns[0] and typname == "uuid" and nsp == "pg_catalog":
            return name
    return None


def _uuid_bucket_expression(column, alias="r"):
    ref = sql.SQL("uuid_send({}.{})").format(sql.Identifier(alias), sql.Identifier(column))
    return sql.SQL("((get_byte({}, 0) << 2) | (get_byte({}, 1) >> 6))").format(ref, ref)


def _uuid_bound(bucket):
    value = f"{bucket >> 2:02x}{(bucket & 3) << 6:02x}" + "0" * 28
    return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"


def _uuid_ranges_condition(column, buckets, alias="r"):
    """(k >= lo AND k < hi) OR ... for the given buckets, contiguous ones merged."""
    ranges, ordered = [], sorted(buckets)
    for bucket in ordered:
        if ranges and ranges[-1][1] == bucket:
            ranges[-1][1] = bucket + 1
        else:
            ranges.append([bucket, bucket + 1])
    ref = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(column))
    parts = []
    for low, high in ranges:
        condition = sql.SQL("{} >= {}::uuid").format(ref, sql.Literal(_uuid_bound(low)))
        if high < BUCKETS:
            condition = sql.SQL("({} AND {} < {}::uuid)").format(condition, ref, sql.Literal(_uuid_bound(high)))
        parts.append(condition)
    return sql.SQL("({})").format(sql.SQL(" OR ").join(parts))


class DigestStatements:
    """The digest statement of a table, per table shape: the row hash and bucket expressions of a shape
    (its columns and key) are composed and rendered once per connection's encoding, then reused. On thousands
    of small tables psycopg2.sql's composition, not the server, was most of the digest's time."""

    def __init__(self, utf8=False):
        """utf8: the servers' encodings differ (column_expressions)."""
        self.utf8 = utf8
        self._rendered = {}
        self._lock = threading.Lock()

    def expressions(self, conn, columns, key):
        """(bucket, row hash) as SQL text for rows of these columns (TYPES_QUERY's) with this key (or None)."""
        shape = (conn.encoding, tuple(columns), tuple(key or ()))
        rendered = self._rendered.get(shape)
        if rendered is None:
            row_hash = row_hash_expression(columns, utf8=self.utf8)
            uuid_column = uuid_key_column(key, columns)
            bucket = (_uuid_bucket_expression(uuid_column) if uuid_column
                      else _bucket_expression(key, columns, row_hash, utf8=self.utf8))
            rendered = (bucket.as_string(conn), row_hash.as_string(conn))
            with self._lock:
                self._rendered[shape] = rendered
        return rendered

    def statement(self, conn, number, qualname, columns, key):
        """One table's part of a digest batch: (t, bucket, count, sum of row hashes) grouped by bucket.
        qualname is the catalog's quoted name (format('%I.%I'))."""
        bucket, row_hash = self.expressions(conn, columns, key)
        return (f"(SELECT {int(number)} AS t, {bucket} AS b, count(*), sum({row_hash}) "
                f"FROM ONLY {qualname} r GROUP BY 2)")


def table_key(table):
    """The primary key, or else a unique key of NOT NULL columns, or None."""
    if table.get("primary_key"):
        return table["primary_key"]["columns"]
    not_null = {c["name"] for c in table["columns"] if c["not_null"]}
    for unique in table.get("unique_keys", []):
        if all(c in not_null for c in unique["columns"]):
            return unique["columns"]
    return None
