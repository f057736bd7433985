"""One run per target at a time, and none left behind by its playbook.

The run lock is an advisory lock on the target held by a session of its own for the whole run; the
watchdog stops the run cleanly when the process that started it (ansible-playbook) is gone, so that a
killed playbook does not leave an orphaned copy working beside its rerun."""

import os
import threading
import time

from ..common import preflight
from ..common.connection import describe

# Advisory lock key on the target: one migration run at a time per target database.
RUN_LOCK_KEY = 0x70676D6967


def acquire_run_lock(lock_conn, target, wait_seconds):
    """Take the run lock on lock_conn (an autocommit target session), waiting up to wait_seconds for a
    run that holds it (say, a killed playbook's orphaned copy still stopping)."""
    deadline = time.monotonic() + wait_seconds
    with lock_conn.cursor() as cur:
        while True:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (RUN_LOCK_KEY,))
            if cur.fetchone()[0]:
                return
            if time.monotonic() > deadline:
                cur.execute("SELECT string_agg(pid::text, ', ') FROM pg_locks WHERE locktype = 'advisory' "
                            "AND objid = %s AND granted", (RUN_LOCK_KEY & 0xFFFFFFFF,))
                holders = cur.fetchone()[0]
                raise preflight.PreflightError(
                    f"Another migration run is active on the target {describe(target)} (server pid "
                    f"{holders}); waited {wait_seconds}s. Wait for it to end, or stop "
                    "it (pg_terminate_backend of those pids), then rerun: the run resumes where it stopped.")
            time.sleep(1)


def watch_controller(pid, abort, event):
    """Set abort when the process pid is gone (checked every 0.2 s by a daemon thread); no-op without pid."""
    if not pid:
        return

    def watch():
        while not abort.is_set():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                event(f"the controlling process {pid} is gone: stopping; a rerun resumes the run")
                abort.set()
                return
            except PermissionError:
                pass
            time.sleep(0.2)
    threading.Thread(target=watch, name="watchdog", daemon=True).start()
