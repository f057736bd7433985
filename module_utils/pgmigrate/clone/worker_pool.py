"""The copy's worker pool: jobs by priority on a fixed number of target sessions, with retries.

A job is (priority, key, run(worker, conn)); the lowest priority runs first. on_done(key, result) may
return new jobs (a table's indexes once its data is in). A retryable error closes the worker's session and
puts the job back after a back-off, up to `retries` times; any other error, or the last retry, stops the
pool (the abort event tells every other worker and the rest of the run) and is raised as one error naming
each failed job."""

import queue
import threading
import time
import traceback

import psycopg2

from .errors import MigrationError


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else repr(error)


def _close_quietly(conn):
    if conn is not None:
        try:
            conn.close()
        except psycopg2.Error:
            pass


class WorkerPool:
    def __init__(self, connect, workers, retries, retryable, abort, event, timeline=None):
        """connect(worker) opens a worker's target session; retryable: the exception classes worth a retry;
        abort: the run's threading.Event; event(text) logs a line in the run's events; timeline, a list, gets
        {"key", "worker", "start", "end"} (time.monotonic()) of each job done (the reports' timeline)."""
        self.connect = connect
        self.workers = int(workers)
        self.retries = retries
        self.retryable = retryable
        self.abort = abort
        self.event = event
        self._work = queue.PriorityQueue()
        self._cond = threading.Condition()
        self._counter = 0
        self._pending = 0
        self._failures = []
        self._on_done = None
        self.timeline = timeline

    def run(self, jobs, on_done=None):
        self._on_done = on_done
        for job in jobs:
            self._put(job)
        threads = [threading.Thread(target=self._worker_loop, args=(i + 1,), name=f"worker-{i + 1}")
                   for i in range(self.workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self._failures:
            raise MigrationError("; ".join(self._failures))
        if self.abort.is_set():
            raise MigrationError("the run was aborted")

    def _put(self, job):
        priority, key, fn = job
        with self._cond:
            self._counter += 1
            self._pending += 1
            self._work.put((priority, self._counter, key, fn, 0))

    def _next(self):
        """The next job, or None when every job is done or the run aborts."""
        with self._cond:
            while True:
                while self._work.empty() and self._pending > 0 and not self.abort.is_set():
                    self._cond.wait(0.2)
                if self._pending == 0 or self.abort.is_set():
                    return None
                try:
                    return self._work.get_nowait()
                except queue.Empty:
                    continue

    def _stop(self, failure):
        self._failures.append(failure)
        self.abort.set()
        with self._cond:
            self._cond.notify_all()

    def _retry_or_stop(self, job, error):
        """Put a failed job back after a back-off, or stop the pool; True when it was put back."""
        priority, seq, key, fn, attempt = job
        message = _first_line(error)
        if "snapshot" in str(error).lower() and "invalid" in str(error).lower():
            attempt = self.retries  # the snapshot is gone: no retry can read it again
        if attempt < self.retries:
            self.event(f"retrying {key} after error: {message}")
            time.sleep(min(2 ** attempt, 10))
            with self._cond:
                self._work.put((priority, seq, key, fn, attempt + 1))
                self._cond.notify_all()
            return True
        self._stop(f"{key}: {message} (after {attempt + 1} attempt(s))")
        return False

    def _worker_loop(self, worker):
        conn = None
        try:
            while True:
                job = self._next()
                if job is None:
                    return
                key, fn = job[2], job[3]
                try:
                    if conn is None or conn.closed:
                        conn = self.connect(worker)
                    began = time.monotonic()
                    result = fn(worker, conn)
                    if self.timeline is not None:
                        self.timeline.append({"key": key, "worker": worker, "start": began, "end": time.monotonic()})
                except self.retryable as error:
                    _close_quietly(conn)
                    conn = None
                    if self._retry_or_stop(job, error):
                        continue
                    return
                except Exception as error:  # noqa: BLE001 - reported with the key, the run stops
                    self.event(traceback.format_exc())
                    self._stop(f"{key}: {str(error).strip() or repr(error)}")
                    return
                try:
                    new_jobs = (self._on_done(key, result) if self._on_done else None) or []
                except Exception as error:  # noqa: BLE001 - a failed follow-up stops the pool, never hangs it
                    self.event(traceback.format_exc())
                    self._stop(f"{key}: {str(error).strip() or repr(error)}")
                    return
                for new_job in new_jobs:
                    self._put(new_job)
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()
        finally:
            if conn is not None and not conn.closed:
                conn.close()
