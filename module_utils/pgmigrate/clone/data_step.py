"""The data step: every table part, large-object batch, index, key and ANALYZE as jobs of one worker
pool, each table's indexes queued as soon as its data is in."""

import threading

from psycopg2 import sql

from ..common.connection import rollback_quietly
from . import large_objects, schema, source_sessions, state
from .errors import MigrationError


class DataStep:
    """A step of copier.Engine: the run's context (options, plan, state, progress) is the engine's."""

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
            self.progress.part_done(table_name, result["rows"], detail=result.pop("detail", None))
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
            built = sum(1 for step in bundled if step.startswith("post:"))
            attached = sum(1 for step in bundled if step.startswith("attach:"))
            self.progress.bundled_jobs_done(built)
            # One log line per table (thousands on some databases), the same words as the jobs' own lines.
            result["detail"] = ", ".join(
                ([f"built {built} index(es) and constraint(s)"] if built else [])
                + ([f"attached {attached} key(s) of {table_plan['table']} to their indexes"] if attached else [])
                + (["analyzed"] if f"analyze:{table_plan['table']}" in bundled else []))
            return result
        return run

    @staticmethod
    def _small(table_plan):
        """A table copied whole through a worker's source session, with its post-data in the same transaction."""
        return len(table_plan["parts"]) == 1 and table_plan["bytes"] <= source_sessions.IN_PROCESS_MAX_BYTES

    def _small_table_bundle(self, table_name, entries):
        """A small table's indexes and constraints (entries), the keys attached to them and its ANALYZE, in
        the transaction that copied it: one job and one commit per table instead of four, their statements
        and records sent with the part's own record in one round trip (per-table cost is what a database
        of thousands of small tables pays for)."""
        def then(cur, worker):
            statements, steps = [], []
            for entry in entries:
                if f"post:{entry['key']}" not in self.done:
                    statements.append(entry["sql"])
                    steps.append(f"post:{entry['key']}")
            for entry in entries:
                if entry.get("attach_sql") and f"attach:{entry['key']}" not in self.done:
                    statements.append(entry["attach_sql"])
                    steps.append(f"attach:{entry['key']}")
            if self.options["analyze"] and f"analyze:{table_name}" not in self.done:
                statements.append(f"ANALYZE {table_name}")
                steps.append(f"analyze:{table_name}")
            if entries:
                statements.insert(0, self._post_data_settings_sql(cur))
            if steps:
                statements.append(state.done_statement(cur, self.run_id, [(step, None, None) for step in steps],
                                                       worker=worker))
            return statements, steps
        return then

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
                rollback_quietly(conn)
                self.progress.large_objects_done(0, streamed[0])
                raise MigrationError(str(error)) from None
            except BaseException:
                rollback_quietly(conn)
                self.progress.large_objects_done(0, streamed[0])
                raise
            self.progress.large_objects_done(len(batch))
            return {"large_objects": len(batch), "bytes": copied, "worker": worker}
        return run

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
