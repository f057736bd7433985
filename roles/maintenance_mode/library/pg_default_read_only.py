#!/usr/bin/python
"""Ansible module: refuse an application's writes on its PostgreSQL database, and restore them."""

DOCUMENTATION = r"""
module: pg_default_read_only
short_description: Make new sessions of an application's role (or of a database) read-only, and undo it
description:
  - C(state=query) reports the current C(default_transaction_read_only) setting of the role in the database
    (I(scope=role), C(ALTER ROLE ... IN DATABASE ...)) or of the database (I(scope=database), C(ALTER DATABASE)).
  - C(state=read_only) sets it to C(on), then terminates the sessions it does not reach yet (the role's sessions on
    the database, or every other session on it), then checks with a new session that a write is refused.
  - C(state=restored) sets it back to I(previous) (RESET when I(previous) is empty), then checks that a new session
    is not read-only any more.
  - The check logs in as I(check_user) with I(check_password) when given (the application's own login); otherwise,
    for I(scope=role), it reads the setting from the catalog.
  - The setting is what a well-behaved application obeys; a client can still SET default_transaction_read_only
    itself. The administrative session of this module is never read-only.
options:
  login:
    description: Administrative connection to the application's database (superuser, or CREATEROLE / database owner
      and pg_signal_backend).
    type: dict
    required: true
    suboptions:
      host: {description: Server host., type: str, required: true}
      port: {description: Server port., type: int, default: 5432}
      dbname: {description: The application's database., type: str, required: true}
      user: {description: Administrative login., type: str, required: true}
      password: {description: Its password., type: str}
      sslmode: {description: libpq sslmode., type: str}
      sslrootcert: {description: CA file., type: path}
      sslcert: {description: Client certificate., type: path}
      sslkey: {description: Client key., type: path}
      connect_timeout: {description: Seconds., type: int, default: 10}
  scope: {description: Where the setting is made., type: str, choices: [role, database], default: role}
  role: {description: The application's role (required with I(scope=role); its sessions are checked)., type: str}
  state: {description: What to do., type: str, choices: [query, read_only, restored], default: query}
  previous: {description: With I(state=restored), the value to restore; empty or null to RESET., type: str}
  terminate_sessions: {description: With I(state=read_only), end the sessions opened before the change., type: bool,
    default: true}
  check_user: {description: Login for the check (the application's role)., type: str}
  check_password: {description: Its password., type: str}
author: pgmigrate maintainers
"""

EXAMPLES = r"""
- name: Refuse the application's writes
  pg_default_read_only:
    login: "{{ migration_source }}"
    role: cdp_app
    state: read_only
    check_user: cdp_app
    check_password: "{{ vault_cdp_app_password }}"

- name: Restore what was there before
  pg_default_read_only:
    login: "{{ migration_source }}"
    role: cdp_app
    state: restored
    previous: "{{ recorded_previous_value }}"
"""

RETURN = r"""
previous: {description: The setting before this task (null when none was set)., returned: always, type: str}
current: {description: The setting after this task (null when none is set)., returned: always, type: str}
terminated: {description: Sessions terminated., returned: always, type: int}
check: {description: "How writes were checked: method (session, catalog or none), read_only, detail.",
        returned: always, type: dict}
"""

# Ansible modules keep DOCUMENTATION, EXAMPLES and RETURN before their imports.
import traceback  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.pgmigrate.common.module_args import connection_argument, connection_options  # noqa: E402

try:
    import psycopg2
    import psycopg2.errors
    from psycopg2 import sql

    IMPORT_ERROR = None
except ImportError:
    IMPORT_ERROR = traceback.format_exc()

SETTING = "default_transaction_read_only"
CONNECTION_KEYS = tuple(connection_options())
TRUE_VALUES = ("on", "true", "yes", "1")


def connect(login, user=None, password=None, admin=True):
    kwargs = {k: login[k] for k in CONNECTION_KEYS if login.get(k) not in (None, "")}
    if user:
        kwargs["user"] = user
        kwargs.pop("password", None)
        if password:
            kwargs["password"] = password
    kwargs["application_name"] = "pgmigrate maintenance_mode"
    if admin:
        # The database may already be read-only by default (scope=database): never this session.
        kwargs["options"] = f"-c {SETTING}=off"
    conn = psycopg2.connect(**kwargs)
    conn.autocommit = True
    return conn


def read_setting(cur, scope, role, dbname):
    """The setting for (role, database) or (database) in pg_db_role_setting, or None."""
    cur.execute(
        "SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s "
        "JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase "
        "WHERE d.datname = %s AND s.setrole = CASE WHEN %s THEN 0::oid ELSE "
        "(SELECT oid FROM pg_catalog.pg_roles WHERE rolname = %s) END",
        (dbname, scope == "database", role),
    )
    row = cur.fetchone()
    for item in (row[0] if row and row[0] else []):
        name, _, value = item.partition("=")
        if name == SETTING:
            return value
    return None


def alter(cur, scope, role, dbname, value):
    target = (sql.SQL("ALTER DATABASE {}").format(sql.Identifier(dbname)) if scope == "database" else
              sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(role), sql.Identifier(dbname)))
    if value is None:
        cur.execute(sql.SQL("{} RESET {}").format(target, sql.Identifier(SETTING)))
    else:
        cur.execute(sql.SQL("{} SET {} = {}").format(target, sql.Identifier(SETTING), sql.Literal(value)))


def terminate(cur, scope, role, dbname):
    """End the sessions that still carry the old setting; returns how many."""
    cur.execute(
        "SELECT count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_catalog.pg_backend_pid() AND backend_type = 'client backend' "
        "AND (%s OR usename = %s)",
        (dbname, scope == "database", role),
    )
    return cur.fetchone()[0]


def probe(login, user=None, password=None):
    """A new session (as user, else as the login): is it read-only, is a write refused? Nothing is kept."""
    conn = connect(login, user=user, password=password, admin=False)
    try:
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('transaction_read_only')")
            read_only = cur.fetchone()[0] == "on"
            try:
                cur.execute("CREATE TEMPORARY TABLE pgmigrate_write_probe (x int) ON COMMIT DROP")
                refused, detail = False, "a new session could write"
            except psycopg2.errors.ReadOnlySqlTransaction as error:
                refused, detail = True, str(error).strip().splitlines()[0]
            except psycopg2.Error as error:  # e.g. no TEMP privilege: not a read-only refusal
                refused, detail = False, f"the write probe failed otherwise: {str(error).strip().splitlines()[0]}"
        return {"method": "session", "user": user or login["user"], "read_only": read_only and refused,
                "detail": detail}
    finally:
        conn.rollback()
        conn.close()


def main():
    module = AnsibleModule(
        argument_spec={
            "login": connection_argument(),
            "scope": {"type": "str", "choices": ["role", "database"], "default": "role"},
            "role": {"type": "str"},
            "state": {"type": "str", "choices": ["query", "read_only", "restored"], "default": "query"},
            "previous": {"type": "str"},
            "terminate_sessions": {"type": "bool", "default": True},
            "check_user": {"type": "str"},
            "check_password": {"type": "str", "no_log": True},
        },
        required_if=[("scope", "role", ["role"])],
        supports_check_mode=True,
    )
    if IMPORT_ERROR:
        module.fail_json(msg="pg_default_read_only needs psycopg2 on the host it runs on", exception=IMPORT_ERROR)
    p = module.params
    login, scope, role, state = p["login"], p["scope"], p["role"], p["state"]
    dbname = login["dbname"]
    where = (f"database {dbname}" if scope == "database" else f"role {role} in database {dbname}") + \
        f" on {login['host']}:{login['port']}"
    check_user = p["check_user"] or role
    try:
        conn = connect(login)
    except psycopg2.Error as error:
        module.fail_json(msg=f"Cannot connect to {login['user']}@{login['host']}:{login['port']}/{dbname}: "
                             f"{str(error).strip()}")
    result = {"changed": False, "terminated": 0, "check": {"method": "none"}}
    try:
        with conn.cursor() as cur:
            if scope == "role":
                cur.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (role,))
                if cur.fetchone() is None:
                    module.fail_json(msg=f"Role {role} does not exist on {login['host']}:{login['port']}")
            previous = read_setting(cur, scope, role, dbname)
            result["previous"] = previous
            wanted = previous
            if state == "read_only":
                wanted = "on"
            elif state == "restored":
                wanted = p["previous"] if p["previous"] not in (None, "") else None
            if wanted != previous:
                result["changed"] = True
                if not module.check_mode:
                    alter(cur, scope, role, dbname, wanted)
            if state == "read_only" and p["terminate_sessions"] and not module.check_mode:
                result["terminated"] = terminate(cur, scope, role, dbname)
                result["changed"] = result["changed"] or result["terminated"] > 0
            result["current"] = wanted if module.check_mode else read_setting(cur, scope, role, dbname)
    except psycopg2.Error as error:
        module.fail_json(msg=f"Cannot change {SETTING} for {where}: {str(error).strip()}", **result)
    finally:
        conn.close()
    if state != "query" and not module.check_mode:
        try:
            if p["check_password"]:
                result["check"] = probe(login, check_user, p["check_password"])
            elif scope == "database":
                result["check"] = probe(login)
            else:
                result["check"] = {"method": "catalog", "user": check_user,
                                   "read_only": (result["current"] or "").lower() in TRUE_VALUES,
                                   "detail": "no check_password: the setting was read from pg_db_role_setting"}
        except psycopg2.Error as error:
            module.fail_json(msg=f"Cannot check {where} with a new session as {check_user}: {str(error).strip()}",
                             **result)
    check = result["check"]
    if state == "read_only" and check["method"] != "none" and not check["read_only"]:
        module.fail_json(msg=f"Writes are still accepted for {where} after {SETTING}=on: {check['detail']}", **result)
    expect_read_only = (result["current"] or "").lower() in TRUE_VALUES
    if state == "restored" and check["method"] != "none" and check["read_only"] != expect_read_only:
        module.fail_json(msg=f"After restoring {SETTING}={result['current']} for {where}, a new session is "
                             f"{'not ' if expect_read_only else ''}read-only: {check['detail']}", **result)
    verb = {"query": "is", "read_only": "refuses writes:", "restored": "restored:"}[state]
    module.exit_json(msg=f"{where} {verb} {SETTING}={result['current'] or '(not set)'}", **result)


if __name__ == "__main__":
    main()
