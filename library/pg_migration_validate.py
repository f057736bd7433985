#!/usr/bin/python
"""Ansible module: prove the target equals the source (the plan's phase 6), and report it."""

DOCUMENTATION = r"""
module: pg_migration_validate
short_description: Validate a migrated PostgreSQL database against its source
description:
  - Row counts and order-independent content digests per table, computed inside both servers in parallel;
    where digests differ, the missing, extra and changed keys (tables without a key are compared as multisets).
  - Orphan rows for every foreign key of the target (NOT VALID ones included), sequences and identity columns,
    and the schema (tables, columns, constraints, indexes and their validity, triggers, views, extensions).
  - The plan's security checks (password hashes, no plaintext credentials) and performance checks
    (representative queries under a time limit and not slower than on the source; required indexes).
  - Writes validation.json, validation.md and validation.html under I(artifacts_dir)/validation/<timestamp>/.
  - Fails, naming every failing check and table, unless I(fail_on_difference) is false.
options:
  source: {description: Source connection., type: dict, required: true}
  target: {description: Target connection., type: dict, required: true}
  checks: {description: Core checks to run., type: list, elements: str, default: [schema, row_counts, content, orphans, sequences]}
  workers: {description: Parallel queries per server., type: int, default: 4}
  sample_limit: {description: How many keys of differing rows to name per table., type: int, default: 20}
  sequences_exact: {description: Sequences must equal the source's state (right after a copy)., type: bool, default: true}
  include_schemas: {description: Only these schemas., type: list, elements: str, default: []}
  exclude_schemas: {description: Schemas to leave out., type: list, elements: str, default: []}
  password_hash_columns: {description: "Columns that must hold password hashes: list of {table, column, key}.", type: list, elements: dict, default: []}
  encrypted_columns: {description: "Columns that must not hold plaintext credentials: list of {table, column, key}.", type: list, elements: dict, default: []}
  performance_queries: {description: "Representative queries: list of {name, sql}.", type: list, elements: dict, default: []}
  query_limit_seconds: {description: Each query's limit on the target., type: float, default: 5.0}
  query_slower_factor: {description: How much slower than on the source a query may be on the target., type: float, default: 2.0}
  required_indexes: {description: "Indexes that must exist and be valid: list of {name, table}.", type: list, elements: dict, default: []}
  added_extensions: {description: "Extensions the run creates on purpose: reported as added when the source lacks them, not as differences.", type: list, elements: str, default: []}
  extension_substitutes:
    description: >-
      migration_extension_substitutes, {extension: {function: SQL body}}: an extension of the source named here
      that the target lacks and the target server cannot provide is reported as substituted (with the functions in
      its place), not as missing.
    type: dict
    default: {}
  database_settings_carried: {description: "False when the copy left the database's settings (ALTER DATABASE/ROLE ... SET): one missing in the target is then a warning, not a difference.", type: bool, default: true}
  database_settings_skipped: {description: "Settings the copy never carries (migration_database_settings_skipped): a difference in one is a warning.", type: list, elements: str, default: []}
  artifacts_dir: {description: Where the reports are written., type: path, required: true}
  fail_on_difference: {description: Fail the task when a check fails., type: bool, default: true}
  progress_file:
    description: Where the progress line (the check running; for the row digests the share done and the ETA) is
      written while the module runs, for the callback plugin migration_live_progress to print. Omitted, none.
    type: path
author: pgmigrate maintainers
"""

EXAMPLES = r"""
- name: Validate the target
  pg_migration_validate:
    source: "{{ migration_source }}"
    target: "{{ migration_target }}"
    artifacts_dir: "{{ migration_artifacts_dir }}"
"""

RETURN = r"""
status: {description: pass or fail., returned: always, type: str}
checks: {description: "Each check: name, status, summary (items in the JSON report).", returned: always, type: list}
reports: {description: Paths of the JSON, Markdown and HTML reports., returned: always, type: dict}
"""

import time
import traceback
import uuid

from ansible.module_utils.basic import AnsibleModule

try:
    from ansible.module_utils.pgmigrate.common.connection import ConfigError
    from ansible.module_utils.pgmigrate.common.module_args import clean_connection, connection_argument
    from ansible.module_utils.pgmigrate.common.preflight import PreflightError
    from ansible.module_utils.pgmigrate.validation.validate import ValidationError
    from ansible.module_utils.pgmigrate.validation.validation_run import run_validation
    IMPORT_ERROR = None
except ImportError:
    IMPORT_ERROR = traceback.format_exc()


def main():
    module = AnsibleModule(
        argument_spec={
            "source": connection_argument(),
            "target": connection_argument(),
            "checks": {"type": "list", "elements": "str",
                       "default": ["schema", "row_counts", "content", "orphans", "sequences"]},
            "workers": {"type": "int", "default": 4},
            "sample_limit": {"type": "int", "default": 20},
            "sequences_exact": {"type": "bool", "default": True},
            "include_schemas": {"type": "list", "elements": "str", "default": []},
            "exclude_schemas": {"type": "list", "elements": "str", "default": []},
            "password_hash_columns": {"type": "list", "elements": "dict", "default": []},
            "encrypted_columns": {"type": "list", "elements": "dict", "default": []},
            "performance_queries": {"type": "list", "elements": "dict", "default": []},
            "query_limit_seconds": {"type": "float", "default": 5.0},
            "query_slower_factor": {"type": "float", "default": 2.0},
            "required_indexes": {"type": "list", "elements": "dict", "default": []},
            "added_extensions": {"type": "list", "elements": "str", "default": []},
            "extension_substitutes": {"type": "dict", "default": {}},
            "database_settings_carried": {"type": "bool", "default": True},
            "database_settings_skipped": {"type": "list", "elements": "str", "default": []},
            "artifacts_dir": {"type": "path", "required": True},
            "fail_on_difference": {"type": "bool", "default": True},
            "progress_file": {"type": "path"},
        },
        supports_check_mode=True,
    )
    if IMPORT_ERROR:
        module.fail_json(msg="pg_migration_validate needs psycopg2 (pip install psycopg2-binary)",
                         exception=IMPORT_ERROR)
    p = module.params
    try:
        result, reports, message = run_validation(
            clean_connection(p["source"]), clean_connection(p["target"]),
            directory=f"{p['artifacts_dir']}/validation/{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:4]}",
            checks=p["checks"], workers=p["workers"], sample_limit=p["sample_limit"],
            sequences_exact=p["sequences_exact"], include_schemas=p["include_schemas"],
            exclude_schemas=p["exclude_schemas"], password_hash_columns=p["password_hash_columns"],
            encrypted_columns=p["encrypted_columns"], performance_queries=p["performance_queries"],
            query_limit_seconds=p["query_limit_seconds"], query_slower_factor=p["query_slower_factor"],
            required_indexes=p["required_indexes"], added_extensions=p["added_extensions"],
            extension_substitutes=p["extension_substitutes"],
            database_settings_carried=p["database_settings_carried"],
            database_settings_skipped=p["database_settings_skipped"], progress_file=p["progress_file"])
    except (ConfigError, PreflightError, ValidationError, ValueError) as error:
        module.fail_json(msg=str(error))
    summary = [{"name": c["name"], "status": c["status"], "summary": c["summary"], "seconds": c["seconds"]}
               for c in result["checks"]]
    outcome = {"changed": False, "status": result["status"], "checks": summary, "reports": reports,
               "seconds": result["seconds"]}
    if result["status"] == "fail" and p["fail_on_difference"]:
        module.fail_json(msg=f"{message} Report: {reports['html']}", **outcome)
    module.exit_json(msg=message, **outcome)


if __name__ == "__main__":
    main()
