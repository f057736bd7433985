"""The run's source snapshot: one session holds it (and its locks) for the whole run; the
workers' source sessions read in it."""


from . import source_sessions


class SnapshotStep:
    """A step of copier.Engine: the run's context (options, plan, state, progress) is the engine's."""

    def _open_snapshot(self):
        self.snapshot_conn = self._connect("source", application_name="pgmigrate snapshot")
        with self.snapshot_conn.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            # It idles in its transaction for the whole run: the source's own timeouts must not end it.
            for statement in source_sessions.TIMEOUTS_OFF:
                cur.execute(statement)
            if not self.options["source_frozen"]:
                cur.execute("SELECT pg_export_snapshot()")
                self.snapshot_id = cur.fetchone()[0]
        self.source_sessions = source_sessions.SourceSessions(self.source, self.snapshot_id)

    def _close_snapshot(self):
        if self.source_sessions is not None:
            self.source_sessions.close_all()
        if self.snapshot_conn is not None and not self.snapshot_conn.closed:
            try:
                self.snapshot_conn.rollback()
            finally:
                self.snapshot_conn.close()
