"""The validation's progress line, in a file that the live-progress callback prints while the task runs
(as it prints the copy's): the check running, and for the row digests the share done and the ETA.

    [validate] content  42.0% digests 2,521/6,002 (both sides) elapsed 3s ETA 4s
"""

import threading
import time

from ..common.files import write_progress_line
from ..common.units import elapsed_and_eta

# At most one write a second: the callback reads the file every migration_progress_poll_seconds.
WRITE_INTERVAL = 1.0


class ValidationProgress:
    """Thread-safe: the digest workers advance it as each side of a batch is digested."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.check = "starting"
        self.check_started = self.started
        self.units_total = self.units_done = 0  # the row digests: one unit a table and side
        self.bytes_total = self.bytes_done = 0
        self.state = "running"
        self._written = 0.0

    def begin(self, check, units_total=0, bytes_total=0):
        with self.lock:
            self.check, self.check_started = check, time.monotonic()
            self.units_total, self.units_done = units_total, 0
            self.bytes_total, self.bytes_done = bytes_total, 0
        self.write(force=True)

    def advance(self, units, size):
        with self.lock:
            self.units_done += units
            self.bytes_done += size
        self.write()

    def __enter__(self):
        return self

    def __exit__(self, error_type, _error, _traceback):
        self.finish("failed" if error_type else "done")
        return False

    def finish(self, state):
        with self.lock:
            self.state = state
        self.write(force=True)

    def line(self):
        with self.lock:
            now = time.monotonic()
            text = f"[validate] {self.check}"
            if self.units_total:
                fraction = (self.bytes_done / self.bytes_total if self.bytes_total
                            else self.units_done / self.units_total)
                spent = now - self.check_started
                eta = spent / fraction - spent if 0.01 < fraction < 1 else (0 if fraction >= 1 else None)
                text += (f" {fraction * 100:5.1f}% digests {self.units_done:,}/{self.units_total:,} (both sides)"
                         f" {elapsed_and_eta(now - self.started, eta)}")
            else:
                text += f" {elapsed_and_eta(now - self.started)}"
            return text

    def write(self, force=False):
        if not self.path:
            return
        now = time.monotonic()
        if not force and now - self._written < WRITE_INTERVAL:
            return
        self._written = now
        write_progress_line(self.path, self.state, self.line())
