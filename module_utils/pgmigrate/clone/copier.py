"""The migration engine: one run of the copy, its steps in order.

Data path (chosen by measurement, see benchmarks/README.md): for each table part a `psql` process
runs `COPY (...) TO STDOUT` on the source inside the run's exported snapshot; the worker thread
reads its output through an OS pipe in 1 MB chunks and feeds it to `COPY ... FROM STDIN` on a
psycopg2 connection to the target. No intermediate files. The target transaction is
TRUNCATE (whole tables) + COPY (FREEZE where allowed) + a "done" record in the run's state, and it
commits only after the source side has exited successfully: a part is either complete and
recorded, or not there at all, whatever is killed and when.

The run's context (connections, options, catalog, plan, the steps done, progress, results) is one object,
run_context.CopyRun, built in Engine's constructor; each step is a small class of its own module taking it
explicitly: snapshot_step, target_checks, schema_step, data_step (with table_copy and the worker_pool),
post_data_step, sequences_step, finish_step, then the summary. Engine decides what runs (a new run, a resumed
one, one already complete) and runs the steps in order.
"""

import json
import os
import time
import uuid

from ..common import catalog as catalog_module
from ..common import extension_substitutes, planner, preflight
from ..common.units import human_duration
from . import completion, copy_options, resume, run_guard, source_sessions, state
from .data_step import DataStep
from .errors import MigrationError, SourceStreamError
from .finish_step import FinishStep
from .post_data_step import PostDataStep
from .progress import Progress
from .run_context import CopyRun
from .schema_step import SchemaStep
from .sequences_step import SEQUENCE_WARNINGS_SHOWN, SequencesStep
from .snapshot_step import SnapshotStep
from .summary import RunSummary
from .table_copy import TableCopy
from .target_checks import TargetChecks

# Every option and its default: copy_options.OPTIONS, declared once for the engine and the module.
DEFAULTS = copy_options.engine_defaults()

__all__ = ["DEFAULTS", "SEQUENCE_WARNINGS_SHOWN", "Engine", "MigrationError", "SourceStreamError", "migrate"]


class Engine:
    def __init__(self, source, target, **options):
        unknown = set(options) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown options: {sorted(unknown)}")
        options = {**DEFAULTS, **options}
        preflight.check_options(options)
        self.options = options
        self.run_state = CopyRun(source, target, options)
        self.lock_conn = None  # the target session holding the run lock (run_guard) for the whole run
        self.snapshot = SnapshotStep(self.run_state)
        self.target_checks = TargetChecks(self.run_state)
        self.schema = SchemaStep(self.run_state)
        self.post_data = PostDataStep(self.run_state)
        self.data = DataStep(self.run_state, TableCopy(self.run_state), self.post_data)
        self.sequences = SequencesStep(self.run_state)
        self.finish = FinishStep(self.run_state, self.post_data)
        self.summary = RunSummary(self.run_state)

    def run(self):
        started = time.monotonic()
        run, opts = self.run_state, self.options
        if opts["progress_file"] and not opts["check_mode"]:
            # An earlier run's progress must not be shown as this one's.
            try:
                os.remove(opts["progress_file"])
            except FileNotFoundError:
                pass
        target_conn = None
        try:
            preflight.use_client_tools(opts["pg_bin_dir"])
            source_identity = self._source_identity()
            target_conn = run.connect("target")
            target_identity = preflight.server_identity(target_conn)
            target_conn.rollback()
            self._check_servers(source_identity, target_identity)
            if not opts["check_mode"]:
                self.lock_conn = run.connect("target", autocommit=True, application_name="pgmigrate run lock")
                run_guard.acquire_run_lock(self.lock_conn, run.target, opts["run_lock_wait_seconds"])
            run_guard.watch_controller(opts["stop_when_process_exits"], run.abort, run.event)
            key = {k: source_identity.get(k) for k in ("system_identifier", "database", "address", "port",
                                                       "database_oid")}
            unfinished = resume.unfinished_to_resume(target_conn, key, opts)
            completed = None if unfinished else completion.find(opts["artifacts_dir"], key, target_identity)
            nothing_to_do = bool(completed) and not opts["overwrite"]
            self._read_source(target_conn, source_identity, target_identity,
                              dump_schema_now=not unfinished and not nothing_to_do)
            if unfinished:
                run.run_id = unfinished["run_id"]
                run.resumed = True
            else:
                run.run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
                if nothing_to_do:
                    return self._already_complete(target_conn, completed, started)
                self.target_checks.check_target_empty(target_conn)
            if opts["check_mode"]:
                return self.summary.build("check", started)

            self._start_run_dir()
            self._start_in_target(target_conn, unfinished, key)
            target_conn.close()
            target_conn = None
            summary = self._copy_steps(started)
            completion.record(opts["artifacts_dir"], run.run_id, key, target_identity, run.target,
                              {t["table"]: t["rows"] for t in summary["tables"]})
            self.finish.finish_in_target()
            run.progress.finish("complete", f"{len(run.plan['tables'])} tables in {human_duration(summary['seconds'])}")
            return summary
        except Exception as error:
            run.abort.set()
            if run.progress:
                run.progress.finish("failed", str(error).splitlines()[0] if str(error) else repr(error))
                summary = self.summary.build("failed", started)
                summary["error"] = str(error)
                self.summary.write(summary)
            raise
        finally:
            self.schema.discard_early_dump()
            self.snapshot.close()
            for conn in (self.lock_conn, target_conn):
                if conn is not None and not conn.closed:
                    conn.close()

    def _source_identity(self):
        source_conn = self.run_state.connect("source")
        try:
            return preflight.server_identity(source_conn)
        finally:
            source_conn.close()

    def _check_servers(self, source_identity, target_identity):
        """Not the same database, versions that work (servers and client programs), a production target
        confirmed."""
        run = self.run_state
        preflight.check_not_same(source_identity, target_identity, run.source, run.target)
        preflight.check_versions(source_identity, target_identity)
        preflight.check_client_tools(source_identity, target_identity)
        preflight.check_production_confirmation(run.target, self.options["target_is_production"],
                                                self.options["confirm_target"])

    def _read_source(self, target_conn, source_identity, target_identity, dump_schema_now=False):
        """The snapshot opened, the source's catalog, large objects and settings read in it and checked
        against the target, and the plan built: all before anything changes. dump_schema_now (a new run):
        the schema dump, which only reads the source in the snapshot, starts at once beside the catalog read."""
        run, opts = self.run_state, self.options
        self.snapshot.open()
        preflight.check_source_rights(run.snapshot_conn, run.source, opts["include_schemas"],
                                      opts["exclude_schemas"])
        if dump_schema_now and opts["schema_mode"] == "copy" and not opts["check_mode"]:
            self.schema.start_early_dump()
        # In a session of its own: the catalog's reads lock every table and sequence (sizes, states), and
        # the snapshot holder keeps its locks for the whole run.
        with source_sessions.session_in_snapshot(run.source, run.snapshot_id, "pgmigrate catalog") as conn:
            run.catalog = catalog_module.read_catalog(conn, opts["exclude_schemas"], opts["include_schemas"])
        run.extension_substitution = preflight.check_extensions(
            target_conn, run.catalog, run.target, opts["extension_substitutes"], source_conn=run.snapshot_conn,
            exclude_schemas=opts["exclude_schemas"])
        for note in extension_substitutes.notes(run.extension_substitution or {"left_out": []}):
            run.event(note)
        preflight.check_collations(target_conn, preflight.icu_collations(run.snapshot_conn), run.target)
        preflight.check_target_rights(target_conn, run.target, run.catalog["schemas"], opts["schema_mode"])
        self.target_checks.read_large_objects()
        self.target_checks.plan_database_settings(target_conn)
        run.binary_ok = source_identity["encoding"] == target_identity["encoding"]
        run.plan = planner.build_plan(
            run.catalog, workers=opts["workers"], split_tables_larger_than=opts["split_tables_larger_than"],
            split_self_referencing=opts["schema_mode"] == "copy")
        if opts["schema_mode"] == "existing":
            self.target_checks.check_existing_schema(target_conn)

    def _already_complete(self, target_conn, completed, started):
        """A run that completed just before its playbook was killed: nothing left to do, if the target
        still holds what it copied."""
        run = self.run_state
        warning = completion.check_unchanged(target_conn, completed, run.target)
        run.warnings += [warning] if warning else []
        run.run_id = completed["run_id"]
        run.event(f"run {completed['run_id']} already completed this copy at {completed['finished_at']}")
        summary = self.summary.build("already complete", started)
        summary["completed_run"] = {k: v for k, v in completed.items() if k != "table_rows"}
        return summary

    def _start_run_dir(self):
        """The run's directory: its progress file and log, and the plan it follows."""
        run, opts = self.run_state, self.options
        run.run_dir = os.path.join(opts["artifacts_dir"], "runs", run.run_id)
        os.makedirs(opts["artifacts_dir"], mode=0o700, exist_ok=True)
        os.makedirs(run.run_dir, mode=0o700, exist_ok=True)
        run.progress = Progress(
            opts["progress_file"] or os.path.join(run.run_dir, "progress.json"), run.run_id,
            [(t["table"], t["bytes"], len(t["parts"])) for t in run.plan["tables"]],
            log_path=os.path.join(run.run_dir, "progress.log"))
        run.progress.start()
        with open(os.path.join(run.run_dir, "plan.json"), "w") as handle:
            # Compact: indented, json runs its pure-Python encoder (0.5 s for 3,000 tables' catalog).
            handle.write(json.dumps({"plan": run.plan, "catalog": run.catalog}, default=str))

    def _start_in_target(self, target_conn, unfinished, key):
        """The run recorded in the target's state (a new run first clears the target when told to
        overwrite it), and the steps an earlier attempt finished read back."""
        run = self.run_state
        if run.resumed:
            state.count_attempt(target_conn, run.run_id)
            run.event(f"resuming unfinished run {run.run_id} (attempt {unfinished['attempts'] + 1})")
            if not self.options["source_frozen"]:
                run.warnings.append(
                    "resumed with a new source snapshot: tables copied by the earlier attempt reflect the "
                    "source as it was then; freeze the source (maintenance mode) or rely on validation")
        else:
            if self.options["overwrite"]:
                self.target_checks.clear_target(target_conn)
            state.create_run(target_conn, run.run_id, key, self.options["schema_mode"])
            run.event(f"started run {run.run_id}")
        run.done = state.done_steps(target_conn, run.run_id)

    def _copy_steps(self, started):
        """The copy's steps in order; returns the summary of the completed copy, also written to the run's
        directory."""
        if self.options["schema_mode"] == "copy":
            self.schema.restore_pre_data()
        else:
            self.schema.prepare_existing()
        self.data.copy_data_and_indexes()
        self.post_data.restore()
        self.sequences.set_states()
        self.finish.refresh_materialized_views()
        if self.options["analyze"]:
            self.finish.analyze_the_rest()
        self.snapshot.close()
        self.sequences.check()
        summary = self.summary.build("complete", started)
        self.summary.write(summary)
        return summary


def migrate(source, target, **options):
    """Run (or resume) a migration; returns the summary dict. Raises MigrationError,
    preflight.PreflightError or connection.ConfigError with an explanatory message."""
    return Engine(source, target, **options).run()
