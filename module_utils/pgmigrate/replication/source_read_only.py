"""The old source made read-only at the switch, and writable again when the cutover gives up before it or
the run is aborted. Each change is noted in the publication's comment, so that an abort from another
controller knows to undo it."""

from psycopg2 import sql

from .errors import LogicalError


class SourceReadOnly:
    """default_transaction_read_only on the source database, and the sessions that predate a change of it."""

    def __init__(self, context, replication_objects):
        self.context = context
        self.replication_objects = replication_objects

    def make_read_only(self, src, prepared):
        """New sessions on the old source are read-only from now on: no write can land there any more."""
        record = {**prepared["record"], "read_only_set": True, "previous_read_only": prepared["previous_read_only"]}
        with src.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(
                sql.Identifier(self.context.source["dbname"])))
            self.replication_objects.comment_publication(cur, record)
            cur.execute("COMMIT")
        prepared["record"] = record

    def end_older_sessions(self, src, lock_pid, prepared):
        """Terminate every session that started before the database turned read-only: the writes waiting on
        the freeze fail (not acknowledged; the client retries on the new database) instead of committing to
        the old source when the lock is released. Later sessions are read-only."""
        terminated = set()
        with src.cursor() as cur:
            cur.execute("SELECT clock_timestamp()")
            read_only_at = prepared["read_only_at"] = cur.fetchone()[0]
            for _ in range(50):
                cur.execute("SELECT pid, pg_terminate_backend(pid, 1000) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND backend_type = 'client backend' "
                            "AND pid NOT IN (pg_backend_pid(), %s) AND backend_start <= %s",
                            (lock_pid, read_only_at))
                rows = cur.fetchall()
                if not rows:
                    break
                terminated.update(pid for pid, _ in rows)
            else:
                raise LogicalError("sessions on the source could not be terminated")
        return len(terminated)

    def undo(self, src, prepared, lock_pid):
        """The source writable again; sessions opened while it was read-only reconnect to get it."""
        with src.cursor() as cur:
            cur.execute("ROLLBACK")  # a statement of the failed step may have left the session's transaction
            record = prepared["record"]
            if not record.get("read_only_set"):
                return
            cur.execute("BEGIN")
            self.restore_setting(cur, record.get("previous_read_only"))
            self.replication_objects.comment_publication(cur, {**record, "read_only_set": False})
            cur.execute("COMMIT")
            prepared["record"] = {**record, "read_only_set": False}
            if prepared.get("read_only_at"):
                cur.execute("SELECT pg_terminate_backend(pid, 1000) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND backend_type = 'client backend' "
                            "AND pid NOT IN (pg_backend_pid(), %s) AND backend_start >= %s",
                            (lock_pid, prepared["read_only_at"]))

    def restore_setting(self, cur, previous):
        """default_transaction_read_only back to what the database had before the run (None: unset)."""
        restore_read_only(cur, self.context.source["dbname"], previous)


def restore_read_only(cur, dbname, previous):
    """A database's default_transaction_read_only back to a value noted before (None: unset)."""
    database = sql.Identifier(dbname)
    if previous is None:
        cur.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(database))
    else:
        cur.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = {}").format(
            database, sql.Literal(previous)))
