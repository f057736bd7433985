"""Progress of a running copy, for the operator: rows and bytes per table and in total, with an ETA.

Ansible shows nothing while a module runs, so the engine writes its progress to a JSON file
(rewritten atomically every second) and a human-readable log; the playbook polls the file with
the pg_migration_progress module and prints a line at each poll.
"""

import json
import os
import threading
import time

from ..common.files import replace_atomically
from ..common.units import elapsed_and_eta, human_bytes


class Progress:
    """Thread-safe progress record of one run."""

    def __init__(self, path, run_id, tables, log_path=None, interval=1.0):
        self.path = path
        self.log_path = log_path
        self.run_id = run_id
        self.interval = interval
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.phase = "starting"
        self.state = "running"
        self.message = ""
        # table -> {"estimated_bytes", "parts", "parts_done", "rows", "bytes", "status"}
        self.tables = {
            name: {"estimated_bytes": est, "parts": parts, "parts_done": 0, "rows": 0, "bytes": 0,
                   "status": "pending"}
            for name, est, parts in tables
        }
        self.jobs_total = 0
        self.jobs_done = 0
        # Seconds spent in each phase so far (summary.json's "phases"; the benchmark's breakdown).
        self._phase_seconds = {}
        self._phase_since = self.started
        # large objects: {"total", "estimated_bytes", "done", "bytes"}
        self.large_objects = {"total": 0, "estimated_bytes": 0, "done": 0, "bytes": 0}
        # write() is called by the background writer and by the threads that change the phase: one at a
        # time, each through a temporary file of its own.
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._last_log = 0.0
        self._log_lock = threading.Lock()
        self._log_handle = None

    # -- updates (called from worker threads) -----------------------------------------------
    def set_phase(self, phase, message=""):
        with self.lock:
            self._close_phase()
            self.phase = phase
            self.message = message
        self._log(f"phase {phase}" + (f": {message}" if message else ""))
        self.write()

    def add_bytes(self, table, count):
        with self.lock:
            self.tables[table]["bytes"] += count

    def part_started(self, table):
        with self.lock:
            self.tables[table]["status"] = "copying"

    def part_failed(self, table, streamed_bytes):
        with self.lock:
            entry = self.tables[table]
            entry["bytes"] -= streamed_bytes
            entry["status"] = "retrying"

    def part_done(self, table, rows, already_done=False, bytes_=0, detail=None):
        with self.lock:
            entry = self.tables[table]
            entry["parts_done"] += 1
            entry["rows"] += rows or 0
            if already_done:
                entry["bytes"] += bytes_ or 0
            if entry["parts_done"] >= entry["parts"]:
                entry["status"] = "done" if not already_done else "done (earlier run)"
        if not already_done:
            self._log(f"copied {table}: {rows} rows" + (f"; {detail}" if detail else ""))

    def set_jobs(self, total, done=0):
        with self.lock:
            self.jobs_total, self.jobs_done = total, done

    def job_done(self, description):
        with self.lock:
            self.jobs_done += 1
        self._log(f"done {description}")

    def bundled_jobs_done(self, count):
        """count post-data jobs done with their table's copy (its log line says so)."""
        with self.lock:
            self.jobs_done += count

    def set_large_objects(self, total, estimated_bytes, done=0, done_bytes=0):
        with self.lock:
            self.large_objects = {"total": total, "estimated_bytes": estimated_bytes, "done": done,
                                  "bytes": done_bytes}

    def add_large_object_bytes(self, count):
        with self.lock:
            self.large_objects["bytes"] += count

    def large_objects_done(self, count, streamed_bytes=None):
        """count large objects committed; streamed_bytes undoes what a failed batch had counted."""
        with self.lock:
            self.large_objects["done"] += count
            if streamed_bytes is not None:
                self.large_objects["bytes"] -= streamed_bytes
        if count:
            self._log(f"copied {count} large object(s)")

    def _close_phase(self):
        """The time since the current phase began, added to it (the caller holds the lock)."""
        now = time.monotonic()
        self._phase_seconds[self.phase] = self._phase_seconds.get(self.phase, 0.0) + now - self._phase_since
        self._phase_since = now

    def phase_seconds(self):
        """{phase: seconds} in the order the phases began, the current one up to now."""
        with self.lock:
            self._close_phase()
            return {phase: round(seconds, 2) for phase, seconds in self._phase_seconds.items()}

    def finish(self, state, message=""):
        with self.lock:
            self._close_phase()
            self.state = state
            self.message = message
        self._log(f"run {state}" + (f": {message}" if message else ""))
        self.stop()
        self.write()
        self._close_log()

    # -- reporting --------------------------------------------------------------------------
    def snapshot(self):
        with self.lock:
            tables = {name: dict(entry) for name, entry in self.tables.items()}
            phase, state, message = self.phase, self.state, self.message
            jobs_total, jobs_done = self.jobs_total, self.jobs_done
            large_objects = dict(self.large_objects)
        elapsed = time.monotonic() - self.started
        estimated = sum(t["estimated_bytes"] for t in tables.values()) + large_objects["estimated_bytes"] or 1
        done_estimate = float(min(large_objects["bytes"], large_objects["estimated_bytes"]))
        for entry in tables.values():
            if entry["parts_done"] >= entry["parts"]:
                done_estimate += entry["estimated_bytes"]
            else:
                done_estimate += min(entry["bytes"], entry["estimated_bytes"] * 0.99)
        fraction = min(done_estimate / estimated, 1.0)
        eta = (elapsed / fraction - elapsed) if 0.01 < fraction < 1 else (0 if fraction >= 1 else None)
        rows = sum(t["rows"] for t in tables.values())
        streamed = sum(t["bytes"] for t in tables.values())
        return {
            "run_id": self.run_id, "state": state, "phase": phase, "message": message,
            "elapsed_seconds": round(elapsed, 1), "fraction": round(fraction, 4),
            "eta_seconds": round(eta, 1) if eta is not None else None,
            "rows_done": rows, "bytes_streamed": streamed, "bytes_estimated": estimated,
            "tables_done": sum(1 for t in tables.values() if t["parts_done"] >= t["parts"]),
            "tables_total": len(tables), "jobs_done": jobs_done, "jobs_total": jobs_total,
            "large_objects_done": large_objects["done"], "large_objects_total": large_objects["total"],
            "large_object_bytes": large_objects["bytes"],
            "tables": tables, "updated_at": time.time(), "pid": os.getpid(),
        }

    def line(self, snap=None):
        snap = snap or self.snapshot()
        active = [f"{name} {human_bytes(t['bytes'])}" for name, t in snap["tables"].items()
                  if t["status"] == "copying"][:4]
        text = (f"[{snap['phase']}] {snap['fraction'] * 100:5.1f}% tables {snap['tables_done']}/{snap['tables_total']}"
                f" rows {snap['rows_done']:,} streamed {human_bytes(snap['bytes_streamed'])}"
                f" {elapsed_and_eta(snap['elapsed_seconds'], snap['eta_seconds'])}")
        if snap["jobs_total"]:
            text += f" post-data {snap['jobs_done']}/{snap['jobs_total']}"
        if snap.get("large_objects_total"):
            text += f" large objects {snap['large_objects_done']}/{snap['large_objects_total']}"
        if active:
            text += " | " + ", ".join(active)
        return text

    def write(self):
        if not self.path:
            return
        with self._write_lock:
            snap = self.snapshot()
            snap["line"] = self.line(snap)
            # Compact: indented, json runs its pure-Python encoder (20 ms a write for 3,000 tables, every second).
            replace_atomically(self.path, json.dumps(snap, default=str))
        now = time.monotonic()
        if now - self._last_log >= 10:
            self._last_log = now
            self._log(snap["line"])

    def _log(self, text):
        """A line of the log, written at once (line-buffered) through a handle kept open until stop(): the
        workers log a line or two per table, thousands on a database of many tables."""
        if not self.log_path:
            return
        with self._log_lock:
            if self._log_handle is None:
                self._log_handle = open(self.log_path, "a", buffering=1)
            self._log_handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    # -- background writer ------------------------------------------------------------------
    def start(self):
        def loop():
            while not self._stop.wait(self.interval):
                try:
                    self.write()
                except OSError:
                    pass
        self._thread = threading.Thread(target=loop, name="progress", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._close_log()

    def _close_log(self):
        with self._log_lock:
            if self._log_handle is not None:
                self._log_handle.close()
                self._log_handle = None
