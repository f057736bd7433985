"""Phase 3, the extensions the target needs (roles/extensions, module pg_migration_extensions), against
the embedded servers: created at the source's version; a version or an extension the target server does
not offer and a login without the right are clear errors that create nothing."""

import os
import re
import subprocess

import pytest

from conftest import PROJECT_DIR, connect, write_inventory
from pgmigrate.clone import extensions

ANSIBLE_PLAYBOOK = str(PROJECT_DIR / ".venv" / "bin" / "ansible-playbook")
PLAN_EXTENSIONS = ["uuid-ossp", "pgcrypto"]
# The CDP's inventories select its profile, which adds the plan's extensions.
CDP_PROFILE = {"migration_profile": "cdp"}


def run_sql(params, statement):
    conn = connect(params)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(statement)
    conn.close()


def installed(params):
    conn = connect(params)
    with conn.cursor() as cur:
        cur.execute("SELECT e.extname, e.extversion, n.nspname FROM pg_extension e "
                    "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql' ORDER BY 1")
        rows = cur.fetchall()
    conn.close()
    return rows


def prepare_target(tmp_path, src, dst, *args, extra=None):
    inventory = write_inventory(tmp_path, src, dst, extra)
    return subprocess.run([ANSIBLE_PLAYBOOK, "playbooks/prepare_target.yml", "-i", str(inventory), *args],
                          cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def limited_login(target_server, db_pair):
    """A target login that is no superuser, for the rights checks; dropped afterwards."""
    _src, dst = db_pair
    role, password = f"ext_{dst['dbname'][-10:]}", "ext-" + os.urandom(8).hex()
    run_sql(target_server, f'CREATE ROLE "{role}" LOGIN PASSWORD \'{password}\'')
    yield role, {**dst, "user": role, "password": password}
    run_sql(target_server, f'DROP DATABASE IF EXISTS "{dst["dbname"]}" WITH (FORCE)')
    run_sql(target_server, f'DROP ROLE IF EXISTS "{role}"')


def test_the_plans_and_the_sources_extensions_are_created_at_the_sources_versions(db_pair, tmp_path):
    src, dst = db_pair
    run_sql(src, "CREATE SCHEMA ext; CREATE EXTENSION hstore VERSION '1.4'; CREATE EXTENSION citext SCHEMA ext")
    # --check: the plan, and postgresql_ext saying what it would create, and nothing created.
    checked = prepare_target(tmp_path, src, dst, "--check", extra=CDP_PROFILE)
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert "hstore: source 1.4 in public; target available 1.8; create" in checked.stdout
    assert re.search(r"changed: \[localhost\] => \(item=hstore 1\.4 in public\)", checked.stdout), \
        checked.stdout[-3000:]
    assert installed(dst) == []
    result = prepare_target(tmp_path, src, dst, extra=CDP_PROFILE)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "hstore: source 1.4 in public; target available 1.8; create" in result.stdout
    # citext lives in schema ext, which the target has not yet: the schema copy creates both.
    assert "citext: source" in result.stdout and "left to the schema copy" in result.stdout
    assert installed(dst) == [("hstore", "1.4", "public"), ("pgcrypto", "1.3", "public"),
                              ("uuid-ossp", "1.1", "public")]
    again = prepare_target(tmp_path, src, dst, extra=CDP_PROFILE)
    assert again.returncode == 0 and "changed=0" in again.stdout


def test_a_version_or_an_extension_the_target_does_not_offer_is_a_clear_error(db_pair):
    src, dst = db_pair
    target = connect(dst)
    entries = extensions.plan({"hstore": {"version": "99.0", "schema": "public"},
                               "no_such_extension": {"version": "1.0", "schema": "public"},
                               "pgcrypto": {"version": None, "schema": None}}, target)
    target.close()
    by_name = {e["name"]: e for e in entries}
    assert "hstore 99.0 (the source's version) is not available on the target server" in by_name["hstore"]["problem"]
    assert "install the matching package" in by_name["hstore"]["problem"]
    assert "no_such_extension is not available on the target server" in by_name["no_such_extension"]["problem"]
    assert by_name["pgcrypto"]["problem"] is None and by_name["pgcrypto"]["action"] == "create"


def test_a_login_without_the_right_fails_before_anything_is_created(db_pair, limited_login, target_server,
                                                                    tmp_path):
    """dblink is not trusted: only a superuser may create it. The plan's trusted extensions could be
    created by the login, but nothing is, since one extension cannot."""
    src, _dst = db_pair
    role, login = limited_login
    run_sql(src, "CREATE EXTENSION dblink")
    run_sql({**target_server, "dbname": login["dbname"]}, f'GRANT CREATE ON DATABASE "{login["dbname"]}" TO "{role}"')
    result = prepare_target(tmp_path, src, login, extra=CDP_PROFILE)
    assert result.returncode != 0
    assert (f"the target login {role} may not create extension dblink: it is no superuser and dblink is not a "
            "trusted extension") in result.stdout
    assert "nothing was changed" in result.stdout
    assert installed(login) == []


def test_a_login_without_create_on_the_database_is_told_so(db_pair, limited_login):
    """No CREATE on the database (PUBLIC does not have it): even trusted extensions are refused, by name."""
    src, _dst = db_pair
    _role, login = limited_login
    source = connect(src)
    needed = extensions.needed_extensions(source, PLAN_EXTENSIONS)
    source.close()
    target = connect(login)
    entries = extensions.plan(needed, target)
    target.close()
    assert [e["name"] for e in entries] == ["pgcrypto", "uuid-ossp"]
    assert all(f"lacks CREATE on database {login['dbname']}" in e["problem"] for e in entries), entries
