"""After two attempts interrupted during their cutover (kill -9, then Ctrl-C; the application already pointed at
the target) and a migrate.yml whose validation failed (molecule.yml): the run rolled back by itself and failed;
the target is back to its state before the first attempt; the application reads and writes the source again;
maintenance is over and the source accepts writes again."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))

from scenario import ENV_FILE, EPHEMERAL, SOURCE_PORT, dbname, http_get, migrate_output, port  # noqa: E402
from scenario import server as embedded_server  # noqa: E402

import dbcompare  # noqa: E402

APP = f"http://127.0.0.1:{port(28200)}"
SITE = f"http://127.0.0.1:{port(28280)}"
DBNAME = dbname("cdp_molecule_rollback")


def server(name):
    return embedded_server(name, DBNAME)


@pytest.fixture(scope="module")
def run_output():
    return migrate_output()


def test_validation_failed_the_run_rolled_back_and_failed(run_output):
    assert not run_output.rstrip().endswith("exit code: 0")
    assert "query_performance (impossible)" in run_output
    assert "PLAY [(R2/3) ROLLBACK: Restore the target from its pre-migration backup" in run_output
    assert "The migration was rolled back" in run_output


def test_two_earlier_attempts_were_interrupted_during_their_cutover():
    for attempt, signal_name in ((1, "KILL"), (2, "INT")):
        log = (EPHEMERAL / f"attempt-{attempt}.log").read_text()
        assert "PLAY [(7/10) CUTOVER" in log and "TASK [connection_switch : Report the switch]" in log, log[-3000:]
        assert f"interrupted: True, signal {signal_name}" in log, log[-3000:]


def test_the_rollback_found_the_application_on_the_target_and_switched_it_back(run_output):
    words = " ".join(run_output.split())  # the output's long lines are wrapped
    start = words.find("PLAY [(R1/3) ROLLBACK")
    assert "uses the target: an earlier, interrupted cutover switched it." in words, words[start:start + 3000]
    assert "DATABASE_URL goes back to the value kept by that switch." in words


def test_the_target_is_back_to_its_pre_migration_state():
    conn = dbcompare.connect(server("target"))
    with conn.cursor() as cur:
        cur.execute("SELECT note FROM public.keep_me")
        assert cur.fetchall() == [("pre-migration state",)]
        cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert cur.fetchone()[0] == 1, "the copied tables must be gone after the data rollback"
    conn.close()


def test_the_application_still_uses_the_source(host):
    assert f":{SOURCE_PORT}/{DBNAME}" in host.file(ENV_FILE).content_string
    status, body = http_get(host, f"{APP}/health")
    assert status == 200, body
    assert json.loads(body)["server_port"] == SOURCE_PORT


def test_maintenance_is_over_and_the_source_accepts_writes_again(host):
    status, body = http_get(host, f"{SITE}/health")
    assert status == 200, body
    status, body = http_get(host, f"{APP}/health/write")
    assert status == 200 and json.loads(body)["write"] == "accepted", body
    for unit in ("cdp-web.service", "cdp-worker.service", "cdp-report.timer"):
        assert host.service(unit).is_running, unit
    assert not host.file("/var/lib/cdp-maintenance/maintenance.on").exists
    conn = dbcompare.connect(server("source"))
    with conn.cursor() as cur:
        cur.execute("SELECT r.rolname, s.setconfig FROM pg_db_role_setting s LEFT JOIN pg_roles r "
                    "ON r.oid = s.setrole JOIN pg_database d ON d.oid = s.setdatabase OR s.setdatabase = 0 "
                    "WHERE d.datname = %s", (DBNAME,))
        settings = cur.fetchall()
    conn.close()
    assert not any("default_transaction_read_only=on" in (config or []) for _role, config in settings)
