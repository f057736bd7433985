"""Ansible module: the extensions the target needs (the plan's phase 3), checked, then created."""

DOCUMENTATION = r"""
module: pg_migration_extensions
short_description: Check that the target can take the extensions the plan and the source need
description:
  - Needed are I(required) (the plan's uuid-ossp and pgcrypto) and, with I(from_source), every extension the
    source uses, at the source's version.
  - For each, checks that the target server offers that version and that the target login may create it
    (superuser, or a trusted extension and CREATE on the database). Any problem fails the task with what to
    do, before anything is created.
  - Plans what is missing, each entry's C(action) C(create) with the C(version) and C(schema) (the source's, when
    the target has it; else the schema copy creates schema and extension together). Creates nothing; the role
    extensions creates the planned ones with community.postgresql.postgresql_ext.
options:
  source: {description: Connection to the source database (the migration_source mapping)., type: dict, required: true}
  target: {description: Connection to the target database (the migration_target mapping)., type: dict, required: true}
  required: {description: Extensions needed whatever the source uses., type: list, elements: str, default: []}
  from_source: {description: Also every extension the source uses., type: bool, default: true}
  substitutes:
    description:
      - "migration_extension_substitutes, C({extension: {function: SQL body}}). An extension named here that the
        target server cannot provide is left out (action C(left out)), neither created nor a problem; the
        assessment checks the substitutes cover what the schema uses, and the copy creates them."
    type: dict
    default: {}
author: pgmigrate maintainers
"""

EXAMPLES = r"""
- name: Extensions on the target
  pg_migration_extensions:
    source: "{{ migration_source }}"
    target: "{{ migration_target }}"
    required: [uuid-ossp, pgcrypto]
"""

RETURN = r"""
extensions: {description: "Per extension, source and target versions, the action (create: with version and schema) and any
  problem.", returned: always, type: list}
lines: {description: The same, a line each., returned: always, type: list}
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

try:
    import psycopg2
    from ansible.module_utils.pgmigrate.clone import extensions
    from ansible.module_utils.pgmigrate.common.connection import ConfigError, connect, friendly_connect_error
    from ansible.module_utils.pgmigrate.common.module_args import clean_connection, connection_argument
    IMPORT_ERROR = None
except ImportError:
    IMPORT_ERROR = traceback.format_exc()


def open_connection(module, params, variable):
    try:
        return connect(params, application_name="pgmigrate extensions")
    except ConfigError as error:
        module.fail_json(msg=str(error))
    except psycopg2.Error as error:
        module.fail_json(msg=friendly_connect_error(error, params, variable))


def main():
    module = AnsibleModule(
        argument_spec={
            "source": connection_argument(),
            "target": connection_argument(),
            "required": {"type": "list", "elements": "str", "default": []},
            "from_source": {"type": "bool", "default": True},
            "substitutes": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    if IMPORT_ERROR:
        module.fail_json(msg="pg_migration_extensions needs psycopg2 (pip install psycopg2-binary)",
                         exception=IMPORT_ERROR)
    p = module.params
    source = open_connection(module, clean_connection(p["source"]), "migration_source")
    target = open_connection(module, clean_connection(p["target"]), "migration_target")
    try:
        needed = extensions.needed_extensions(source, p["required"], p["from_source"])
        entries = extensions.plan(needed, target, p["substitutes"])
        lines = extensions.report_lines(entries)
        problems = extensions.problems(entries)
        if problems:
            module.fail_json(msg="The target is not ready for the migration; nothing was changed. "
                             + " | ".join(problems), extensions=entries, lines=lines)
    except psycopg2.Error as error:
        module.fail_json(msg=f"reading the extensions failed: {str(error).strip()}")
    finally:
        source.close()
        target.close()
    module.exit_json(changed=False, extensions=entries, lines=lines)


if __name__ == "__main__":
    main()
