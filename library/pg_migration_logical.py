#!/usr/bin/python
"""Ansible module: zero-downtime migration with PostgreSQL logical replication, one step per call."""

DOCUMENTATION = r"""
module: pg_migration_logical
short_description: Migrate a live PostgreSQL database with logical replication and a seconds-long write freeze
description:
  - C(preflight) checks everything before anything changes (wal_level, rights, free slots and WAL senders,
    replica identities, an empty target, the target server reaching the source, leftovers of an earlier run)
    and fails with what to fix.
  - C(setup) restores the source's schema on the target, creates the publication on the source (after setting
    REPLICA IDENTITY FULL on the tables in I(replica_identity_full)) and the subscription on the target. The
    source password goes only into CREATE SUBSCRIPTION, never into the result.
  - C(wait) waits up to I(wait_seconds) for the initial sync (every table ready) and a lag under
    I(max_lag_bytes); it returns C(finished) and a C(progress_line), so a playbook loops on it.
  - C(cutover) freezes writes (every published table locked IN EXCLUSIVE MODE), lets the target catch up,
    copies the sequences, makes the source read-only for new sessions, ends the older ones, writes
    I(switch_file) (with I(switch=file)) and releases the lock. When it gives up before the switch the source
    is as it was and the task fails with C(abandoned=true).
  - C(finish) (after the switch) drops subscription, slot and publication, reverts the replica identities and
    writes the report. C(abort) (before the switch) removes everything the run created on both servers.
  - C(reverse_status) reports the reverse replication's window (since, until, lag); C(switch_back) is the
    cutover the other way within it (a write freeze on the new database, the old source writable again with
    every write, the sequences copied back); C(switch_back_finish) then drops the reverse replication, as
    C(finalize) does at the end of the window.
  - C(hold_target) makes the target read-only for the application's new sessions while blue-green waves move
    hosts to it before the freeze (the cutover releases it inside the freeze, C(abort) too); C(abort_check)
    fails when an abort would be refused (after the switch), changing nothing.
  - In check mode only C(preflight), C(reverse_status) and C(abort_check) run (they change nothing); the other actions are
    reported, not run.
options:
  action:
    description: The step to run.
    type: str
    required: true
    choices: [preflight, setup, wait, cutover, finish, abort, reverse_status, finalize, switch_back, switch_back_finish,
              hold_target, abort_check]
  source: {description: Source connection (the migration_source mapping)., type: dict, required: true}
  target: {description: Target connection (the migration_target mapping)., type: dict, required: true}
  run_name: {description: Names the publication, subscription and slot (pgmigrate_zd_<run_name>)., type: str, required: true}
  artifacts_dir: {description: Where the run's state and report go (zero_downtime/<name>/)., type: path, required: true}
  source_host_from_target: {description: The source's host as the target server reaches it (default the source's host)., type: str}
  source_port_from_target: {description: The source's port as the target server reaches it (default the source's port)., type: int}
  source_sslrootcert_from_target: {description: CA file on the target server for the subscription's connection., type: str}
  include_schemas: {description: Only these schemas (default all)., type: list, elements: str, default: []}
  exclude_schemas: {description: Schemas to leave out., type: list, elements: str, default: []}
  replica_identity_full: {description: Keyless tables to give REPLICA IDENTITY FULL during the run (schema.table)., type: list, elements: str, default: []}
  max_lag_bytes: {description: The lag bound before the cutover (bytes or a size like 16MB)., type: str, default: 16MB}
  target_overwrite: {description: Replace what the source's schema defines on a target that already holds tables., type: bool, default: false}
  no_owner: {description: Do not restore object ownership., type: bool, default: true}
  no_privileges: {description: Do not restore privileges., type: bool, default: true}
  switch_file: {description: "File on the controller that names the live database (JSON host, port, dbname, user: no password).", type: path}
  switch: {description: C(file) writes I(switch_file) inside the freeze; C(external) leaves the switch to a later play., type: str, default: file, choices: [file, external]}
  wait_seconds: {description: How long one C(wait) call waits before it returns its progress., type: float, default: 5}
  lag_wait_seconds: {description: How long the cutover waits for the lag to fall under the bound before freezing., type: float, default: 60}
  freeze_lock_timeout: {description: How long the freeze waits for its table locks (a PostgreSQL duration)., type: str, default: 2s}
  freeze_attempts: {description: Attempts at the freeze before giving up., type: int, default: 3}
  freeze_catchup_seconds: {description: How long the frozen source waits for the target to catch up., type: float, default: 10}
  reverse_window_hours:
    description: >-
      After the cutover the old source follows the new database this many hours by logical replication the
      other way (set up inside the write freeze, subscribed at C(finish)), so that C(switch_back) returns with
      every new write; 0 retires the old source at once. C(finalize) drops it; C(reverse_status) reports it.
    type: float
    default: 0
  target_host_from_source: {description: The target's host as the source server reaches it (reverse replication)., type: str}
  target_port_from_source: {description: The target's port as the source server reaches it (reverse replication)., type: int}
  target_sslrootcert_from_source: {description: CA file on the source server for the reverse subscription., type: str}
  pg_bin_dir:
    description: >-
      migration_pg_bin_dir: the directory of pg_dump and pg_restore, which copy the schema (default the newest
      installed); older than either server's major version, it is refused in the preflight.
    type: path
author: pgmigrate maintainers
"""

EXAMPLES = r"""
- name: "[Pre-Check] Check the source and the target for logical replication"
  pg_migration_logical:
    action: preflight
    source: "{{ migration_source }}"
    target: "{{ migration_target }}"
    run_name: cdp
    artifacts_dir: "{{ migration_artifacts_dir }}"
"""

RETURN = r"""
problems: {description: (preflight) What must be fixed before the run., returned: preflight, type: list}
plan: {description: (preflight) Tables, object names, bounds., returned: preflight, type: dict}
progress_line: {description: (wait) The initial sync and lag in one line., returned: wait, type: str}
finished: {description: (wait) Initial sync done and lag under the bound., returned: wait, type: bool}
freeze_window_seconds: {description: (cutover) From the lock request to its release., returned: cutover, type: float}
report: {description: (finish) The run's report (also written as JSON)., returned: finish, type: dict}
cleanup: {description: (abort, finish) What was removed or reverted., returned: abort, type: list}
abandoned: {description: The cutover gave up before the switch; the source is as it was., returned: on cutover failure, type: bool}
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

try:
    from ansible.module_utils.pgmigrate.common import client_tools
    from ansible.module_utils.pgmigrate.common.connection import ConfigError
    from ansible.module_utils.pgmigrate.common.module_args import clean_connection, connection_argument, parse_size
    from ansible.module_utils.pgmigrate.replication import logical
    IMPORT_ERROR = None
except ImportError:
    IMPORT_ERROR = traceback.format_exc()

CHANGING_ACTIONS = ("setup", "cutover", "finish", "abort", "finalize", "switch_back", "switch_back_finish",
                    "hold_target")
READ_ONLY_ACTIONS = ("preflight", "reverse_status", "abort_check")


def main():
    module = AnsibleModule(
        argument_spec={
            "action": {"type": "str", "required": True,
                       "choices": ["preflight", "setup", "wait", "cutover", "finish", "abort", "reverse_status",
                                   "finalize", "switch_back", "switch_back_finish", "hold_target", "abort_check"]},
            "source": connection_argument(),
            "target": connection_argument(),
            "run_name": {"type": "str", "required": True},
            "artifacts_dir": {"type": "path", "required": True},
            "source_host_from_target": {"type": "str"},
            "source_port_from_target": {"type": "int"},
            "source_sslrootcert_from_target": {"type": "str"},
            "include_schemas": {"type": "list", "elements": "str", "default": []},
            "exclude_schemas": {"type": "list", "elements": "str", "default": []},
            "replica_identity_full": {"type": "list", "elements": "str", "default": []},
            "max_lag_bytes": {"type": "str", "default": "16MB"},
            "target_overwrite": {"type": "bool", "default": False},
            "no_owner": {"type": "bool", "default": True},
            "no_privileges": {"type": "bool", "default": True},
            "switch_file": {"type": "path"},
            "switch": {"type": "str", "default": "file", "choices": ["file", "external"]},
            "wait_seconds": {"type": "float", "default": 5},
            "lag_wait_seconds": {"type": "float", "default": 60},
            "freeze_lock_timeout": {"type": "str", "default": "2s"},
            "freeze_attempts": {"type": "int", "default": 3},
            "freeze_catchup_seconds": {"type": "float", "default": 10},
            "pg_bin_dir": {"type": "path"},
            "reverse_window_hours": {"type": "float", "default": 0},
            "target_host_from_source": {"type": "str"},
            "target_port_from_source": {"type": "int"},
            "target_sslrootcert_from_source": {"type": "str"},
        },
        supports_check_mode=True,
    )
    if IMPORT_ERROR:
        module.fail_json(msg="pg_migration_logical needs psycopg2 (pip install psycopg2-binary)",
                         exception=IMPORT_ERROR)
    p = module.params
    action = p["action"]
    if module.check_mode and action not in READ_ONLY_ACTIONS:
        module.exit_json(changed=action in CHANGING_ACTIONS, msg=f"check mode: {action} not run")
    source_from_target = {"host": p["source_host_from_target"], "port": p["source_port_from_target"],
                          "sslrootcert": p["source_sslrootcert_from_target"]}
    target_from_source = {"host": p["target_host_from_source"], "port": p["target_port_from_source"],
                          "sslrootcert": p["target_sslrootcert_from_source"]}
    try:
        client_tools.use_bin_dir(p["pg_bin_dir"])
        options = {key: p[key] for key in (
            "run_name", "artifacts_dir", "include_schemas", "exclude_schemas", "replica_identity_full",
            "target_overwrite", "no_owner", "no_privileges", "switch_file", "freeze_lock_timeout",
            "freeze_attempts", "freeze_catchup_seconds", "reverse_window_hours")}
        options.update(max_lag_bytes=parse_size(p["max_lag_bytes"]), source_from_target=source_from_target,
                       target_from_source=target_from_source,
                       check_mode=module.check_mode)
        result = logical.run_action(action, clean_connection(p["source"]), clean_connection(p["target"]), options,
                                    wait_seconds=p["wait_seconds"], switch=p["switch"],
                                    lag_wait_seconds=p["lag_wait_seconds"])
    except logical.FreezeAbandoned as error:
        module.fail_json(msg=f"Cutover abandoned before the switch: {error}", abandoned=True, changed=False)
    except (ConfigError, ValueError, logical.LogicalError, client_tools.ToolError) as error:
        module.fail_json(msg=f"Zero-downtime {action} failed: {error}", abandoned=False,
                         changed=action in CHANGING_ACTIONS)
    if action == "preflight" and result["problems"]:
        module.fail_json(msg="The zero-downtime migration cannot start; nothing was changed. "
                             + " | ".join(result["problems"]), changed=False, **result)
    module.exit_json(changed=action in CHANGING_ACTIONS, **result)


if __name__ == "__main__":
    main()
