"""Role monitoring_alerts for real: ansible-playbook applies it on this machine into a temporary directory,
the real promtool checks and unit-tests the rules it rendered, and the postgres_exporter queries it rendered
run on a CDP database (and, where postgres_exporter is installed, through the exporter itself)."""

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import psycopg2
import psycopg2.errors
import psycopg2.extras
import pytest
import yaml

from cdp_reference import generate
from conftest import PROJECT_DIR, connect
from pgmigrate.replication.names import REVERSE_PREFIX, TOOL_MARK

ANSIBLE_PLAYBOOK = str(PROJECT_DIR / ".venv" / "bin" / "ansible-playbook")
ROLE_DIR = PROJECT_DIR / "roles" / "monitoring_alerts"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
POSTGRES_EXPORTER = (os.environ.get("PGM_POSTGRES_EXPORTER") or shutil.which("prometheus-postgres-exporter")
                     or shutil.which("postgres_exporter"))

needs_promtool = pytest.mark.skipif(not os.access(PROMTOOL, os.X_OK),
                                    reason="promtool not installed: apt-get install prometheus (scripts/install.sh)")

# The alerts and the plan's thresholds in their expressions ("Monitoring & Alerts").
PLAN_ALERTS = {
    "cdp-database-cpu": ("CdpDatabaseCpuHigh", "> 80", "5m"),
    "cdp-connection-pool": ("CdpConnectionPoolSaturated", "> 90", "1m"),
    "cdp-failed-logins": ("CdpFailedLoginsHigh", "> 10", "0m"),
    "cdp-integration-timeouts": ("CdpIntegrationTimeoutRateHigh", "> 5", "0m"),
    "cdp-scheduled-reports": ("CdpScheduledReportFailing", "> 2", "0m"),
    "cdp-alert-sources": ("CdpExporterQueriesFailing", "> 0", "10m"),
}

# Not in the plan: the reverse replication window playbooks/zero_downtime.yml leaves after its cutover.
REVERSE_ALERTS = {
    "pgmigrate-reverse-replication": [
        ("PgmigrateReverseReplicationLagging", "> 1073741824", "10m"),
        ("PgmigrateReverseReplicationNotStreaming", "< 2", "5m"),
        ("PgmigrateReverseWindowOver", "< 0", "15m"),
    ],
}
ALL_ALERTS = {**{group: [alert] for group, alert in PLAN_ALERTS.items()}, **REVERSE_ALERTS}

# Debian's prometheus.yml, less its comments: rule_files is there but empty.
PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 15s
  evaluation_interval: 15s
rule_files:
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['localhost:9090']
  - job_name: node
    static_configs:
      - targets: ['localhost:9100']
"""


def apply_role(tmp_path, **overrides):
    """Runs the role through ansible-playbook on localhost, every path in tmp_path, no reload."""
    paths = {
        "rules_dir": tmp_path / "rules",
        "queries": tmp_path / "exporter" / "cdp_queries.yaml",
        "config": tmp_path / "prometheus.yml",
    }
    if not paths["config"].exists():
        paths["config"].write_text(PROMETHEUS_CONFIG)
    variables = {
        "monitoring_alerts_rules_dir": str(paths["rules_dir"]),
        "monitoring_alerts_exporter_queries_file": str(paths["queries"]),
        "monitoring_alerts_prometheus_config_file": str(paths["config"]),
        "monitoring_alerts_promtool": PROMTOOL,
        "monitoring_alerts_reload_method": "none",
        "monitoring_alerts_exporter_service": "",
        "monitoring_alerts_unit_tests": True,
        **overrides,
    }
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    (tmp_path / "play.yml").write_text(yaml.safe_dump([{
        "name": "Apply monitoring_alerts", "hosts": "localhost", "gather_facts": False,
        "roles": [{"role": "monitoring_alerts"}]}]))
    result = subprocess.run([ANSIBLE_PLAYBOOK, str(tmp_path / "play.yml"), "-i", str(tmp_path / "hosts.yml"),
                             "-e", f"@{tmp_path / 'vars.json'}"],
                            cwd=PROJECT_DIR, env={**os.environ, "ANSIBLE_PIPELINING": "true"},
                            capture_output=True, text=True, timeout=300, check=False)
    return result, paths


def promtool(*args, cwd=None):
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def http_get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def recap(result):
    match = re.search(r"localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", result.stdout)
    assert match, result.stdout[-3000:]
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, match.groups()), strict=True))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The role applied once with its defaults (unit tests on)."""
    if not os.access(PROMTOOL, os.X_OK):
        pytest.skip("promtool not installed: apt-get install prometheus (scripts/install.sh)")
    tmp_path = tmp_path_factory.mktemp("monitoring_alerts")
    result, paths = apply_role(tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return {"result": result, "tmp_path": tmp_path, **paths}


# --- Rules ------------------------------------------------------------------------------------------------


@needs_promtool
def test_the_role_installs_rules_that_promtool_accepts_and_whose_unit_tests_pass(installed):
    rules_file = installed["rules_dir"] / "cdp_alerts.rules.yml"
    checked = promtool("check", "rules", str(rules_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {sum(map(len, ALL_ALERTS.values()))} rules found" in checked.stdout
    tested = promtool("test", "rules", "cdp_alerts.test.yml", cwd=installed["rules_dir"] / "tests")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
    # The role ran them too.
    assert "Run the unit tests" in installed["result"].stdout


@needs_promtool
def test_the_rules_carry_the_plans_thresholds_one_group_per_concern(installed):
    groups = yaml.safe_load((installed["rules_dir"] / "cdp_alerts.rules.yml").read_text())["groups"]
    assert [group["name"] for group in groups] == list(ALL_ALERTS)
    for group in groups:
        for rule, (alert, threshold, duration) in zip(group["rules"], ALL_ALERTS[group["name"]], strict=True):
            assert rule["alert"] == alert
            assert re.search(re.escape(threshold) + r"(\s|$)", rule["expr"]), rule["expr"]
            assert rule["for"] == duration
            assert rule["labels"]["severity"] in ("warning", "critical")
            assert {"summary", "description"} <= set(rule["annotations"])
            if group["name"] != "cdp-alert-sources":  # its value is only the exporter's error flag
                assert re.search(r"\{\{[^}]*\$value", rule["annotations"]["description"])
    # What to do is in the alerts: the window ends with the playbook's finalize.
    reverse = {rule["alert"]: rule for rule in groups[-1]["rules"]}
    assert "-e zero_downtime_finalize=true" in reverse["PgmigrateReverseWindowOver"]["annotations"]["description"]
    assert "-e zero_downtime_finalize=true" in \
        reverse["PgmigrateReverseReplicationNotStreaming"]["annotations"]["description"]
    cpu = groups[0]["rules"][0]["expr"]
    assert 'node_cpu_seconds_total{mode="idle"}' in cpu and "avg by (instance)" in cpu


@needs_promtool
def test_prometheus_loads_the_rules_directory_and_a_rerun_changes_nothing(installed):
    config = yaml.safe_load(installed["config"].read_text())
    assert config["rule_files"] == [f"{installed['rules_dir']}/*.rules.yml"]
    assert [job["job_name"] for job in config["scrape_configs"]] == ["prometheus", "node"]
    checked = promtool("check", "config", str(installed["config"]))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout
    # The unit tests are outside the glob Prometheus loads.
    assert not list(installed["rules_dir"].glob("*.test.yml"))
    rerun, _ = apply_role(installed["tmp_path"])
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert recap(rerun)["changed"] == 0, rerun.stdout[-3000:]


@needs_promtool
def test_a_cpu_threshold_of_90_makes_the_unit_tests_fail(tmp_path):
    result, paths = apply_role(tmp_path, monitoring_alerts_cpu_percent=90)
    # The rules are valid, so promtool check rules let them in; the unit tests then fail the play.
    assert result.returncode != 0
    assert recap(result)["failed"] == 1
    assert "Run the unit tests" in result.stdout and "CdpDatabaseCpuHigh" in result.stdout
    rules = (paths["rules_dir"] / "cdp_alerts.rules.yml").read_text()
    assert "> 90" in rules
    tested = promtool("test", "rules", "cdp_alerts.test.yml", cwd=paths["rules_dir"] / "tests")
    assert tested.returncode != 0
    assert "CPU at 81% fires after 5 minutes above the threshold" in tested.stdout + tested.stderr
    assert "alertname: CdpDatabaseCpuHigh" in tested.stdout + tested.stderr
    # Every other rule still passes its tests.
    for other in ("Connections at 91%", "11 failed logins", "6% of an integration", "3 consecutive failures",
                  "The old source lagging", "A reverse replication slot unused", "A reverse replication window"):
        assert other not in tested.stdout + tested.stderr


@needs_promtool
def test_promtool_rejects_broken_rules_before_they_replace_the_installed_ones(tmp_path):
    good, paths = apply_role(tmp_path, monitoring_alerts_unit_tests=False)
    assert good.returncode == 0, good.stdout[-3000:]
    rules_file = paths["rules_dir"] / "cdp_alerts.rules.yml"
    before = rules_file.read_text()
    broken, _ = apply_role(tmp_path, monitoring_alerts_unit_tests=False, monitoring_alerts_cpu_for="5 minutes")
    assert broken.returncode != 0
    assert "failed to validate" in broken.stdout
    assert rules_file.read_text() == before


@needs_promtool
@pytest.mark.skipif(not os.access(PROMETHEUS, os.X_OK), reason="prometheus not installed")
def test_a_running_prometheus_reloads_over_http_and_serves_the_rules(tmp_path):
    (tmp_path / "prometheus.yml").write_text(PROMETHEUS_CONFIG)
    port = free_port()
    server = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                               f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                               "--web.enable-lifecycle"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                http_get(f"http://127.0.0.1:{port}/-/ready")
                break
            except OSError:
                assert time.time() < deadline, "prometheus did not start"
                time.sleep(0.5)
        assert json.loads(http_get(f"http://127.0.0.1:{port}/api/v1/rules"))["data"]["groups"] == []
        result, _ = apply_role(tmp_path, monitoring_alerts_unit_tests=False, monitoring_alerts_reload_method="http",
                               monitoring_alerts_prometheus_url=f"http://127.0.0.1:{port}")
        assert result.returncode == 0, result.stdout[-3000:]
        assert "Reload Prometheus over HTTP" in result.stdout
        groups = json.loads(http_get(f"http://127.0.0.1:{port}/api/v1/rules"))["data"]["groups"]
        assert {group["name"]: [rule["name"] for rule in group["rules"]] for group in groups} == \
            {name: [alert for alert, _threshold, _for in alerts] for name, alerts in ALL_ALERTS.items()}
        assert all(rule["health"] != "err" for group in groups for rule in group["rules"])
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_an_unknown_reload_method_is_refused(tmp_path):
    result, paths = apply_role(tmp_path, monitoring_alerts_reload_method="kill")
    assert result.returncode != 0
    assert "use systemd" in result.stdout
    assert not paths["rules_dir"].exists()


# --- Exporter queries ----------------------------------------------------------------------------------


def app_tables_ddl():
    """The tables the application writes, exactly as the role documents them (and its README shows)."""
    ddl = (ROLE_DIR / "files" / "cdp_alert_tables.sql").read_text()
    readme = (ROLE_DIR / "README.md").read_text()
    section = readme.split("### Tables the application writes", 1)[1]
    assert re.search(r"```sql\n(.*?)```", section, re.S).group(1) in ddl, "README and files/cdp_alert_tables.sql differ"
    return ddl


@pytest.fixture(scope="module")
def exporter_queries(tmp_path_factory):
    """The queries file the role renders with its defaults (on a host without the rules: no promtool needed)."""
    tmp_path = tmp_path_factory.mktemp("monitoring_alerts_queries")
    result, paths = apply_role(tmp_path, monitoring_alerts_install_rules=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return paths["queries"], yaml.safe_load(paths["queries"].read_text())


@pytest.fixture
def cdp_db(scratch, source_server):
    params = scratch.create(source_server, "mon")
    generate.load(params, 0.02)
    return params


def run(params, sql, args=None):
    conn = connect(params)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            if cur.description is None:
                return None, None
            return [column.name for column in cur.description], cur.fetchall()
    finally:
        conn.close()


def metric_columns(query):
    return [name for metric in query["metrics"] for name in metric]


def test_every_exporter_query_runs_on_a_cdp_database_and_returns_its_metric_columns(exporter_queries, cdp_db):
    _, queries = exporter_queries
    assert set(queries) == {"cdp_scheduled_report", "cdp_failed_logins", "cdp_integration_calls",
                            "pgmigrate_reverse_replication"}
    for query in queries.values():
        assert query["master"] is True
        usages = {spec["usage"] for metric in query["metrics"] for spec in metric.values()}
        assert usages <= {"LABEL", "GAUGE", "COUNTER"} and "GAUGE" in usages
    # On the CDP schema alone, the report query runs; the other two need the application's tables.
    columns, rows = run(cdp_db, queries["cdp_scheduled_report"]["query"])
    assert columns == metric_columns(queries["cdp_scheduled_report"])
    run(cdp_db, app_tables_ddl())
    for name, query in queries.items():
        columns, rows = run(cdp_db, query["query"])
        assert columns == metric_columns(query), name
    _, rows = run(cdp_db, queries["cdp_integration_calls"]["query"])
    assert len(rows) == generate.expected_row_counts(0.02)["integrations"] * 3
    _, rows = run(cdp_db, queries["cdp_failed_logins"]["query"])
    assert rows == [(0,)]
    # No reverse replication on this database: no row, no error.
    assert run(cdp_db, queries["pgmigrate_reverse_replication"]["query"])[1] == []


def add_report(params, status="active"):
    _, rows = run(params, """
        INSERT INTO scheduled_reports (name, presentation_id, schedule_cron, status)
        SELECT 'Monitoring test ' || %s, id, '0 8 * * 1', %s FROM presentations LIMIT 1 RETURNING id::text""",
                  (status, status))
    return rows[0][0]


def add_runs(params, report_id, statuses):
    """Runs of the report, oldest first, one an hour up to an hour ago."""
    for age, status in enumerate(reversed(statuses), start=1):
        run(params, """
            INSERT INTO report_executions (scheduled_report_id, status, started_at, finished_at)
            VALUES (%s, %s, now() - %s * interval '1 hour', now() - %s * interval '1 hour')""",
            (report_id, status, age, age))


def test_the_report_query_counts_the_failures_since_the_last_success(exporter_queries, cdp_db):
    _, queries = exporter_queries
    failing = add_report(cdp_db)
    add_runs(cdp_db, failing, ["failed", "failed", "succeeded", "failed", "timeout", "cancelled", "failed",
                               "running"])
    recovered = add_report(cdp_db)
    add_runs(cdp_db, recovered, ["failed", "failed", "failed", "succeeded"])
    never_succeeded = add_report(cdp_db, "error")
    add_runs(cdp_db, never_succeeded, ["timeout", "failed"])
    paused = add_report(cdp_db, "paused")
    add_runs(cdp_db, paused, ["failed"] * 5)
    _, rows = run(cdp_db, queries["cdp_scheduled_report"]["query"])
    streaks = {report_id: failures for report_id, _name, failures in rows}
    assert streaks[failing] == 3
    assert streaks[never_succeeded] == 2
    assert recovered not in streaks and paused not in streaks
    assert all(failures > 0 for failures in streaks.values())


def test_the_login_and_integration_queries_count_the_last_window(exporter_queries, cdp_db):
    _, queries = exporter_queries
    run(cdp_db, app_tables_ddl())
    run(cdp_db, """
        INSERT INTO login_attempts (attempted_at, email, succeeded, failure_reason)
        SELECT now() - k * interval '5 seconds', 'someone@example.com', false, 'bad_password'
        FROM generate_series(1, 11) AS k
        UNION ALL SELECT now() - interval '10 seconds', 'someone@example.com', true, NULL
        UNION ALL SELECT now() - interval '2 minutes', 'someone@example.com', false, 'bad_password'
        FROM generate_series(1, 20)""")
    _, rows = run(cdp_db, queries["cdp_failed_logins"]["query"])
    assert rows == [(11,)]

    _, rows = run(cdp_db, "SELECT id, name FROM integrations WHERE provider = 'braze' ORDER BY name LIMIT 1")
    braze_id, braze_name = rows[0]
    run(cdp_db, """
        INSERT INTO integration_calls (integration_id, called_at, outcome)
        SELECT %(id)s::uuid, now() - interval '1 minute', CASE WHEN k <= 6 THEN 'timeout' ELSE 'success' END
        FROM generate_series(1, 100) AS k
        UNION ALL SELECT %(id)s::uuid, now() - interval '10 minutes', 'timeout' FROM generate_series(1, 50)""",
        {"id": braze_id})
    _, rows = run(cdp_db, queries["cdp_integration_calls"]["query"])
    braze = {outcome: calls for name, _provider, outcome, calls in rows if name == braze_name}
    assert braze == {"success": 94, "error": 0, "timeout": 6}
    assert sum(calls for name, _p, _o, calls in rows if name != braze_name) == 0


def reverse_publication(params, name, record):
    """A publication as playbooks/zero_downtime.yml leaves it on the new database: its record as the comment
    (module_utils/pgmigrate/replication/reverse_replication.py writes it so)."""
    run(params, "CREATE TABLE IF NOT EXISTS zr_rows (id bigint PRIMARY KEY, note text)")
    run(params, f'CREATE PUBLICATION "{name}" FOR TABLE zr_rows WITH (publish_via_partition_root = true)')
    if record is not None:
        comment = record if isinstance(record, str) else json.dumps(
            {"tool": TOOL_MARK, "run": name[len(REVERSE_PREFIX):], "direction": "reverse",
             "old_source_read_only": "off", "replica_identity_full": {}, **record}, sort_keys=True)
        run(params, f'COMMENT ON PUBLICATION "{name}" IS %s', (comment,))


def reverse_rows(params, query):
    """The reverse replication query's rows by publication, each as {column: value}."""
    columns, rows = run(params, query)
    return {row[0]: dict(zip(columns, row, strict=True)) for row in rows}


def drop_slot(params, name):
    """The slot, once its consumer is gone (a slot left behind blocks DROP DATABASE and holds WAL)."""
    deadline = time.time() + 30
    while True:
        _, rows = run(params, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (name,))
        if not rows:
            return
        if rows[0][0] is None:
            try:
                run(params, "SELECT pg_drop_replication_slot(%s)", (name,))
                return
            except (psycopg2.errors.ObjectInUse, psycopg2.errors.UndefinedObject):
                pass
        else:
            run(params, "SELECT pg_terminate_backend(%s, 1000)", (rows[0][0],))
        assert time.time() < deadline, f"slot {name} still in use"
        time.sleep(0.2)


@pytest.mark.parametrize("server_name", ["source_server", "target18_server"], ids=["pg15", "pg18"])
def test_the_reverse_replication_query_reports_the_slot_and_the_window(exporter_queries, scratch, request,
                                                                       server_name):
    query = exporter_queries[1]["pgmigrate_reverse_replication"]["query"]
    server = request.getfixturevalue(server_name)
    params = scratch.create(server, "zr")
    assert run(params, query)[1] == []  # no reverse replication: zero rows, no error
    # Slot names are the server's, not the database's: unique ones, so that concurrent runs do not collide.
    suffix = uuid.uuid4().hex[:8]
    over, prepared, hand = (f"{REVERSE_PREFIX}x_{suffix}", f"{REVERSE_PREFIX}p_{suffix}", f"{REVERSE_PREFIX}h_{suffix}")
    now = time.time()
    reverse_publication(params, over, {"window_hours": 2, "since_epoch": now - 7260, "until_epoch": now - 60})
    reverse_publication(params, prepared, {"window_hours": 48})  # the old source has not subscribed yet
    reverse_publication(params, hand, "edited by hand, not JSON")
    run(params, "CREATE PUBLICATION not_ours FOR TABLE zr_rows")
    run(params, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (over,))
    stream = None
    try:
        run(params, "INSERT INTO zr_rows SELECT k, repeat('x', 100) FROM generate_series(1, 2000) AS k")
        assert run(params, query)[0] == metric_columns(exporter_queries[1]["pgmigrate_reverse_replication"])
        found = reverse_rows(params, query)
        assert set(found) == {over, prepared, hand}
        window = found[over]
        assert window["slot_present"] == 1 and window["slot_active"] == 0
        # The rows written since the slot was made are WAL the old source has not confirmed.
        assert 100_000 < window["lag_bytes"] <= window["retained_wal_bytes"]
        assert -120 < window["window_remaining_seconds"] < -60
        assert 7260 <= window["window_age_seconds"] < 7320
        for name in (prepared, hand):  # no slot, no window: the documented sentinels
            assert (found[name]["slot_present"], found[name]["slot_active"]) == (0, 0)
            assert (found[name]["lag_bytes"], found[name]["retained_wal_bytes"]) == (-1, -1)
            assert found[name]["window_remaining_seconds"] is None and found[name]["window_age_seconds"] is None

        # A subscriber (as the old source's) connects and confirms what it received: the slot is active and
        # the lag drops (not to 0: the server's other databases write WAL too).
        lag_before = window["lag_bytes"]
        stream = psycopg2.connect(**{key: params[key] for key in ("host", "port", "user", "password", "dbname")},
                                  connection_factory=psycopg2.extras.LogicalReplicationConnection)
        with stream.cursor() as cur:
            cur.start_replication(slot_name=over, decode=False,
                                  options={"proto_version": "1", "publication_names": over})
            deadline = time.time() + 60
            while True:
                if cur.read_message() is not None:
                    continue  # drain what the walsender has sent
                if cur.wal_end:
                    cur.send_feedback(flush_lsn=cur.wal_end, reply=True, force=True)
                window = reverse_rows(params, query)[over]
                if window["slot_active"] == 1 and 0 <= window["lag_bytes"] < lag_before:
                    break
                assert time.time() < deadline, (lag_before, window)
                time.sleep(0.1)
    finally:
        if stream is not None:
            stream.close()
        drop_slot(params, over)
    window = reverse_rows(params, query)[over]
    assert (window["slot_present"], window["slot_active"], window["lag_bytes"]) == (0, 0, -1)


@pytest.mark.skipif(not POSTGRES_EXPORTER, reason="postgres_exporter not installed (or set PGM_POSTGRES_EXPORTER)")
def test_postgres_exporter_serves_the_metrics_the_rules_read(exporter_queries, cdp_db, tmp_path):
    queries_file, _ = exporter_queries
    run(cdp_db, app_tables_ddl())
    run(cdp_db, """INSERT INTO login_attempts (email, succeeded)
                   SELECT 'someone@example.com', false FROM generate_series(1, 11)""")
    report = add_report(cdp_db)
    add_runs(cdp_db, report, ["succeeded", "failed", "failed", "failed"])
    reverse = f"{REVERSE_PREFIX}e_{uuid.uuid4().hex[:8]}"  # prepared, no slot (none left behind)
    reverse_publication(cdp_db, reverse, {"window_hours": 48})
    port = free_port()
    # The password reaches the exporter through its environment, never its command line.
    dsn = (f"host={cdp_db['host']} port={cdp_db['port']} user={cdp_db['user']} dbname={cdp_db['dbname']} "
           f"password={cdp_db['password']} sslmode=disable")
    env = {**os.environ, "DATA_SOURCE_NAME": dsn}
    with (tmp_path / "exporter.log").open("w") as log:
        exporter = subprocess.Popen([POSTGRES_EXPORTER, f"--web.listen-address=127.0.0.1:{port}",
                                     f"--extend.query-path={queries_file}"],
                                    env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            text, deadline = "", time.time() + 30
            while "cdp_failed_logins_last_minute" not in text and time.time() < deadline:
                time.sleep(0.5)
                try:
                    text = http_get(f"http://127.0.0.1:{port}/metrics")
                except OSError:
                    continue
        finally:
            exporter.terminate()
            exporter.wait(timeout=10)
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            samples[series] = float(value)

    def value(name, **labels):
        found = [v for series, v in samples.items() if series.split("{")[0] == name
                 and all(f'{key}="{val}"' in series for key, val in labels.items())]
        assert len(found) == 1, (name, labels, (tmp_path / "exporter.log").read_text()[-2000:])
        return found[0]

    assert value("pg_exporter_last_scrape_error") == 0
    assert value("cdp_failed_logins_last_minute") == 11
    assert value("cdp_scheduled_report_consecutive_failures", report_id=report) == 3
    assert value("cdp_integration_calls_recent", integration="Braze (production)", outcome="timeout") == 0
    assert value("pg_settings_max_connections") > 0
    # The reverse replication's sentinels as the exporter serves them: -1 without a slot, NaN without a window.
    assert value("pgmigrate_reverse_replication_lag_bytes", publication=reverse) == -1
    assert value("pgmigrate_reverse_replication_slot_present", publication=reverse) == 0
    assert value("pgmigrate_reverse_replication_slot_active", publication=reverse) == 0
    assert math.isnan(value("pgmigrate_reverse_replication_window_remaining_seconds", publication=reverse))
    assert any(series.startswith("pg_stat_activity_count{") for series in samples)
