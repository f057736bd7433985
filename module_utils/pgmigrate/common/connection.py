"""Connections to the source and target databases.

A connection is described by a mapping with host, port, dbname, user, password and optional
sslmode, sslrootcert, sslcert, sslkey, connect_timeout (the `migration_source` and
`migration_target` variables). Passwords never go on a command line: child processes get them
through their environment (PGPASSWORD), psycopg2 through its connect() arguments.
"""

import os

import psycopg2

from .errors import PgmigrateError

REQUIRED_KEYS = ("host", "port", "dbname", "user")
OPTIONAL_KEYS = ("password", "sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout")
LIBPQ_ENVIRONMENT = {
    "host": "PGHOST",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
}
DEFAULT_CONNECT_TIMEOUT = 10


class ConfigError(PgmigrateError):
    """Bad input: says what is wrong and how to fix it."""


def check_params(params, variable_name):
    """Raise ConfigError unless params is a usable connection mapping."""
    if not isinstance(params, dict) or not params:
        raise ConfigError(
            f"{variable_name} is not defined: set it in the inventory's group_vars to a mapping with "
            "host, port, dbname, user and password (see group_vars/all.yml)"
        )
    missing = [key for key in REQUIRED_KEYS if params.get(key) in (None, "")]
    if missing:
        raise ConfigError(f"{variable_name} lacks {', '.join(missing)}: add them to the inventory's group_vars")
    unknown = sorted(set(params) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise ConfigError(
            f"{variable_name} has unknown keys {', '.join(unknown)}; allowed: "
            f"{', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)}"
        )
    try:
        port = int(params["port"])
    except (TypeError, ValueError):
        raise ConfigError(f"{variable_name}.port must be a number, not {params['port']!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{variable_name}.port {port} is out of range 1-65535")


def describe(params):
    """user@host:port/dbname: for messages; never includes the password."""
    return f"{params.get('user')}@{params.get('host')}:{params.get('port')}/{params.get('dbname')}"


def connect(params, application_name="pgmigrate", autocommit=False, lock_timeout=None):
    kwargs = {key: params[key] for key in REQUIRED_KEYS + OPTIONAL_KEYS if params.get(key) not in (None, "")}
    if lock_timeout:
        kwargs["options"] = f"-c lock_timeout={lock_timeout}"
    kwargs.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    kwargs["application_name"] = application_name
    conn = psycopg2.connect(**kwargs)
    use_utf8(conn)
    conn.autocommit = autocommit
    return conn


def use_utf8(conn):
    """Every session in UTF8, whatever the database's encoding, set through psycopg2 so that it encodes and
    decodes in it too (a SET statement would leave psycopg2 in the database's). On a LATIN1 connection
    psycopg2 2.9 quotes identifiers wrongly (sql.Identifier("café") gives "cafÃ©"); the schema dump, the
    copy's text COPY and the post-data's preamble are in UTF8 as well."""
    if conn.encoding != "UTF8":
        conn.set_client_encoding("UTF8")


def rollback_quietly(conn):
    """End a failed transaction without letting a second error (a broken connection) hide the first."""
    try:
        conn.rollback()
    except psycopg2.Error:
        pass


def connect_or_raise(params, variable, error_class, application_name="pgmigrate", **options):
    """connect(), or error_class with friendly_connect_error's message: what failed, naming the setting
    (variable, e.g. migration_target) and how to fix it."""
    try:
        return connect(params, application_name=application_name, **options)
    except psycopg2.Error as error:
        raise error_class(friendly_connect_error(error, params, variable)) from None


def libpq_environment(params, application_name="pgmigrate"):
    """Environment for a libpq client (psql, pg_dump, pg_restore) connecting with params."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for key, variable in LIBPQ_ENVIRONMENT.items():
        if params.get(key) not in (None, ""):
            env[variable] = str(params[key])
    env.setdefault("PGCONNECT_TIMEOUT", str(DEFAULT_CONNECT_TIMEOUT))
    env["PGAPPNAME"] = application_name
    return env


def friendly_connect_error(error, params, variable_name):
    """Turn a psycopg2 connection error into a message that says how to fix it."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    where = describe(params)
    hint = ""
    lowered = text.lower()
    if "password authentication failed" in lowered:
        hint = f"check {variable_name}.password (kept in ansible-vault) and {variable_name}.user"
    elif "does not exist" in lowered and "database" in lowered:
        hint = f"create the database first or fix {variable_name}.dbname"
    elif "connection refused" in lowered or "could not connect" in lowered or "timeout" in lowered:
        hint = f"check that the server runs and {variable_name}.host/{variable_name}.port are right"
    elif "could not translate host name" in lowered:
        hint = f"fix {variable_name}.host"
    elif "ssl" in lowered or "certificate" in lowered:
        hint = f"check {variable_name}.sslmode and {variable_name}.sslrootcert"
    return f"Cannot connect to the {variable_name.replace('migration_', '')} database {where}: {text}" + (
        f" ({hint})" if hint else ""
    )
