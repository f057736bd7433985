"""The workers' own source sessions, for the tables small enough to copy in-process.

A table of a few kilobytes costs far more to start (a psql process, a connection, its authentication, the
snapshot import) than to copy. So each worker keeps one source session open in the run's snapshot and
copies small tables through it: COPY TO STDOUT into a spool (memory up to SPOOL_MEMORY_BYTES, then a
temporary file, so a table larger than planned never fills the memory), then COPY FROM the spool into
the target. Large tables keep the streaming path (psql piped into the target), which overlaps reading and
writing.
"""

import tempfile
import threading
from contextlib import contextmanager

from ..common.connection import connect

# Whole tables up to this size (pg_table_size at planning) are copied in-process.
IN_PROCESS_MAX_BYTES = 8 << 20
SPOOL_MEMORY_BYTES = 16 << 20
CHUNK_SIZE = 1 << 20

# How both paths read the source (this one and the streaming one, copier._source_command), inside the
# transaction that imported the snapshot, so both give the same bytes.
READ_SETTINGS = ("SET LOCAL row_security = off", "SET LOCAL datestyle = ISO, YMD",
                 "SET LOCAL intervalstyle = postgres", "SET LOCAL extra_float_digits = 3")

# Sessions that idle in their transaction between statements for the whole run (these, and the snapshot
# holder) would be ended by a source database's idle_in_transaction_session_timeout or statement_timeout.
TIMEOUTS_OFF = ("SET LOCAL idle_in_transaction_session_timeout = 0", "SET LOCAL statement_timeout = 0")


# A read in a transaction locks the table (ACCESS SHARE) until the transaction ends: a session that read
# thousands of tables in one transaction fills the server's lock table (max_locks_per_transaction times
# max_connections, 6,400 by default, shared by every session) beside pg_dump's locks on the same tables.
TABLES_PER_TRANSACTION = 200


def begin_in_snapshot(conn, snapshot_id):
    """Begin a read-only transaction on conn in the exported snapshot (or, with none, in its own), with the
    settings every read of the source uses."""
    # (connect() put the session in UTF8: text COPY in it, as the streaming path asks with PGCLIENTENCODING)
    with conn.cursor() as cur:
        cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if snapshot_id:
            cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot_id,))
        for statement in (*READ_SETTINGS, *TIMEOUTS_OFF):
            cur.execute(statement)


@contextmanager
def session_in_snapshot(source, snapshot_id, application_name):
    """A source connection of its own in the snapshot, closed at the end with the locks its reads took."""
    conn = connect(source, application_name=application_name)
    try:
        begin_in_snapshot(conn, snapshot_id)
        yield conn
    finally:
        conn.close()


class SourceSessions:
    """One source connection per worker, each in a read-only transaction that imported the snapshot (or,
    with no snapshot, in a transaction of its own), begun again every TABLES_PER_TRANSACTION tables. A
    session that fails is dropped; the next use opens a new one."""

    def __init__(self, source, snapshot_id):
        self.source, self.snapshot_id = source, snapshot_id
        self.sessions, self.uses = {}, {}
        self.lock = threading.Lock()

    def get(self, worker):
        """The worker's session, in the snapshot. Every TABLES_PER_TRANSACTION tables its transaction is
        begun again (the snapshot imported again): it keeps a lock on every table it read until its end."""
        with self.lock:
            conn = self.sessions.get(worker)
            uses = self.uses.get(worker, 0) + 1
            self.uses[worker] = uses
        if conn is not None and not conn.closed:
            if uses % TABLES_PER_TRANSACTION == 0:
                try:
                    conn.rollback()
                    begin_in_snapshot(conn, self.snapshot_id)
                except BaseException:
                    self.discard(worker)
                    raise
            return conn
        conn = connect(self.source, application_name=f"pgmigrate worker {worker}")
        try:
            begin_in_snapshot(conn, self.snapshot_id)
        except BaseException:
            conn.close()
            raise
        with self.lock:
            self.sessions[worker] = conn
        return conn

    def discard(self, worker):
        with self.lock:
            conn = self.sessions.pop(worker, None)
        if conn is not None and not conn.closed:
            conn.close()

    def close_all(self):
        with self.lock:
            sessions, self.sessions = self.sessions, {}
        for conn in sessions.values():
            if not conn.closed:
                conn.close()


def copy_through_spool(source_conn, copy_out_sql, target_cur, copy_in_sql):
    """COPY the query's rows out of the source session and into the target; returns the bytes moved."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES, prefix="pgmigrate-copy-") as spool:
        with source_conn.cursor() as cur:
            cur.copy_expert(copy_out_sql, spool, size=CHUNK_SIZE)
        streamed = spool.tell()
        spool.seek(0)
        target_cur.copy_expert(copy_in_sql, spool, size=CHUNK_SIZE)
        return streamed
