"""The migration engine: one run of the copy, its steps in order.

Data path (chosen by measurement, see benchmarks/README.md): for each table part a `psql` process
runs `COPY (...) TO STDOUT` on the source inside the run's exported snapshot; the worker thread
reads its output through an OS pipe in 1 MB chunks and feeds it to `COPY ... FROM STDIN` on a
psycopg2 connection to the target. No intermediate files. The target transaction is
TRUNCATE (whole tables) + COPY (FREEZE where allowed) + a "done" record in the run's state, and it
commits only after the source side has exited successfully: a part is either complete and
recorded, or not there at all, whatever is killed and when.

Engine holds the run's context (options, catalog, plan, the steps done, progress, results) and runs the
steps, each in a module of its own: snapshot_step, target_checks, schema_step, data_step (with
table_copy and the worker_pool), post_data_step, sequences_step, finish_step, then the summary.
"""

import json
import os
import threading
import time
import uuid

from psycopg2 import sql

from ..common import catalog as catalog_module
from ..common import planner, preflight
from . import completion, copy_options, resume, run_guard, source_sessions, state
from .data_step import DataStep
from .errors import RETRYABLE, MigrationError, SourceStreamError
from .finish_step import FinishStep
from .post_data_step import PostDataStep
from .progress import Progress
from .schema_step import SchemaStep
from .sequences_step import SEQUENCE_WARNINGS_SHOWN, SequencesStep
from .snapshot_step import SnapshotStep
from .summary import RunSummary
from .table_copy import TableCopy
from .target_checks import TargetChecks
from .worker_pool import WorkerPool

# Every option and its default: copy_options.OPTIONS, declared once for the engine and the module.
DEFAULTS = copy_options.engine_defaults()

__all__ = ["DEFAULTS", "SEQUENCE_WARNINGS_SHOWN", "Engine", "MigrationError", "SourceStreamError", "migrate"]


class Engine(SnapshotStep, TargetChecks, SchemaStep, TableCopy, DataStep, PostDataStep, SequencesStep, FinishStep,
             RunSummary):
    def __init__(self, source, target, **options):
        unknown = set(options) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown options: {sorted(unknown)}")
        self.source = source
        self.target = target
        self.options = {**DEFAULTS, **options}
        preflight.check_options(self.options)
        self.run_id = None
        self.run_dir = None
        self.progress = None
        self.lock_conn = None
        self.snapshot_conn = None
        self.snapshot_id = None
        self.source_sessions = None
        self.catalog = None
        self.plan = None
        self.binary_ok = False  # binary COPY: same encoding on both sides
        self.replication_role = False  # existing mode: the target login may set session_replication_role
        self.done = {}  # the steps recorded done in the target's state (a resumed run skips them)
        self.results = {}  # part id -> what copying it did
        self.post_entries = []  # the dump's post-data, split (schema_step)
        self.post_settings = ""  # the post-data's preamble
        self.table_entry_keys = set()  # the post-data built per table in the data step
        self.event_triggers = []  # created last, in _finish_in_target
        self.large_objects = []
        self.large_object_stats = {"copied": 0, "copied_bytes": 0, "resumed": 0}
        self.settings_to_apply = []
        self.errors = []
        self.warnings = []
        self.events = []
        self.resumed = False
        self.abort = threading.Event()
        self._tables_by_name = None
        self.early_schema_dump = None  # a new run's pg_dump --schema-only, started beside the catalog read

    def _connect(self, which, autocommit=False, application_name="pgmigrate"):
        params = self.source if which == "source" else self.target
        return preflight.connect_or_explain(params, f"migration_{which}", application_name, autocommit=autocommit,
                                            lock_timeout=self.options["lock_timeout"] if which == "target" else None)

    def _event(self, text):
        self.events.append(f"{time.strftime('%H:%M:%S')} {text}")
        if self.progress:
            self.progress._log(text)

    def run(self):
        started = time.monotonic()
        opts = self.options
        if opts["progress_file"] and not opts["check_mode"]:
            # An earlier run's progress must not be shown as this one's.
            try:
                os.remove(opts["progress_file"])
            except FileNotFoundError:
                pass
        target_conn = None
        try:
            source_identity = self._source_identity()
            target_conn = self._connect("target")
            target_identity = preflight.server_identity(target_conn)
            target_conn.rollback()
            self._check_servers(source_identity, target_identity)
            if not opts["check_mode"]:
                self.lock_conn = self._connect("target", autocommit=True, application_name="pgmigrate run lock")
                run_guard.acquire_run_lock(self.lock_conn, self.target, opts["run_lock_wait_seconds"])
            run_guard.watch_controller(opts["stop_when_process_exits"], self.abort, self._event)
            key = {k: source_identity.get(k) for k in ("system_identifier", "database", "address", "port",
                                                       "database_oid")}
            unfinished = resume.unfinished_to_resume(target_conn, key, opts)
            completed = None if unfinished else completion.find(opts["artifacts_dir"], key, target_identity)
            nothing_to_do = bool(completed) and not opts["overwrite"]
            self._read_source(target_conn, source_identity, target_identity,
                              dump_schema_now=not unfinished and not nothing_to_do)
            if unfinished:
                self.run_id = unfinished["run_id"]
                self.resumed = True
            else:
                self.run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
                if nothing_to_do:
                    return self._already_complete(target_conn, completed, started)
                self._check_target_empty(target_conn)
            if opts["check_mode"]:
                return self._summary("check", started)

            self._start_run_dir()
            self._start_in_target(target_conn, unfinished, key)
            target_conn.close()
            target_conn = None
            summary = self._copy_steps(started)
            completion.record(opts["artifacts_dir"], self.run_id, key, target_identity, self.target,
                              {t["table"]: t["rows"] for t in summary["tables"]})
            self._finish_in_target()
            self.progress.finish("complete", f"{len(self.plan['tables'])} tables in {summary['seconds']}s")
            return summary
        except Exception as error:
            self.abort.set()
            if self.progress:
                self.progress.finish("failed", str(error).splitlines()[0] if str(error) else repr(error))
                summary = self._summary("failed", started)
                summary["error"] = str(error)
                self._write_summary(summary)
            raise
        finally:
            self._discard_early_schema_dump()
            self._close_snapshot()
            for conn in (self.lock_conn, target_conn):
                if conn is not None and not conn.closed:
                    conn.close()

    def _source_identity(self):
        source_conn = self._connect("source")
        try:
            return preflight.server_identity(source_conn)
        finally:
            source_conn.close()

    def _check_servers(self, source_identity, target_identity):
        """Not the same database, versions that work, a production target confirmed."""
        preflight.check_not_same(source_identity, target_identity, self.source, self.target)
        preflight.check_versions(source_identity, target_identity)
        preflight.check_production_confirmation(self.target, self.options["target_is_production"],
                                                self.options["confirm_target"])

    def _read_source(self, target_conn, source_identity, target_identity, dump_schema_now=False):
        """The snapshot opened, the source's catalog, large objects and settings read in it and checked
        against the target, and the plan built: all before anything changes. dump_schema_now (a new run):
        the schema dump, which only reads the source in the snapshot, starts at once beside the catalog read."""
        opts = self.options
        self._open_snapshot()
        preflight.check_source_rights(self.snapshot_conn, self.source, opts["include_schemas"],
                                      opts["exclude_schemas"])
        if dump_schema_now and opts["schema_mode"] == "copy" and not opts["check_mode"]:
            self._start_early_schema_dump()
        # In a session of its own: the catalog's reads lock every table and sequence (sizes, states), and
        # the snapshot holder keeps its locks for the whole run.
        with source_sessions.session_in_snapshot(self.source, self.snapshot_id, "pgmigrate catalog") as conn:
            self.catalog = catalog_module.read_catalog(conn, opts["exclude_schemas"], opts["include_schemas"])
        preflight.check_extensions(target_conn, self.catalog, self.target)
        preflight.check_target_rights(target_conn, self.target, self.catalog["schemas"], opts["schema_mode"])
        self._read_large_objects()
        self._plan_database_settings(target_conn)
        self.binary_ok = source_identity["encoding"] == target_identity["encoding"]
        self.plan = planner.build_plan(
            self.catalog, workers=opts["workers"], split_tables_larger_than=opts["split_tables_larger_than"],
            split_self_referencing=opts["schema_mode"] == "copy")
        if opts["schema_mode"] == "existing":
            self._prepare_existing_checks(target_conn)

    def _already_complete(self, target_conn, completed, started):
        """A run that completed just before its playbook was killed: nothing left to do, if the target
        still holds what it copied."""
        warning = completion.check_unchanged(target_conn, completed, self.target)
        self.warnings += [warning] if warning else []
        self.run_id = completed["run_id"]
        self._event(f"run {completed['run_id']} already completed this copy at {completed['finished_at']}")
        summary = self._summary("already complete", started)
        summary["completed_run"] = {k: v for k, v in completed.items() if k != "table_rows"}
        return summary

    def _start_run_dir(self):
        """The run's directory: its progress file and log, and the plan it follows."""
        opts = self.options
        self.run_dir = os.path.join(opts["artifacts_dir"], "runs", self.run_id)
        os.makedirs(opts["artifacts_dir"], mode=0o700, exist_ok=True)
        os.makedirs(self.run_dir, mode=0o700, exist_ok=True)
        self.progress = Progress(
            opts["progress_file"] or os.path.join(self.run_dir, "progress.json"), self.run_id,
            [(t["table"], t["bytes"], len(t["parts"])) for t in self.plan["tables"]],
            log_path=os.path.join(self.run_dir, "progress.log"))
        self.progress.start()
        with open(os.path.join(self.run_dir, "plan.json"), "w") as handle:
            # Compact: indented, json runs its pure-Python encoder (0.5 s for 3,000 tables' catalog).
            handle.write(json.dumps({"plan": self.plan, "catalog": self.catalog}, default=str))

    def _start_in_target(self, target_conn, unfinished, key):
        """The run recorded in the target's state (a new run first clears the target when told to
        overwrite it), and the steps an earlier attempt finished read back."""
        if self.resumed:
            state.count_attempt(target_conn, self.run_id)
            self._event(f"resuming unfinished run {self.run_id} (attempt {unfinished['attempts'] + 1})")
            if not self.options["source_frozen"]:
                self.warnings.append(
                    "resumed with a new source snapshot: tables copied by the earlier attempt reflect the "
                    "source as it was then; freeze the source (maintenance mode) or rely on validation")
        else:
            if self.options["overwrite"]:
                self._clear_target(target_conn)
            state.create_run(target_conn, self.run_id, key, self.options["schema_mode"])
            self._event(f"started run {self.run_id}")
        self.done = state.done_steps(target_conn, self.run_id)

    def _copy_steps(self, started):
        """The copy's steps in order; returns the summary of the completed copy, also written to the run's
        directory."""
        if self.options["schema_mode"] == "copy":
            self._phase_pre_data()
        else:
            self._phase_existing_prepare()
        self._phase_data_and_indexes()
        self._phase_post_data()
        self._phase_sequences()
        self._phase_materialized_views()
        if self.options["analyze"]:
            self._phase_analyze()
        self._close_snapshot()
        self._phase_sequence_check()
        summary = self._summary("complete", started)
        self._write_summary(summary)
        return summary

    def _enter_phase(self, phase, message=""):
        if self.abort.is_set():
            raise MigrationError(f"stopped before phase {phase}: " + (self.events[-1] if self.events else "aborted"))
        self.progress.set_phase(phase, message)

    def _run_jobs(self, jobs, on_done=None, workers=None):
        """Run jobs, (priority, key, run(worker, conn)), on the run's worker pool (worker_pool.WorkerPool) of
        `workers` sessions (default: the run's workers; 1 runs them one by one by priority)."""
        def connect(worker):
            conn = self._connect("target", application_name=f"pgmigrate worker {worker}")
            self._session_settings(conn)
            return conn
        WorkerPool(connect, workers or self.options["workers"], self.options["retries"],
                   RETRYABLE + (SourceStreamError,), self.abort, self._event).run(jobs, on_done)

    def _session_settings(self, conn):
        """The workers' target sessions. Their commits need not wait for the WAL flush: each one records
        its work in the state schema in the same transaction, so a server crash loses both together and the
        resumed run redoes them; the run's last commit (_finish_in_target) waits and flushes them all."""
        with conn.cursor() as cur:
            cur.execute("SET synchronous_commit = off")
            cur.execute(sql.SQL("SET maintenance_work_mem = {}").format(
                sql.Literal(self.options["maintenance_work_mem"])))
            cur.execute("SET row_security = off")
        conn.commit()


def migrate(source, target, **options):
    """Run (or resume) a migration; returns the summary dict. Raises MigrationError,
    preflight.PreflightError or connection.ConfigError with an explanatory message."""
    return Engine(source, target, **options).run()
