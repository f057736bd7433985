"""The post-data step: the objects after the data (foreign keys in parallel, the rest in dump order,
row-level security last), and in existing mode the constraints dropped for the load put back."""

import time

from psycopg2 import sql

from ..common import catalog as catalog_module
from . import schema, state


class PostDataStep:
    def __init__(self, run):
        self.run = run  # run_context.CopyRun

    def apply_settings(self, cur):
        cur.execute(self.settings_sql(cur))

    def settings_sql(self, cur):
        """The dump's post-data preamble (search_path local to the transaction), then the run's own
        lock_timeout: the preamble sets lock_timeout = 0, so it must come first. One string, one round trip."""
        lock_timeout = sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(self.run.options["lock_timeout"]))
        if self.run.post_settings:
            lock_timeout = sql.SQL(self.run.post_settings.replace(", false)", ", true)").rstrip().rstrip(";") + ";\n") \
                + lock_timeout
        return lock_timeout.as_string(cur)

    def entry_job(self, entry):
        def job(worker, conn):
            t0 = time.monotonic()
            with conn.cursor() as cur:
                self.apply_settings(cur)
                cur.execute(entry["sql"])
                state.mark_done(cur, self.run.run_id, f"post:{entry['key']}", seconds=round(time.monotonic() - t0, 3),
                                worker=worker)
            conn.commit()
            return {"seconds": round(time.monotonic() - t0, 3), "worker": worker}
        return job

    def attach_job(self, table_name, entries):
        """Primary and unique keys built index first (schema.build_keys_index_first): attach them to
        their finished indexes, all of the table's at once, in one short transaction."""
        def job(worker, conn):
            t0 = time.monotonic()
            with conn.cursor() as cur:
                self.apply_settings(cur)
                for entry in entries:
                    # (A run resumed from an older version may have built the key in one statement.)
                    cur.execute("SELECT 1 FROM pg_constraint WHERE conrelid = %s::regclass AND conname = %s",
                                (entry["table"], entry["constraint_name"]))
                    if not cur.fetchone():
                        cur.execute(entry["attach_sql"])
                    state.mark_done(cur, self.run.run_id, f"attach:{entry['key']}", worker=worker)
            conn.commit()
            self.run.event(f"attached {len(entries)} key(s) of {table_name} to their indexes")
            return {"seconds": round(time.monotonic() - t0, 3), "worker": worker}
        return job

    def restore(self):
        self.run.event_triggers = []
        if self.run.options["schema_mode"] == "existing":
            self._readd_dropped_constraints()
            return
        others = [e for e in self.run.post_entries
                  if e["key"] not in self.run.table_entry_keys and e["type"] != schema.FOREIGN_KEY_TYPE]
        foreign = [e for e in self.run.post_entries if e["type"] == schema.FOREIGN_KEY_TYPE]
        # Row-level security is switched on after the foreign keys, as pg_restore orders it: adding a key
        # reads both tables, which a FORCEd policy forbids to their owner when that owner is the login.
        row_security = [e for e in others if e["type"] == schema.ROW_SECURITY_TYPE]
        # Event triggers come after the run's own DDL (keys, materialized view refreshes; see run()): they would
        # fire on it (an audit trigger would add rows, or fail on a sequence not yet set).
        self.run.event_triggers = [e for e in others if e["type"] == schema.EVENT_TRIGGER_TYPE]
        others = [e for e in others if e["type"] not in (schema.ROW_SECURITY_TYPE, schema.EVENT_TRIGGER_TYPE)]
        self.run.enter_phase("post-data", f"{len(others)} other objects, then {len(foreign)} foreign keys")
        self._restore_serially(others)
        jobs = [(0, f"post:{e['key']}", self.entry_job(e)) for e in foreign if f"post:{e['key']}" not in self.run.done]
        self.run.run_jobs(jobs, lambda key, result: self.run.progress.job_done(key[5:]) or [])
        self._restore_serially(row_security)

    def _restore_serially(self, entries):
        """Post-data entries one after the other, in the dump's order: the pool's single worker takes the
        lowest priority first, with the pool's retries of a lost connection."""
        jobs = [(position, f"post:{entry['key']}", self.entry_job(entry))
                for position, entry in enumerate(entries) if f"post:{entry['key']}" not in self.run.done]
        self.run.run_jobs(jobs, lambda key, result: self.run.progress.job_done(key[5:]) or [], workers=1)

    def _readd_dropped_constraints(self):
        conn = self.run.connect("target")
        with conn.cursor() as cur:
            cur.execute(f"SELECT table_name, constraint_name, definition FROM {catalog_module.STATE_SCHEMA}."
                        "dropped_constraint WHERE run_id = %s", (self.run.run_id,))
            rows = cur.fetchall()
            for table_name, name, definition in rows:
                cur.execute("SELECT 1 FROM pg_constraint WHERE conrelid = %s::regclass AND conname = %s",
                            (table_name, name))
                if not cur.fetchone():
                    cur.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID").format(
                        sql.SQL(table_name), sql.Identifier(name), sql.SQL(definition)))
                cur.execute(sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
                    sql.SQL(table_name), sql.Identifier(name)))
                self.run.event(f"re-added and validated {name} on {table_name}")
        conn.commit()
        conn.close()
