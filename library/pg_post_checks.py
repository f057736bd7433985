#!/usr/bin/python
"""Ansible module: the plan's post-migration checks on the databases, and its security hardening."""

DOCUMENTATION = r"""
module: pg_post_checks
short_description: Access control, report recipients, query times, credentials and passwords after a migration
description:
  - Hardening first (each off by default, idempotent, reported item by item; under check mode only reported)
    encrypts plaintext credentials with pgcrypto under I(credentials_key), replaces plaintext passwords by
    bcrypt hashes (crypt(value, gen_salt('bf'))). (pgaudit is enabled by the role post_checks with
    community.postgresql.postgresql_alter_system and community.postgresql.postgresql_ext.)
  - Then the checks (read-only) access_control (every member's effective permissions, source vs target,
    listed by member and permission code), report_recipients (against I(allowed_domains)), query_times
    (each query under its limit on the target) and security (no plaintext credential, only password hashes).
  - Fails naming every failing check and what failed in it, unless I(fail_on_failure) is false.
options:
  source: {description: Source connection (access control)., type: dict}
  target: {description: Target connection., type: dict, required: true}
  checks: {description: Checks to run., type: list, elements: str, default: [access_control, report_recipients, query_times, security]}
  permissions_query: {description: "SQL returning (member, permission code): every member's effective permissions.", type: str, default: ""}
  recipients_query: {description: "SQL returning (report, recipient address).", type: str, default: ""}
  allowed_domains: {description: "Recipient domains the target environment allows (empty: not checked).", type: list, elements: str, default: []}
  queries: {description: "Queries timed on the target: list of {name, sql, limit_seconds}.", type: list, elements: dict, default: []}
  query_limit_seconds: {description: A query's limit when it sets none., type: float, default: 5.0}
  encrypted_columns: {description: "Columns that must hold ciphertext: list of {table, column, key}.", type: list, elements: dict, default: []}
  password_hash_columns: {description: "Columns that must hold password hashes: list of {table, column, key}.", type: list, elements: dict, default: []}
  harden_credentials: {description: Encrypt plaintext values of I(encrypted_columns) (bytea) with I(credentials_key)., type: bool, default: false}
  credentials_key: {description: The pgcrypto key (from ansible-vault)., type: str, default: ""}
  harden_passwords: {description: Replace plaintext values of I(password_hash_columns) by bcrypt hashes., type: bool, default: false}
  fail_on_failure: {description: Fail the task when a check fails., type: bool, default: true}
author: pgmigrate maintainers
"""

EXAMPLES = r"""
- name: Post-migration database checks
  pg_post_checks:
    source: "{{ migration_source }}"
    target: "{{ migration_target }}"
    permissions_query: "SELECT email, code FROM ..."
"""

RETURN = r"""
status: {description: pass or fail., returned: always, type: str}
checks: {description: Each check with its items., returned: always, type: list}
hardening: {description: Each hardening step's item (changed, rows named by key, detail)., returned: always, type: list}
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

try:
    import psycopg2
    from ansible.module_utils.pgmigrate.appchecks import post_checks
    from ansible.module_utils.pgmigrate.appchecks.app_checks import RuleError
    from ansible.module_utils.pgmigrate.common.connection import connect, friendly_connect_error
    from ansible.module_utils.pgmigrate.common.module_args import clean_connection, connection_argument
    IMPORT_ERROR = None
except ImportError:
    IMPORT_ERROR = traceback.format_exc()


def harden(p, target, check_mode):
    items = []
    if not (p["harden_credentials"] or p["harden_passwords"]):
        return items
    try:
        conn = connect(target, application_name="pgmigrate-post-checks")
    except psycopg2.Error as error:
        return [{"name": "hardening", "status": "fail", "changed": False,
                 "detail": friendly_connect_error(error, target, "migration_target")}]
    try:
        if p["harden_credentials"]:
            items += [{"name": "encrypt_credentials", **i}
                      for i in post_checks.harden_credentials(conn, p["encrypted_columns"], p["credentials_key"],
                                                              check_mode)]
        if p["harden_passwords"]:
            items += [{"name": "hash_passwords", **i}
                      for i in post_checks.harden_passwords(conn, p["password_hash_columns"], check_mode)]
    except (psycopg2.Error, RuleError) as error:
        conn.rollback()
        items.append({"name": "hardening", "status": "fail", "changed": False,
                      "detail": f"hardening failed: {str(error).strip().splitlines()[0]}"})
    finally:
        conn.close()
    return items


def main():
    module = AnsibleModule(
        argument_spec={
            "source": connection_argument(required=False),
            "target": connection_argument(),
            "checks": {"type": "list", "elements": "str",
                       "default": ["access_control", "report_recipients", "query_times", "security"]},
            "permissions_query": {"type": "str", "default": ""},
            "recipients_query": {"type": "str", "default": ""},
            "allowed_domains": {"type": "list", "elements": "str", "default": []},
            "queries": {"type": "list", "elements": "dict", "default": []},
            "query_limit_seconds": {"type": "float", "default": 5.0},
            "encrypted_columns": {"type": "list", "elements": "dict", "default": []},
            "password_hash_columns": {"type": "list", "elements": "dict", "default": []},
            "harden_credentials": {"type": "bool", "default": False},
            "credentials_key": {"type": "str", "default": "", "no_log": True},
            "harden_passwords": {"type": "bool", "default": False},
            "fail_on_failure": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    if IMPORT_ERROR:
        module.fail_json(msg="pg_post_checks needs psycopg2 (pip install psycopg2-binary)", exception=IMPORT_ERROR)
    p = module.params
    unknown = set(p["checks"]) - {"access_control", "report_recipients", "query_times", "security"}
    if unknown:
        module.fail_json(msg=f"unknown checks: {', '.join(sorted(unknown))}")
    target = clean_connection(p["target"])
    source = clean_connection(p["source"]) if p["source"] else None
    hardening = harden(p, target, module.check_mode)
    checks = []
    if "access_control" in p["checks"]:
        if not source or not p["permissions_query"]:
            module.fail_json(msg="access_control needs source and permissions_query")
        checks.append(post_checks.check_access_control(source, target, p["permissions_query"]))
    if "report_recipients" in p["checks"]:
        checks.append(post_checks.check_recipients(target, p["recipients_query"], p["allowed_domains"]))
    if "query_times" in p["checks"]:
        checks.append(post_checks.check_query_times(target, p["queries"], p["query_limit_seconds"]))
    if "security" in p["checks"]:
        checks += post_checks.check_security(target, p["encrypted_columns"], p["password_hash_columns"])
    failed_hardening = [i for i in hardening if i["status"] == "fail"]
    status = "fail" if failed_hardening or any(c["status"] == "fail" for c in checks) else "pass"
    outcome = {"changed": any(i.get("changed") for i in hardening), "status": status, "checks": checks,
               "hardening": hardening}
    if status == "fail":
        parts = [post_checks.failure_message(checks)] if any(c["status"] == "fail" for c in checks) else []
        parts += [f"hardening: {i['detail']}" for i in failed_hardening]
        message = "Post-migration database checks failed: " + "; ".join(parts)
        if p["fail_on_failure"]:
            module.fail_json(msg=message, **outcome)
        module.exit_json(msg=message, **outcome)
    module.exit_json(msg="; ".join(f"{c['name']}: {c['summary']}" for c in checks), **outcome)


if __name__ == "__main__":
    main()
