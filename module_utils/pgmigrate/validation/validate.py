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

The run's context (the databases, options, connections, catalogs, tables to compare, digest statements and
progress) is one object, context.ValidationRun, built in Validator's constructor; each family of checks is a
small class of its own module taking it explicitly: catalog_step (the catalogs, row-level security, the
tables), schema_checks, row_checks (with differing_rows, which names the rows behind a mismatch),
integrity_checks, and the module validate_large_objects (large objects, the database's settings). digests:
how rows are hashed; pool: the connections. Validator, the public entry point, runs them in order.
"""

import time
from concurrent.futures import ThreadPoolExecutor

from ..common.connection import describe
from . import validate_large_objects
from .catalog_step import CatalogStep
from .checks import ValidationError
from .context import ValidationRun
from .differing_rows import DifferingRows
from .digests import DIGEST_BATCH_TABLES
from .integrity_checks import IntegrityChecks
from .row_checks import RowChecks
from .schema_checks import SchemaChecks

__all__ = ["DIGEST_BATCH_TABLES", "ValidationError", "Validator", "validate"]


class Validator:
    """The validation's entry point: the run's context and the check families built once, run in order."""

    def __init__(self, source, target, workers=4, sample_limit=20, exclude_schemas=(), include_schemas=(),
                 sequences_exact=True, checks=None, added_extensions=(), database_settings_carried=True,
                 database_settings_skipped=(), progress=None, extension_substitutes=None):
        self.context = ValidationRun(
            source, target, workers=workers, sample_limit=sample_limit, exclude_schemas=exclude_schemas,
            include_schemas=include_schemas, sequences_exact=sequences_exact, checks=checks,
            added_extensions=added_extensions, database_settings_carried=database_settings_carried,
            database_settings_skipped=database_settings_skipped, progress=progress,
            extension_substitutes=extension_substitutes)
        self.catalogs = CatalogStep(self.context)
        self.schema_checks = SchemaChecks(self.context)
        self.row_checks = RowChecks(self.context, DifferingRows(self.context))
        self.integrity_checks = IntegrityChecks(self.context)

    def run(self):
        run = self.context
        started = time.monotonic()
        result = {"status": "pass", "source": describe(run.source), "target": describe(run.target),
                  "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "checks": []}
        try:
            # The schema check reads the catalogs through its own queries: it runs beside the catalog reads.
            run.progress.begin("catalogs and schema")
            with ThreadPoolExecutor(1) as pool:
                schema = pool.submit(self.schema_checks.check_schema) if "schema" in run.enabled else None
                self.catalogs.read_catalogs()
                schema = schema and schema.result()
            self.catalogs.check_row_security()
            self.catalogs.select_tables()
            if schema:
                result["checks"].append(schema)
            if run.enabled & {"row_counts", "content"}:
                result["checks"].extend(self.row_checks.check_rows())
            if "orphans" in run.enabled:
                run.progress.begin("orphans")
                result["checks"].append(self.integrity_checks.check_orphans())
            if "sequences" in run.enabled:
                run.progress.begin("sequences")
                result["checks"].append(self.integrity_checks.check_sequences())
            run.progress.begin("large objects and database settings")
            result["checks"].extend(validate_large_objects.checks_for(run))  # large objects, database settings
        finally:
            run.close()
        result["seconds"] = round(time.monotonic() - started, 3)
        result["status"] = "fail" if any(c["status"] == "fail" for c in result["checks"]) else "pass"
        return result


def validate(source, target, **options):
    return Validator(source, target, **options).run()
