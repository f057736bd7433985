"""The root of the tool's own errors: each domain's error (ConfigError, PreflightError, MigrationError,
ValidationError, BackupError, LogicalError, SyncError, ...) derives from PgmigrateError, so a caller can
tell a refusal or failure the tool explains from an unexpected one."""


class PgmigrateError(Exception):
    """An error the tool raises on purpose: its message says what happened and how to go on."""
