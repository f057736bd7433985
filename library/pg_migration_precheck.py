#!/usr/bin/python
"""Ansible module: an overwrite allowed only on one server is pointed at that server (playbooks/checks/)."""

DOCUMENTATION = r"""
module: pg_migration_precheck
short_description: Refuse an overwrite of a server that is not the one an inventory allows it on
description:
  - Connects to I(overwrite_target) and refuses unless its system identifier (or, when that is not
    readable, its data directory) is the one recorded in I(identity_file) by scripts/embedded_pg.sh.
    Changes nothing.
options:
  overwrite_target: {description: The connection an overwrite would replace., type: dict, required: true}
  identity_file: {description: "The expected server's identity (lines key=value).", type: path, required: true}
author: pgmigrate maintainers
"""

EXAMPLES = r"""
- name: Overwrite only the embedded target
  pg_migration_precheck:
    overwrite_target: "{{ migration_target }}"
    identity_file: "{{ migration_target_overwrite_identity_file }}"
"""

RETURN = r"""
{}
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

try:
    from ansible.module_utils.pgmigrate.common.connection import connect, describe
    from ansible.module_utils.pgmigrate.common.module_args import clean_connection, connection_argument
    IMPORT_ERROR = None
except ImportError:
    IMPORT_ERROR = traceback.format_exc()


def read_identity_file(path):
    identity = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            key, _, value = line.strip().partition("=")
            if value:
                identity[key] = value
    return identity


def server_identity(params):
    """The server's system identifier and data directory, each None when the login may not read it."""
    conn = connect(params, application_name="pgmigrate-precheck", autocommit=True)
    identity = {}
    try:
        with conn.cursor() as cur:
            for key, sql in (("system_identifier", "SELECT system_identifier::text FROM pg_control_system()"),
                             ("data_directory", "SELECT current_setting('data_directory')")):
                try:
                    cur.execute(sql)
                    identity[key] = cur.fetchone()[0]
                except Exception:  # noqa: BLE001 - not readable by every login; then it cannot confirm
                    identity[key] = None
    finally:
        conn.close()
    return identity


def identity_mismatch(expected, actual):
    """None when the server is the expected one, else what differs."""
    for key in ("system_identifier", "data_directory"):
        if expected.get(key) and actual.get(key):
            if expected[key] == actual[key]:
                return None
            return f"its {key} is {actual[key]}, the embedded target's is {expected[key]}"
    return "its system identifier and data directory are not readable by this login"


def check_overwrite_target(params, identity_file):
    """An error message, or None when the overwrite targets the recorded server."""
    prefix = (f"migration_target_overwrite=true replaces what {describe(params)} holds, and this inventory "
              f"allows that only on the project's own embedded target (recorded in {identity_file})")
    try:
        expected = read_identity_file(identity_file)
    except OSError:
        return (f"{prefix}, but that file does not exist: start the embedded servers with "
                "scripts/embedded_pg.sh start (it records their identity). Nothing was changed.")
    actual = server_identity(params)
    mismatch = identity_mismatch(expected, actual)
    if mismatch is None:
        return None
    return (f"{prefix}: the server at {params.get('host')}:{params.get('port')} is not that server ({mismatch}). "
            "Nothing was changed. Point migration_target at the embedded target (PGM_TARGET_PORT, as "
            "scripts/embedded_pg.sh uses it), run with -e migration_target_overwrite=false (a target that "
            "holds tables is then refused), or use an inventory of your own.")


def main():
    module = AnsibleModule(
        argument_spec={
            "overwrite_target": connection_argument() if not IMPORT_ERROR else {"type": "dict"},
            "identity_file": {"type": "path", "required": True},
        },
        supports_check_mode=True,
    )
    if IMPORT_ERROR:
        module.fail_json(msg="pg_migration_precheck needs psycopg2 (pip install psycopg2-binary)",
                         exception=IMPORT_ERROR)
    params = clean_connection(module.params["overwrite_target"])
    try:
        error = check_overwrite_target(params, module.params["identity_file"])
    except Exception as failure:  # noqa: BLE001 - psycopg2's errors: the message says what failed
        error = (f"migration_target_overwrite=true: could not check the identity of {describe(params)} "
                 f"({str(failure).strip()}). Nothing was changed.")
    if error:
        module.fail_json(msg=error)
    module.exit_json(changed=False)


if __name__ == "__main__":
    main()
