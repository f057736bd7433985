"""The context of one validation run, set up in one place: the two databases, the options, the connections,
what was read of both catalogs, the tables to compare, how rows are digested and the progress line. The
steps (catalog_step, schema_checks, row_checks with differing_rows, integrity_checks, validate_large_objects)
each take it explicitly; validate.Validator builds it and runs them in order."""

from ..common import catalog as catalog_module
from .digests import DigestStatements
from .pool import ConnectionPool
from .progress import ValidationProgress


class ValidationRun:
    """Built once per run by validate.Validator (which holds the options' defaults) and handed to every step."""

    def __init__(self, source, target, *, workers, sample_limit, exclude_schemas, include_schemas,
                 sequences_exact, checks, added_extensions, database_settings_carried, database_settings_skipped,
                 progress, extension_substitutes=None):
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
        # How the target does without extensions its server cannot provide (migration_extension_substitutes):
        # such an extension of the source is reported as substituted, not as missing.
        self.extension_substitutes = dict(extension_substitutes or {})
        # False when the copy left the database's settings (migration_copy_database_settings=false):
        # a setting missing in the target is then reported as not carried, not as a difference.
        self.database_settings_carried = bool(database_settings_carried)
        # Settings the copy never carries (migration_database_settings_skipped): a difference is a warning.
        self.database_settings_skipped = tuple(database_settings_skipped)
        self.src_pool = ConnectionPool(source, "pgmigrate validate", "source")
        self.dst_pool = ConnectionPool(target, "pgmigrate validate", "target")
        self.src_catalog = self.dst_catalog = None  # read by catalog_step.CatalogStep
        self.tables = []  # the source's tables with rows (not partitioned parents), largest first
        self.common_tables = []  # those of them the target has
        self.digest_statements = DigestStatements()  # digest statements rendered once per table shape
        # The progress line the live-progress callback prints (validation/progress.py); none: not written.
        self.progress = progress or ValidationProgress(None)

    def excluded(self):
        """The schemas never compared: the system's, the tool's own state schema, exclude_schemas."""
        return catalog_module.excluded_schemas(self.exclude_schemas)

    def close(self):
        """Every connection of both sides closed."""
        self.src_pool.close()
        self.dst_pool.close()
