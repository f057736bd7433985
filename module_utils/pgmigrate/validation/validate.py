"""Validation: prove the target equals the source, and pinpoint what differs.

Digests are computed inside each server, order-independently: per table the row count and the sum
of a 64-bit hash of every row (hash_record_extended over the row, with every column whose hash is
not exact across servers — xml, json, enums, floats, numerics, money, composites, ranges, user types —
hashed through its output function, that is by the text COPY transfers, in sessions that fix every
setting that text depends on; between servers of different encodings, text by its UTF8 bytes).
Rows hidden by row-level security are never silently skipped. Source and target are read in parallel.
Rows are bucketed by a hash of the key in that same scan, so a mismatch costs one more scan per side:
it hashes the key of every row but the whole row only in the differing buckets, and names the missing,
extra and changed keys. Tables without a key are compared as multisets (duplicates count).

Validator holds the run's context and runs the checks, each family in a module of its own: row_checks,
integrity_checks, schema_checks (with digests: how rows are hashed; pool: the connections).
"""

import time
from concurrent.futures import ThreadPoolExecutor

from ..common import catalog as catalog_module
from ..common.connection import describe
from . import validate_large_objects
from .checks import ValidationError
from .digests import DIGEST_BATCH_TABLES, DigestStatements
from .integrity_checks import IntegrityChecks
from .pool import ROW_SECURITY_QUERY, ConnectionPool, row_security_refusal
from .progress import ValidationProgress
from .row_checks import RowChecks
from .schema_checks import SchemaChecks

__all__ = ["DIGEST_BATCH_TABLES", "ValidationError", "Validator", "validate"]


class Validator(RowChecks, IntegrityChecks, SchemaChecks):
    def __init__(self, source, target, workers=4, sample_limit=20, exclude_schemas=(), include_schemas=(),
                 sequences_exact=True, checks=None, added_extensions=(), database_settings_carried=True,
                 database_settings_skipped=(), progress=None):
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
        self.src_catalog = self.dst_catalog = None  # read by run()
        self.tables = []  # the source's tables with rows (not partitioned parents), largest first
        self.common_tables = []  # those of them the target has
        self.digest_statements = DigestStatements()  # digest statements rendered once per table shape
        # The progress line the live-progress callback prints (validation/progress.py); none: not written.
        self.progress = progress or ValidationProgress(None)

    def _catalogs(self):
        with ThreadPoolExecutor(2) as pool:
            src = pool.submit(self._read_catalog, self.src_pool)
            dst = pool.submit(self._read_catalog, self.dst_pool)
            return src.result(), dst.result()

    def _read_catalog(self, pool):
        with pool.reading("reading the catalog") as conn:
            catalog = catalog_module.read_catalog(conn, self.exclude_schemas, self.include_schemas, exact_sizes=False)
            with conn.cursor() as cur:
                cur.execute("SELECT current_setting('server_encoding')")
                catalog["server_encoding"] = cur.fetchone()[0]
            return catalog

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

    def run(self):
        started = time.monotonic()
        result = {"status": "pass", "source": describe(self.source), "target": describe(self.target),
                  "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "checks": []}
        try:
            # The schema check reads the catalogs through its own queries: it runs beside the catalog reads.
            self.progress.begin("catalogs and schema")
            with ThreadPoolExecutor(1) as pool:
                schema = pool.submit(self.check_schema) if "schema" in self.enabled else None
                self.src_catalog, self.dst_catalog = self._catalogs()
                # Servers in different encodings: text is digested by its UTF8 bytes, as the copy carried it.
                self.digest_statements = DigestStatements(
                    utf8=self.src_catalog["server_encoding"] != self.dst_catalog["server_encoding"])
                schema = schema and schema.result()
            self._row_security()
            tables = [t for t in self.src_catalog["tables"] if not t["partitioned"]]
            target_tables = {t["qualname"] for t in self.dst_catalog["tables"]}
            self.tables = sorted(tables, key=lambda t: -t["table_bytes"])
            self.common_tables = [t for t in self.tables if t["qualname"] in target_tables]
            if schema:
                result["checks"].append(schema)
            if self.enabled & {"row_counts", "content"}:
                result["checks"].extend(self.check_rows())
            if "orphans" in self.enabled:
                self.progress.begin("orphans")
                result["checks"].append(self.check_orphans())
            if "sequences" in self.enabled:
                self.progress.begin("sequences")
                result["checks"].append(self.check_sequences())
            self.progress.begin("large objects and database settings")
            result["checks"].extend(validate_large_objects.checks_for(self))  # large objects, database settings
        finally:
            self.src_pool.close()
            self.dst_pool.close()
        result["seconds"] = round(time.monotonic() - started, 3)
        result["status"] = "fail" if any(c["status"] == "fail" for c in result["checks"]) else "pass"
        return result


def validate(source, target, **options):
    return Validator(source, target, **options).run()
