#!/usr/bin/python
"""Ansible module: assess a source database and plan its migration (the plan's phase 1)."""

DOCUMENTATION = r"""
module: pg_migration_assess
short_description: Read the source catalog and plan a dependency-ordered migration
description:
  - Reads schemas, tables (and partitions), columns, keys, foreign keys, sequences, extensions, sizes,
    row estimates and the pg_stats figures of the plan's phase 1 query.
  - Builds the foreign-key graph and its levels, finds cycles and self-references and says how each is handled.
  - Compares the computed order with a hand-written one (I(documented_order)) and reports where it is wrong.
  - Writes assessment.json and assessment.txt under I(artifacts_dir). Changes nothing.
options:
  source: {description: Source connection., type: dict, required: true}
  target: {description: Target connection (optional; checked for version, extensions and emptiness)., type: dict}
  documented_order: {description: "The order a document prescribes: list of {table, level}.", type: list, elements: dict, default: []}
  workers: {description: Workers the copy will use., type: int, default: 4}
  split_tables_larger_than: {description: Size above which tables are split., type: str, default: 1GB}
  schema_mode: {description: copy or existing., type: str, default: copy, choices: [copy, existing]}
  artifacts_dir: {description: Where the assessment is written., type: path}
  include_schemas: {description: Only these schemas., type: list, elements: str, default: []}
  exclude_schemas: {description: Schemas to leave out., type: list, elements: str, default: []}
  overwrite:
    description: >-
      migration_target_overwrite. When false, a target whose schemas already hold tables that no run of this
      tool put there is refused here, before any later phase changes it (as is, always, a target lacking an
      extension the source uses). Not in check mode, which only reports.
    type: bool
    default: true
  pg_bin_dir:
    description: >-
      migration_pg_bin_dir: the directory of pg_dump, pg_restore and psql (default the newest installed). A
      client older than the newer server's major version is refused here, before anything changes.
    type: path
  extension_substitutes:
    description: >-
      migration_extension_substitutes, {extension: {function: SQL body}}: how the target does without an extension
      its server cannot provide. Such an extension is accepted (and reported as a note) when every function of it
      that the source's schema uses has a body here; otherwise it is refused, naming the extension, what the
      schema uses of it and what provides it.
    type: dict
    default: {}
author: pgmigrate maintainers
"""

EXAMPLES = r"""
- name: Assess the source
  pg_migration_assess:
    source: "{{ migration_source }}"
    documented_order: "{{ migration_documented_order }}"
    artifacts_dir: "{{ migration_artifacts_dir }}"
"""

RETURN = r"""
lines: {description: The plan in words, a line each., returned: always, type: list}
plan:
  description: >-
    The plan in outline: table count, tables per level, cycles, self-references, bytes, rows, estimate. The whole
    plan (every table, its parts and dependencies) is in report_file.
  returned: always
  type: dict
report_file: {description: assessment.json, the whole assessment., returned: with artifacts_dir, type: str}
target:
  description: The target's version, missing extensions and (the first 20 of) existing_table_count tables.
  returned: with target
  type: dict
documented_order_findings: {description: Where the documented order is wrong., returned: always, type: list}
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

try:
    from ansible.module_utils.pgmigrate.clone.assess import assess, plan_outline
    from ansible.module_utils.pgmigrate.common.connection import ConfigError
    from ansible.module_utils.pgmigrate.common.module_args import clean_connection, connection_argument, parse_size
    from ansible.module_utils.pgmigrate.common.preflight import PreflightError
    IMPORT_ERROR = None
except ImportError:
    IMPORT_ERROR = traceback.format_exc()


def main():
    module = AnsibleModule(
        argument_spec={
            "source": connection_argument(),
            "target": connection_argument(required=False),
            "documented_order": {"type": "list", "elements": "dict", "default": []},
            "workers": {"type": "int", "default": 4},
            "split_tables_larger_than": {"type": "str", "default": "1GB"},
            "schema_mode": {"type": "str", "default": "copy", "choices": ["copy", "existing"]},
            "artifacts_dir": {"type": "path"},
            "include_schemas": {"type": "list", "elements": "str", "default": []},
            "exclude_schemas": {"type": "list", "elements": "str", "default": []},
            "overwrite": {"type": "bool", "default": True},
            "pg_bin_dir": {"type": "path"},
            "extension_substitutes": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    if IMPORT_ERROR:
        module.fail_json(msg="pg_migration_assess needs psycopg2 (pip install psycopg2-binary)",
                         exception=IMPORT_ERROR)
    p = module.params
    try:
        report = assess(
            clean_connection(p["source"]), clean_connection(p["target"]) if p["target"] else None,
            documented_order=p["documented_order"], workers=p["workers"],
            split_tables_larger_than=parse_size(p["split_tables_larger_than"]), schema_mode=p["schema_mode"],
            artifacts_dir=p["artifacts_dir"], exclude_schemas=p["exclude_schemas"],
            include_schemas=p["include_schemas"],
            check_target=not module.check_mode, overwrite=p["overwrite"], pg_bin_dir=p["pg_bin_dir"],
            extension_substitutes=p["extension_substitutes"])
    except (ConfigError, PreflightError, ValueError) as error:
        module.fail_json(msg=str(error))
    # The whole plan and catalog are in report_file; a result of thousands of tables costs Ansible a second.
    module.exit_json(
        changed=False, lines=report["lines"], plan=plan_outline(report["plan"]), handling=report["handling"],
        documented_order_findings=report["documented_order_findings"], report_file=report.get("report_file"),
        target=report["target"] and {**report["target"], "existing_tables": report["target"]["existing_tables"][:20],
                                     "existing_table_count": len(report["target"]["existing_tables"])},
        extensions=report["extensions"])


if __name__ == "__main__":
    main()
