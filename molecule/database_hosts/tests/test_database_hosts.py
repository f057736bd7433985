"""After migrate.yml between two database hosts (molecule.yml): each server runs under systemd on its
host and port; the target equals the source; the run backed up both, validated and left nothing of its
own in the target; no password in the output."""

import sys
from pathlib import Path

import pytest
import testinfra

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))

from scenario import EPHEMERAL, migrate_output  # noqa: E402

import dbcompare  # noqa: E402

DBNAME = "cdp_molecule_dbhosts"
HOSTS = {"source": ("pgmigrate-db-source", 25432), "target": ("pgmigrate-db-target", 25433)}


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
    assert dbcompare.compare_databases(server("source"), server("target")) == []


def test_both_servers_were_backed_up_with_checksums():
    """Schema-only, data-only and complete backups of both servers, each with its SHA256SUMS manifest."""
    records = sorted((EPHEMERAL / "artifacts" / "backups").rglob("backup.json"))
    kinds = {(p.parent.parent.name.split("-", 1)[0], p.parent.name) for p in records}
    assert kinds == {(side, kind) for side in ("source", "target")
                     for kind in ("schema-only", "data-only", "complete")}, records
    assert all((p.parent / "SHA256SUMS").stat().st_size > 0 for p in records)


def test_no_password_in_the_output(run_output):
    for name in HOSTS:
        assert server(name)["password"] not in run_output
