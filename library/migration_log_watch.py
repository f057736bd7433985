#!/usr/bin/python
"""Ansible module: watch the application's error log for a while after the cutover."""

DOCUMENTATION = r"""
module: migration_log_watch
short_description: Fail on new error lines in log files or a systemd journal during a window
description:
  - Reads the files from their current end (only lines written during the window count) and, at the end of the
    window, the journal of I(journal_units) since the window began; every line matching I(pattern) is reported.
  - Fails naming the log and quoting the new error lines, unless I(fail_on_errors) is false (then it only reports,
    for an alert instead of a failure).
options:
  paths: {description: Log files to watch., type: list, elements: path, default: []}
  journal_units: {description: systemd units whose journal is read., type: list, elements: str, default: []}
  pattern: {description: Python regular expression of an error line., type: str, default: "ERROR|CRITICAL|Traceback"}
  window_seconds: {description: How long to watch., type: float, required: true}
  poll_seconds: {description: Seconds between two reads of the files., type: float, default: 1.0}
  fail_on_errors: {description: Fail the task when new error lines appear., type: bool, default: true}
  mark_only:
    description: Only note where the logs end now and return it as C(mark) (no waiting), for a later watch.
    type: bool
    default: false
  mark:
    description: A C(mark) returned earlier; lines written since it count (else only lines written during the window).
    type: dict
author: pgmigrate maintainers
"""

EXAMPLES = r"""
- name: Watch the error log for 24 hours
  migration_log_watch:
    paths: [/var/log/cdp/errors.log]
    window_seconds: 86400
"""

RETURN = r"""
status: {description: pass or fail., returned: always, type: str}
checks: {description: The error_log check with an item per log., returned: unless mark_only, type: list}
mark: {description: Each file's size and the time now., returned: with mark_only, type: dict}
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

try:
    from ansible.module_utils.pgmigrate.appchecks.post_checks import mark_error_logs, watch_error_log
    IMPORT_ERROR = None
except ImportError:
    IMPORT_ERROR = traceback.format_exc()


def main():
    module = AnsibleModule(
        argument_spec={
            "paths": {"type": "list", "elements": "path", "default": []},
            "journal_units": {"type": "list", "elements": "str", "default": []},
            "pattern": {"type": "str", "default": "ERROR|CRITICAL|Traceback"},
            "window_seconds": {"type": "float", "required": True},
            "poll_seconds": {"type": "float", "default": 1.0},
            "fail_on_errors": {"type": "bool", "default": True},
            "mark_only": {"type": "bool", "default": False},
            "mark": {"type": "dict"},
        },
        supports_check_mode=True,
    )
    if IMPORT_ERROR:
        module.fail_json(msg="migration_log_watch cannot load its module_utils", exception=IMPORT_ERROR)
    p = module.params
    if not p["paths"] and not p["journal_units"]:
        module.fail_json(msg="migration_log_watch needs paths or journal_units")
    if p["mark_only"]:
        module.exit_json(changed=False, mark=mark_error_logs(p["paths"]))
    check = watch_error_log(p["paths"], p["pattern"], p["window_seconds"], p["poll_seconds"], p["journal_units"],
                            mark=p["mark"])
    outcome = {"changed": False, "status": check["status"], "checks": [check]}
    if check["status"] == "fail":
        message = f"New errors in the application's logs after the cutover: {check['summary']}"
        if p["fail_on_errors"]:
            module.fail_json(msg=message, **outcome)
        module.warn(message)
        module.exit_json(msg=message, **outcome)
    module.exit_json(msg=check["summary"], **outcome)


if __name__ == "__main__":
    main()
