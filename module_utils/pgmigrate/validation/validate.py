"""Validation: prove the target equals the source, and pinpoint what differs.

Digests are computed inside each server, order-independently: per table the row count and the sum
of a 64-bit hash of every row (hash_record_extended over the row, with every column whose hash is
not exact across servers — xml, json, enums, floats, numerics, money, composites, ranges, user types —
hashed through its output function, that is by the text COPY transfers, in sessions that fix every
setting that text depends on). Rows hidden by row-level security are never silently skipped.
Source and target are read in parallel. Rows are bucketed by a hash of the key in that same scan,
so a mismatch costs one more scan per side: it hashes the key of every row but the whole row only
in the differing buckets, and names the missing, extra and changed keys. Tables without a key are
compared as multisets (duplicates count).
"""

import threading
import time
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from ..common import catalog as catalog_module
from ..common import column_extremes
from ..common.batching import consecutive_groups
from ..common.connection import connect, describe
from . import validate_large_objects

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
# Every setting an output function or a catalog function's rendering depends on, fixed in each of the
# validator's sessions so that source and target render alike whatever their servers, databases or
# roles set: definitions name every object with its schema (search_path), values look as COPY sends them.
SESSION_SETTINGS = (
    ("search_path", "pg_catalog"), ("DateStyle", "ISO, YMD"), ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"), ("TimeZone", "UTC"), ("lc_monetary", "C"), ("bytea_output", "hex"),
    ("default_transaction_read_only", "on"), ("row_security", "off"), ("statement_timeout", "0"),
)
# How long a read waits for the lock that lifts FORCE ROW LEVEL SECURITY inside its own transaction.
LIFT_LOCK_TIMEOUT = "60s"

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


class ValidationError(Exception):
    """Validation could not read what it must compare: the message names the table, the side and the fix."""


def _exact(typname, nspname):
    return nspname == "pg_catalog" and typname in EXACT_HASH_TYPES


def _is_exact(column):
    if column.category == "A":
        return column.elem is not None and _exact(column.elem, column.elem_nsp)
    if column.typtype == "d":
        return column.base is not None and _exact(column.base, column.base_nsp)
    return _exact(column.typname, column.nsp)


def column_expressions(column, alias="r"):
    """How one column enters a row hash: an exact type by its value (text-like ones under "C", whose hash
    is bytewise; an array with its bounds too, which its hash ignores), any other by its output function."""
    column = Column(*column)
    ref = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(column.name))
    if not _is_exact(column):
        return [sql.SQL("{}({})::text").format(sql.SQL(column.output), ref)]
    value = sql.SQL('{} COLLATE "C"').format(ref) if column.collatable else ref
    if column.category == "A":
        return [value, sql.SQL("pg_catalog.array_dims({})").format(ref)]
    return [value]


def row_hash_expression(columns, alias="r"):
    """SQL for a 64-bit hash of a row of the given columns (rows of TYPES_QUERY)."""
    parts = [part for column in columns for part in column_expressions(column, alias)]
    if not parts:
        return sql.SQL("0::bigint")
    # ROW() of one column is still a record; hash_record_extended is strict, so all-NULL rows hash to 0.
    return sql.SQL("COALESCE(hash_record_extended(ROW({}), 0), 0)").format(sql.SQL(", ").join(parts))


def _key_expression(key_columns, columns, alias="r"):
    """The key's columns as they enter a hash (a key of a type without a hash function, money or bit
    varying, is hashed by its text)."""
    by_name = {column[0]: column for column in columns}
    return sql.SQL(", ").join(part for c in key_columns for part in column_expressions(by_name[c], alias))


def _bucket_expression(key_columns, columns, row_hash, alias="r"):
    if key_columns:
        source = sql.SQL("hash_record_extended(ROW({}), 1)").format(_key_expression(key_columns, columns, alias))
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


def table_key(table):
    """The primary key, or else a unique key of NOT NULL columns, or None."""
    if table.get("primary_key"):
        return table["primary_key"]["columns"]
    not_null = {c["name"] for c in table["columns"] if c["not_null"]}
    for unique in table.get("unique_keys", []):
        if all(c in not_null for c in unique["columns"]):
            return unique["columns"]
    return None


def _rollback_quietly(conn):
    """End a failed transaction without letting a second error (a broken connection) hide the first."""
    try:
        conn.rollback()
    except psycopg2.Error:
        pass


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class ConnectionPool:
    """One connection per thread and side, reused across tasks, each with SESSION_SETTINGS."""

    def __init__(self, params, application_name, side="database"):
        self.params = params
        self.application_name = application_name
        self.side = side
        # Tables under FORCE ROW LEVEL SECURITY that the login owns: read past it (see reading()).
        self.lifted = set()
        self.local = threading.local()
        self.all = []
        self.lock = threading.Lock()

    def get(self):
        conn = getattr(self.local, "conn", None)
        if conn is None or conn.closed:
            conn = connect(self.params, application_name=self.application_name)
            with conn.cursor() as cur:
                for name, value in SESSION_SETTINGS:
                    cur.execute("SELECT set_config(%s, %s, false)", (name, value))
            conn.commit()
            self.local.conn = conn
            with self.lock:
                self.all.append(conn)
        return conn

    @contextmanager
    def reading(self, what, tables=()):
        """This thread's connection in a read transaction, always rolled back. The tables in it that are
        under FORCE ROW LEVEL SECURITY and owned by the login are read past it, as the copier writes them:
        NO FORCE inside this transaction only, never committed, so no other session ever sees it lifted.
        A database error becomes a ValidationError naming what was read and where."""
        conn = self.get()
        try:
            lift = sorted(set(tables) & self.lifted)  # always in the same order: no deadlock between workers
            if lift:
                self._lift_forced_row_security(conn, lift)
            yield conn
        except psycopg2.Error as error:
            _rollback_quietly(conn)
            raise ValidationError(f"{what} on the {self.side} failed: {_first_line(error)}") from error
        except BaseException:
            _rollback_quietly(conn)
            raise
        try:
            conn.rollback()
        except psycopg2.Error as error:
            raise ValidationError(f"{what} on the {self.side} failed: {_first_line(error)}") from error

    def _lift_forced_row_security(self, conn, tables):
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION READ WRITE")
            cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LIFT_LOCK_TIMEOUT)))
            for table in tables:
                try:
                    cur.execute(sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(sql.SQL(table)))
                except psycopg2.errors.LockNotAvailable:
                    raise ValidationError(
                        f"{table} on the {self.side} is under FORCE ROW LEVEL SECURITY, and reading it whole "
                        f"needs a moment's exclusive lock (inside the validator's own transaction, rolled "
                        f"back): another session held a lock on it for {LIFT_LOCK_TIMEOUT}. Rerun when it "
                        f"is done, or give the login BYPASSRLS.") from None

    def close(self):
        for conn in self.all:
            if not conn.closed:
                conn.close()


def _check(name, title):
    return {"name": name, "title": title, "status": "pass", "summary": "", "items": [], "seconds": 0.0}


def _finish(check, started, summary_pass, summary_fail):
    failing = [i for i in check["items"] if i["status"] == "fail"]
    warning = [i for i in check["items"] if i["status"] == "warn"]
    check["status"] = "fail" if failing else ("warn" if warning else check["status"])
    check["summary"] = summary_fail(failing) if failing else summary_pass
    check["seconds"] = round(time.monotonic() - started, 3)
    return check



# The tables whose rows row-level security would hide from this session (row_security_active), and
# whether that is only FORCE ROW LEVEL SECURITY on a table the login owns (which it may lift).
ROW_SECURITY_QUERY = """
SELECT current_user::text, format('%%I.%%I', n.nspname, c.relname),
       c.relforcerowsecurity AND pg_has_role(c.relowner, 'USAGE')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.relrowsecurity AND row_security_active(c.oid) AND n.nspname NOT IN %s
ORDER BY 2
"""


def row_security_refusal(refused):
    """The message of tables that row-level security keeps the validator from reading whole:
    refused is [(side, login, table, owned under FORCE)]."""
    parts = []
    for side, login, table, forced_owner in refused:
        why = ("FORCE ROW LEVEL SECURITY applies its policies to the owner too, and the validator changes "
               "nothing on the source" if forced_owner else "it neither owns the table nor has BYPASSRLS")
        parts.append(f"{table} on the {side} (login {login}: {why})")
    logins = sorted({(side, login) for side, login, _table, _forced in refused})
    fix = "; ".join(f"ALTER ROLE {_quote(login)} "
                    f"BYPASSRLS on the {side}" for side, login in logins)
    return ("Validation cannot read every row of " + "; ".join(parts) + ": row-level security policies "
            "would hide rows from it, and a partial read proves nothing. Give the login the BYPASSRLS attribute "
            f"({fix}, as a superuser) or validate as a superuser.")


def _quote(name):
    """A role name as SQL writes it (quoted unless a plain lower-case identifier)."""
    plain = name.isidentifier() and name.isascii() and name.lower() == name
    return name if plain else '"' + name.replace('"', '""') + '"'


class Validator:
    def __init__(self, source, target, workers=4, sample_limit=20, exclude_schemas=(), include_schemas=(),
                 sequences_exact=True, checks=None, added_extensions=(), database_settings_carried=True,
                 database_settings_skipped=()):
        self.source = source
        self.target = target
        self.workers = max(1, int(workers))
        self.sample_limit = sample_limit
        self.exclude_schemas = tuple(exclude_schemas)
        self.include_schemas = tuple(include_schemas)
        self.sequences_exact = sequences_exact
        self.enabled = set(checks or ("schema", "row_counts", "content", "orphans", "sequences"))
        # Extensions the run creates on the target on purpose (extensions_required): reported as added.
        self.added_extensions = set(added_extensions or ())
        # False when the copy left the database's settings (migration_copy_database_settings=false):
        # a setting missing in the target is then reported as not carried, not as a difference.
        self.database_settings_carried = bool(database_settings_carried)
        # Settings the copy never carries (migration_database_settings_skipped): a difference is a warning.
        self.database_settings_skipped = tuple(database_settings_skipped)
        self.src_pool = ConnectionPool(source, "pgmigrate validate", "source")
        self.dst_pool = ConnectionPool(target, "pgmigrate validate", "target")

    # ---------------------------------------------------------------- catalog --------------
    def _catalogs(self):
        with ThreadPoolExecutor(2) as pool:
            src = pool.submit(self._read_catalog, self.src_pool)
            dst = pool.submit(self._read_catalog, self.dst_pool)
            return src.result(), dst.result()

    def _read_catalog(self, pool):
        with pool.reading("reading the catalog") as conn:
            return catalog_module.read_catalog(conn, self.exclude_schemas, self.include_schemas)

    # ---------------------------------------------------------------- row-level security ---
    def _row_security(self):
        """Every table must be read whole. Where row-level security would filter the validator's reads, the
        target's tables the login owns under FORCE ROW LEVEL SECURITY are read past it (ConnectionPool
        .reading); any other is refused here, before any check, naming the table and the fix."""
        refused = []
        for pool, catalog in ((self.src_pool, self.src_catalog), (self.dst_pool, self.dst_catalog)):
            names = {t["qualname"] for t in catalog["tables"]}
            with pool.reading("reading the tables' row-level security") as conn, conn.cursor() as cur:
                cur.execute(ROW_SECURITY_QUERY, (catalog_module.excluded_schemas(self.exclude_schemas),))
                rows = cur.fetchall()
            for login, table, forced_owner in rows:
                if table not in names:
                    continue
                if forced_owner and pool is self.dst_pool:
                    pool.lifted.add(table)
                else:
                    refused.append((pool.side, login, table, forced_owner))
        if refused:
            raise ValidationError(row_security_refusal(refused))

    # ---------------------------------------------------------------- entry ----------------
    def run(self):
        started = time.monotonic()
        result = {"status": "pass", "source": describe(self.source), "target": describe(self.target),
                  "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "checks": []}
        try:
            self.src_catalog, self.dst_catalog = self._catalogs()
            self._row_security()
            tables = [t for t in self.src_catalog["tables"] if not t["partitioned"]]
            target_tables = {t["qualname"] for t in self.dst_catalog["tables"]}
            self.tables = sorted(tables, key=lambda t: -t["table_bytes"])
            self.common_tables = [t for t in self.tables if t["qualname"] in target_tables]
            if "schema" in self.enabled:
                result["checks"].append(self.check_schema())
            if self.enabled & {"row_counts", "content"}:
                result["checks"].extend(self.check_rows())
            if "orphans" in self.enabled:
                result["checks"].append(self.check_orphans())
            if "sequences" in self.enabled:
                result["checks"].append(self.check_sequences())
            result["checks"].extend(validate_large_objects.checks_for(self))  # large objects, database settings
        finally:
            self.src_pool.close()
            self.dst_pool.close()
        result["seconds"] = round(time.monotonic() - started, 3)
        result["status"] = "fail" if any(c["status"] == "fail" for c in result["checks"]) else "pass"
        return result

    # ---------------------------------------------------------------- rows -----------------
    def _digest(self, pool, table):
        """Count and digest of a table in one scan, grouped by key bucket so that a mismatch can be
        pinpointed without hashing the table again."""
        return self._digest_batch(pool, [table])[0]

    def _digest_batch(self, pool, tables):
        """_digest of several tables in one statement (UNION ALL of one grouped scan per table). A batch that
        fails is digested again table by table, so the error names its table."""
        names = [table["qualname"] for table in tables]
        what = f"digesting {names[0]}" + (f" and {len(names) - 1} other table(s)" if len(names) > 1 else "")
        try:
            with pool.reading(what, names) as conn, conn.cursor() as cur:
                cur.execute(TYPES_QUERY, (names,))
                columns = {i: [] for i in range(1, len(names) + 1)}
                for row in cur.fetchall():
                    columns[row[0]].append(Column(*row[1:]))
                plans, statements = [], []
                for i, table in enumerate(tables, 1):
                    key = table_key(table)
                    row_hash = row_hash_expression(columns[i])
                    uuid_column = uuid_key_column(key, columns[i])
                    bucket = (_uuid_bucket_expression(uuid_column) if uuid_column
                              else _bucket_expression(key, columns[i], row_hash))
                    plans.append((columns[i], key))
                    statements.append(sql.SQL("(SELECT {} AS t, {} AS b, count(*), sum({}) FROM ONLY {} r GROUP BY 2)")
                                      .format(sql.Literal(i), bucket, row_hash, sql.SQL(table["qualname"])))
                t0 = time.monotonic()
                cur.execute(sql.SQL(" UNION ALL ").join(statements))
                grouped = {i: {} for i in range(1, len(names) + 1)}
                for i, b, c, h in cur.fetchall():
                    grouped[i][b] = (c, int(h))
                seconds = (time.monotonic() - t0) / len(tables)
        except ValidationError:
            if len(tables) == 1:
                raise
            return [result for table in tables for result in self._digest_batch(pool, [table])]
        results = []
        for i, (table_columns, key) in enumerate(plans, 1):
            buckets = grouped[i]
            results.append({"rows": sum(c for c, _ in buckets.values()),
                            "digest": str(sum(h for _, h in buckets.values())), "buckets": buckets,
                            "columns": table_columns, "key": key, "seconds": seconds})
        return results

    def _digest_batches(self):
        """The common tables in the groups they are digested in: a large table alone, small ones together."""
        large = [[t] for t in self.common_tables if t["table_bytes"] > DIGEST_SMALL_TABLE_BYTES]
        small = [t for t in self.common_tables if t["table_bytes"] <= DIGEST_SMALL_TABLE_BYTES]
        return large + consecutive_groups(small, lambda t: t["table_bytes"], DIGEST_BATCH_TABLES, DIGEST_BATCH_BYTES)

    def check_rows(self):
        started = time.monotonic()
        counts = _check("row_counts", "Row counts per table (exact)")
        content = _check("content", "Content digests per table, differing rows pinpointed")
        missing = [t["qualname"] for t in self.tables if t not in self.common_tables]
        for name in missing:
            item = {"table": name, "status": "fail", "detail": "table missing in the target"}
            counts["items"].append(item)
            content["items"].append(dict(item))
        with ThreadPoolExecutor(self.workers) as pool:
            futures = [(batch, pool.submit(self._digest_batch, self.src_pool, batch),
                        pool.submit(self._digest_batch, self.dst_pool, batch)) for batch in self._digest_batches()]
            results = [(table, src, dst) for batch, src_batch, dst_batch in futures
                       for table, src, dst in zip(batch, src_batch.result(), dst_batch.result(), strict=True)]
        mismatched = []
        for table, src, dst in results:
            name = table["qualname"]
            same_count = src["rows"] == dst["rows"]
            counts["items"].append({
                "table": name, "status": "pass" if same_count else "fail", "source_rows": src["rows"],
                "target_rows": dst["rows"],
                "detail": f"{src['rows']} rows" if same_count else
                f"source {src['rows']} rows, target {dst['rows']} rows ({dst['rows'] - src['rows']:+d})"})
            if src["digest"] == dst["digest"] and same_count:
                content["items"].append({"table": name, "status": "pass", "detail": "digests equal",
                                         "seconds": round(max(src["seconds"], dst["seconds"]), 3)})
            else:
                mismatched.append((table, src, dst))
        if "content" in self.enabled and mismatched:
            with ThreadPoolExecutor(min(self.workers, len(mismatched))) as pool:
                for item in pool.map(lambda m: self._pinpoint(*m), mismatched):
                    content["items"].append(item)
        elif mismatched:
            for table, _src, _dst in mismatched:
                content["items"].append({"table": table["qualname"], "status": "fail", "detail": "digests differ"})
        counts = _finish(counts, started, f"{len(self.common_tables)} tables, every count equal",
                         lambda f: f"{len(f)} table(s) differ: " + ", ".join(i["table"] for i in f))
        content = _finish(content, started, f"{len(self.common_tables)} tables, every digest equal",
                          lambda f: f"{len(f)} table(s) differ: " + ", ".join(i["table"] for i in f))
        checks = []
        if "row_counts" in self.enabled:
            checks.append(counts)
        if "content" in self.enabled:
            checks.append(content)
        return checks

    def _stream(self, pool, table, columns, key_columns, buckets):
        """Yield (key tuple as text, row hash) for the rows in the given buckets, streamed."""
        row_hash = row_hash_expression(columns)
        keys_text = sql.SQL(", ").join(sql.SQL("r.{}::text").format(sql.Identifier(c)) for c in key_columns)
        uuid_column = uuid_key_column(key_columns, columns)
        if uuid_column:
            condition = _uuid_ranges_condition(uuid_column, buckets)
        else:
            condition = sql.SQL("{} = ANY({})").format(_bucket_expression(key_columns, columns, row_hash),
                                                       sql.Literal(sorted(buckets)))
        query = sql.SQL("SELECT ARRAY[{}], {} FROM ONLY {} r WHERE {}").format(
            keys_text, row_hash, sql.SQL(table["qualname"]), condition)
        with pool.reading(f"reading the differing rows of {table['qualname']}", (table["qualname"],)) as conn, \
                conn.cursor(name=f"pinpoint_{id(self)}_{threading.get_ident()}") as cursor:
            cursor.itersize = 20000
            cursor.execute(query)
            for key, row_hash_value in cursor:
                yield tuple(key), row_hash_value

    def _pinpoint(self, table, src, dst):
        name = table["qualname"]
        key = src["key"]
        src_buckets, dst_buckets = src["buckets"], dst["buckets"]
        differing = {b for b in set(src_buckets) | set(dst_buckets) if src_buckets.get(b) != dst_buckets.get(b)}
        item = {"table": name, "status": "fail", "source_rows": src["rows"], "target_rows": dst["rows"],
                "differing_buckets": len(differing)}
        if key:
            missing, extra, changed = self._merge_keyed(table, src, dst, key, differing)
            item.update({"key": key, "missing": missing["sample"], "missing_count": missing["count"],
                         "extra": extra["sample"], "extra_count": extra["count"], "changed": changed["sample"],
                         "changed_count": changed["count"]})
            parts = []
            for label, data in (("missing in target", missing), ("extra in target", extra), ("changed", changed)):
                if data["count"]:
                    keys = "; ".join(", ".join(k) for k in data["sample"])
                    parts.append(f"{data['count']} {label} ({'/'.join(key)}: {keys}"
                                 f"{' …' if data['count'] > len(data['sample']) else ''})")
            item["detail"] = "; ".join(parts) or "digests differ"
        else:
            diffs = self._compare_multisets(table, src, dst, differing)
            item.update({"multiset_differences": diffs[: self.sample_limit], "difference_count": len(diffs)})
            item["detail"] = (f"table has no key; {len(diffs)} distinct row(s) occur a different number of times "
                              + "(" + "; ".join(f"row hash {d['row_hash']}: source ×{d['source_count']}, target "
                                                f"×{d['target_count']}" for d in diffs[:5]) + ")")
        return item

    def _merge_keyed(self, table, src, dst, key, buckets):
        results = {k: {"count": 0, "sample": []} for k in ("missing", "extra", "changed")}

        def note(kind, key_value):
            entry = results[kind]
            entry["count"] += 1
            if len(entry["sample"]) < self.sample_limit:
                entry["sample"].append(list(key_value))

        # Differing buckets are compared a few at a time, so memory stays bounded (a bucket holds
        # 1/1024 of the rows) even when every bucket differs.
        ordered = sorted(buckets)
        for start in range(0, len(ordered), BUCKETS_PER_PASS):
            chunk = ordered[start:start + BUCKETS_PER_PASS]
            with ThreadPoolExecutor(2) as pool:
                src_future = pool.submit(lambda c=chunk: dict(self._stream(self.src_pool, table, src["columns"],
                                                                           key, c)))
                dst_future = pool.submit(lambda c=chunk: list(self._stream(self.dst_pool, table, dst["columns"],
                                                                           key, c)))
                src_rows, dst_rows = src_future.result(), dst_future.result()
            for key_value, row_hash in dst_rows:
                if key_value not in src_rows:
                    note("extra", key_value)
                    continue
                if src_rows.pop(key_value) != row_hash:
                    note("changed", key_value)
            for key_value in sorted(src_rows):
                note("missing", key_value)
        for entry in results.values():
            entry["sample"].sort()
        return results["missing"], results["extra"], results["changed"]

    def _compare_multisets(self, table, src, dst, buckets):
        def grouped(pool, columns):
            row_hash = row_hash_expression(columns)
            bucket = _bucket_expression(None, columns, row_hash)
            with pool.reading(f"reading the differing rows of {table['qualname']}", (table["qualname"],)) as conn, \
                    conn.cursor() as cur:
                cur.execute(sql.SQL("SELECT {} AS h, count(*) FROM ONLY {} r WHERE {} = ANY(%s) GROUP BY 1")
                            .format(row_hash, sql.SQL(table["qualname"]), bucket), (sorted(buckets),))
                return dict(cur.fetchall())

        with ThreadPoolExecutor(2) as pool:
            s = pool.submit(grouped, self.src_pool, src["columns"])
            d = pool.submit(grouped, self.dst_pool, dst["columns"])
            src_counts, dst_counts = s.result(), d.result()
        diffs = []
        for row_hash in sorted(set(src_counts) | set(dst_counts)):
            if src_counts.get(row_hash, 0) != dst_counts.get(row_hash, 0):
                diffs.append({"row_hash": row_hash, "source_count": src_counts.get(row_hash, 0),
                              "target_count": dst_counts.get(row_hash, 0)})
        return diffs

    # ---------------------------------------------------------------- orphans --------------
    def check_orphans(self):
        started = time.monotonic()
        check = _check("orphans", "Referential integrity: orphan rows for every foreign key (NOT VALID included)")
        with self.dst_pool.reading("reading the foreign keys") as conn, conn.cursor() as cur:
            cur.execute("""
                SELECT con.conname, format('%%I.%%I', n.nspname, c.relname), format('%%I.%%I', fn.nspname, fc.relname),
                       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
                             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o),
                       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, o)
                             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.o),
                       con.convalidated, con.confmatchtype
                FROM pg_constraint con
                JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                JOIN pg_class fc ON fc.oid = con.confrelid JOIN pg_namespace fn ON fn.oid = fc.relnamespace
                WHERE con.contype = 'f' AND con.conparentid = 0 AND n.nspname NOT IN %s
                ORDER BY 2, 1""", (catalog_module.excluded_schemas(self.exclude_schemas),))
            foreign_keys = cur.fetchall()

        def orphans(fk, pool=self.dst_pool):
            name, child, parent, columns, parent_columns, validated, match = fk
            child_cols = [sql.SQL("c.{}").format(sql.Identifier(col)) for col in columns]
            join = sql.SQL(" AND ").join(
                sql.SQL("p.{} = c.{}").format(sql.Identifier(pc), sql.Identifier(cc))
                for cc, pc in zip(columns, parent_columns, strict=True))
            if match == "f":  # MATCH FULL: all NULL is fine, any NULL with a value is an orphan already
                null_test = sql.SQL("NOT ({})").format(
                    sql.SQL(" AND ").join(sql.SQL("{} IS NULL").format(c) for c in child_cols))
            else:  # MATCH SIMPLE: a row with any NULL in the key references nothing
                null_test = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(c) for c in child_cols)
            query = sql.SQL("SELECT {} FROM {} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {})").format(
                sql.SQL(", ").join(sql.SQL("{}::text").format(c) for c in child_cols), sql.SQL(child), null_test,
                sql.SQL(parent), join)
            with pool.reading(f"looking for orphans of {child}.{name}", (child, parent)) as conn, \
                    conn.cursor() as cur:
                cur.execute(sql.SQL("SELECT count(*) FROM ({}) o").format(query))
                count = cur.fetchone()[0]
                sample = []
                if count:
                    cur.execute(sql.SQL("{} LIMIT {}").format(query, sql.Literal(self.sample_limit)))
                    sample = [list(r) for r in cur.fetchall()]
            label = f"{child}.{name}"
            status = "fail" if count else "pass"
            detail = (f"{count} orphan row(s) referencing {parent}: {', '.join(columns)} = "
                      + "; ".join(", ".join(str(v) for v in r) for r in sample) if count
                      else f"no orphans ({'validated' if validated else 'NOT VALID: checked here'})")
            return {"table": child, "constraint": name, "status": status, "detail": f"{label}: {detail}",
                    "orphans": count, "sample": sample, "validated": validated}

        def both(fk):
            item = orphans(fk)
            if item["orphans"] and not item["validated"]:
                # A NOT VALID constraint may hold orphans in the source already: only new ones count.
                try:
                    source_item = orphans(fk, self.src_pool)
                except Exception:  # noqa: BLE001 - the constraint may not exist in the source
                    source_item = None
                if source_item and source_item["orphans"] == item["orphans"] and \
                        source_item["sample"] == item["sample"]:
                    item["status"] = "warn"
                    item["detail"] += " (NOT VALID; the source holds the same orphans)"
            return item

        with ThreadPoolExecutor(self.workers) as pool:
            check["items"] = list(pool.map(both, foreign_keys))
        return _finish(check, started, f"{len(foreign_keys)} foreign keys, no orphan rows",
                       lambda f: f"{sum(i['orphans'] for i in f)} orphan row(s) in "
                                 + ", ".join(f"{i['table']}.{i['constraint']}" for i in f))

    # ---------------------------------------------------------------- sequences ------------
    def check_sequences(self):
        started = time.monotonic()
        check = _check("sequences", "Sequences and identity columns: source state, and ahead of every column fed")
        target_seqs = {s["qualname"]: s for s in self.dst_catalog["sequences"]}
        extremes = self._column_extremes([(feed["table"], feed["column"], tseq["increment"] > 0)
                                          for tseq in target_seqs.values() for feed in tseq["feeds"]])
        for seq in self.src_catalog["sequences"]:
            name = seq["qualname"]
            tseq = target_seqs.get(name)
            if tseq is None:
                check["items"].append({"table": name, "status": "fail", "detail": f"{name} missing in the target"})
                continue
            problems, warnings = [], []
            same_state = (tseq["last_value"], tseq["is_called"]) == (seq["last_value"], seq["is_called"])
            if self.sequences_exact and not same_state:
                problems.append(f"state (last_value {tseq['last_value']}, is_called {tseq['is_called']}) differs "
                                f"from the source's ({seq['last_value']}, {seq['is_called']})")
            next_value = tseq["last_value"] + tseq["increment"] if tseq["is_called"] else tseq["last_value"]
            for feed in tseq["feeds"]:
                extreme = extremes[(feed["table"], feed["column"], tseq["increment"] > 0)]
                behind = extreme is not None and (next_value <= extreme if tseq["increment"] > 0
                                                  else next_value >= extreme)
                if behind:
                    message = (f"next value {next_value} collides with {feed['table']}.{feed['column']} "
                               f"(holds {extreme}); fix: SELECT setval('{name}', {extreme})")
                    if same_state:
                        # A faithful copy of the source's own defect: reported, not blamed on the copy.
                        warnings.append(message + " (the source has the same defect)")
                    else:
                        problems.append(message)
            status = "fail" if problems else ("warn" if warnings else "pass")
            check["items"].append({"table": name, "status": status,
                                   "detail": "; ".join(problems + warnings) or
                                   f"last_value {tseq['last_value']}, is_called {tseq['is_called']}, "
                                   f"feeds {len(tseq['feeds'])} column(s)"})
        return _finish(check, started, f"{len(self.src_catalog['sequences'])} sequences in order",
                       lambda f: f"{len(f)} sequence(s) wrong: " + ", ".join(i["table"] for i in f))

    def _column_extremes(self, feeds):
        """{(table, column, highest): the target's max (or min) of each column sequences feed}."""
        def run(batch, statement):
            what = f"reading {batch[0][0]}.{batch[0][1]}" + (
                f" and {len(batch) - 1} other column(s) fed by sequences" if len(batch) > 1 else "")
            with self.dst_pool.reading(what, sorted({f[0] for f in batch})) as conn, conn.cursor() as cur:
                cur.execute(statement)
                return cur.fetchall()
        sizes = {t["qualname"]: t["table_bytes"] for t in self.dst_catalog["tables"]}
        return column_extremes.read(feeds, sizes, run, self.workers)

    # ---------------------------------------------------------------- schema ---------------
    def check_schema(self):
        started = time.monotonic()
        check = _check("schema", "Schema: tables, columns, constraints, indexes, triggers, views, extensions")
        with ThreadPoolExecutor(2) as pool:
            s = pool.submit(schema_objects, self.src_pool, self.exclude_schemas)
            d = pool.submit(schema_objects, self.dst_pool, self.exclude_schemas)
            src, dst = s.result(), d.result()
        by_table = {}
        added = self._added_extensions(src, dst, check)
        for kind in ("tables", "columns", "constraints", "indexes", "triggers", "views", "extensions"):
            for key in sorted(set(src[kind]) | set(dst[kind])):
                a, b = src[kind].get(key), dst[kind].get(key)
                if a == b or (kind == "extensions" and key[1] in added):
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
        return _finish(check, started, f"{compared} tables and their objects identical{added_note}",
                       lambda f: f"{sum(len(i['differences']) for i in f)} difference(s) in " +
                                 ", ".join(i["table"] for i in f))

    def _added_extensions(self, src, dst, check):
        """The extensions the run added on purpose that the target has and the source has not: each a
        passing item saying so, never a difference."""
        added = {key[1] for key in set(dst["extensions"]) - set(src["extensions"])
                 if key[1] in self.added_extensions}
        for name in sorted(added):
            version = dst["extensions"][("(database)", name)][0]
            check["items"].append({"table": "(database)", "status": "pass",
                                   "detail": f"extension {name} {version} added by the run (not in the source)"})
        return added


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
        WHERE n.nspname NOT IN %(excluded)s""",
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
    return objects


def validate(source, target, **options):
    return Validator(source, target, **options).run()
