"""Stdout callback: Ansible's default output, plus a progress line at each poll of a running copy.

While pg_migration_copy runs (async), the playbook polls pg_migration_progress in an until-loop;
instead of "FAILED - RETRYING", this callback prints the copy's progress line (rows, bytes, ETA).
"""

from ansible.plugins.callback.default import CallbackModule as DefaultCallback

DOCUMENTATION = r"""
name: migration_progress
type: stdout
short_description: default output plus live migration progress
description:
  - Ansible's default stdout callback; retries of a task whose result carries C(progress_line)
    print that line instead of "FAILED - RETRYING".
extends_documentation_fragment:
  - default_callback
  - result_format_callback
requirements:
  - set as stdout callback in ansible.cfg
"""


class CallbackModule(DefaultCallback):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "migration_progress"

    def v2_runner_retry(self, result):
        line = result._result.get("progress_line")
        if line:
            self._display.display(f"    {line}", color="cyan")
            return
        super().v2_runner_retry(result)
