"""After migrate.yml (molecule.yml): the application on its host reads and writes the target, which
equals the source but for what the post-checks wrote; maintenance is over; the monitoring host's
Prometheus evaluates the plan's alerts on the target and one fires at its threshold; the run's output and
records keep no password; the POST-CHECKS phase passed against the application under systemd, which
really did what the checks asked of it: the report email reached the SMTP sink and the cohort the
Amplitude/Braze receiver (both on the monitoring host), the campaign job is in the target.

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
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))

from scenario import (  # noqa: E402
    ENV_FILE,
    EPHEMERAL,
    PROJECT,
    SECRETS,
    SOURCE_PORT,
    TARGET_PORT,
    dbname,
    http_get,
    instance,
    migrate_output,
    port,
)
from scenario import server as embedded_server  # noqa: E402

import dbcompare  # noqa: E402

APP = f"http://127.0.0.1:{port(28100)}"
SITE = f"http://127.0.0.1:{port(28180)}"
DBNAME = dbname("cdp_molecule_migration")
PROMETHEUS = f"http://127.0.0.1:{port(29090)}"
EXPORTER = f"http://127.0.0.1:{port(29187)}"
APP_HOST, MONITOR_HOST = instance("pgmigrate-migration-app"), instance("pgmigrate-migration-monitor")
# What the stand-ins on the monitoring host recorded (prepare.yml), one JSON line each.
SMTP_SINK_RECORD = "/var/lib/cdp-smtp-sink/messages.jsonl"
RECEIVER_RECORD = "/var/lib/cdp-integration-receiver/received.jsonl"
# The tables the post-checks' HTTP calls change in the target (app/cdp_app.py): a campaign job, a report
# execution and its report's last run, a cohort's sync time, the integrations' verification time.
POST_CHECKS_WRITES = {"public.campaign_jobs", "public.report_executions", "public.scheduled_reports",
                      "public.cohorts", "public.integrations"}
PLAN_ALERTS = {"CdpDatabaseCpuHigh", "CdpConnectionPoolSaturated", "CdpFailedLoginsHigh",
               "CdpIntegrationTimeoutRateHigh", "CdpScheduledReportFailing", "CdpExporterQueriesFailing"}
# The zero-downtime run's reverse window (role monitoring_alerts, group pgmigrate-reverse-replication).
REVERSE_WINDOW_ALERTS = {"PgmigrateReverseReplicationLagging", "PgmigrateReverseReplicationNotStreaming",
                         "PgmigrateReverseWindowOver"}


@pytest.fixture(scope="module")
def app():
    return testinfra.get_host(f"podman://{APP_HOST}")


@pytest.fixture(scope="module")
def monitor():
    return testinfra.get_host(f"podman://{MONITOR_HOST}")


def server(name):
    return embedded_server(name, DBNAME)


@pytest.fixture(scope="module")
def run_output():
    return migrate_output()


def test_every_phase_ran_and_the_run_succeeded(run_output):
    assert run_output.rstrip().endswith("exit code: 0")
    for phase in ("(1/10) ASSESS", "(2/10) BACKUP", "(3/10) PREPARE TARGET", "(4/10) MAINTENANCE", "(5/10) COPY",
                  "(6/10) VALIDATE", "(7/10) CUTOVER", "(8/10) MONITORING", "(9/10) MAINTENANCE OFF",
                  "(10/10) POST-CHECKS: The databases", "(10/10) POST-CHECKS: The application on each of its hosts"):
        assert f"PLAY [{phase}" in run_output
    # The 21 CDP tables and the two the alerts read (login_attempts, integration_calls).
    assert "Copy complete: 23 tables" in run_output
    assert "The migration was rolled back" not in run_output
    assert re.search(re.escape(APP_HOST) + r"\s+: ok=\d+ +changed=\d+ +unreachable=0 +failed=0", run_output)


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


def test_the_target_equals_the_source_but_for_what_the_post_checks_wrote():
    """Validation proved the copy equal before the cutover; since then the application wrote into the
    target only what the post-checks asked of it, and the source is as the copy left it."""
    differences = dbcompare.compare_databases(server("source"), server("target"))
    written = {d.split()[1].rstrip(":") for d in differences if d.startswith("rows ")}
    assert [d for d in differences if not d.startswith("rows ")] == []
    assert written == POST_CHECKS_WRITES, differences


@pytest.fixture(scope="module")
def credentials_key(app):
    """The key the application decrypts integrations' credentials with, as role cdp_app wrote it."""
    lines = app.file(ENV_FILE).content_string.splitlines()
    keys = [line.partition("=")[2] for line in lines if line.startswith("CDP_CREDENTIALS_KEY=")]
    assert len(keys) == 1 and keys[0]
    return keys[0]


def test_no_password_in_the_output_or_the_records(run_output, credentials_key):
    secrets = [(SECRETS / name).read_text().strip() for name in ("source.password", "target.password")]
    secrets.append((EPHEMERAL / "app.password").read_text().strip())
    secrets.append(credentials_key)
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
    assert {r["name"] for r in rules if r["type"] == "alerting"} == PLAN_ALERTS | REVERSE_WINDOW_ALERTS
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


# --- Phase 10: POST-CHECKS against the application under systemd ------------------------------------------


def post_checks_report(host):
    """The newest JSON report role post_checks wrote for the inventory host (on the control machine)."""
    reports = sorted((EPHEMERAL / "artifacts" / "post_checks").glob(f"post_checks-*-{host}.json"))
    assert reports, f"no post-checks report for {host}"
    return json.loads(reports[-1].read_text())


def records(host, path):
    return [json.loads(line) for line in host.file(path).content_string.splitlines() if line.strip()]


def rows(name, sql, args=None):
    conn = dbcompare.connect(server(name))
    with conn.cursor() as cur:
        cur.execute(sql, args)
        found = cur.fetchall()
    conn.close()
    return found


def rows_added_by_the_post_checks(table, columns):
    """Rows of the target's table whose id the source (untouched since the copy) does not have."""
    source_ids = {row[0] for row in rows("source", f"SELECT id FROM public.{table}")}
    return [row for row in rows("target", f"SELECT id, {columns} FROM public.{table}") if row[0] not in source_ids]


def test_the_application_host_has_its_outward_connections_and_the_key_stays_secret(app, credentials_key):
    env = app.file(ENV_FILE)
    assert env.mode == 0o600 and env.user == "root"
    for line in (f"CDP_AMPLITUDE_URL=http://127.0.0.1:{port(29380)}/amplitude/cohorts",
                 f"CDP_BRAZE_URL=http://127.0.0.1:{port(29380)}/braze/segments",
                 "CDP_SMTP_HOST=127.0.0.1", f"CDP_SMTP_PORT={port(29325)}", "CDP_ERROR_LOG=/var/log/cdp/errors.log"):
        assert line in env.content_string.splitlines()
    assert credentials_key not in app.check_output("ps -eo args")
    assert app.file("/var/log/cdp/errors.log").user == "cdp"


def test_the_post_checks_phase_passed_every_check(run_output):
    assert "Post-migration checks failed" not in run_output
    for check in ("access_control", "report_recipients", "query_times", "functional", "page_load", "error_log"):
        assert f'"PASS | {check} | ' in run_output, check
    database = post_checks_report("localhost")
    application = post_checks_report(APP_HOST)
    for report in (database, application):
        assert report["status"] == "pass" and report["failures"] == [], report["failures"]
    assert {c["name"]: c["status"] for c in database["checks"]} == {
        "access_control": "pass", "report_recipients": "pass", "query_times": "pass",
        "plaintext_credentials": "pass", "password_hashes": "pass"}
    assert {c["name"]: c["status"] for c in application["checks"]} == {
        "functional": "pass", "page_load": "pass", "error_log": "pass"}


def test_every_functional_check_passed_with_its_page_load_under_three_seconds():
    checks = {c["name"]: c for c in post_checks_report(APP_HOST)["checks"]}
    profile = yaml.safe_load((PROJECT / "group_vars" / "all" / "profile_cdp.yml").read_text())
    configured = profile["migration_profile_cdp"]
    names = [check["name"] for check in configured["post_checks_http_checks"]]
    functional, page_load = checks["functional"]["items"], checks["page_load"]["items"]
    assert [i["name"] for i in functional] == names
    assert [i["name"] for i in page_load] == names
    assert all(i["status"] == "pass" for i in functional), [i["detail"] for i in functional]
    for item in page_load:
        assert item["status"] == "pass" and 0 < item["seconds"] < 3, item


def test_the_error_log_watch_read_the_applications_logs():
    error_log = {c["name"]: c for c in post_checks_report(APP_HOST)["checks"]}["error_log"]
    assert {i["log"] for i in error_log["items"]} == {
        "/var/log/cdp/worker.log", "/var/log/cdp/errors.log", "journal: cdp-web.service"}
    assert all(i["status"] == "pass" for i in error_log["items"]), error_log


def test_the_report_email_reached_the_smtp_sink(monitor):
    assert monitor.service("cdp-smtp-sink.service").is_running
    executions = rows_added_by_the_post_checks("report_executions", "scheduled_report_id, status, triggered_by")
    assert [(status, by) for _, _, status, by in executions] == [("succeeded", "api")]
    ((name, recipients),) = rows("target", "SELECT name, recipients || coalesce(cc_recipients, '{}') "
                                           "FROM public.scheduled_reports WHERE id = %s", (executions[0][1],))
    mails = records(monitor, SMTP_SINK_RECORD)
    assert len(mails) == 1, mails
    assert sorted(mails[0]["recipients"]) == sorted(recipients)
    assert f"Subject: [CDP report] {name}" in mails[0]["message"]


def test_the_cohort_sync_reached_the_receiver(monitor):
    assert monitor.service("cdp-integration-receiver.service").is_running
    before = dict(rows("source", "SELECT id, last_synced_at FROM public.cohorts"))
    synced = [(cohort, to_amplitude, to_braze) for cohort, at, to_amplitude, to_braze
              in rows("target", "SELECT id, last_synced_at, sync_to_amplitude, sync_to_braze FROM public.cohorts")
              if at != before[cohort]]
    assert len(synced) == 1, synced
    ((cohort, to_amplitude, to_braze),) = synced
    # One POST to each destination the cohort asks for (both when it asks none), as the application sends it.
    expected = [path for path, flag in (("/amplitude/cohorts", to_amplitude), ("/braze/segments", to_braze))
                if flag or not (to_amplitude or to_braze)]
    received = records(monitor, RECEIVER_RECORD)
    assert [post["path"] for post in received] == expected, received
    assert all(post["body"]["cohort_id"] == cohort for post in received), received


def test_the_campaign_job_is_in_the_target():
    jobs = rows_added_by_the_post_checks("campaign_jobs", "status, result ->> 'triggered_by'")
    assert [(status, by) for _, status, by in jobs] == [("succeeded", "api")]
