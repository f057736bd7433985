"""The copy's errors, and which database errors are worth a retry."""

import psycopg2
from psycopg2 import errors as pg_errors

from ..common.errors import PgmigrateError

# A lost connection, a lock wait that ran out, a deadlock or a restarting server: the job is tried again.
RETRYABLE = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    pg_errors.LockNotAvailable,
    pg_errors.DeadlockDetected,
    pg_errors.SerializationFailure,
    pg_errors.AdminShutdown,
    pg_errors.CrashShutdown,
    pg_errors.CannotConnectNow,
)


class MigrationError(PgmigrateError):
    """A failure that stops the run; the message names what failed and how to go on."""


class SourceStreamError(Exception):
    """The source side of a table's stream (its psql COPY ... TO STDOUT) failed; retryable."""
