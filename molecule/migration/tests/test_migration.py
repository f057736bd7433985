"""After migrate.yml (molecule.yml): the application on its host reads and writes the target, which
equals the source; maintenance is over; the monitoring host's Prometheus evaluates the plan's alerts
on the target and one fires at its threshold; the run's output and records keep no password.

Requests are made from the hosts with curl, as a client would; the databases are read from the
control machine with the project's own comparison (tests/dbcompare.py).
"""

import json
import re
import sys
import time
from pathlib import Path

import psycopg2
import pytest
import testinfra

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))

from scenario import ENV_FILE, EPHEMERAL, SECRETS, SOURCE_PORT, TARGET_PORT, http_get, migrate_output  # noqa: E402
from scenario import server as embedded_server  # noqa: E402

import dbcompare  # noqa: E402

APP = "http://127.0.0.1:28100"
SITE = "http://127.0.0.1:28180"
DBNAME = "cdp_molecule_migration"
PROMETHEUS = "http://127.0.0.1:29090"
EXPORTER = "http://127.0.0.1:29187"
PLAN_ALERTS = {"CdpDatabaseCpuHigh", "CdpConnectionPoolSaturated", "CdpFailedLoginsHigh",
               "CdpIntegrationTimeoutRateHigh", "CdpScheduledReportFailing", "CdpExporterQueriesFailing"}


@pytest.fixture(scope="module")
def app():
    return testinfra.get_host("podman://pgmigrate-migration-app")


@pytest.fixture(scope="module")
def monitor():
    return testinfra.get_host("podman://pgmigrate-migration-monitor")


def server(name):
    return embedded_server(name, DBNAME)


@pytest.fixture(scope="module")
def run_output():
    return migrate_output()


def test_every_phase_ran_and_the_run_succeeded(run_output):
    assert run_output.rstrip().endswith("exit code: 0")
    for phase in ("(1/9) ASSESS", "(2/9) BACKUP", "(3/9) PREPARE TARGET", "(4/9) MAINTENANCE", "(5/9) COPY",
                  "(6/9) VALIDATE", "(7/9) CUTOVER", "(8/9) MONITORING", "(9/9) MAINTENANCE OFF"):
        assert f"PLAY [{phase}" in run_output
    # The 21 CDP tables and the two the alerts read (login_attempts, integration_calls).
    assert "Copy complete: 23 tables" in run_output
    assert "The migration was rolled back" not in run_output
    assert re.search(r"pgmigrate-migration-app\s+: ok=\d+ +changed=\d+ +unreachable=0 +failed=0", run_output)


def test_database_url_points_at_the_target_and_the_previous_one_is_kept(app):
    current = app.file(ENV_FILE).content_string
    previous = app.file(ENV_FILE + ".previous").content_string
    assert f":{TARGET_PORT}/{DBNAME}" in current
    assert f":{SOURCE_PORT}/{DBNAME}" in previous


def test_the_application_reads_the_target(app):
    status, body = http_get(app, f"{APP}/health")
    assert status == 200, body
    health = json.loads(body)
    assert health["server_port"] == TARGET_PORT and health["database"] == DBNAME
    conn = dbcompare.connect(server("target"))
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM public.team")
        assert health["team_members"] == cur.fetchone()[0] > 0
    conn.close()


def test_the_target_accepts_the_applications_writes(app):
    status, body = http_get(app, f"{APP}/health/write")
    assert status == 200, body
    assert json.loads(body)["write"] == "accepted"


def test_maintenance_is_over_and_the_background_jobs_run_on_the_target(app):
    status, body = http_get(app, f"{SITE}/health")
    assert status == 200, body
    for unit in ("cdp-web.service", "cdp-worker.service", "cdp-report.timer", "nginx.service"):
        assert app.service(unit).is_running, unit
    assert not app.file("/var/lib/cdp-maintenance/maintenance.on").exists
    heartbeats = app.check_output("tail -n 3 /var/log/cdp/worker.log")
    assert f"server_port={TARGET_PORT}" in heartbeats.splitlines()[-1]


def test_the_target_equals_the_source():
    assert dbcompare.compare_databases(server("source"), server("target")) == []


def test_no_password_in_the_output_or_the_records(run_output):
    secrets = [(SECRETS / name).read_text().strip() for name in ("source.password", "target.password")]
    secrets.append((EPHEMERAL / "app.password").read_text().strip())
    records = [p for p in (EPHEMERAL / "artifacts").rglob("*") if p.is_file() and p.suffix != ".dump"
               and "backups" not in p.parts]
    assert records
    for secret in secrets:
        assert secret not in run_output
        for record in records:
            assert secret not in record.read_text(errors="replace"), record


def prometheus_api(monitor, path):
    return json.loads(monitor.check_output(f"curl -sS --max-time 10 '{PROMETHEUS}/api/v1/{path}'"))["data"]


def test_prometheus_runs_the_plans_alerting_rules(monitor):
    assert monitor.service("prometheus.service").is_running
    config = monitor.file("/etc/prometheus/prometheus.yml").content_string
    assert "/etc/prometheus/rules/*.rules.yml" in config
    # The role ran the rules' unit tests there; they pass on the host as installed.
    run = monitor.run("cd /etc/prometheus/rules/tests && promtool test rules cdp_alerts.test.yml")
    assert run.rc == 0, run.stdout + run.stderr
    deadline = time.time() + 60
    while True:
        rules = [r for g in prometheus_api(monitor, "rules")["groups"] for r in g["rules"]]
        if rules and all(r.get("health") == "ok" for r in rules) or time.time() > deadline:
            break
        time.sleep(2)
    assert {r["name"] for r in rules if r["type"] == "alerting"} == PLAN_ALERTS
    assert all(r.get("health") == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]


def test_the_exporter_runs_the_roles_queries_on_the_target(monitor):
    assert monitor.service("prometheus-postgres-exporter.service").is_running
    metrics = monitor.check_output(f"curl -sS --max-time 20 {EXPORTER}/metrics")
    assert re.search(r"^pg_up 1$", metrics, re.M)
    assert re.search(r"^cdp_failed_logins_last_minute\{[^}]*\} 0$", metrics, re.M)
    assert re.search(r'^cdp_integration_calls_recent\{[^}]*outcome="timeout"[^}]*\} 0$', metrics, re.M)
    assert re.search(r"^cdp_scheduled_report_consecutive_failures\{", metrics, re.M)


def test_more_than_ten_failed_logins_a_minute_fire_the_alert_on_the_target(monitor):
    """The application records 11 failed logins on the database it now uses: Prometheus, through the
    exporter watching the target, fires CdpFailedLoginsHigh (the plan: more than 10 per minute)."""
    alerts = prometheus_api(monitor, "alerts")["alerts"]
    assert not [a for a in alerts if a["labels"]["alertname"] == "CdpFailedLoginsHigh"]
    conn = psycopg2.connect(**server("target"))  # (dbcompare's sessions are read-only)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO public.login_attempts (email, succeeded) "
                    "SELECT 'attacker' || g || '@example.com', false FROM generate_series(1, 11) g")
    conn.commit()
    conn.close()
    deadline = time.time() + 60
    firing = []
    while not firing and time.time() < deadline:
        time.sleep(2)
        firing = [a for a in prometheus_api(monitor, "alerts")["alerts"]
                  if a["labels"]["alertname"] == "CdpFailedLoginsHigh" and a["state"] == "firing"]
    assert firing, prometheus_api(monitor, "alerts")
