#!/usr/bin/python
"""Ansible module: follow a running pg_migration_copy started with async, and collect its result."""

DOCUMENTATION = r"""
module: pg_migration_progress
short_description: Follow a running migration copy and collect its result
description:
  - Waits up to I(wait_seconds) for the async copy job to end, then returns one progress line for the operator
    (phase, percentage, rows and bytes per table and in total, ETA) read from the progress file the copy
    rewrites every second.
  - When the job has ended, returns its result (the copy's summary) and removes the job's status file, or
    fails with the copy's own error message.
  - "Meant for an until-loop with C(delay: 0); the project's stdout callback prints I(progress_line) at every poll."
options:
  progress_file: {description: The copy's progress file., type: path, required: true}
  job_id: {description: The async job id of the copy task., type: str, required: true}
  wait_seconds: {description: How long one call waits for the job before it reports progress., type: float, default: 10}
author: pgmigrate maintainers
"""

EXAMPLES = r"""
- name: Follow the copy
  pg_migration_progress:
    progress_file: "{{ migration_artifacts_dir }}/progress.json"
    job_id: "{{ copy_job.ansible_job_id }}"
  register: copy_progress
  until: copy_progress.finished
  retries: 100000
  delay: 0
"""

RETURN = r"""
finished: {description: The copy job has ended., returned: always, type: bool}
progress_line: {description: One line of progress., returned: always, type: str}
summary: {description: The copy's summary, once it has ended successfully., returned: when finished, type: dict}
"""

import json
import os
import time

from ansible.module_utils.basic import AnsibleModule


def job_result(job_id):
    """The async job's record: None while it runs, else the module's result."""
    path = os.path.join(os.path.expanduser("~/.ansible_async"), job_id)
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None, path
    # async_wrapper writes {"started": 1, "finished": 0} first and the module's result when it ends.
    if data.get("started") and not data.get("finished"):
        return None, path
    return data, path


def read_progress(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def main():
    module = AnsibleModule(
        argument_spec={"progress_file": {"type": "path", "required": True},
                       "job_id": {"type": "str", "required": True},
                       "wait_seconds": {"type": "float", "default": 10}},
        supports_check_mode=True,
    )
    deadline = time.monotonic() + module.params["wait_seconds"]
    result, path = job_result(module.params["job_id"])
    while result is None and time.monotonic() < deadline:
        time.sleep(0.2)
        result, path = job_result(module.params["job_id"])
    progress = read_progress(module.params["progress_file"])
    line = progress.get("line") or "starting: reading the source catalog and restoring the schema"
    if result is None:
        module.exit_json(changed=False, finished=False, progress_line=line)
    try:
        os.remove(path)
    except OSError:
        pass
    if result.get("failed"):
        module.fail_json(msg=result.get("msg") or "the copy failed (see its progress.log)", finished=True,
                         progress_line=line, changed=bool(result.get("changed")))
    module.exit_json(changed=bool(result.get("changed")), finished=True, progress_line=line,
                     summary=result.get("summary", {}))


if __name__ == "__main__":
    main()
