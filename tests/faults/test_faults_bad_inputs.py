"""Bad input (issue 8): each is a clear error naming what to fix, within seconds, and neither database
changes. Every case runs the real entry playbook (`migrate.yml`, or `staging_sync.yml` for masking)
against the embedded servers and compares both databases before and after."""

import os
import pathlib
import time

import pytest

from cdp_reference import generate
from conftest import execute, query, write_inventory
from faultlib import database_state, free_port, recorder, run_playbook
from pgmigrate.clone import copier
from pgmigrate.common import preflight
from pgmigrate.common.connection import connect as engine_connect

pytestmark = pytest.mark.faults

# Generous: CI machines are slow; the suite reports the measured figure.
CLEAR_WITHIN_SECONDS = 30
EXTENSION_DIR = pathlib.Path("/usr/share/postgresql/15/extension")


@pytest.fixture
def cdp_pair(db_pair):
    src, dst = db_pair
    generate.load(src, 0.02)
    return src, dst


def _wrong_password(src, dst, tmp_path, request):
    return src, {**dst, "password": "not-the-password"}, {}, ["password authentication failed",
                                                                "check migration_target.password"]


def _unreachable_port(src, dst, tmp_path, request):
    return src, {**dst, "port": free_port()}, {}, ["Connection refused", "check that the server runs and "
                                                   "migration_target.host/migration_target.port are right"]


def _unknown_host(src, dst, tmp_path, request):
    return {**src, "host": "cdp-db.pgmigrate.invalid"}, dst, {}, ["could not translate host name",
                                                                   "fix migration_source.host"]


def _unknown_database(src, dst, tmp_path, request):
    return src, {**dst, "dbname": "no_such_database"}, {}, ['database "no_such_database" does not exist',
                                                           "fix migration_target.dbname"]


def _source_equals_target(src, dst, tmp_path, request):
    return src, dict(src), {}, ["the same database on the same server", "Point migration_target at another"]


def _non_empty_target(src, dst, tmp_path, request):
    execute(dst, "CREATE TABLE public.users (keep int)", "INSERT INTO public.users VALUES (42)")
    return src, dst, {}, ["not empty", "migration_target_overwrite"]


def _role_without_rights(src, dst, tmp_path, request):
    role = f"pgm_norights_{os.getpid()}"
    password = "reader-" + os.urandom(6).hex()
    server = {**src, "dbname": "postgres"}
    execute(server, f"DROP ROLE IF EXISTS {role}", f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    # CONNECT and USAGE but no SELECT on the tables: the kind of login a DBA hands out by mistake.
    execute(src, f'GRANT CONNECT ON DATABASE "{src["dbname"]}" TO {role}', f"GRANT USAGE ON SCHEMA public TO {role}")

    def drop_role():
        execute(src, f"REVOKE ALL ON SCHEMA public FROM {role}")
        execute(server, f'REVOKE ALL ON DATABASE "{src["dbname"]}" FROM {role}', f"DROP ROLE IF EXISTS {role}")
    request.addfinalizer(drop_role)
    return {**src, "user": role, "password": password}, dst, {}, [
        f"The source login {role} may not read", "public.campaign_jobs", "GRANT pg_read_all_data"]


def _extension_missing_on_target(src, dst, tmp_path, request):
    """The source uses an extension whose package the target server lacks. Both embedded servers share
    one PostgreSQL installation, so the extension is installed on the source and its files then removed:
    the source keeps it in its catalog, the target cannot create it, as on a server without the package."""
    name = "pgm_fault_ext"
    control, script = EXTENSION_DIR / f"{name}.control", EXTENSION_DIR / f"{name}--1.0.sql"
    if not os.access(EXTENSION_DIR, os.W_OK):
        pytest.skip(f"needs write access to {EXTENSION_DIR} to install a test extension on the source only")
    control.write_text("default_version = '1.0'\nrelocatable = true\ncomment = 'pgmigrate fault suite'\n")
    script.write_text("CREATE FUNCTION pgm_fault_ext_answer() RETURNS int LANGUAGE sql AS 'SELECT 42';\n")
    try:
        execute(src, f"CREATE EXTENSION {name}")
    finally:
        control.unlink()
        script.unlink()
    return src, dst, {}, [f"lacks extension(s) the source uses: {name}", "Install them on the target server",
                          "Nothing was changed"]


def _inventory_without_target(src, dst, tmp_path, request):
    return src, None, {}, ["must define migration_source and migration_target"]


def _production_without_confirmation(src, dst, tmp_path, request):
    return src, dst, {"migration_target_is_production": True}, [f"-e migration_confirm_target={dst['dbname']}"]


def _masking_rule_missing_column(src, dst, tmp_path, request):
    generate.load(dst, 0.02)
    secret = tmp_path / "sync_source.password"
    secret.write_text(src["password"])
    extra = {
        "staging_sync_source": {k: v for k, v in src.items() if k != "password"}
        | {"password": "{{ lookup('ansible.builtin.file', '" + str(secret) + "') }}"},
        "staging_sync_masking_key": "fault-suite-masking-key-0123456789",
        "staging_sync_masking_rules": [{"table": "users", "column": "no_such_column", "rule": "email"}],
    }
    return None, dst, extra, ["public.users has no column 'no_such_column'"]


CASES = {
    "wrong password": _wrong_password,
    "unreachable port": _unreachable_port,
    "unknown host": _unknown_host,
    "unknown database": _unknown_database,
    "source equal to target": _source_equals_target,
    "non-empty target without overwrite": _non_empty_target,
    "role without the rights it needs": _role_without_rights,
    "extension missing on the target": _extension_missing_on_target,
    "inventory without migration_target": _inventory_without_target,
    "production target without confirmation": _production_without_confirmation,
    "masking rule naming a missing column": _masking_rule_missing_column,
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_clear_error_within_seconds_and_changes_nothing(case, cdp_pair, tmp_path, request):
    src, dst = cdp_pair
    run_src, run_dst, extra, expected = CASES[case](src, dst, tmp_path, request)
    before = (database_state(src), database_state(dst))
    playbook = "playbooks/staging_sync.yml" if case.startswith("masking") else "migrate.yml"
    inventory = write_inventory(tmp_path, run_src, run_dst, extra)
    result = run_playbook(inventory, playbook=playbook, timeout=300)
    output = result.stdout + result.stderr
    clear = all(text in output for text in expected)
    recorder(request)("bad_input", case, seconds=result.seconds, clear=clear, rc=result.returncode)
    assert result.returncode != 0, result.stdout[-3000:]
    for text in expected:
        assert text in output, f"missing {text!r} in:\n{result.stdout[-3000:]}"
    assert result.seconds < CLEAR_WITHIN_SECONDS, f"{case}: {result.seconds}s"
    assert (database_state(src), database_state(dst)) == before, "a refused run changed a database"


def test_a_target_older_than_the_sources_major_version_is_refused(source_server, target_server, request):
    """The check the engine and the assessment run, on the real servers' identities as read by
    preflight.server_identity, with the target's version number lowered by one major version; the run
    through migrate.yml from the PostgreSQL 18 server to a 15 one is in tests/clone/test_major_version.py."""
    versions = sorted(p.name for p in pathlib.Path("/usr/lib/postgresql").iterdir())
    identities = []
    for params in (source_server, target_server):
        conn = engine_connect(params)
        identities.append(preflight.server_identity(conn))
        conn.close()
    source_identity, target_identity = identities
    older = {**target_identity, "server_version_num": target_identity["server_version_num"] - 10000}
    started = time.monotonic()
    with pytest.raises(preflight.PreflightError, match=r"target runs PostgreSQL 14, older than the source's 15.*"
                                                       r"Upgrade the target to PostgreSQL 15 or newer"):
        preflight.check_versions(source_identity, older)
    preflight.check_versions(source_identity, target_identity)  # same major: accepted
    recorder(request)("bad_input", "target older than the source's major version", seconds=round(
        time.monotonic() - started, 2), clear=True, rc=None,
        note=f"engine check on real identities; installed majors: {', '.join(versions)}")


def test_the_role_check_names_each_unreadable_table(cdp_pair):
    """The preflight's rights check on its own: a login that may read no table is told which to grant."""
    src, _ = cdp_pair
    role = f"pgm_partial_{os.getpid()}"
    server = {**src, "dbname": "postgres"}
    execute(server, f"DROP ROLE IF EXISTS {role}", f"CREATE ROLE {role} LOGIN PASSWORD 'partial-pw-1'")
    try:
        execute(src, f'GRANT CONNECT ON DATABASE "{src["dbname"]}" TO {role}',
                f"GRANT USAGE ON SCHEMA public TO {role}", f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
                f"REVOKE SELECT ON public.team FROM {role}")
        conn = engine_connect({**src, "user": role, "password": "partial-pw-1"})
        try:
            unreadable = preflight.unreadable_relations(conn)
        finally:
            conn.close()
        assert "public.team" in unreadable
        assert "public.users" not in unreadable
        assert query(src, "SELECT count(*) FROM public.team")[0][0] > 0
    finally:
        execute(src, f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}",
                f"REVOKE ALL ON SCHEMA public FROM {role}")
        execute(server, f'REVOKE ALL ON DATABASE "{src["dbname"]}" FROM {role}', f"DROP ROLE IF EXISTS {role}")


def test_a_target_login_without_create_is_refused_before_anything_changes(cdp_pair, tmp_path):
    """The engine's own check (the copy also runs without the assessment): a target login that may
    connect but not create is told which right it lacks, and the target is left as it was."""
    src, dst = cdp_pair
    role = f"pgm_nocreate_{os.getpid()}"
    server = {**dst, "dbname": "postgres"}
    execute(server, f"DROP ROLE IF EXISTS {role}", f"CREATE ROLE {role} LOGIN PASSWORD 'nocreate-pw-1'",
            f'GRANT CONNECT ON DATABASE "{dst["dbname"]}" TO {role}')
    try:
        before = database_state(dst)
        with pytest.raises(preflight.PreflightError, match=f"target login {role} lacks CREATE on database "
                                                           f"{dst['dbname']}, CREATE on schema public"):
            copier.migrate(src, {**dst, "user": role, "password": "nocreate-pw-1"},
                           artifacts_dir=str(tmp_path / "artifacts"))
        assert database_state(dst) == before
    finally:
        execute(server, f'REVOKE ALL ON DATABASE "{dst["dbname"]}" FROM {role}', f"DROP ROLE IF EXISTS {role}")
