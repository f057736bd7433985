"""The environment sync's error."""

from ..common.errors import PgmigrateError


class SyncError(PgmigrateError):
    """The sync cannot be done as configured, or did not prove its result; nothing was changed."""
