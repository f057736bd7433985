"""The post-checks' audit-trail hardening (issue 9: "an audit trail of data access on self-managed targets
(pgaudit, from Debian's packages)") on a real server: a throwaway PostgreSQL 15 cluster of this test
(never the shared embedded servers, which must not restart), with Debian's postgresql-15-pgaudit that
scripts/install.sh installs.

playbooks/post_checks.yml with post_checks_pgaudit, as an operator runs it without a database host in the
inventory: the first run preloads the library and fails saying that PostgreSQL must restart; after the
restart the second run creates the extension and sets pgaudit.log; reads and writes then leave AUDIT lines
in the server's log; a third run changes nothing and says so. On a server without the package, the run
fails naming the package to install, and changes nothing."""

import json
import re
import subprocess

import pytest

from cdp_reference import generate
from conftest import PROJECT_DIR, execute, query, write_inventory
from faultlib import ThrowawayCluster
from pgmigrate.appchecks import post_checks
from pgmigrate.common import connection

ANSIBLE_PLAYBOOK = str(PROJECT_DIR / ".venv" / "bin" / "ansible-playbook")
CREDENTIALS_KEY = "hardening-key-6f1d0c"  # noqa: S105 (a test key, looked for in the server's log)
PLAIN_CREDENTIAL = ("UPDATE integrations SET encrypted_credentials = convert_to('{\"token\": \"plain\"}', 'UTF8') "
                    "WHERE name = 'Slack (production)'")


@pytest.fixture
def cluster():
    # Every statement logged, as on a server under audit: the hardening must keep its key out of the log.
    server = ThrowawayCluster(settings={"log_statement": "'all'"})
    yield server
    server.destroy()


def run_post_checks(inventory, tmp_path, options=(), **more):
    extra = tmp_path / "pgaudit.json"
    extra.write_text(json.dumps({**more,
        "post_checks_pgaudit": True, "post_checks_target_self_managed": True,
        "post_checks_pgaudit_log": ["read", "write", "ddl"],
        "post_checks_pgaudit_settings": {"pgaudit.log_relation": "on"},
        # The audit trail only: the CDP data's other checks are covered by tests/appchecks/test_post_checks.py.
        "post_checks_database_checks": ["access_control"],
        "post_checks_report_dir": str(tmp_path / "reports")}))
    return subprocess.run([ANSIBLE_PLAYBOOK, "playbooks/post_checks.yml", "-i", str(inventory), "-e", f"@{extra}",
                           *options], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300, check=False)


def hardening_of_latest_report(tmp_path):
    reports = sorted((tmp_path / "reports").glob("post_checks-*.json"), key=lambda p: p.stat().st_mtime)
    return [item for item in json.loads(reports[-1].read_text())["hardening"] if item["name"] == "pgaudit"]


def test_pgaudit_is_enabled_in_two_runs_around_a_restart_audits_reads_and_writes_and_is_idempotent(cluster, tmp_path):
    src = cluster.create_database("cdp_source")
    dst = cluster.create_database("cdp_target")
    generate.load(src, 0.01)
    generate.load(dst, 0.01)
    inventory = write_inventory(tmp_path, src, dst, {"migration_profile": "cdp"})

    # --check says what it would do and does nothing.
    auto_conf = (cluster.data / "postgresql.auto.conf").read_text()
    checked = run_post_checks(inventory, tmp_path, options=["--check"])
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert "would add pgaudit to shared_preload_libraries" in checked.stdout, checked.stdout[-3000:]
    assert (cluster.data / "postgresql.auto.conf").read_text() == auto_conf

    first = run_post_checks(inventory, tmp_path)
    assert first.returncode != 0, first.stdout[-3000:]
    assert "PostgreSQL must restart to load pgaudit" in first.stdout, first.stdout[-3000:]
    assert "added pgaudit to shared_preload_libraries" in first.stdout
    assert "pgaudit" in (cluster.data / "postgresql.auto.conf").read_text()
    assert query(dst, "SELECT count(*) FROM pg_extension WHERE extname = 'pgaudit'")[0][0] == 0

    cluster.restart()  # what the failure asks the operator to do (or the role does, with a server host)
    second = run_post_checks(inventory, tmp_path)
    assert second.returncode == 0, second.stdout[-3000:]
    [item] = hardening_of_latest_report(tmp_path)
    assert item["status"] == "pass" and item["changed"], item
    assert "CREATE EXTENSION pgaudit" in item["detail"] and "pgaudit.log = read,write,ddl" in item["detail"]
    assert query(dst, "SELECT extname FROM pg_extension WHERE extname = 'pgaudit'") == [("pgaudit",)]
    # postgresql_alter_system passes a list as one, which PostgreSQL shows as 'a, b'.
    assert query(dst, "SELECT current_setting('pgaudit.log'), current_setting('pgaudit.log_relation')") == [
        ("read, write, ddl", "on")]

    # The audit trail: a read and a write of the target's tables appear in the server's log as AUDIT lines.
    query(dst, "SELECT count(*) FROM public.team /* audited read */")
    execute(dst, "UPDATE public.segments SET name = name WHERE id = (SELECT id FROM public.segments LIMIT 1)")
    log = cluster.log()
    assert re.search(r"AUDIT: SESSION,\d+,\d+,READ,SELECT,TABLE,public\.team,.*audited read", log), log[-3000:]
    assert re.search(r"AUDIT: SESSION,\d+,\d+,WRITE,UPDATE,TABLE,public\.segments,", log), log[-3000:]

    # Third run, with a plaintext credential to encrypt: pgaudit is left as it is, and the pgcrypto key
    # reaches neither the statement log (log_statement = all) nor the audit log (pgaudit.log write).
    execute(dst, PLAIN_CREDENTIAL)
    third = run_post_checks(inventory, tmp_path, post_checks_encrypt_credentials=True,
                            post_checks_credentials_key=CREDENTIALS_KEY)
    assert third.returncode == 0, third.stdout[-3000:]
    [item] = hardening_of_latest_report(tmp_path)
    assert not item["changed"], item
    assert "preloaded, extension created, pgaudit.log = read,write,ddl, pgaudit.log_relation = on" in item["detail"]
    assert "encrypted 1 plaintext values with pgcrypto: name=Slack (production)" in third.stdout
    log = cluster.log()  # before the decryption below, whose own statement carries the key
    assert "LOG:  statement: " in log and CREDENTIALS_KEY not in log
    assert query(dst, "SELECT convert_from(decrypt(encrypted_credentials, convert_to(%s, 'UTF8'), 'aes'), 'UTF8') "
                      "FROM integrations WHERE name = 'Slack (production)'", (CREDENTIALS_KEY,)) == [
        ('{"token": "plain"}',)]


def test_a_login_that_cannot_quiet_statement_logging_is_refused_before_the_key_is_sent(cluster):
    dst = cluster.create_database("cdp_target")
    generate.load(dst, 0.01)
    execute(dst, PLAIN_CREDENTIAL, "CREATE ROLE hardening_login LOGIN PASSWORD 'hardening-login-pw'",
            "GRANT SELECT, UPDATE ON integrations TO hardening_login")
    login = {**dst, "user": "hardening_login", "password": "hardening-login-pw"}
    conn = connection.connect(login)
    try:
        [item] = post_checks.harden_credentials(
            conn, [{"table": "public.integrations", "column": "encrypted_credentials", "key": ["name"]}],
            CREDENTIALS_KEY)
    finally:
        conn.close()
    assert item["status"] == "fail" and not item["changed"], item
    assert "log_statement = all" in item["detail"] and "GRANT SET ON PARAMETER" in item["detail"], item
    assert query(dst, "SELECT convert_from(encrypted_credentials, 'UTF8') FROM integrations "
                      "WHERE name = 'Slack (production)'") == [('{"token": "plain"}',)]
    assert CREDENTIALS_KEY not in cluster.log()


def test_a_server_without_the_pgaudit_package_is_told_which_package_to_install_and_is_left_alone(tmp_path):
    cluster = ThrowawayCluster(without_extensions=("pgaudit",))
    try:
        dst = cluster.create_database("cdp_target")
        generate.load(dst, 0.01)
        auto_conf = (cluster.data / "postgresql.auto.conf").read_text()
        result = run_post_checks(write_inventory(tmp_path, dst, dst, {"migration_profile": "cdp"}), tmp_path)
        assert result.returncode != 0, result.stdout[-3000:]
        assert "pgaudit is not installed on the target server (PostgreSQL 15): install the Debian package " \
               "postgresql-15-pgaudit there" in result.stdout, result.stdout[-3000:]
        assert (cluster.data / "postgresql.auto.conf").read_text() == auto_conf
        assert query(dst, "SELECT current_setting('shared_preload_libraries')") == [("",)]
    finally:
        cluster.destroy()
