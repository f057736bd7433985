"""The backup's progress line, in a file that the live-progress callback prints while the task runs (as it
prints the copy's): what is being dumped, how much is written, and, when the database was backed up before,
the share of the last backup's size and an ETA from it.

    [backup source] complete: 152.3 MB written, 51% of the last backup (301.0 MB), elapsed 14s ETA 13s
    [backup source] verifying 3 backup(s)
"""

import json
import os
import threading
import time
from contextlib import contextmanager

from ..common.files import write_progress_line
from ..common.units import elapsed_and_eta, human_bytes
from .base import RECORD

WRITE_INTERVAL = 1.0


def _tree_bytes(directory):
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass  # a file pg_dump is renaming
    return total


def last_backup_bytes(latest, kind):
    """The size of the last verified backup of this kind (latest/<kind>/backup.json), or None."""
    if not latest:
        return None
    try:
        with open(os.path.join(latest, kind, RECORD), encoding="utf-8") as handle:
            return json.load(handle).get("bytes") or None
    except (OSError, ValueError):
        return None


class BackupProgress:
    def __init__(self, path, label, latest=None):
        self.path, self.label, self.latest = path, label, latest
        self.started = time.monotonic()
        self.state = "running"

    def step(self, text):
        self._write(f"[backup {self.label}] {text}")

    @contextmanager
    def dumping(self, kind, unit):
        """While the block runs (pg_dump writing into unit), the line says how far it is, every second."""
        if not self.path:
            yield
            return
        expected = last_backup_bytes(self.latest, kind)
        began = time.monotonic()
        stop = threading.Event()

        def follow():
            while True:
                written = _tree_bytes(unit)
                spent = time.monotonic() - began
                text = f"{kind}: {human_bytes(written)} written"
                if expected:
                    share = min(written / expected, 0.99)
                    eta = spent / share - spent if share > 0.01 else None
                    text += (f", {share * 100:.0f}% of the last backup ({human_bytes(expected)}),"
                             f" {elapsed_and_eta(time.monotonic() - self.started, eta)}")
                else:
                    text += f", {elapsed_and_eta(time.monotonic() - self.started)}"
                self.step(text)
                if stop.wait(WRITE_INTERVAL):
                    return

        thread = threading.Thread(target=follow, name=f"backup-progress-{kind}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def finish(self, state):
        self.state = state
        self.step(state)

    def _write(self, line):
        if self.path:
            write_progress_line(self.path, self.state, line)
