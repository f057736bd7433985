"""The migration engine: schema, data, post-data, sequences, materialized views.

Data path (chosen by measurement, see benchmarks/README.md): for each table part a `psql` process
runs `COPY (...) TO STDOUT` on the source inside the run's exported snapshot; the worker thread
reads its output through an OS pipe in 1 MB chunks and feeds it to `COPY ... FROM STDIN` on a
psycopg2 connection to the target. No intermediate files. The target transaction is
TRUNCATE (whole tables) + COPY (FREEZE where allowed) + a "done" record in the run's state, and it
commits only after the source side has exited successfully: a part is either complete and
recorded, or not there at all, whatever is killed and when.
"""

import fcntl
import json
import os
import queue
import subprocess
import threading
import time
import traceback
import uuid

import psycopg2
from psycopg2 import errors as pg_errors
from psycopg2 import sql

from ..common import catalog as catalog_module
from ..common import column_extremes, database_settings, planner, preflight, triggers
from ..common.connection import describe, libpq_environment
from . import completion, copy_options, large_objects, overwrite, pre_data, schema, source_sessions, state
from .progress import Progress

PIPE_SIZE = 1 << 20
CHUNK_SIZE = 1 << 20
F_SETPIPE_SZ = 1031
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

# Every option and its default: copy_options.OPTIONS, declared once for the engine and the module.
DEFAULTS = copy_options.engine_defaults()

# Advisory lock key on the target: one migration run at a time per target database.
RUN_LOCK_KEY = 0x70676D6967
# Sequence problems shown as warnings; any more are listed in the run's sequence_problems.txt.
SEQUENCE_WARNINGS_SHOWN = 10
# A whole table below this size is loaded without COPY FREEZE when it is empty: FREEZE needs a TRUNCATE
# in the same transaction, and a TRUNCATE (new files for the table, its TOAST table and its index, the old
# ones removed at commit) costs more than a small table's freezing saves: about 1.7 ms a table, 5 s of a
# 3,000-table copy.
FREEZE_MIN_BYTES = 1 << 20


class MigrationError(Exception):
    """A failure that stops the run; the message names what failed and how to go on."""


class SourceStreamError(Exception):
    pass


def describe_identity(identity):
    return f"database {identity.get('database')} at {identity.get('address')}:{identity.get('port')}"


def _quote_columns(columns):
    return sql.SQL(", ").join(sql.Identifier(c) for c in columns)


class _InProcessTransfer:
    """A small table through the worker's source session (source_sessions.copy_through_spool)."""

    def __init__(self, engine, worker, table_name, table, fmt):
        self.engine, self.worker, self.table_name, self.table, self.fmt = engine, worker, table_name, table, fmt
        self.streamed = 0

    def run(self, target_cur, copy_in_sql):
        if self.engine.abort.is_set():
            raise MigrationError("aborted")
        session = self.engine.source_sessions.get(self.worker)
        self.streamed = source_sessions.copy_through_spool(
            session, self.engine._copy_out_sql(self.table, None, self.fmt), target_cur, copy_in_sql)
        self.engine.progress.add_bytes(self.table_name, self.streamed)
        return self.streamed

    def failed(self):
        self.engine.source_sessions.discard(self.worker)

    def close(self):
        pass


class _StreamingTransfer:
    """A table (or a part of one) streamed from a psql process on the source into the target's COPY."""

    def __init__(self, engine, worker, table_plan, table, part, fmt):
        self.engine, self.table_plan, self.table = engine, table_plan, table
        self.streamed = 0
        env = libpq_environment(engine.source, f"pgmigrate worker {worker}")
        if fmt == "text":
            env["PGCLIENTENCODING"] = "UTF8"
        self.proc = subprocess.Popen(engine._source_command(table, part, fmt), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, bufsize=0)
        try:
            fcntl.fcntl(self.proc.stdout.fileno(), F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass

    def read(self, size=-1):
        if self.engine.abort.is_set():
            raise MigrationError("aborted")
        data = os.read(self.proc.stdout.fileno(), CHUNK_SIZE if size is None or size < 0 else size)
        self.streamed += len(data)
        self.engine.progress.add_bytes(self.table_plan["table"], len(data))
        return data

    readline = read

    def run(self, target_cur, copy_in_sql):
        target_cur.copy_expert(copy_in_sql, self, size=CHUNK_SIZE)
        if self.proc.wait() != 0:
            message = self.proc.stderr.read().decode(errors="replace").strip()
            raise SourceStreamError(f"reading {self.table['qualname']} from the source failed: {message}")
        return self.streamed

    def failed(self):
        pass

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


class Engine:
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
        self.snapshot_conn = None
        self.source_sessions = None
        self.event_triggers = []  # created last, in _finish_in_target
        self.snapshot_id = None
        self.catalog = None
        self.plan = None
        self.done = {}
        self.results = {}
        self.errors = []
        self.warnings = []
        self.events = []
        self.resumed = False
        self.abort = threading.Event()
        self.timings = {}
        self.lock = threading.Lock()
        self.post_settings = ""
        self.replication_role = False
        self.lock_conn = None
        self.large_objects = []
        self.large_object_stats = {"copied": 0, "copied_bytes": 0, "resumed": 0}
        self.settings_to_apply = []

    # ------------------------------------------------------------------ connections ----------
    def _connect(self, which, autocommit=False, application_name="pgmigrate"):
        params = self.source if which == "source" else self.target
        return preflight.connect_or_explain(params, f"migration_{which}", application_name, autocommit=autocommit,
                                            lock_timeout=self.options["lock_timeout"] if which == "target" else None)

    def _event(self, text):
        self.events.append(f"{time.strftime('%H:%M:%S')} {text}")
        if self.progress:
            self.progress._log(text)

    # ------------------------------------------------------------------ entry point ----------
    def run(self):
        started = time.monotonic()
        opts = self.options
        if opts["progress_file"] and not opts["check_mode"]:
            # An earlier run's progress must not be shown as this one's.
            try:
                os.remove(opts["progress_file"])
            except FileNotFoundError:
                pass
        source_conn = self._connect("source")
        target_conn = self._connect("target")
        try:
            source_identity = preflight.server_identity(source_conn)
            target_identity = preflight.server_identity(target_conn)
            source_conn.rollback()
            target_conn.rollback()
            preflight.check_not_same(source_identity, target_identity, self.source, self.target)
            preflight.check_versions(source_identity, target_identity)
            preflight.check_production_confirmation(self.target, opts["target_is_production"], opts["confirm_target"])
            source_conn.close()

            if not opts["check_mode"]:
                self._acquire_run_lock()
            self._watch_controller()
            unfinished = state.unfinished_run(target_conn)
            target_conn.rollback()
            key = {k: source_identity.get(k) for k in ("system_identifier", "database", "address", "port",
                                                       "database_oid")}
            if unfinished and unfinished["source_identity"] != key and not opts["restart"]:
                raise preflight.PreflightError(
                    f"The target holds an unfinished migration run {unfinished['run_id']} from another source "
                    f"({describe_identity(unfinished['source_identity'])}). Finish it with that source, or pass "
                    "migration_restart=true (with migration_target_overwrite=true) to discard it."
                )
            if unfinished and unfinished["schema_mode"] != opts["schema_mode"] and not opts["restart"]:
                raise preflight.PreflightError(
                    f"The target holds an unfinished run {unfinished['run_id']} in schema mode "
                    f"'{unfinished['schema_mode']}', not '{opts['schema_mode']}': rerun with that mode, or "
                    "migration_restart=true to discard it."
                )
            if unfinished and opts["restart"]:
                if not opts["overwrite"]:
                    raise preflight.PreflightError(
                        "migration_restart=true discards a partly copied target: also set "
                        "migration_target_overwrite=true to confirm that its tables may be replaced.")
                if not opts["check_mode"]:
                    state.drop_state(target_conn)
                unfinished = None

            self._open_snapshot()
            preflight.check_source_rights(self.snapshot_conn, self.source, opts["include_schemas"],
                                          opts["exclude_schemas"])
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

            if unfinished:
                self.run_id = unfinished["run_id"]
                self.resumed = True
            else:
                self.run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
                completed = completion.find(opts["artifacts_dir"], key, target_identity)
                if completed and not opts["overwrite"]:
                    # A run that completed just before its playbook was killed: nothing left to do, if the
                    # target still holds what it copied.
                    warning = completion.check_unchanged(target_conn, completed, self.target)
                    self.warnings += [warning] if warning else []
                    self.run_id = completed["run_id"]
                    self._event(f"run {completed['run_id']} already completed this copy at {completed['finished_at']}")
                    summary = self._summary("already complete", started)
                    summary["completed_run"] = {k: v for k, v in completed.items() if k != "table_rows"}
                    return summary
                self._check_target_empty(target_conn)

            if opts["check_mode"]:
                return self._summary("check", started)

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

            if self.resumed:
                state.count_attempt(target_conn, self.run_id)
                self._event(f"resuming unfinished run {self.run_id} (attempt {unfinished['attempts'] + 1})")
                if not opts["source_frozen"]:
                    self.warnings.append(
                        "resumed with a new source snapshot: tables copied by the earlier attempt reflect the "
                        "source as it was then; freeze the source (maintenance mode) or rely on validation")
            else:
                if opts["overwrite"]:
                    self._clear_target(target_conn)
                state.create_run(target_conn, self.run_id, key, opts["schema_mode"])
                self._event(f"started run {self.run_id}")
            self.done = state.done_steps(target_conn, self.run_id)
            target_conn.close()
            target_conn = None

            if opts["schema_mode"] == "copy":
                self._phase_pre_data()
            else:
                self._phase_existing_prepare()
            self._phase_data_and_indexes()
            self._phase_post_data()
            self._phase_sequences()
            self._phase_materialized_views()
            if opts["analyze"]:
                self._phase_analyze()
            self._close_snapshot()
            self._phase_sequence_check()
            summary = self._summary("complete", started)
            self._write_summary(summary)
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
            self._close_snapshot()
            if self.lock_conn is not None and not self.lock_conn.closed:
                self.lock_conn.close()
            for conn in (source_conn, target_conn):
                if conn is not None and not conn.closed:
                    conn.close()

    def _enter_phase(self, phase, message=""):
        if self.abort.is_set():
            raise MigrationError(f"stopped before phase {phase}: " + (self.events[-1] if self.events else "aborted"))
        self.progress.set_phase(phase, message)

    # ------------------------------------------------------------------ completion record ----
    # ------------------------------------------------------------------ run lock, watchdog ---
    def _acquire_run_lock(self):
        """One run per target at a time: a second run (say, a rerun while a killed playbook's
        orphaned copy is still stopping) waits for the lock instead of working alongside."""
        self.lock_conn = self._connect("target", autocommit=True, application_name="pgmigrate run lock")
        deadline = time.monotonic() + self.options["run_lock_wait_seconds"]
        with self.lock_conn.cursor() as cur:
            while True:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (RUN_LOCK_KEY,))
                if cur.fetchone()[0]:
                    return
                if time.monotonic() > deadline:
                    cur.execute("SELECT string_agg(pid::text, ', ') FROM pg_locks WHERE locktype = 'advisory' "
                                "AND objid = %s AND granted", (RUN_LOCK_KEY & 0xFFFFFFFF,))
                    holders = cur.fetchone()[0]
                    raise preflight.PreflightError(
                        f"Another migration run is active on the target {describe(self.target)} (server pid "
                        f"{holders}); waited {self.options['run_lock_wait_seconds']}s. Wait for it to end, or stop "
                        "it (pg_terminate_backend of those pids), then rerun: the run resumes where it stopped.")
                time.sleep(1)

    def _watch_controller(self):
        """Stop cleanly when the process that started the run (ansible-playbook) is gone, so that a
        killed playbook does not leave an orphaned copy running beside its rerun."""
        pid = self.options["stop_when_process_exits"]
        if not pid:
            return

        def watch():
            while not self.abort.is_set():
                try:
                    os.kill(int(pid), 0)
                except ProcessLookupError:
                    self._event(f"the controlling process {pid} is gone: stopping; a rerun resumes the run")
                    self.abort.set()
                    return
                except PermissionError:
                    pass
                time.sleep(0.2)
        threading.Thread(target=watch, name="watchdog", daemon=True).start()

    # ------------------------------------------------------------------ snapshot -------------
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

    # ------------------------------------------------------------------ large objects, settings
    def _read_large_objects(self):
        """The source's large objects in the run's snapshot (none when the run is limited to some
        schemas, as with pg_dump --schema)."""
        if self.options["include_schemas"]:
            with self.snapshot_conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_largeobject_metadata")
                left = cur.fetchone()[0]
            if left:
                self.warnings.append(
                    f"{left} large object(s) not copied: the run is limited to the schemas "
                    f"{', '.join(self.options['include_schemas'])} (migration_include_schemas), and large objects "
                    "belong to no schema (as with pg_dump --schema)")
            return
        try:
            self.large_objects = large_objects.read_from_snapshot(self.source, self.snapshot_id)
        except LookupError as error:
            denied = error.args[0]
            shown = ", ".join(str(o) for o in denied[:8]) + (f" and {len(denied) - 8} more" if len(denied) > 8 else "")
            raise preflight.PreflightError(
                f"The source login {self.source['user']} may not read {len(denied)} large object(s) of "
                f"{describe(self.source)}: {shown}. GRANT SELECT ON LARGE OBJECT <oid> TO {self.source['user']} "
                "for each (pg_read_all_data does not cover large objects), or connect as their owner or a "
                "superuser.") from None

    def _plan_database_settings(self, target_conn):
        """The source database's settings to carry, checked against the target login's rights before
        anything changes; settings of roles the target lacks are skipped with a warning."""
        if not self.options["database_settings"]:
            return
        source_settings = database_settings.read_settings(self.snapshot_conn)
        self.settings_to_apply, warnings = database_settings.plan(source_settings, target_conn,
                                                                 self.options["database_settings_skipped"])
        self.warnings.extend(warnings)
        problems = database_settings.rights_problems(target_conn, self.settings_to_apply)
        target_conn.rollback()
        if problems:
            raise preflight.PreflightError(
                f"The source database has {len(self.settings_to_apply)} setting(s) to carry "
                f"({', '.join(database_settings.describe_setting(s) for s in self.settings_to_apply[:5])}), but the "
                f"target login {self.target['user']} may not set them on {describe(self.target)}: "
                f"{'; '.join(problems)}. Grant that, or set migration_copy_database_settings=false to leave them.")

    def _finish_in_target(self):
        """The database's settings, the run's state dropped, then the event triggers created: one
        transaction, the last one. The triggers come after the drop so that the database's own DDL
        triggers (sql_drop, ddl_command_end) never see the tool's DROP SCHEMA."""
        conn = self._connect("target")
        try:
            with conn.cursor() as cur:
                if self.settings_to_apply:
                    database_settings.apply(cur, self.settings_to_apply, self.target["dbname"])
                state.drop_state_in(cur)
                # (skipping those a run of an earlier version created and recorded done)
                event_triggers = [e for e in self.event_triggers if f"post:{e['key']}" not in self.done]
                for entry in event_triggers:
                    self._post_data_settings(cur)
                    try:
                        cur.execute(entry["sql"])
                    except psycopg2.Error as error:
                        raise MigrationError(f"post-data {entry['type']} {entry['name']} failed: {error}") from None
            conn.commit()
            for entry in event_triggers:
                self.progress.job_done(entry["key"])
        except database_settings.SettingsError as error:
            conn.rollback()
            raise MigrationError(str(error)) from None
        finally:
            conn.close()
        if self.settings_to_apply:
            self._event(f"applied {len(self.settings_to_apply)} database setting(s) to the target")

    def _large_object_jobs(self):
        """Batches of the large objects not recorded as done, as jobs of the data phase's pool."""
        todo = [lo for lo in self.large_objects if f"lo:{lo['oid']}" not in self.done]
        resumed = len(self.large_objects) - len(todo)
        self.large_object_stats["resumed"] = resumed
        self.progress.set_large_objects(len(self.large_objects), sum(lo["bytes"] for lo in self.large_objects),
                                        resumed, sum(lo["bytes"] for lo in self.large_objects
                                                     if f"lo:{lo['oid']}" in self.done))
        jobs = []
        for batch in large_objects.batches(todo):
            size = sum(lo["bytes"] for lo in batch)
            jobs.append((1 + 1.0 / (1 + size), f"lo:{batch[0]['oid']}+{len(batch)}", self._large_object_job(batch)))
        return jobs

    def _large_object_job(self, batch):
        def run(worker, conn):
            streamed = [0]

            def on_bytes(count):
                streamed[0] += count
                self.progress.add_large_object_bytes(count)

            def mark(cur, done_batch, seconds):
                state.mark_many_done(cur, self.run_id, [(f"lo:{lo['oid']}", 1, lo["bytes"]) for lo in done_batch],
                                     seconds=seconds, worker=worker)
            try:
                with conn.cursor() as cur:
                    cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(
                        sql.Literal(self.options["lock_timeout"])))
                    cur.execute("SET LOCAL synchronous_commit = off")
                copied = large_objects.copy_batch(
                    self.source, self.snapshot_id, conn, batch, no_owner=self.options["no_owner"],
                    no_privileges=self.options["no_privileges"], on_bytes=on_bytes, should_stop=self.abort.is_set,
                    mark_done=mark, application_name=f"pgmigrate worker {worker} large objects")
                conn.commit()
            except large_objects.MetadataError as error:
                self._rollback_quietly(conn)
                self.progress.large_objects_done(0, streamed[0])
                raise MigrationError(str(error)) from None
            except BaseException:
                self._rollback_quietly(conn)
                self.progress.large_objects_done(0, streamed[0])
                raise
            self.progress.large_objects_done(len(batch))
            return {"large_objects": len(batch), "bytes": copied, "worker": worker}
        return run

    @staticmethod
    def _rollback_quietly(conn):
        try:
            conn.rollback()
        except psycopg2.Error:
            pass

    # ------------------------------------------------------------------ target checks --------
    def _check_target_empty(self, target_conn):
        opts = self.options
        colliding = large_objects.existing_oids(target_conn, [lo["oid"] for lo in self.large_objects])
        target_conn.rollback()
        if colliding and not opts["overwrite"]:
            raise preflight.PreflightError(
                f"The target {describe(self.target)} already holds {len(colliding)} large object(s) with the oids "
                f"of the source's (e.g. {', '.join(str(o) for o in colliding[:5])}). Nothing was changed. Set "
                "migration_target_overwrite=true to replace them.")
        if opts["schema_mode"] == "copy":
            present = preflight.existing_user_tables(target_conn, self.catalog["schemas"])
            if present and not opts["overwrite"]:
                raise preflight.PreflightError(
                    f"The target {describe(self.target)} is not empty: {len(present)} table(s) already exist in "
                    f"the schemas to migrate (e.g. {', '.join(present[:5])}). Nothing was changed. Set "
                    "migration_target_overwrite=true to replace them, or use migration_schema_mode=existing if the "
                    "application created the schema.")
        else:
            populated = preflight.populated_tables(target_conn, [t["table"] for t in self.plan["tables"]])
            if populated and not opts["overwrite"]:
                raise preflight.PreflightError(
                    f"The target {describe(self.target)} is not empty: {len(populated)} table(s) hold rows "
                    f"(e.g. {', '.join(populated[:5])}). Nothing was changed. Set migration_target_overwrite=true "
                    "to truncate and reload them.")

    def _prepare_existing_checks(self, target_conn):
        missing = []
        with target_conn.cursor() as cur:
            for table in self.catalog["tables"]:
                cur.execute("SELECT to_regclass(%s)", (table["qualname"],))
                if cur.fetchone()[0] is None:
                    missing.append(table["qualname"])
        target_conn.rollback()
        if missing:
            raise preflight.PreflightError(
                f"migration_schema_mode=existing, but the target lacks {len(missing)} table(s) of the source: "
                f"{', '.join(missing[:10])}. Run the application's migrations on the target first, or use "
                "migration_schema_mode=copy.")
        self.replication_role = preflight.can_set_replication_role(target_conn)

    def _clear_target(self, target_conn):
        """migration_target_overwrite=true: make room for the copy (nothing outside the source's schemas,
        and of the large objects only those whose oids the source's use)."""
        removed = large_objects.unlink(target_conn, [lo["oid"] for lo in self.large_objects])
        if removed:
            self._event(f"overwrite: removed {removed} large object(s) of the target with the source's oids")
        if self.options["schema_mode"] == "copy":
            dropped = [name for name in self.catalog["schemas"] if overwrite.drop_schema(target_conn, name)]
            self._event(f"overwrite: dropped schemas {', '.join(dropped) or '(none present)'} in the target")
            return
        with target_conn.cursor() as cur:
            tables = [t["table"] for t in self.plan["tables"]]
            if tables:
                cur.execute("TRUNCATE " + ", ".join(tables))
            self._event(f"overwrite: truncated {len(tables)} tables in the target")
        target_conn.commit()

    # ------------------------------------------------------------------ schema ---------------
    @staticmethod
    def _target_schemas(conn):
        """The target's schema names: a dump limited to some schemas creates them, and public exists."""
        with conn.cursor() as cur:
            cur.execute("SELECT nspname FROM pg_namespace")
            names = {row[0] for row in cur.fetchall()}
        conn.rollback()
        return names

    def _phase_pre_data(self):
        self._enter_phase("schema", "pre-data (types, tables, functions, views)")
        dump_path = os.path.join(self.run_dir, "schema.dump")
        exclude = list(self.options["exclude_schemas"]) + [catalog_module.STATE_SCHEMA]
        if not os.path.exists(dump_path):
            schema.dump_schema(self.source, dump_path + ".tmp", snapshot=self.snapshot_id,
                               schemas=self.options["include_schemas"], exclude_schemas=exclude)
            os.replace(dump_path + ".tmp", dump_path)
        self.dump_path = dump_path
        if "schema:pre-data" not in self.done:
            conn = self._connect("target")
            t0 = time.monotonic()
            steps_plan = self._pre_data_steps(dump_path, conn)
            if steps_plan:  # many tables: in steps, several at once, each recording itself done
                pre_data.StepRestore(
                    self.target, dump_path, self.run_id, self.options["no_owner"], self.options["no_privileges"],
                    self._extension_versions_to_pin(conn), quote=lambda composed: composed.as_string(conn),
                ).run(steps_plan, self.done)
            # In one transaction; if it committed before a crash, the tables exist.
            elif not preflight.existing_user_tables(conn, self.catalog["schemas"]):
                schema.restore_pre_data(self.target, dump_path, self.options["no_owner"],
                                        self.options["no_privileges"], self._extension_versions_to_pin(conn),
                                        existing_schemas=self._target_schemas(conn))
            self.timings["pre_data"] = round(time.monotonic() - t0, 2)
            with conn.cursor() as cur:
                state.mark_done(cur, self.run_id, "schema:pre-data")
            conn.commit()
            conn.close()
            self._event("pre-data schema restored")
        text = schema.post_data_sql(dump_path, self.target, self.options["no_owner"], self.options["no_privileges"])
        index_tables = {(i["schema"], i["name"]): i["table"] for i in self.catalog["indexes"]}
        self.post_entries, self.post_settings = schema.split_post_data(text, index_tables)
        schema.build_keys_index_first(self.post_entries, self.catalog.get("key_indexes", []))

    def _pre_data_steps(self, dump_path, conn):
        """The pre-data restore's steps (pre_data.plan), or None for one transaction. Decided once per run
        and saved beside the dump: a resumed restore finishes the steps it began."""
        path = dump_path + ".steps.json"
        begun = sorted(step for step in self.done if step.startswith(pre_data.STEP_PREFIX))
        if begun and not os.path.exists(path):
            raise MigrationError(
                f"the pre-data restore was interrupted after its steps {', '.join(begun)}, and its plan {path} is "
                "gone (a new artifacts directory?): rerun with migration_target_overwrite=true and "
                "migration_restart=true to copy again from the start")

        def make():
            listing = schema.toc_lines(self.target, dump_path, self._target_schemas(conn))
            with source_sessions.session_in_snapshot(self.source, self.snapshot_id, "pgmigrate pre-data plan") \
                    as source_conn, source_conn.cursor() as cur:
                cur.execute(pre_data.WAVE_RELATIONS)
                relations = dict(cur.fetchall())
            return pre_data.plan(listing, relations, min(self.options["workers"], pre_data.MAX_GROUPS))
        return pre_data.load_or_make(path, make)

    def _extension_versions_to_pin(self, conn):
        """{name: source version} of the extensions the pre-data restore will create (the target lacks
        them) whose source version is not the target's default: pg_dump does not write versions."""
        with conn.cursor() as cur:
            cur.execute("SELECT a.name, a.default_version FROM pg_available_extensions a"
                        " WHERE a.installed_version IS NULL")
            defaults = dict(cur.fetchall())
        conn.rollback()
        return {e["name"]: e["version"] for e in self.catalog.get("extensions", [])
                if e["name"] in defaults and e["version"] != defaults[e["name"]]}

    def _phase_existing_prepare(self):
        self.post_entries = []
        self._enter_phase("prepare", "existing schema: checking triggers and foreign keys")
        if self.replication_role:
            self._event("target role may set session_replication_role=replica: triggers and FK checks are off "
                        "for the copy's own transactions; integrity is validated afterwards")
            return
        cycle_tables = {t for c in self.plan["cycles"] for t in c["tables"]}
        conn = self._connect("target")
        with conn.cursor() as cur:
            for fk in self.catalog["foreign_keys"]:
                if fk["child"] in cycle_tables and fk["parent"] in cycle_tables and not fk["self_reference"]:
                    cur.execute(
                        "SELECT 1 FROM pg_constraint WHERE conrelid = %s::regclass AND conname = %s",
                        (fk["child"], fk["name"]))
                    if cur.fetchone():
                        cur.execute(
                            f"INSERT INTO {catalog_module.STATE_SCHEMA}.dropped_constraint VALUES (%s, %s, %s, %s) "
                            "ON CONFLICT DO NOTHING", (self.run_id, fk["child"], fk["name"], fk["definition"]))
                        cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                            sql.SQL(fk["child"]), sql.Identifier(fk["name"])))
                        self._event(f"cycle: dropped {fk['name']} on {fk['child']} for the load (kept in state)")
        conn.commit()
        conn.close()

    # ------------------------------------------------------------------ data -----------------
    def _copy_out_sql(self, table, part, fmt):
        """COPY TO STDOUT of a whole table (part None or without pages) or of a page range."""
        column_sql = ", ".join(psycopg2.extensions.quote_ident(c, self.snapshot_conn) for c in table["copy_columns"])
        qual = table["qualname"]
        if part is None or part["start_page"] is None:
            return f"COPY (SELECT {column_sql} FROM ONLY {qual}) TO STDOUT (FORMAT {fmt})"
        where = f"ctid >= '({part['start_page']},0)'::tid"
        if part["end_page"] is not None:
            where += f" AND ctid < '({part['end_page']},0)'::tid"
        return f"COPY (SELECT {column_sql} FROM ONLY {qual} WHERE {where}) TO STDOUT (FORMAT {fmt})"

    def _source_command(self, table, part, fmt):
        commands = ["BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"]
        if self.snapshot_id:
            commands.append(f"SET TRANSACTION SNAPSHOT '{self.snapshot_id}'")
        commands += [*source_sessions.READ_SETTINGS, *source_sessions.TIMEOUTS_OFF,
                     self._copy_out_sql(table, part, fmt), "COMMIT"]
        args = [schema.find_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        for command in commands:
            args += ["-c", command]
        return args

    def _copy_part(self, worker, target_conn, table_plan, part, then=None):
        """One part (a whole table, or a page range of a split one) in one target transaction, recorded done
        in it. A small whole table goes through the worker's own source session (source_sessions), a larger
        one streams from a psql process. then(cur, worker), when given, does more in the same transaction
        (a small table's indexes, keys and ANALYZE) and returns the steps it recorded done."""
        table = self._table(table_plan["table"])
        fmt = "binary" if (table["binary_copy"] and self.binary_ok) else "text"
        whole = part["start_page"] is None
        in_process = whole and self._small(table_plan)
        t0 = time.monotonic()
        transfer = _InProcessTransfer(self, worker, table_plan["table"], table, fmt) if in_process else \
            _StreamingTransfer(self, worker, table_plan, table, part, fmt)
        try:
            with target_conn.cursor() as cur:
                # One round trip for the transaction's settings (a small table's copy is a few of them).
                cur.execute(sql.SQL("SET LOCAL lock_timeout = {}; SET LOCAL synchronous_commit = off").format(
                    sql.Literal(self.options["lock_timeout"]))
                    + sql.SQL("; SET LOCAL client_encoding = 'UTF8'; SET LOCAL datestyle = ISO, YMD; "
                              "SET LOCAL intervalstyle = postgres" if fmt == "text" else ""))
                disabled_triggers, unvalidated = [], []
                if self.options["schema_mode"] == "existing":
                    disabled_triggers = self._disable_triggers_locally(cur, table)
                    unvalidated = self._drop_unvalidated_constraints_locally(cur, table)
                    forced_rls = self._unforce_row_security_locally(cur, table)
                freeze = whole and self.options["schema_mode"] == "copy" and self._truncate_to_freeze(
                    cur, table, table_plan)
                options = f"FORMAT {fmt}" + (", FREEZE" if freeze else "")
                column_list = (sql.SQL(" ({})").format(_quote_columns(table["copy_columns"]))
                               if table["copy_columns"] else sql.SQL(""))
                copy_sql = sql.SQL("COPY {}{} FROM STDIN ({})").format(
                    sql.SQL(table["qualname"]), column_list, sql.SQL(options))
                streamed = transfer.run(cur, copy_sql.as_string(target_conn))
                rows = cur.rowcount
                triggers.restore_triggers_locally(cur, disabled_triggers)
                if self.options["schema_mode"] == "existing" and forced_rls:
                    cur.execute(sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(sql.SQL(table["qualname"])))
                for name, definition in unvalidated:
                    cur.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                        sql.SQL(table["qualname"]), sql.Identifier(name), sql.SQL(definition)))
                seconds = round(time.monotonic() - t0, 3)
                state.mark_done(cur, self.run_id, f"data:{part['id']}", rows, streamed, seconds, worker)
                bundled = then(cur, worker) if then else []
            target_conn.commit()
            return {"rows": rows, "bytes": streamed, "seconds": seconds, "worker": worker, "format": fmt,
                    "bundled": bundled}
        except BaseException:
            try:
                target_conn.rollback()
            except psycopg2.Error:
                pass
            transfer.failed()
            if self.progress:
                self.progress.part_failed(table_plan["table"], transfer.streamed)
            raise
        finally:
            transfer.close()

    @staticmethod
    def _truncate_to_freeze(cur, table, table_plan):
        """Copy mode, a whole table: TRUNCATE it in the copy's transaction, so that COPY FREEZE writes its
        rows frozen. A small empty table (pre-data just created it) is loaded as it is (FREEZE_MIN_BYTES);
        one that holds rows is truncated all the same. Returns whether the copy may FREEZE."""
        if table_plan["bytes"] < FREEZE_MIN_BYTES:
            cur.execute(sql.SQL("SELECT EXISTS (SELECT FROM ONLY {})").format(sql.SQL(table["qualname"])))
            if not cur.fetchone()[0]:
                return False
        cur.execute(sql.SQL("TRUNCATE ONLY {}").format(sql.SQL(table["qualname"])))
        return True

    def _disable_triggers_locally(self, cur, table):
        """Existing schema: copied rows must not fire the target's triggers. session_replication_role
        where the role may; otherwise the table's enabled user triggers are disabled inside this
        transaction only (no other session ever sees them disabled)."""
        if self.replication_role:
            cur.execute("SET LOCAL session_replication_role = replica")
            return []
        return triggers.disable_user_triggers_locally(cur, table["qualname"])

    def _unforce_row_security_locally(self, cur, table):
        """FORCE ROW LEVEL SECURITY subjects even the owner to the policies, and copied rows must not be
        filtered or refused: lift it inside this transaction only, and put it back before commit."""
        cur.execute("SELECT relforcerowsecurity FROM pg_class WHERE oid = %s::regclass", (table["qualname"],))
        forced = cur.fetchone()[0]
        if forced:
            cur.execute(sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(sql.SQL(table["qualname"])))
        return forced

    def _drop_unvalidated_constraints_locally(self, cur, table):
        """NOT VALID constraints hold for new rows only, and the source's old rows may break them: drop
        them for this transaction's COPY and add them back NOT VALID before it commits."""
        cur.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
                    "AND NOT convalidated AND contype IN ('c', 'f') ORDER BY conname", (table["qualname"],))
        constraints = cur.fetchall()
        for name, _definition in constraints:
            cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.SQL(table["qualname"]), sql.Identifier(name)))
        return constraints

    def _table(self, qualname):
        if not hasattr(self, "_tables_by_name"):
            self._tables_by_name = {t["qualname"]: t for t in self.catalog["tables"]}
        return self._tables_by_name[qualname]

    # ------------------------------------------------------------------ worker pool ----------
    def _run_jobs(self, jobs, on_done=None):
        """Run jobs on the worker pool. jobs: list of (priority, key, callable(worker, conn)).
        on_done(key, result) may return new jobs to enqueue. Retries retryable errors."""
        work = queue.PriorityQueue()
        counter = [0]
        pending = [0]
        cond = threading.Condition()
        failures = []

        def put(job):
            priority, key, fn = job
            with cond:
                counter[0] += 1
                pending[0] += 1
                work.put((priority, counter[0], key, fn, 0))

        for job in jobs:
            put(job)

        def worker_loop(worker):
            conn = None
            while True:
                with cond:
                    while work.empty() and pending[0] > 0 and not self.abort.is_set():
                        cond.wait(0.2)
                    if pending[0] == 0 or self.abort.is_set():
                        break
                    try:
                        priority, seq, key, fn, attempt = work.get_nowait()
                    except queue.Empty:
                        continue
                try:
                    if conn is None or conn.closed:
                        conn = self._connect("target", application_name=f"pgmigrate worker {worker}")
                        self._session_settings(conn)
                    result = fn(worker, conn)
                except RETRYABLE + (SourceStreamError,) as error:
                    if conn is not None:
                        try:
                            conn.close()
                        except psycopg2.Error:
                            pass
                        conn = None
                    message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
                    if "snapshot" in str(error).lower() and "invalid" in str(error).lower():
                        attempt = self.options["retries"]
                    if attempt < self.options["retries"]:
                        self._event(f"retrying {key} after error: {message}")
                        time.sleep(min(2 ** attempt, 10))
                        with cond:
                            work.put((priority, seq, key, fn, attempt + 1))
                            cond.notify_all()
                        continue
                    failures.append(f"{key}: {message} (after {attempt + 1} attempt(s))")
                    self.abort.set()
                    with cond:
                        cond.notify_all()
                    break
                except Exception as error:  # noqa: BLE001 - reported with the key, the run stops
                    failures.append(f"{key}: {str(error).strip() or repr(error)}")
                    self._event(traceback.format_exc())
                    self.abort.set()
                    with cond:
                        cond.notify_all()
                    break
                new_jobs = on_done(key, result) if on_done else []
                for job in new_jobs or []:
                    put(job)
                with cond:
                    pending[0] -= 1
                    cond.notify_all()
            if conn is not None and not conn.closed:
                conn.close()

        threads = [threading.Thread(target=worker_loop, args=(i + 1,), name=f"worker-{i + 1}")
                   for i in range(int(self.options["workers"]))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise MigrationError("; ".join(failures))
        if self.abort.is_set():
            raise MigrationError("the run was aborted")

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

    def _post_data_settings(self, cur):
        """The dump's post-data preamble (search_path local to the transaction), then the run's own
        lock_timeout: the preamble sets lock_timeout = 0, so it must come first."""
        lock_timeout = sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(self.options["lock_timeout"]))
        if self.post_settings:  # in one round trip
            lock_timeout = sql.SQL(self.post_settings.replace(", false)", ", true)").rstrip().rstrip(";") + ";\n") \
                + lock_timeout
        cur.execute(lock_timeout)

    def _post_data_job(self, entry):
        def run(worker, conn):
            t0 = time.monotonic()
            with conn.cursor() as cur:
                self._post_data_settings(cur)
                cur.execute(entry["sql"])
                state.mark_done(cur, self.run_id, f"post:{entry['key']}", seconds=round(time.monotonic() - t0, 3),
                                worker=worker)
            conn.commit()
            return {"seconds": round(time.monotonic() - t0, 3), "worker": worker}
        return run

    def _attach_job(self, table_name, entries):
        """Primary and unique keys built index first (schema.build_keys_index_first): attach them to
        their finished indexes, all of the table's at once, in one short transaction."""
        def run(worker, conn):
            t0 = time.monotonic()
            with conn.cursor() as cur:
                self._post_data_settings(cur)
                for entry in entries:
                    # (A run resumed from an older version may have built the key in one statement.)
                    cur.execute("SELECT 1 FROM pg_constraint WHERE conrelid = %s::regclass AND conname = %s",
                                (entry["table"], entry["constraint_name"]))
                    if not cur.fetchone():
                        cur.execute(entry["attach_sql"])
                    state.mark_done(cur, self.run_id, f"attach:{entry['key']}", worker=worker)
            conn.commit()
            self._event(f"attached {len(entries)} key(s) of {table_name} to their indexes")
            return {"seconds": round(time.monotonic() - t0, 3), "worker": worker}
        return run

    def _phase_data_and_indexes(self):
        opts = self.options
        tables = self.plan["tables"]
        self._enter_phase("data", f"{len(tables)} tables" + (f", {len(self.large_objects)} large objects"
                                                               if self.large_objects else "")
                          + f", {opts['workers']} workers")
        copy_mode = opts["schema_mode"] == "copy"
        entries_by_table = {}
        if copy_mode:
            copied = {t["table"] for t in tables}
            for entry in self.post_entries:
                if entry["type"] in schema.TABLE_LEVEL_TYPES and entry["table"] in copied:
                    entries_by_table.setdefault(entry["table"], []).append(entry)
        self.table_entry_keys = {e["key"] for es in entries_by_table.values() for e in es}
        total_jobs = sum(len(es) for es in entries_by_table.values())
        self.progress.set_jobs(total_jobs, sum(1 for k in self.table_entry_keys if f"post:{k}" in self.done))
        remaining_parts = {}
        jobs = []
        for table_plan in tables:
            todo = []
            for part in table_plan["parts"]:
                record = self.done.get(f"data:{part['id']}")
                if record:
                    self.progress.part_done(table_plan["table"], record["rows"], already_done=True,
                                            bytes_=record["bytes"])
                    self.results[part["id"]] = {**record, "table": table_plan["table"], "resumed": True}
                else:
                    todo.append(part)
            remaining_parts[table_plan["table"]] = len(todo)
            bundle = self._small_table_bundle(table_plan["table"], entries_by_table.get(table_plan["table"], [])) \
                if copy_mode and self._small(table_plan) else None
            for part in todo:
                jobs.append((self._data_priority(table_plan), f"data:{part['id']}",
                             self._data_job(table_plan, part, bundle)))

        def index_jobs(table_name):
            return [(0, f"post:{e['key']}", self._post_data_job(e))
                    for e in entries_by_table.get(table_name, []) if f"post:{e['key']}" not in self.done]

        # A table is analyzed as soon as its data and its indexes are in, while other tables still
        # copy (as pgcopydb does), instead of in a tail of its own at the end.
        table_of_entry = {f"post:{e['key']}": name for name, es in entries_by_table.items() for e in es}
        pending_indexes = {t["table"]: len(index_jobs(t["table"])) for t in tables}

        def analyze_jobs(table_name):
            return [self._analyze_job(table_name)] if opts["analyze"] and \
                f"analyze:{table_name}" not in self.done else []

        def finish_jobs(table_name):
            """Once a table's indexes are built: attach its keys to their indexes, then ANALYZE."""
            attach = [e for e in entries_by_table.get(table_name, [])
                      if e.get("attach_sql") and f"attach:{e['key']}" not in self.done]
            if attach:
                return [(0, f"attach:{table_name}", self._attach_job(table_name, attach))]
            return analyze_jobs(table_name)

        for table_plan in tables:
            if remaining_parts[table_plan["table"]] == 0:
                pending = index_jobs(table_plan["table"])
                jobs.extend(pending or finish_jobs(table_plan["table"]))
        lo_jobs = self._large_object_jobs()

        lock = threading.Lock()

        def on_done(key, result):
            if key.startswith("analyze:"):
                return []
            if key.startswith("lo:"):
                with lock:
                    self.large_object_stats["copied"] += result["large_objects"]
                    self.large_object_stats["copied_bytes"] += result["bytes"]
                return []
            if key.startswith("attach:"):
                return analyze_jobs(key[len("attach:"):])
            if key.startswith("post:"):
                self.progress.job_done(key[5:])
                table_name = table_of_entry.get(key)
                with lock:
                    pending_indexes[table_name] -= 1
                    ready = pending_indexes[table_name] == 0
                return finish_jobs(table_name) if ready else []
            part_id = key[5:]
            table_name = result["table"]
            self.results[part_id] = result
            self.progress.part_done(table_name, result["rows"])
            with lock:
                remaining_parts[table_name] -= 1
                finished = remaining_parts[table_name] == 0
            if not finished:
                return []
            return index_jobs(table_name) or finish_jobs(table_name)

        if copy_mode:
            self._run_jobs(jobs + lo_jobs, on_done)
        else:
            # Existing schema: foreign keys are in force, so load level by level (large objects with the
            # first level).
            levels = sorted({t["level"] for t in tables})
            for level in levels:
                level_jobs = [j for j in jobs if j[1] in
                              {f"data:{p['id']}" for t in tables if t["level"] == level for p in t["parts"]}]
                if level == levels[0]:
                    level_jobs, lo_jobs = level_jobs + lo_jobs, []
                self._enter_phase("data", f"level {level}: {len(level_jobs)} part(s)")
                self._run_jobs(level_jobs, on_done)
            if lo_jobs:
                self._run_jobs(lo_jobs, on_done)

    def _data_priority(self, table_plan):
        # Largest first; in existing mode the level comes first (handled by running level by level).
        return 1 + 1.0 / (1 + table_plan["bytes"] / max(1, len(table_plan["parts"])))

    def _data_job(self, table_plan, part, bundle=None):
        def run(worker, conn):
            self.progress.part_started(table_plan["table"])
            result = self._copy_part(worker, conn, table_plan, part, then=bundle)
            result["table"] = table_plan["table"]
            bundled = result.pop("bundled")
            for step in bundled:
                self.done[step] = {}
                if step.startswith("post:"):
                    self.progress.job_done(step[5:])
            attached = sum(1 for step in bundled if step.startswith("attach:"))
            if attached:
                self._event(f"attached {attached} key(s) of {table_plan['table']} to their indexes")
            return result
        return run

    @staticmethod
    def _small(table_plan):
        """A table copied whole through a worker's source session, with its post-data in the same transaction."""
        return len(table_plan["parts"]) == 1 and table_plan["bytes"] <= source_sessions.IN_PROCESS_MAX_BYTES

    def _small_table_bundle(self, table_name, entries):
        """A small table's indexes and constraints (entries), the keys attached to them and its ANALYZE, in
        the transaction that copied it: one job and one commit per table instead of four (per-table cost
        is what a database of thousands of small tables pays for)."""
        def then(cur, worker):
            steps = []
            if entries:
                self._post_data_settings(cur)
            for entry in entries:
                if f"post:{entry['key']}" not in self.done:
                    cur.execute(entry["sql"])
                    steps.append(f"post:{entry['key']}")
            for entry in entries:
                if entry.get("attach_sql") and f"attach:{entry['key']}" not in self.done:
                    cur.execute(entry["attach_sql"])
                    steps.append(f"attach:{entry['key']}")
            if self.options["analyze"] and f"analyze:{table_name}" not in self.done:
                cur.execute(sql.SQL("ANALYZE {}").format(sql.SQL(table_name)))
                steps.append(f"analyze:{table_name}")
            state.mark_many_done(cur, self.run_id, [(step, None, None) for step in steps], worker=worker)
            return steps
        return then

    # ------------------------------------------------------------------ post-data ------------
    def _phase_post_data(self):
        self.event_triggers = []
        if self.options["schema_mode"] == "existing":
            self._readd_dropped_constraints()
            return
        others = [e for e in self.post_entries
                  if e["key"] not in self.table_entry_keys and e["type"] != schema.FOREIGN_KEY_TYPE]
        foreign = [e for e in self.post_entries if e["type"] == schema.FOREIGN_KEY_TYPE]
        # Row-level security is switched on after the foreign keys, as pg_restore orders it: adding a key
        # reads both tables, which a FORCEd policy forbids to their owner when that owner is the login.
        row_security = [e for e in others if e["type"] == schema.ROW_SECURITY_TYPE]
        # Event triggers come after the run's own DDL (keys, materialized view refreshes; see run()): they would
        # fire on it (an audit trigger would add rows, or fail on a sequence not yet set).
        self.event_triggers = [e for e in others if e["type"] == schema.EVENT_TRIGGER_TYPE]
        others = [e for e in others if e["type"] not in (schema.ROW_SECURITY_TYPE, schema.EVENT_TRIGGER_TYPE)]
        self._enter_phase("post-data", f"{len(others)} other objects, then {len(foreign)} foreign keys")
        self._post_data_serially(others)
        jobs = [(0, f"post:{e['key']}", self._post_data_job(e)) for e in foreign if f"post:{e['key']}" not in self.done]
        self._run_jobs(jobs, lambda key, result: self.progress.job_done(key[5:]) or [])
        self._post_data_serially(row_security)

    def _post_data_serially(self, entries):
        """Run post-data entries one after the other on one target connection, retrying lost ones."""
        conn = self._connect("target")
        self._session_settings(conn)
        for entry in entries:
            if f"post:{entry['key']}" in self.done:
                continue
            attempt = 0
            while True:
                try:
                    self._post_data_job(entry)(0, conn)
                    break
                except RETRYABLE as error:
                    if not conn.closed:
                        conn.rollback()
                    attempt += 1
                    if attempt > self.options["retries"]:
                        raise MigrationError(f"post-data {entry['key']}: {error}") from None
                    time.sleep(min(2 ** attempt, 10))
                    if conn.closed:
                        conn = self._connect("target")
                        self._session_settings(conn)
                except psycopg2.Error as error:
                    raise MigrationError(f"post-data {entry['type']} {entry['name']} failed: {error}") from None
            self.progress.job_done(entry["key"])
        conn.close()

    def _readd_dropped_constraints(self):
        conn = self._connect("target")
        with conn.cursor() as cur:
            cur.execute(f"SELECT table_name, constraint_name, definition FROM {catalog_module.STATE_SCHEMA}."
                        "dropped_constraint WHERE run_id = %s", (self.run_id,))
            rows = cur.fetchall()
            for table_name, name, definition in rows:
                cur.execute("SELECT 1 FROM pg_constraint WHERE conrelid = %s::regclass AND conname = %s",
                            (table_name, name))
                if not cur.fetchone():
                    cur.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID").format(
                        sql.SQL(table_name), sql.Identifier(name), sql.SQL(definition)))
                cur.execute(sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
                    sql.SQL(table_name), sql.Identifier(name)))
                self._event(f"re-added and validated {name} on {table_name}")
        conn.commit()
        conn.close()

    # ------------------------------------------------------------------ sequences ------------
    def _phase_sequences(self):
        self._enter_phase("sequences", f"{len(self.catalog['sequences'])} sequences")
        if "sequences" in self.done:
            return
        conn = self._connect("target")
        with conn.cursor() as cur:
            # One statement for all: a round trip each was 0.8 s on 2,400 sequences.
            sequences = self.catalog["sequences"]
            cur.execute("SELECT count(setval(q::regclass, v, c)) FROM unnest(%s::text[], %s::bigint[], %s::bool[]) "
                        "AS t(q, v, c)", ([s["qualname"] for s in sequences], [s["last_value"] for s in sequences],
                                          [s["is_called"] for s in sequences]))
            state.mark_done(cur, self.run_id, "sequences")
        conn.commit()
        conn.close()

    def _phase_sequence_check(self):
        """Every sequence must not hand out a value already used by a column it feeds."""
        conn = self._connect("target")
        sequences = [dict(seq) for seq in self.catalog["sequences"]]
        with conn.cursor() as cur:
            catalog_module.read_sequence_states(cur, sequences)

            def run(_feeds, statement):
                try:
                    cur.execute(statement)
                    return cur.fetchall()
                except psycopg2.Error:
                    conn.rollback()  # the next statement (each column alone) in a transaction of its own
                    raise
            feeds = [(f["table"], f["column"], True) for seq in sequences if seq["increment"] > 0 for f in seq["feeds"]]
            sizes = {t["qualname"]: t["table_bytes"] for t in self.catalog["tables"]}
            maxima = column_extremes.read(feeds, sizes, run)
        conn.rollback()
        conn.close()
        problems = []
        for seq, source in zip(sequences, self.catalog["sequences"], strict=True):
            last_value, is_called = seq["last_value"], seq["is_called"]
            if (last_value, is_called) != (source["last_value"], source["is_called"]):
                problems.append(f"{seq['qualname']} is ({last_value}, {is_called}) on the target but "
                                f"({source['last_value']}, {source['is_called']}) on the source")
            next_value = last_value + seq["increment"] if is_called else last_value
            for feed in seq["feeds"] if seq["increment"] > 0 else ():
                maximum = maxima[(feed["table"], feed["column"], True)]
                if maximum is not None and next_value <= maximum:
                    problems.append(
                        f"{seq['qualname']} would next give {next_value} but {feed['table']}.{feed['column']} "
                        f"already holds {maximum} (as on the source): fix with SELECT setval('{seq['qualname']}', "
                        f"{maximum})")
        self.sequence_problems = problems
        self.warnings.extend(self._sequence_warnings(problems))

    def _sequence_warnings(self, problems):
        """The first SEQUENCE_WARNINGS_SHOWN problems as warnings; all of them, when there are more, in the
        run's sequence_problems.txt (a database of thousands of tables would print thousands of lines)."""
        if len(problems) <= SEQUENCE_WARNINGS_SHOWN:
            return problems
        path = os.path.join(self.run_dir, "sequence_problems.txt")
        with open(path, "w") as handle:
            handle.write("\n".join(problems) + "\n")
        return problems[:SEQUENCE_WARNINGS_SHOWN] + [
            f"... and {len(problems) - SEQUENCE_WARNINGS_SHOWN} more sequence problem(s): all "
            f"{len(problems)}, each with its fix, in {path}"]

    # ------------------------------------------------------------------ views / analyze ------
    def _phase_materialized_views(self):
        views = [v for v in self.catalog["views"] if v["materialized"] and v["populated"]]
        self._enter_phase("materialized views", f"refreshing {len(views)}")
        conn = self._connect("target")
        for view in views:
            key = f"refresh:{view['qualname']}"
            if key in self.done:
                continue
            with conn.cursor() as cur:
                cur.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(sql.SQL(view["qualname"])))
                state.mark_done(cur, self.run_id, key)
            conn.commit()
        conn.close()

    def _analyze_job(self, table_name):
        key = f"analyze:{table_name}"

        def run(worker, conn):
            with conn.cursor() as cur:
                cur.execute(sql.SQL("ANALYZE {}").format(sql.SQL(table_name)))
                state.mark_done(cur, self.run_id, key, worker=worker)
            conn.commit()
            self.done[key] = {}
            return {}
        return (0.5, key, run)

    def _phase_analyze(self):
        """What the data phase did not analyze yet (existing mode, or a resumed run)."""
        jobs = [self._analyze_job(t["table"]) for t in self.plan["tables"] if f"analyze:{t['table']}" not in self.done]
        if jobs:
            self._enter_phase("analyze", f"collecting planner statistics on {len(jobs)} table(s)")
            self._run_jobs(jobs)

    # ------------------------------------------------------------------ summary --------------
    def _summary(self, status, started):
        tables = []
        if self.plan:
            for table_plan in self.plan["tables"]:
                parts = [self.results.get(p["id"]) for p in table_plan["parts"]]
                done_parts = [p for p in parts if p]
                tables.append({
                    "table": table_plan["table"], "level": table_plan["level"],
                    "rows": sum(p.get("rows") or 0 for p in done_parts),
                    "bytes": sum(p.get("bytes") or 0 for p in done_parts),
                    "seconds": round(sum(p.get("seconds") or 0 for p in done_parts), 3),
                    "workers": sorted({p.get("worker") for p in done_parts if p.get("worker") is not None}),
                    "parts": len(parts), "parts_done": len(done_parts),
                    "resumed_parts": sum(1 for p in done_parts if p.get("resumed")),
                })
        return {
            "status": status,
            "run_id": self.run_id,
            "resumed": self.resumed,
            "source": describe(self.source),
            "target": describe(self.target),
            "schema_mode": self.options["schema_mode"],
            "workers": self.options["workers"],
            "snapshot": self.snapshot_id or ("none (source declared frozen)" if self.options["source_frozen"]
                                             else None),
            "seconds": round(time.monotonic() - started, 2),
            "tables": tables,
            "rows": sum(t["rows"] for t in tables),
            "bytes": sum(t["bytes"] for t in tables),
            "sequences": len(self.catalog["sequences"]) if self.catalog else 0,
            "post_data_entries": len(getattr(self, "post_entries", []) or []),
            "large_objects": {"count": len(self.large_objects), "bytes": sum(lo["bytes"] for lo in self.large_objects),
                              **self.large_object_stats},
            "database_settings": [
                {"role": s["role"], "name": s["name"], "value": s["value"]} for s in self.settings_to_apply],
            "plan": {"levels": self.plan["levels"], "cycles": self.plan["cycles"],
                     "self_references": self.plan["self_references"]} if self.plan else None,
            "warnings": self.warnings,
            "events": self.events[-200:],
            "run_dir": self.run_dir,
        }

    def _write_summary(self, summary):
        if not self.run_dir:
            return
        path = os.path.join(self.run_dir, "summary.json")
        with open(path, "w") as handle:
            json.dump(summary, handle, indent=1, default=str)
        summary["summary_file"] = path


def migrate(source, target, **options):
    """Run (or resume) a migration; returns the summary dict. Raises MigrationError,
    preflight.PreflightError or connection.ConfigError with an explanatory message."""
    return Engine(source, target, **options).run()
