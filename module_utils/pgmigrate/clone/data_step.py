"""The data step: every table part, large-object batch, index, key and ANALYZE as jobs of one worker
pool, each table's indexes queued as soon as its data is in."""

import threading

from psycopg2 import sql

from ..common.connection import rollback_quietly
from . import large_objects, schema, state
from .errors import MigrationError
from .table_copy import is_small


class DataStep:
    def __init__(self, run, table_copy, post_data):
        self.run = run  # run_context.CopyRun
        self.table_copy = table_copy  # table_copy.TableCopy: one part in one transaction
        self.post_data = post_data  # post_data_step.PostDataStep: the jobs building indexes and keys

    def copy_data_and_indexes(self):
        opts = self.run.options
        tables = self.run.plan["tables"]
        large = self.run.large_objects
        self.run.enter_phase("data", f"{len(tables)} tables" + (f", {len(large)} large objects" if large else "")
                             + f", {opts['workers']} workers")
        copy_mode = opts["schema_mode"] == "copy"
        entries_by_table = {}
        if copy_mode:
            copied = {t["table"] for t in tables}
            for entry in self.run.post_entries:
                if entry["type"] in schema.TABLE_LEVEL_TYPES and entry["table"] in copied:
                    entries_by_table.setdefault(entry["table"], []).append(entry)
        self.run.table_entry_keys = {e["key"] for es in entries_by_table.values() for e in es}
        total_jobs = sum(len(es) for es in entries_by_table.values())
        self.run.progress.set_jobs(total_jobs,
                                   sum(1 for k in self.run.table_entry_keys if f"post:{k}" in self.run.done))
        remaining_parts = {}
        jobs = []
        for table_plan in tables:
            todo = []
            for part in table_plan["parts"]:
                record = self.run.done.get(f"data:{part['id']}")
                if record:
                    self.run.progress.part_done(table_plan["table"], record["rows"], already_done=True,
                                                bytes_=record["bytes"])
                    self.run.results[part["id"]] = {**record, "table": table_plan["table"], "resumed": True}
                else:
                    todo.append(part)
            remaining_parts[table_plan["table"]] = len(todo)
            bundle = self._small_table_bundle(table_plan["table"], entries_by_table.get(table_plan["table"], [])) \
                if copy_mode and is_small(table_plan) else None
            for part in todo:
                jobs.append((self._data_priority(table_plan), f"data:{part['id']}",
                             self._data_job(table_plan, part, bundle)))

        def index_jobs(table_name):
            return [(0, f"post:{e['key']}", self.post_data.entry_job(e))
                    for e in entries_by_table.get(table_name, []) if f"post:{e['key']}" not in self.run.done]

        # A table is analyzed as soon as its data and its indexes are in, while other tables still
        # copy (as pgcopydb does), instead of in a tail of its own at the end.
        table_of_entry = {f"post:{e['key']}": name for name, es in entries_by_table.items() for e in es}
        pending_indexes = {t["table"]: len(index_jobs(t["table"])) for t in tables}

        def analyze_jobs(table_name):
            return [analyze_job(self.run, table_name)] if opts["analyze"] and \
                f"analyze:{table_name}" not in self.run.done else []

        def finish_jobs(table_name):
            """Once a table's indexes are built: attach its keys to their indexes, then ANALYZE."""
            attach = [e for e in entries_by_table.get(table_name, [])
                      if e.get("attach_sql") and f"attach:{e['key']}" not in self.run.done]
            if attach:
                return [(0, f"attach:{table_name}", self.post_data.attach_job(table_name, attach))]
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
                    self.run.large_object_stats["copied"] += result["large_objects"]
                    self.run.large_object_stats["copied_bytes"] += result["bytes"]
                return []
            if key.startswith("attach:"):
                return analyze_jobs(key[len("attach:"):])
            if key.startswith("post:"):
                self.run.progress.job_done(key[5:])
                table_name = table_of_entry.get(key)
                with lock:
                    pending_indexes[table_name] -= 1
                    ready = pending_indexes[table_name] == 0
                return finish_jobs(table_name) if ready else []
            part_id = key[5:]
            table_name = result["table"]
            self.run.results[part_id] = result
            self.run.progress.part_done(table_name, result["rows"], detail=result.pop("detail", None))
            with lock:
                remaining_parts[table_name] -= 1
                finished = remaining_parts[table_name] == 0
            if not finished:
                return []
            return index_jobs(table_name) or finish_jobs(table_name)

        if copy_mode:
            self.run.run_jobs(jobs + lo_jobs, on_done)
        else:
            # Existing schema: foreign keys are in force, so load level by level (large objects with the
            # first level).
            levels = sorted({t["level"] for t in tables})
            for level in levels:
                level_jobs = [j for j in jobs if j[1] in
                              {f"data:{p['id']}" for t in tables if t["level"] == level for p in t["parts"]}]
                if level == levels[0]:
                    level_jobs, lo_jobs = level_jobs + lo_jobs, []
                self.run.enter_phase("data", f"level {level}: {len(level_jobs)} part(s)")
                self.run.run_jobs(level_jobs, on_done)
            if lo_jobs:
                self.run.run_jobs(lo_jobs, on_done)

    def _data_priority(self, table_plan):
        # Largest first; in existing mode the level comes first (handled by running level by level).
        return 1 + 1.0 / (1 + table_plan["bytes"] / max(1, len(table_plan["parts"])))

    def _data_job(self, table_plan, part, bundle=None):
        def job(worker, conn):
            self.run.progress.part_started(table_plan["table"])
            result = self.table_copy.copy_part(worker, conn, table_plan, part, then=bundle)
            result["table"] = table_plan["table"]
            bundled = result.pop("bundled")
            for step in bundled:
                self.run.done[step] = {}
            built = sum(1 for step in bundled if step.startswith("post:"))
            attached = sum(1 for step in bundled if step.startswith("attach:"))
            self.run.progress.bundled_jobs_done(built)
            # One log line per table (thousands on some databases), the same words as the jobs' own lines.
            result["detail"] = ", ".join(
                ([f"built {built} index(es) and constraint(s)"] if built else [])
                + ([f"attached {attached} key(s) of {table_plan['table']} to their indexes"] if attached else [])
                + (["analyzed"] if f"analyze:{table_plan['table']}" in bundled else []))
            return result
        return job

    def _small_table_bundle(self, table_name, entries):
        """A small table's indexes and constraints (entries), the keys attached to them and its ANALYZE, in
        the transaction that copied it: one job and one commit per table instead of four, their statements
        and records sent with the part's own record in one round trip (per-table cost is what a database
        of thousands of small tables pays for)."""
        def then(cur, worker):
            statements, steps = [], []
            for entry in entries:
                if f"post:{entry['key']}" not in self.run.done:
                    statements.append(entry["sql"])
                    steps.append(f"post:{entry['key']}")
            for entry in entries:
                if entry.get("attach_sql") and f"attach:{entry['key']}" not in self.run.done:
                    statements.append(entry["attach_sql"])
                    steps.append(f"attach:{entry['key']}")
            if self.run.options["analyze"] and f"analyze:{table_name}" not in self.run.done:
                statements.append(f"ANALYZE {table_name}")
                steps.append(f"analyze:{table_name}")
            if entries:
                statements.insert(0, self.post_data.settings_sql(cur))
            if steps:
                statements.append(state.done_statement(cur, self.run.run_id, [(step, None, None) for step in steps],
                                                       worker=worker))
            return statements, steps
        return then

    def _large_object_jobs(self):
        """Batches of the large objects not recorded as done, as jobs of the data phase's pool."""
        every, done = self.run.large_objects, self.run.done
        todo = [lo for lo in every if f"lo:{lo['oid']}" not in done]
        resumed = len(every) - len(todo)
        self.run.large_object_stats["resumed"] = resumed
        self.run.progress.set_large_objects(len(every), sum(lo["bytes"] for lo in every), resumed,
                                            sum(lo["bytes"] for lo in every if f"lo:{lo['oid']}" in done))
        jobs = []
        for batch in large_objects.batches(todo):
            size = sum(lo["bytes"] for lo in batch)
            jobs.append((1 + 1.0 / (1 + size), f"lo:{batch[0]['oid']}+{len(batch)}", self._large_object_job(batch)))
        return jobs

    def _large_object_job(self, batch):
        def job(worker, conn):
            streamed = [0]

            def on_bytes(count):
                streamed[0] += count
                self.run.progress.add_large_object_bytes(count)

            def mark(cur, done_batch, seconds):
                state.mark_many_done(cur, self.run.run_id, [(f"lo:{lo['oid']}", 1, lo["bytes"]) for lo in done_batch],
                                     seconds=seconds, worker=worker)
            try:
                with conn.cursor() as cur:
                    cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(
                        sql.Literal(self.run.options["lock_timeout"])))
                    cur.execute("SET LOCAL synchronous_commit = off")
                run, opts = self.run, self.run.options
                copied = large_objects.copy_batch(
                    run.source, run.snapshot_id, conn, batch, no_owner=opts["no_owner"],
                    no_privileges=opts["no_privileges"], on_bytes=on_bytes, should_stop=run.abort.is_set,
                    mark_done=mark, application_name=f"pgmigrate worker {worker} large objects")
                conn.commit()
            except large_objects.MetadataError as error:
                rollback_quietly(conn)
                self.run.progress.large_objects_done(0, streamed[0])
                raise MigrationError(str(error)) from None
            except BaseException:
                rollback_quietly(conn)
                self.run.progress.large_objects_done(0, streamed[0])
                raise
            self.run.progress.large_objects_done(len(batch))
            return {"large_objects": len(batch), "bytes": copied, "worker": worker}
        return job


def analyze_job(run, table_name):
    """The job (priority, key, run(worker, conn)) that analyzes a table and records it done."""
    key = f"analyze:{table_name}"

    def job(worker, conn):
        with conn.cursor() as cur:
            cur.execute(sql.SQL("ANALYZE {}").format(sql.SQL(table_name)))
            state.mark_done(cur, run.run_id, key, worker=worker)
        conn.commit()
        run.done[key] = {}
        return {}
    return (0.5, key, job)
