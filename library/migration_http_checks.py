#!/usr/bin/python
"""Ansible module: the plan's functional checks and page-load limits against the running application."""

DOCUMENTATION = r"""
module: migration_http_checks
short_description: Call the application's endpoints, check each answer and time it
description:
  - Each check is one HTTP call with an expected status and body (a substring, or a JSON subset), timed against
    its page-load limit. Checks run in order; C(save_as) keeps a JSON answer whose fields later checks use as
    C(${name.field}) in their url, json, body or headers; C(${secrets.key}) takes a value of I(secrets).
  - Fails naming every endpoint that answered wrongly or too slowly, unless I(fail_on_failure) is false.
  - Request bodies and secrets never appear in the result; URLs are shown without user info or query values.
options:
  base_url: {description: Prefix of relative check URLs (e.g. http://127.0.0.1:8000)., type: str, default: ""}
  checks:
    description: "List of {name, method, url, json or body, headers, status (int or list), body_contains (str or list),
      json_subset, max_seconds, save_as}."
    type: list
    elements: dict
    required: true
  secrets: {description: "Values substituted for ${secrets.key} (keep them in ansible-vault).", type: dict, default: {}}
  max_seconds: {description: Page-load limit of a check that sets none., type: float, default: 3.0}
  timeout: {description: Seconds a call may take before it counts as unanswered., type: float, default: 30.0}
  fail_on_failure: {description: Fail the task when a check fails., type: bool, default: true}
author: pgmigrate maintainers
"""

EXAMPLES = r"""
- name: Functional checks
  migration_http_checks:
    base_url: http://127.0.0.1:8000
    checks:
      - {name: health, url: /health, json_subset: {status: ok}}
"""

RETURN = r"""
status: {description: pass or fail., returned: always, type: str}
checks: {description: "The functional and page_load checks with their items (one per call).", returned: always, type: list}
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

try:
    from ansible.module_utils.pgmigrate.appchecks.post_checks import failure_message, http_checks
    IMPORT_ERROR = None
except ImportError:
    IMPORT_ERROR = traceback.format_exc()


def main():
    module = AnsibleModule(
        argument_spec={
            "base_url": {"type": "str", "default": ""},
            "checks": {"type": "list", "elements": "dict", "required": True},
            "secrets": {"type": "dict", "default": {}, "no_log": True},
            "max_seconds": {"type": "float", "default": 3.0},
            "timeout": {"type": "float", "default": 30.0},
            "fail_on_failure": {"type": "bool", "default": True},
        },
        supports_check_mode=False,
    )
    if IMPORT_ERROR:
        module.fail_json(msg="migration_http_checks cannot load its module_utils", exception=IMPORT_ERROR)
    p = module.params
    checks = list(http_checks(p["base_url"], p["checks"], p["secrets"], p["max_seconds"], p["timeout"]))
    status = "fail" if any(c["status"] == "fail" for c in checks) else "pass"
    outcome = {"changed": False, "status": status, "checks": checks}
    if status == "fail":
        message = f"Post-migration HTTP checks failed: {failure_message(checks)}"
        if p["fail_on_failure"]:
            module.fail_json(msg=message, **outcome)
        module.exit_json(msg=message, **outcome)
    module.exit_json(msg=f"{checks[0]['summary']}; {checks[1]['summary']}", **outcome)


if __name__ == "__main__":
    main()
