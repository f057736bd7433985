"""Notification callback: the copy's, the validation's and the backup's progress, printed while their task
runs in the foreground.

Ansible prints nothing while a module runs. playbooks/copy.yml sets the fact
``migration_live_progress: {file: <progress.json>, interval: <seconds>}`` just before its task (the validation
and backup roles their own validation_live_progress and backup_live_progress);
while a pg_migration_copy (or pg_migration_validate, pg_backup) task then runs, a thread of this callback reads that
file every ``interval`` seconds and prints its progress line when it changed. It only reads a local file:
the modules run on migration_controller, the local machine (use migration_copy_in_background for a remote
one).

It is a notification callback (enabled in ansible.cfg's callbacks_enabled), so it prints under any
stdout callback, including AWX's and ansible-runner's, which turn Display output into events.
"""

import json
import threading

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: migration_live_progress
type: notification
short_description: print a running copy's, validation's or backup's progress line while its task runs
description:
  - While a pg_migration_copy, pg_migration_validate or pg_backup task runs, prints the progress line the module
    writes to its progress file (set by the fact migration_live_progress) every few seconds.
requirements:
  - enable it in ansible.cfg (callbacks_enabled)
"""

# The fact that names the progress file: migration_live_progress (playbooks/copy.yml), a role's own
# <role>_live_progress (validation_live_progress, backup_live_progress).
PROGRESS_FACT_SUFFIX = "_live_progress"

# The modules whose progress is followed (each writes the file the fact names while it runs).
FOLLOWED_ACTIONS = ("pg_migration_copy", "pg_migration_validate", "pg_backup")


def is_followed_action(action):
    return (action or "").rsplit(".", 1)[-1] in FOLLOWED_ACTIONS


def read_progress_line(path):
    """The progress line of a running copy, or None (no file yet, a partial write, a finished run)."""
    try:
        with open(path) as handle:
            progress = json.load(handle)
    except (OSError, ValueError):
        return None
    if progress.get("state") not in (None, "running"):
        return None
    return progress.get("line") or None


class ProgressFollower:
    """Prints a progress file's line every interval seconds while started; stop() ends it."""

    def __init__(self, path, interval, show):
        self.path = path
        self.interval = max(0.5, float(interval))
        self.show = show
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="migration-live-progress", daemon=True)
        self._last = None

    def start(self):
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.interval):
            line = read_progress_line(self.path)
            if line and line != self._last:
                self._last = line
                self.show(line)

    def stop(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 1)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "migration_live_progress"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._settings = None
        self._follower = None

    def _show(self, line):
        self._display.display(f"    {line}", color="cyan")

    def _stop_following(self):
        if self._follower is not None:
            self._follower.stop()
            self._follower = None

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._stop_following()
        if self._settings and is_followed_action(task.action) and not task.async_val:
            self._follower = ProgressFollower(self._settings["file"], self._settings["interval"], self._show)
            self._follower.start()

    def v2_runner_on_ok(self, result):
        facts = result._result.get("ansible_facts") or {}
        settings = next((value for name, value in facts.items() if name.endswith(PROGRESS_FACT_SUFFIX)), None)
        if isinstance(settings, dict) and settings.get("file"):
            self._settings = {"file": str(settings["file"]), "interval": settings.get("interval") or 5}
        if is_followed_action(result._task.action):
            self._stop_following()

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if is_followed_action(result._task.action):
            self._stop_following()

    def v2_runner_on_unreachable(self, result):
        self._stop_following()

    def v2_runner_on_skipped(self, result):
        if is_followed_action(result._task.action):
            self._stop_following()

    def v2_playbook_on_stats(self, stats):
        self._stop_following()
