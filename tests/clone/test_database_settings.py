"""Database-level settings (ALTER DATABASE ... SET, ALTER ROLE ... IN DATABASE ... SET) are carried to
the target and validated by name; migration_copy_database_settings=false leaves them."""

import json
import os
import subprocess

import pytest
import yaml

from conftest import PROJECT_DIR, connect, execute, query
from pgmigrate.clone import copier
from pgmigrate.common import preflight
from pgmigrate.common.catalog import STATE_SCHEMA
from pgmigrate.common.database_settings import read_settings
from pgmigrate.validation.validate import Validator


def migrate(src, dst, tmp_path, **options):
    options.setdefault("workers", 2)
    return copier.migrate(src, dst, artifacts_dir=str(tmp_path / "artifacts"), **options)


def settings_of(params):
    conn = connect(params)
    try:
        return {(s["role"], s["name"]): s["value"] for s in read_settings(conn)}
    finally:
        conn.close()


def settings_check(src, dst, carried=True):
    result = Validator(src, dst, workers=2, checks=["schema"], database_settings_carried=carried).run()
    return next(c for c in result["checks"] if c["name"] == "database_settings")


@pytest.fixture
def settings_pair(db_pair, source_server, target_server):
    """pgcopydb's case: the application's schema (named "abc", quotes included) on the database's
    search_path; a role on both servers with a setting in the database, one only on the source."""
    src, dst = db_pair
    suffix = src["dbname"][-10:]
    both, source_only = f"app_{suffix}", f"gone_{suffix}"
    execute(source_server, f'CREATE ROLE "{both}"', f'CREATE ROLE "{source_only}"')
    execute(target_server, f'CREATE ROLE "{both}"')
    execute(src,
            'CREATE SCHEMA """abc"""',
            'CREATE TABLE """abc""".state (id int PRIMARY KEY, name text)',
            "INSERT INTO \"\"\"abc\"\"\".state VALUES (1, 'open'), (2, 'closed')",
            f"""ALTER DATABASE "{src['dbname']}" SET search_path TO '"abc"', public""",
            f'''ALTER DATABASE "{src['dbname']}" SET work_mem TO '8MB\'''',
            f'''ALTER ROLE "{both}" IN DATABASE "{src['dbname']}" SET statement_timeout TO '5s\'''',
            f'''ALTER ROLE "{source_only}" IN DATABASE "{src['dbname']}" SET work_mem TO '1MB\'''')
    yield src, dst, both, source_only
    for server, params in ((source_server, src), (target_server, dst)):
        execute(server, f'DROP DATABASE IF EXISTS "{params["dbname"]}" WITH (FORCE)')
    execute(source_server, f'DROP ROLE IF EXISTS "{both}"', f'DROP ROLE IF EXISTS "{source_only}"')
    execute(target_server, f'DROP ROLE IF EXISTS "{both}"')


def test_database_and_role_settings_are_carried_and_validated(settings_pair, tmp_path):
    src, dst, both, source_only = settings_pair
    summary = migrate(src, dst, tmp_path)
    assert summary["status"] == "complete"
    assert settings_of(dst) == {(None, "search_path"): '"""abc""", public', (None, "work_mem"): "8MB",
                                (both, "statement_timeout"): "5s"}
    assert any(source_only in w and "does not exist in the target" in w for w in summary["warnings"])
    # the application's unqualified names resolve on the target as on the source
    assert query(dst, "SELECT current_setting('search_path'), count(*) FROM state") == [('"""abc""", public', 2)]
    check = settings_check(src, dst)
    assert check["status"] == "warn", check["summary"]
    assert [i["detail"] for i in check["items"] if i["status"] == "warn"] == [
        f"setting work_mem of role {source_only} in the database not carried: role {source_only} does not exist "
        "in the target"]


def test_switched_off_the_settings_are_left_and_validation_names_the_missing_one(settings_pair, tmp_path):
    src, dst, _both, _source_only = settings_pair
    summary = migrate(src, dst, tmp_path, database_settings=False)
    assert summary["status"] == "complete" and summary["database_settings"] == []
    assert settings_of(dst) == {}
    check = settings_check(src, dst)
    assert check["status"] == "fail"
    assert "database setting search_path missing in the target" in check["summary"]
    execute(dst, f"""ALTER DATABASE "{dst['dbname']}" SET search_path TO public""")
    changed = settings_check(src, dst)
    assert 'database setting search_path: source """abc""", public / target public' in changed["summary"]


def test_switched_off_the_validation_reports_them_as_not_carried_and_passes(settings_pair, tmp_path):
    src, dst, _both, _source_only = settings_pair
    migrate(src, dst, tmp_path, database_settings=False)
    check = settings_check(src, dst, carried=False)
    assert check["status"] != "fail", check
    left = [item["detail"] for item in check["items"] if item["status"] == "warn"]
    assert any("search_path not carried (migration_copy_database_settings is false)" in d for d in left), left
    execute(dst, f"""ALTER DATABASE "{dst['dbname']}" SET search_path TO public""")
    assert settings_check(src, dst, carried=False)["status"] == "fail"  # a different value is still a difference


def test_a_login_that_may_not_set_them_is_refused_before_anything_changes(settings_pair, tmp_path, target_server):
    src, dst, _both, _source_only = settings_pair
    login, password = f"copier_{dst['dbname'][-10:]}", "pw-" + os.urandom(8).hex()
    execute(target_server, f"CREATE ROLE \"{login}\" LOGIN PASSWORD '{password}'",
            f'GRANT CREATE ON DATABASE "{dst["dbname"]}" TO "{login}"')
    execute(dst, f'GRANT CREATE ON SCHEMA public TO "{login}"')
    try:
        with pytest.raises(preflight.PreflightError) as raised:
            migrate(src, {**dst, "user": login, "password": password}, tmp_path)
        message = str(raised.value)
        assert "database setting search_path" in message and "migration_copy_database_settings=false" in message
        assert "needs the target database's owner" in message and password not in message
        assert query(dst, "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (STATE_SCHEMA,)) == [(0,)]
        assert query(dst, "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', "
                          "'information_schema')") == [(0,)]
    finally:
        execute(target_server, f'DROP DATABASE IF EXISTS "{dst["dbname"]}" WITH (FORCE)',
                f'DROP ROLE IF EXISTS "{login}"')


def test_list_values_quoted_names_and_custom_settings_are_carried_exactly(db_pair, tmp_path):
    src, dst = db_pair
    execute(src,
            f"""ALTER DATABASE "{src['dbname']}" SET search_path TO "$user", public, "a,b", '"abc"', "Mixed Case" """,
            f"""ALTER DATABASE "{src['dbname']}" SET DateStyle TO 'SQL, DMY'""",
            f"""ALTER DATABASE "{src['dbname']}" SET app.tenant_label TO 'it''s "one", two'""",
            f"""ALTER DATABASE "{src['dbname']}" SET default_transaction_read_only TO on""")
    expected = settings_of(src)
    assert len(expected) == 4
    summary = migrate(src, dst, tmp_path)
    assert summary["status"] == "complete", "a read-only default must not stop the copy's own last steps"
    assert settings_of(dst) == expected
    assert settings_check(src, dst)["status"] == "pass"


def test_a_superuser_only_setting_needs_a_superuser_or_a_grant(db_pair, tmp_path, target_server):
    src, dst = db_pair
    execute(src, f"""ALTER DATABASE "{src['dbname']}" SET log_min_duration_statement TO '2s'""")
    login, password = f"owner_{dst['dbname'][-10:]}", "pw-" + os.urandom(8).hex()
    execute(target_server, f"CREATE ROLE \"{login}\" LOGIN PASSWORD '{password}'",
            f'ALTER DATABASE "{dst["dbname"]}" OWNER TO "{login}"')
    owner = {**dst, "user": login, "password": password}
    try:
        with pytest.raises(preflight.PreflightError, match="setting log_min_duration_statement needs a superuser or "
                                                           "GRANT SET ON PARAMETER"):
            migrate(src, owner, tmp_path)
        execute(target_server, f'GRANT SET ON PARAMETER log_min_duration_statement TO "{login}"')
        assert migrate(src, owner, tmp_path)["status"] == "complete"
        assert settings_of(dst) == {(None, "log_min_duration_statement"): "2s"}
    finally:
        execute(target_server, f'DROP DATABASE IF EXISTS "{dst["dbname"]}" WITH (FORCE)',
                f'REVOKE SET ON PARAMETER log_min_duration_statement FROM "{login}"', f'DROP ROLE IF EXISTS "{login}"')


def test_the_maintenance_windows_read_only_setting_is_not_carried_and_the_target_takes_writes(settings_pair,
                                                                                              tmp_path):
    """Maintenance mode makes the source (a role in it, or the whole database) read-only for the migration:
    copied, that would leave the new database refusing the application's writes once it goes live."""
    src, dst, both, _source_only = settings_pair
    execute(src, f'''ALTER ROLE "{both}" IN DATABASE "{src['dbname']}" SET default_transaction_read_only TO on''',
            f'''ALTER DATABASE "{src['dbname']}" SET default_transaction_read_only TO on''')
    summary = migrate(src, dst, tmp_path, database_settings_skipped=["default_transaction_read_only"])
    assert summary["status"] == "complete"
    carried = settings_of(dst)
    assert (both, "default_transaction_read_only") not in carried and (None, "default_transaction_read_only") \
        not in carried
    assert carried[(None, "work_mem")] == "8MB" and carried[(both, "statement_timeout")] == "5s"
    assert any("default_transaction_read_only" in w and "migration_database_settings_skipped" in w
               for w in summary["warnings"]), summary["warnings"]
    execute(dst, 'INSERT INTO """abc""".state VALUES (3, \'written after the migration\')')
    checks = Validator(src, dst, workers=2, checks=["schema"],
                       database_settings_skipped=["default_transaction_read_only"]).run()["checks"]
    check = next(c for c in checks if c["name"] == "database_settings")
    assert check["status"] == "warn", check  # not a failure: the run is not rolled back for it
    assert [i["status"] for i in check["items"] if i["setting"] == "default_transaction_read_only"] == ["warn"] * 2

    # Listed as not skipped, the setting is carried like any other.
    execute(dst, 'DROP SCHEMA """abc""" CASCADE', f"DROP SCHEMA IF EXISTS {STATE_SCHEMA} CASCADE")
    summary = migrate(src, dst, tmp_path, overwrite=True)
    assert settings_of(dst)[(None, "default_transaction_read_only")] == "on"


@pytest.mark.parametrize("group", ["app_servers", "cdp_app_servers"])  # the group's name, and its old one
@pytest.mark.parametrize("app_servers, expected", [({}, []), ({"app1": {"ansible_connection": "local"}},
                                                               ["default_transaction_read_only"])])
def test_the_read_only_default_is_skipped_only_when_the_run_has_a_maintenance_window(tmp_path, group, app_servers,
                                                                                      expected):
    """group_vars/all/migration.yml: with hosts in app_servers (maintenance mode makes the source read-only
    for the run), default_transaction_read_only is not carried; with none it is, as it is."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"migration": {"children": {
        "migration_controller": {"hosts": {"localhost": {"ansible_connection": "local"}}},
        group: {"hosts": app_servers}}}}))
    done = subprocess.run([str(PROJECT_DIR / ".venv" / "bin" / "ansible"), "localhost", "-i", str(inventory),
                           "--playbook-dir", str(PROJECT_DIR), "-m", "ansible.builtin.debug",
                           "-a", "var=migration_database_settings_skipped"],
                          cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    value = json.loads(done.stdout.split("=>", 1)[1])["migration_database_settings_skipped"]
    assert value == expected
