"""The run's source snapshot: one session holds it (and its locks) for the whole run; the
workers' source sessions read in it."""


from . import source_sessions


class SnapshotStep:
    def __init__(self, run):
        self.run = run  # run_context.CopyRun

    def open(self):
        run = self.run
        run.snapshot_conn = run.connect("source", application_name="pgmigrate snapshot")
        with run.snapshot_conn.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            # It idles in its transaction for the whole run: the source's own timeouts must not end it.
            for statement in source_sessions.TIMEOUTS_OFF:
                cur.execute(statement)
            if not run.options["source_frozen"]:
                cur.execute("SELECT pg_export_snapshot()")
                run.snapshot_id = cur.fetchone()[0]
        run.source_sessions = source_sessions.SourceSessions(run.source, run.snapshot_id)

    def close(self):
        run = self.run
        if run.source_sessions is not None:
            run.source_sessions.close_all()
        if run.snapshot_conn is not None and not run.snapshot_conn.closed:
            try:
                run.snapshot_conn.rollback()
            finally:
                run.snapshot_conn.close()
