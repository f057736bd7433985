#!/usr/bin/python
"""Ansible module: the target's rollback point, the backup a data rollback restores."""

DOCUMENTATION = r"""
module: pg_rollback_point
short_description: Open, read and close the rollback point of a migration's target
description:
  - A migration's data rollback restores the target's state before the migration's first attempt. The
    backup role opens the rollback point on the target's complete backup taken before the first attempt;
    reruns of the unfinished migration reuse it; the migration's end (validation passed, or a data
    rollback) closes it. Retention never removes what an open or the last closed point designates.
  - "One JSON file per target: <backup_dir>/rollback/<key>.json (module_utils/pgmigrate/backup/rollback_point.py)."
options:
  action:
    description: >-
      status (read the points), open (on I(unit)), close (with I(outcome)), to_restore (the backup a data
      rollback restores, or a refusal when there is none).
    type: str
    required: true
    choices: [status, open, close, to_restore]
  backup_dir: {description: The backup directory (backup_dir)., type: path, required: true}
  key: {description: "The target's directory name below it (label-dbname@host-port).", type: str, required: true}
  unit: {description: The complete backup to open the point on (action open)., type: path}
  run_id: {description: The backup run that took it (action open)., type: str, default: ""}
  outcome: {description: Why the point closes (action close)., type: str, choices: [migrated, rolled back, discarded]}
author: pgmigrate maintainers
"""

EXAMPLES = r"""
- name: Which backup would a data rollback restore
  pg_rollback_point:
    action: to_restore
    backup_dir: /srv/pgmigrate/backups
    key: target-cdp@db.example.com-5432
"""

RETURN = r"""
open: {description: "The open point: backup (relative to backup_dir), run_id, opened_at; null when none.", returned: always, type: dict}
finished: {description: The last closed point (with closed_at and outcome); null when none., returned: always, type: dict}
path: {description: The complete backup a data rollback restores (action to_restore)., returned: to_restore, type: str}
why: {description: What that backup holds, in words (action to_restore)., returned: to_restore, type: str}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.pgmigrate.backup import rollback_point


def run(module):
    p = module.params
    backup_dir, key = p["backup_dir"], p["key"]
    if p["action"] == "status":
        return {"changed": False, **rollback_point.read(backup_dir, key)}
    if p["action"] == "to_restore":
        path, why = rollback_point.to_restore(backup_dir, key)
        return {"changed": False, "path": path, "why": why, **rollback_point.read(backup_dir, key)}
    if module.check_mode:
        return {"changed": False, **rollback_point.read(backup_dir, key)}
    if p["action"] == "open":
        return {"changed": True, **rollback_point.open_point(backup_dir, key, p["unit"], p["run_id"])}
    points, changed = rollback_point.close(backup_dir, key, p["outcome"])
    return {"changed": changed, **points}


def main():
    module = AnsibleModule(
        argument_spec={
            "action": {"type": "str", "required": True, "choices": ["status", "open", "close", "to_restore"]},
            "backup_dir": {"type": "path", "required": True},
            "key": {"type": "str", "required": True, "no_log": False},
            "unit": {"type": "path"},
            "run_id": {"type": "str", "default": ""},
            "outcome": {"type": "str", "choices": ["migrated", "rolled back", "discarded"]},
        },
        required_if=[("action", "open", ["unit"]), ("action", "close", ["outcome"])],
        supports_check_mode=True,
    )
    try:
        module.exit_json(**run(module))
    except rollback_point.RollbackPointError as error:
        module.fail_json(msg=str(error))


if __name__ == "__main__":
    main()
