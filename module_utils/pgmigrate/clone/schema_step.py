"""The schema step: the pre-data restore (copy mode) or the existing schema's preparation, and the
post-data entries split for the later steps."""

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from psycopg2 import sql

from ..common import catalog as catalog_module
from ..common import preflight
from . import pre_data, schema, source_sessions, state
from .errors import MigrationError

# A new run's schema dump before its run directory exists: <artifacts>/.schema-<pid>-<thread>.dump.tmp
EARLY_DUMP_PREFIX = ".schema-"


def _remove_orphaned_early_dumps(directory):
    """Early dumps of engines that were killed (their process is gone)."""
    for name in os.listdir(directory):
        if not (name.startswith(EARLY_DUMP_PREFIX) and name.endswith(".dump.tmp")):
            continue
        pid = name[len(EARLY_DUMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            try:
                os.remove(os.path.join(directory, name))
            except FileNotFoundError:
                pass


class SchemaStep:
    def __init__(self, run):
        self.run = run  # run_context.CopyRun
        self.early_schema_dump = None  # a new run's (path, future) of pg_dump --schema-only, begun early

    @staticmethod
    def _target_schemas(conn):
        """The target's schema names: a dump limited to some schemas creates them, and public exists."""
        with conn.cursor() as cur:
            cur.execute("SELECT nspname FROM pg_namespace")
            names = {row[0] for row in cur.fetchall()}
        conn.rollback()
        return names

    def _dump_schema(self, path):
        exclude = list(self.run.options["exclude_schemas"]) + [catalog_module.STATE_SCHEMA]
        schema.dump_schema(self.run.source, path, snapshot=self.run.snapshot_id,
                           schemas=self.run.options["include_schemas"], exclude_schemas=exclude)

    def start_early_dump(self):
        """A new run's schema dump in the background, into the artifacts directory until the run's directory
        exists: pg_dump's catalog reads overlap the engine's own (about a second on thousands of tables)."""
        directory = self.run.options["artifacts_dir"]
        os.makedirs(directory, mode=0o700, exist_ok=True)
        _remove_orphaned_early_dumps(directory)
        path = os.path.join(directory, f"{EARLY_DUMP_PREFIX}{os.getpid()}-{threading.get_ident()}.dump.tmp")
        pool = ThreadPoolExecutor(1, thread_name_prefix="pgmigrate-schema-dump")
        self.early_schema_dump = (path, pool.submit(self._dump_schema, path))
        pool.shutdown(wait=False)  # the dump goes on; its future is all the run keeps

    def _take_early_dump(self, dump_path):
        """The early dump moved to dump_path once finished (its error raised here); False when there is none."""
        if self.early_schema_dump is None:
            return False
        path, future = self.early_schema_dump
        self.early_schema_dump = None
        try:
            future.result()
            os.replace(path, dump_path)
        finally:
            if os.path.exists(path):
                os.remove(path)
        return True

    def discard_early_dump(self):
        """A run that ends before its pre-data (nothing to do, a refusal, an error) leaves no dump behind."""
        if self.early_schema_dump is not None:
            path, future = self.early_schema_dump
            self.early_schema_dump = None
            try:
                future.exception()  # waits: the dump ends with its snapshot, a second or two at most
            finally:
                if os.path.exists(path):
                    os.remove(path)

    def restore_pre_data(self):
        opts = self.run.options
        self.run.enter_phase("schema", "pre-data (types, tables, functions, views)")
        dump_path = os.path.join(self.run.run_dir, "schema.dump")
        if not os.path.exists(dump_path) and not self._take_early_dump(dump_path):
            self._dump_schema(dump_path + ".tmp")
            os.replace(dump_path + ".tmp", dump_path)
        if "schema:pre-data" not in self.run.done:
            conn = self.run.connect("target")
            steps_plan = self._pre_data_steps(dump_path, conn)
            if steps_plan:  # many tables: in steps, several at once, each recording itself done
                pre_data.StepRestore(
                    self.run.target, dump_path, self.run.run_id, opts["no_owner"], opts["no_privileges"],
                    self._extension_versions_to_pin(conn), quote=lambda composed: composed.as_string(conn),
                    substitutes_sql=self._substitutes_sql(),
                ).run(steps_plan, self.run.done)
            # In one transaction; if it committed before a crash, the tables exist.
            elif not preflight.existing_user_tables(conn, self.run.catalog["schemas"]):
                schema.restore_pre_data(self.run.target, dump_path, self.run.options["no_owner"],
                                        self.run.options["no_privileges"], self._extension_versions_to_pin(conn),
                                        existing_schemas=self._target_schemas(conn),
                                        left_out_extensions=self._left_out_extensions(),
                                        substitutes_sql=self._substitutes_sql())
            with conn.cursor() as cur:
                state.mark_done(cur, self.run.run_id, "schema:pre-data")
            conn.commit()
            conn.close()
            self.run.event("pre-data schema restored")
        text = schema.post_data_sql(dump_path, self.run.target, opts["no_owner"], opts["no_privileges"])
        index_tables = {(i["schema"], i["name"]): i["table"] for i in self.run.catalog["indexes"]}
        self.run.post_entries, self.run.post_settings = schema.split_post_data(text, index_tables)
        schema.build_keys_index_first(self.run.post_entries, self.run.catalog.get("key_indexes", []))

    def _pre_data_steps(self, dump_path, conn):
        """The pre-data restore's steps (pre_data.plan), or None for one transaction. Decided once per run
        and saved beside the dump: a resumed restore finishes the steps it began."""
        path = dump_path + ".steps.json"
        begun = sorted(step for step in self.run.done if step.startswith(pre_data.STEP_PREFIX))
        if begun and not os.path.exists(path):
            raise MigrationError(
                f"the pre-data restore was interrupted after its steps {', '.join(begun)}, and its plan {path} is "
                "gone (a new artifacts directory?): rerun with migration_target_overwrite=true and "
                "migration_restart=true to copy again from the start")

        def make():
            listing = schema.toc_lines(self.run.target, dump_path, self._target_schemas(conn),
                                       self._left_out_extensions())
            with source_sessions.session_in_snapshot(self.run.source, self.run.snapshot_id, "pgmigrate pre-data plan") \
                    as source_conn, source_conn.cursor() as cur:
                cur.execute(pre_data.WAVE_RELATIONS)
                relations = dict(cur.fetchall())
            return pre_data.plan(listing, relations, min(self.run.options["workers"], pre_data.MAX_GROUPS))
        return pre_data.load_or_make(path, make)

    def _left_out_extensions(self):
        """The extensions the target server cannot provide that the profile's substitutes stand in for."""
        return tuple((self.run.extension_substitution or {}).get("left_out", ()))

    def _substitutes_sql(self):
        """Their substitutes' CREATE FUNCTION statements, created with the schema before what uses them."""
        return "\n".join(f["sql"] for f in (self.run.extension_substitution or {}).get("functions", ()))

    def _extension_versions_to_pin(self, conn):
        """{name: source version} of the extensions the pre-data restore will create (the target lacks
        them) whose source version is not the target's default: pg_dump does not write versions."""
        with conn.cursor() as cur:
            cur.execute("SELECT a.name, a.default_version FROM pg_available_extensions a"
                        " WHERE a.installed_version IS NULL")
            defaults = dict(cur.fetchall())
        conn.rollback()
        return {e["name"]: e["version"] for e in self.run.catalog.get("extensions", [])
                if e["name"] in defaults and e["version"] != defaults[e["name"]]}

    def prepare_existing(self):
        self.run.post_entries = []
        self.run.enter_phase("prepare", "existing schema: checking triggers and foreign keys")
        if self.run.replication_role:
            self.run.event("target role may set session_replication_role=replica: triggers and FK checks are off "
                        "for the copy's own transactions; integrity is validated afterwards")
            return
        cycle_tables = {t for c in self.run.plan["cycles"] for t in c["tables"]}
        conn = self.run.connect("target")
        with conn.cursor() as cur:
            for fk in self.run.catalog["foreign_keys"]:
                if fk["child"] in cycle_tables and fk["parent"] in cycle_tables and not fk["self_reference"]:
                    cur.execute(
                        "SELECT 1 FROM pg_constraint WHERE conrelid = %s::regclass AND conname = %s",
                        (fk["child"], fk["name"]))
                    if cur.fetchone():
                        cur.execute(
                            f"INSERT INTO {catalog_module.STATE_SCHEMA}.dropped_constraint VALUES (%s, %s, %s, %s) "
                            "ON CONFLICT DO NOTHING", (self.run.run_id, fk["child"], fk["name"], fk["definition"]))
                        cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                            sql.SQL(fk["child"]), sql.Identifier(fk["name"])))
                        self.run.event(f"cycle: dropped {fk['name']} on {fk['child']} for the load (kept in state)")
        conn.commit()
        conn.close()
