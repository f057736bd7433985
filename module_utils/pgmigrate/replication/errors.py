"""The zero-downtime run's errors."""

from ..common.errors import PgmigrateError


class LogicalError(PgmigrateError):
    """Something stopped the run; the message says what and how to fix it."""


class FreezeAbandoned(LogicalError):
    """The cutover gave up before the switch; the source is as it was and replication goes on."""

    def __init__(self, message, retry=False):
        super().__init__(message)
        self.retry = retry
