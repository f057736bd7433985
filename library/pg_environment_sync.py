#!/usr/bin/python
"""Ansible module: sync a target environment's database from a source by per-table policy."""

DOCUMENTATION = r"""
module: pg_environment_sync
short_description: Sync an environment's database table by table (copy, merge, preserve, skip), masking on the way
description:
  - >-
    Both databases have the application's schema. Each table gets a policy (I(policies), else I(default_policy)):
    C(copy) makes the target's table equal to the source's, C(merge) upserts the source's rows by key and keeps the
    target's others, C(preserve) keeps the target's rows (verified unchanged), C(skip) leaves the table out.
  - >-
    Columns named in I(masking_rules) are masked in flight (deterministic HMAC under I(masking_key); unique
    columns stay unique): the source's values never reach the target.
  - One target transaction, one source snapshot. Before committing it verifies every copied table against the
    source, that no preserved table changed and no merged table lost a row, runs I(updates), then I(checks);
    any failure rolls everything back and says what to change.
  - >-
    A foreign-key cycle between tables that both change (copy, merge) is loaded as one unit: its deferrable keys
    wait for the commit, the others are dropped inside the transaction and added back, validated, before it.
  - Check mode resolves and checks the policies and shows the plan, changing nothing.
options:
  source: {description: Connection to the database synced from., type: dict, required: true}
  target: {description: Connection to the database synced into., type: dict, required: true}
  policies: {description: "Table name (or schema.table) -> copy, merge, preserve or skip.", type: dict, default: {}}
  default_policy: {description: Policy of every table not in I(policies)., type: str, default: copy, choices: [copy, merge, preserve, skip]}
  masking_rules: {description: "List of {table, column, rule, value, prefix}; rules email, name, phone, hash, constant, null, keep.", type: list, elements: dict, default: []}
  masking_key: {description: Secret key of the deterministic masking (from the vault)., type: str, default: ""}
  masking_email_domain: {description: Domain of masked email addresses., type: str, default: example.invalid}
  updates: {description: "Post-sync updates: list of {name, table, set: {column: value}, set_sql: {column: SQL}, where: SQL}.", type: list, elements: dict, default: []}
  checks: {description: "Checks that must hold before commit: list of {name, table, column, where, allowed_pattern | forbidden_pattern | expected, min_rows, secret}.", type: list, elements: dict, default: []}
  verify: {description: Verify copied tables against the source before commit., type: bool, default: true}
  lock_timeout: {description: How long to wait for each table lock., type: str, default: 30s}
  include_schemas: {description: Only these schemas., type: list, elements: str, default: []}
  exclude_schemas: {description: Schemas left out., type: list, elements: str, default: []}
  target_is_production: {description: The target is production; I(confirm_target) must repeat its database name., type: bool, default: false}
  confirm_target: {description: The target's database name, to confirm a production target., type: str, default: ""}
  pg_bin_dir:
    description: >-
      migration_pg_bin_dir: the directory of pg_dump and pg_restore, with which the target is backed up before the
      sync (role backup; default the newest installed). They must be of the target server's major version or newer
      (staging on PostgreSQL 18 takes version 18's): an older client is refused before anything changes.
    type: path
  check_client_tools:
    description: Refuse a pg_dump or pg_restore older than the target's server (false when the target is not backed up).
    type: bool
    default: true
  artifacts_dir: {description: Where the JSON report is written., type: path}
  report_name: {description: File name prefix of the report., type: str, default: sync}
author: pgmigrate maintainers
"""

EXAMPLES = r"""
- name: Staging -> production, production's integrations preserved
  pg_environment_sync:
    source: "{{ migration_source }}"
    target: "{{ migration_target }}"
    policies: {integrations: preserve, environment_configurations: preserve}
    target_is_production: true
    confirm_target: cdp
"""

RETURN = r"""
status: {description: planned (check mode) or committed., returned: always, type: str}
lines: {description: What happened to each table, sequence, update and check, a line each., returned: always, type: list}
report: {description: The whole report (also written to report_file)., returned: always, type: dict}
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

try:
    import psycopg2
    from ansible.module_utils.pgmigrate.common import client_tools
    from ansible.module_utils.pgmigrate.common.connection import ConfigError, friendly_connect_error
    from ansible.module_utils.pgmigrate.common.module_args import clean_connection, connection_argument
    from ansible.module_utils.pgmigrate.common.preflight import PreflightError, check_production_confirmation
    from ansible.module_utils.pgmigrate.envsync import environment_sync, masking
    IMPORT_ERROR = None
except ImportError:
    IMPORT_ERROR = traceback.format_exc()


def main():
    module = AnsibleModule(
        argument_spec={
            "source": connection_argument(),
            "target": connection_argument(),
            "policies": {"type": "dict", "default": {}},
            "default_policy": {"type": "str", "default": "copy", "choices": ["copy", "merge", "preserve", "skip"]},
            "masking_rules": {"type": "list", "elements": "dict", "default": []},
            "masking_key": {"type": "str", "default": "", "no_log": True},
            "masking_email_domain": {"type": "str", "default": "example.invalid"},
            "updates": {"type": "list", "elements": "dict", "default": []},
            "checks": {"type": "list", "elements": "dict", "default": []},
            "verify": {"type": "bool", "default": True},
            "lock_timeout": {"type": "str", "default": "30s"},
            "include_schemas": {"type": "list", "elements": "str", "default": []},
            "exclude_schemas": {"type": "list", "elements": "str", "default": []},
            "target_is_production": {"type": "bool", "default": False},
            "confirm_target": {"type": "str", "default": ""},
            "pg_bin_dir": {"type": "path"},
            "check_client_tools": {"type": "bool", "default": True},
            "artifacts_dir": {"type": "path"},
            "report_name": {"type": "str", "default": "sync"},
        },
        supports_check_mode=True,
    )
    if IMPORT_ERROR:
        module.fail_json(msg="pg_environment_sync needs psycopg2 (pip install psycopg2-binary)", exception=IMPORT_ERROR)
    p = module.params
    source, target = clean_connection(p["source"]), clean_connection(p["target"])
    try:
        client_tools.use_bin_dir(p["pg_bin_dir"])
        check_production_confirmation(target, p["target_is_production"], p["confirm_target"])
        report = environment_sync.run(
            source, target, policies=p["policies"], default_policy=p["default_policy"],
            masking_rules=p["masking_rules"], masking_key=p["masking_key"],
            masking_email_domain=p["masking_email_domain"], updates=p["updates"], checks=p["checks"],
            verify=p["verify"], lock_timeout=p["lock_timeout"], include_schemas=p["include_schemas"],
            exclude_schemas=p["exclude_schemas"], check_mode=module.check_mode, artifacts_dir=p["artifacts_dir"],
            report_name=p["report_name"], check_client_tools_first=p["check_client_tools"])
    except (ConfigError, PreflightError, client_tools.ToolError, environment_sync.SyncError) as error:
        module.fail_json(msg=str(error))
    except masking.MaskingError as error:  # a value the masking could not parse: the transaction was rolled back
        module.fail_json(msg=f"masking failed, the sync was rolled back and the target is unchanged: {error}")
    except psycopg2.OperationalError as error:
        module.fail_json(msg=friendly_connect_error(error, target, "the sync's connections") + " Nothing was changed.")
    except psycopg2.Error as error:
        module.fail_json(msg=f"the sync failed and was rolled back, the target is unchanged: {str(error).strip()}")
    module.exit_json(changed=report["status"] == "committed", status=report["status"],
                     lines=environment_sync.report_lines(report), report=report)


if __name__ == "__main__":
    main()
