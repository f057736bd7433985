"""Notification callback: one summary of every playbook run, by email and to a webhook, success or failure.

Why a callback and not a last play: a failed task under any_errors_fatal ends the playbook, so a final
play never runs on exactly the runs that most need a message. Ansible sends v2_playbook_on_stats to
callbacks after the last play that ran, failed or not, so the summary goes out there. Two ways to end
skip that event, and are covered too: an exception that stops ansible-playbook (Ctrl-C, an error
outside any task) is caught by an atexit handler, and SIGTERM (a systemd timeout, a cancelled AWX job)
by a signal handler that sends the summary and then lets the signal do what it did before. SIGKILL
cannot be caught by anything.

Settings are the notify_* variables of the first migration_controller host (group_vars/all/
notifications.yml, the inventory's group_vars, -e), read through the play's variable manager and
rendered with a Templar, so vaulted values and lookups work as in a task. Every value held by a
secret-looking variable is redacted from the message. The logic lives in module_utils/pgmigrate/notify/notify.py.
"""

import atexit
import os
import signal
import sys
import threading

from ansible import context
from ansible.plugins.callback import CallbackBase

# The project's plain-Python core: Ansible puts module_utils/ on modules' paths, not on plugins'.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils"))
from pgmigrate.common import playbook_variables  # noqa: E402
from pgmigrate.notify import notify  # noqa: E402

DOCUMENTATION = r"""
name: migration_notify
type: notification
short_description: send a summary of each playbook run by email (SMTP) and to a webhook
description:
  - At the end of a playbook run (success, failure, Ctrl-C or SIGTERM) sends one summary to the
    destinations set by the notify_* variables of the migration_controller host
    (group_vars/all/notifications.yml). Delivery problems are printed as warnings and never change
    the run's exit status.
requirements:
  - enable it in ansible.cfg (callbacks_enabled)
"""

SETTING_NAMES = [f"notify_{name}" for name in notify.NotificationSettings.__dataclass_fields__]
# Magic variables that hold other hosts' variables or Ansible internals: never walked for secrets.
SKIPPED_VARIABLES = {"hostvars", "groups", "group_names", "omit", "vars", "play_hosts", "ansible_play_hosts",
                     "ansible_play_hosts_all", "ansible_play_batch", "role_names", "ansible_role_names"}


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "migration_notify"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pid = os.getpid()
        self._record = None
        self._play = None
        self._finished = True
        self._handlers_installed = False
        self._previous_sigterm = None

    # ------------------------------------------------------------------ events

    def v2_playbook_on_start(self, playbook):
        self._record = notify.RunRecord(self._playbook_name(getattr(playbook, "_file_name", "playbook")))
        # The first play until one starts: an error before it (a bad `hosts:`) still finds the settings.
        plays = playbook.get_plays() if hasattr(playbook, "get_plays") else []
        self._play = plays[0] if plays else None
        self._finished = False
        self._install_handlers()

    def v2_playbook_on_play_start(self, play):
        self._play = play
        if self._record:
            self._record.play_started(play.get_name())

    def v2_runner_on_ok(self, result):
        if self._record:
            self._record.task_ok(result._task.action, result._result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if not self._record:
            return
        if ignore_errors:
            self._record.task_ran()
            return
        self._record.task_failed(result._host.get_name(), result._task.get_name(), result._result)

    def v2_runner_on_unreachable(self, result):
        if self._record:
            self._record.task_failed(result._host.get_name(), result._task.get_name(), result._result,
                                     unreachable=True)

    def v2_playbook_on_stats(self, stats):
        host_stats = {host: stats.summarize(host) for host in sorted(stats.processed)}
        failed_hosts = {host for host, counts in host_stats.items()
                        if counts.get("failures") or counts.get("unreachable")}
        self._finish(notify.status_from_stats(host_stats), host_stats=host_stats, failed_hosts=failed_hosts)

    # ------------------------------------------------------------------ the end of a run

    def _finish(self, status, host_stats=None, failed_hosts=None, aborted_reason=None, in_signal=False):
        if self._finished or self._record is None:
            return
        self._finished = True
        say = self._write_stderr if in_signal else self._display.display
        warn = self._write_stderr if in_signal else self._display.warning
        try:
            variables, templar = self._controller_variables()
            settings = notify.NotificationSettings.from_variables(self._render_settings(variables, templar))
        except notify.SettingsError as error:
            warn(f"Notification not sent: {error} (group_vars/all/notifications.yml)")
            return
        except Exception as error:  # the run's own outcome matters more than its notification
            warn(f"Notification not sent: cannot read the notify_* settings ({type(error).__name__})")
            return
        check_mode = bool(context.CLIARGS.get("check"))
        if not settings.destinations(status, check_mode):
            return
        redactor = notify.Redactor(self._secrets(variables, templar) | set(settings.secrets()))
        summary = self._record.summary(
            status, host_stats=host_stats, failed_hosts=failed_hosts, check_mode=check_mode,
            error_lines=settings.error_lines,
            aborted_reason=aborted_reason, environment=settings.environment or self._inventory_name(variables),
            inventory=self._relative(self._value(variables, templar, "inventory_dir")),
            artifacts_dir=self._value(variables, templar, "migration_artifacts_dir"))
        for delivery in notify.notify(summary, settings, redactor):
            if delivery.delivered:
                say(f"NOTIFY [{delivery.destination}]: {summary['status']} summary {delivery.detail}")
            else:
                warn(f"Notification by {delivery.destination} not delivered: {delivery.detail}."
                     " The run's result is unchanged.")

    def _controller_variables(self):
        """The variables of the first migration_controller host, as its tasks see them, and a Templar."""
        try:
            return playbook_variables.controller_variables(self._play)
        except playbook_variables.NoPlayError as error:
            raise notify.SettingsError(str(error)) from None

    def _render_settings(self, variables, templar):
        rendered = {}
        for name in SETTING_NAMES:
            if name in variables:
                rendered[name] = templar.template(variables[name])
        return rendered

    @staticmethod
    def _value(variables, templar, name):
        return playbook_variables.rendered_text(variables, templar, name)

    @staticmethod
    def _secrets(variables, templar):
        candidates = {name: value for name, value in variables.items() if name not in SKIPPED_VARIABLES}
        return {str(value) for value in notify.secret_values(candidates, render=templar.template)}

    def _inventory_name(self, variables):
        inventory_dir = variables.get("inventory_dir")
        return os.path.basename(str(inventory_dir).rstrip("/")) if inventory_dir else None

    @staticmethod
    def _relative(path):
        if not path:
            return None
        relative = os.path.relpath(path)
        return path if relative.startswith("..") else relative

    def _playbook_name(self, file_name):
        return self._relative(str(file_name)) or str(file_name)

    # ------------------------------------------------------------------ runs that end without stats

    def _install_handlers(self):
        if self._handlers_installed:
            return
        self._handlers_installed = True
        atexit.register(self._at_exit)
        # Only the main thread may set handlers. Ansible's own SIGTERM handler (it stops the workers, then
        # lets the signal end the process) is kept and called right after the summary is sent.
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def _at_exit(self):
        if os.getpid() == self._pid:  # forked workers inherit atexit handlers
            self._finish("aborted", aborted_reason="ansible-playbook stopped before its end (interrupted, or an"
                                                   " error outside any task: see the controller's output)")

    def _on_sigterm(self, signum, frame):
        if os.getpid() == self._pid:
            # A Display call here could wait forever on a lock the interrupted code holds: plain writes.
            self._finish("aborted", aborted_reason="terminated by SIGTERM (a timeout or a cancelled job)",
                         in_signal=True)
        if callable(self._previous_sigterm):
            self._previous_sigterm(signum, frame)
        else:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    @staticmethod
    def _write_stderr(message):
        try:
            os.write(2, f"[migration_notify] {message}\n".encode(errors="replace"))
        except OSError:
            pass
