#!/usr/bin/python
"""Ansible module: report the progress of a running pg_migration_copy started with async."""

DOCUMENTATION = r"""
module: pg_migration_progress
short_description: Read the progress of a running migration copy
description:
  - Reads the progress file that pg_migration_copy rewrites every second and the async job's status,
    and returns one line for the operator (rows and bytes done, per table and in total, ETA).
  - Meant for an until-loop; the project's stdout callback prints I(progress_line) at every poll.
options:
  progress_file: {description: The copy's progress file., type: path, required: true}
  job_id: {description: The async job id of the copy task., type: str, required: true}
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
  delay: 5
"""

RETURN = r"""
finished: {description: The copy job has ended (successfully or not)., returned: always, type: bool}
progress_line: {description: One line of progress., returned: always, type: str}
progress: {description: The progress record., returned: always, type: dict}
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule


def job_finished(job_id):
    path = os.path.join(os.path.expanduser("~/.ansible_async"), job_id)
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return False
    # async_wrapper writes {"started": 1, "finished": 0} first and the module's result when it ends.
    return bool(data.get("finished")) or "started" not in data


def main():
    module = AnsibleModule(
        argument_spec={"progress_file": {"type": "path", "required": True}, "job_id": {"type": "str", "required": True}},
        supports_check_mode=True,
    )
    progress = {}
    try:
        with open(module.params["progress_file"]) as handle:
            progress = json.load(handle)
    except (OSError, ValueError):
        progress = {}
    finished = job_finished(module.params["job_id"])
    line = progress.get("line") or "starting: reading the source catalog and restoring the schema"
    module.exit_json(changed=False, finished=finished, progress_line=line,
                     progress={k: v for k, v in progress.items() if k != "tables"})


if __name__ == "__main__":
    main()
