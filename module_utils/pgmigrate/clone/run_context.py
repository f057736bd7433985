"""The context of one copy run, set up in one place: its connections, options and state, and the services
every step uses (sessions, the event log, phases, the worker pool). The steps (snapshot_step, target_checks,
schema_step, table_copy, data_step, post_data_step, sequences_step, finish_step, summary) each take it
explicitly; copier.Engine builds it and runs them in order."""

import threading
import time

from psycopg2 import sql

from ..common import preflight
from .errors import RETRYABLE, MigrationError, SourceStreamError
from .worker_pool import WorkerPool


class CopyRun:
    def __init__(self, source, target, options):
        self.source = source
        self.target = target
        self.options = options
        self.run_id = None
        self.run_dir = None
        self.resumed = False
        self.progress = None  # progress.Progress, once the run's directory exists
        self.abort = threading.Event()  # set on the first failure: every worker and step stops
        # The source: the session holding the exported snapshot, its id (none when the source is frozen),
        # the workers' sessions reading in it, and what was read there.
        self.snapshot_conn = None
        self.snapshot_id = None
        self.source_sessions = None
        self.catalog = None
        # What the copy leaves out and creates instead of extensions the target server cannot provide
        # (common/extension_substitutes.plan; None: the target has every extension the source uses).
        self.extension_substitution = None
        self.plan = None
        self.large_objects = []
        self.settings_to_apply = []  # the database's settings to carry (common/database_settings)
        self.binary_ok = False  # binary COPY: same encoding on both sides
        self.replication_role = False  # existing mode: the target login may set session_replication_role
        # The target: the steps recorded done in its state (a resumed run skips them), and what was done.
        self.done = {}
        self.results = {}  # part id -> what copying it did
        self.job_timeline = []  # each pool job's key, worker, start and end (worker_pool; summary.json's timeline)
        self.large_object_stats = {"copied": 0, "copied_bytes": 0, "resumed": 0}
        self.post_entries = []  # the dump's post-data, split (schema_step)
        self.post_settings = ""  # the post-data's preamble
        self.table_entry_keys = set()  # the post-data built per table in the data step
        self.event_triggers = []  # created last, in finish_step
        self.warnings = []
        self.events = []
        self._tables_by_name = None

    def connect(self, which, autocommit=False, application_name="pgmigrate"):
        params = self.source if which == "source" else self.target
        return preflight.connect_or_explain(params, f"migration_{which}", application_name, autocommit=autocommit,
                                            lock_timeout=self.options["lock_timeout"] if which == "target" else None)

    def event(self, text):
        self.events.append(f"{time.strftime('%H:%M:%S')} {text}")
        if self.progress:
            self.progress._log(text)

    def enter_phase(self, phase, message=""):
        if self.abort.is_set():
            raise MigrationError(f"stopped before phase {phase}: " + (self.events[-1] if self.events else "aborted"))
        self.progress.set_phase(phase, message)

    def run_jobs(self, jobs, on_done=None, workers=None):
        """Run jobs, (priority, key, run(worker, conn)), on the run's worker pool (worker_pool.WorkerPool) of
        `workers` sessions (default: the run's workers; 1 runs them one by one by priority)."""
        def connect(worker):
            conn = self.connect("target", application_name=f"pgmigrate worker {worker}")
            self._session_settings(conn)
            return conn
        WorkerPool(connect, workers or self.options["workers"], self.options["retries"],
                   RETRYABLE + (SourceStreamError,), self.abort, self.event, self.job_timeline).run(jobs, on_done)

    def _session_settings(self, conn):
        """The workers' target sessions. Their commits need not wait for the WAL flush: each one records
        its work in the state schema in the same transaction, so a server crash loses both together and the
        resumed run redoes them; the run's last commit (finish_step) waits and flushes them all."""
        with conn.cursor() as cur:
            cur.execute("SET synchronous_commit = off")
            cur.execute(sql.SQL("SET maintenance_work_mem = {}").format(
                sql.Literal(self.options["maintenance_work_mem"])))
            cur.execute("SET row_security = off")
        conn.commit()

    def table(self, qualname):
        """The source catalog's entry of a table."""
        if self._tables_by_name is None:
            self._tables_by_name = {t["qualname"]: t for t in self.catalog["tables"]}
        return self._tables_by_name[qualname]
