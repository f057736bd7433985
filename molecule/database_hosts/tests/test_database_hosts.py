"""After migrate.yml between two database hosts (molecule.yml): each server runs under systemd on its
host and port; the target equals the source; the run backed up both, validated and left nothing of its
own in the target; no password in the output."""

import sys
import time
from pathlib import Path

import pytest
import testinfra

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))

from scenario import EPHEMERAL, dbname, instance, migrate_output, port  # noqa: E402

import dbcompare  # noqa: E402

DBNAME = dbname("cdp_molecule_dbhosts")
HOSTS = {"source": (instance("pgmigrate-db-source"), port(25432)),
         "target": (instance("pgmigrate-db-target"), port(25433))}


def server(name):
    _host, port = HOSTS[name]
    return {"host": "127.0.0.1", "port": port, "dbname": DBNAME, "user": "postgres",
            "password": (EPHEMERAL / f"db-{name}.password").read_text().split()[0]}


@pytest.fixture(scope="module")
def run_output():
    return migrate_output()


@pytest.mark.parametrize("name", ["source", "target"])
def test_each_server_runs_under_systemd_on_its_host(name):
    container, port = HOSTS[name]
    host = testinfra.get_host(f"podman://{container}")
    assert host.service("postgresql@15-main.service").is_running
    assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
    databases = host.check_output(f"runuser -u postgres -- psql -p {port} -Atc 'SELECT datname FROM pg_database'")
    assert DBNAME in databases.split()


def test_the_database_migration_ran_alone_and_succeeded(run_output):
    assert run_output.rstrip().endswith("exit code: 0")
    assert "Copy complete: 21 tables" in run_output
    assert "Validation passed:" in run_output, run_output[-3000:]
    # No application or monitoring hosts in this inventory: their phases had nothing to do.
    assert "pgmigrate-db-" not in run_output.split("PLAY RECAP", 1)[1]


def test_the_target_equals_the_source():
    # Except for what the post-checks' audit-trail hardening added to the target on purpose.
    assert dbcompare.compare_databases(server("source"), server("target")) == [
        "extension pgaudit: only in target, not in source"]


def test_both_servers_were_backed_up_with_checksums():
    """The complete backup of both servers (backup_kinds' default; the plan's plain ones are derived from it on
    demand), each with its SHA256SUMS manifest."""
    records = sorted((EPHEMERAL / "artifacts" / "backups").rglob("backup.json"))
    kinds = {(p.parent.parent.name.split("-", 1)[0], p.parent.name) for p in records}
    assert kinds == {(side, "complete") for side in ("source", "target")}, records
    assert all((p.parent / "SHA256SUMS").stat().st_size > 0 for p in records)


def test_no_password_in_the_output(run_output):
    for name in HOSTS:
        assert server(name)["password"] not in run_output


def test_the_post_checks_enabled_pgaudit_on_the_target_host_only(run_output):
    """The POST-CHECKS phase installed Debian's pgaudit on the target's host, restarted its server with the
    library preloaded, created the extension and set pgaudit.log; the source's server is untouched."""
    assert "(10/10) POST-CHECKS" in run_output
    assert "HARDENING | pgaudit: applied CREATE EXTENSION pgaudit; pgaudit.log = read,write,ddl" in run_output, \
        run_output[-3000:]
    target = testinfra.get_host(f"podman://{HOSTS['target'][0]}")
    source = testinfra.get_host(f"podman://{HOSTS['source'][0]}")
    assert target.package("postgresql-15-pgaudit").is_installed
    assert not source.package("postgresql-15-pgaudit").is_installed

    def psql(host, port, sql):
        return host.check_output(f"runuser -u postgres -- psql -p {port} -d {DBNAME} -Atc \"{sql}\"")

    assert psql(target, HOSTS["target"][1], "SHOW shared_preload_libraries") == "pgaudit"
    assert psql(target, HOSTS["target"][1], "SELECT extname FROM pg_extension WHERE extname = 'pgaudit'") == "pgaudit"
    assert psql(target, HOSTS["target"][1], "SHOW pgaudit.log") == "read, write, ddl"
    assert psql(source, HOSTS["source"][1], "SHOW shared_preload_libraries") == ""


def test_reads_on_the_target_leave_an_audit_trail():
    target = testinfra.get_host(f"podman://{HOSTS['target'][0]}")
    marker = f"audit probe {time.time_ns()}"
    conn = dbcompare.connect(server("target"))
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM public.team /* {marker} */")
    finally:
        conn.close()
    log = target.check_output("cat /var/log/postgresql/postgresql-15-main.log")
    assert any("AUDIT: SESSION" in line and ",READ,SELECT," in line and marker in line
               for line in log.splitlines()), log[-3000:]
