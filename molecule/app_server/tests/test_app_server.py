"""Outcomes on the CDP application host after each step of the app_server scenario (molecule.yml).

Each step's playbook writes its name to /var/lib/molecule-step on the host; the tests of the other steps
are skipped. The steps: deployed (converge), maintenance_on, maintenance_off, switched_to_target,
switched_back. Requests and database sessions are made from the host itself, with the application's own
env file, as the application would.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))

from scenario import dbname, port  # noqa: E402

STEP_FILE = "/var/lib/molecule-step"
APP = f"http://127.0.0.1:{port(28000)}"
SITE = f"http://127.0.0.1:{port(28080)}"
ENV_FILE = "/etc/cdp/cdp.env"
WORKER_LOG = "/var/log/cdp/worker.log"
STATE_FILE = "/var/lib/cdp-maintenance/state.json"
CRON_FILE = "/etc/cron.d/cdp-report"
DBNAME = dbname("cdp_molecule_app")
APP_ROLE = dbname("cdp_molecule_app")
SOURCE_PORT = int(os.environ.get("PGM_SOURCE_PORT", "55432"))
TARGET_PORT = int(os.environ.get("PGM_TARGET_PORT", "55433"))

APP_RUNNING = ("deployed", "maintenance_off", "switched_to_target", "switched_back")
ON_SOURCE = ("deployed", "maintenance_on", "maintenance_off", "switched_back")
# The playbook of each side-effect step: run again, it must change nothing.
STEP_PLAYBOOKS = {
    "maintenance_on": "maintenance_on.yml",
    "maintenance_off": "maintenance_off.yml",
    "switched_to_target": "switch_to_target.yml",
    "switched_back": "switch_back.yml",
}

# A new session through the application's DATABASE_URL that updates one team row, then rolls back.
WRITE_PROBE = """
import sys
sys.path.insert(0, "/opt/cdp")
import psycopg2, psycopg2.errors
from cdp_env import load_env_file
conn = psycopg2.connect(load_env_file("/etc/cdp/cdp.env")["DATABASE_URL"], connect_timeout=5)
cur = conn.cursor()
cur.execute("SELECT inet_server_port()")
port = cur.fetchone()[0]
try:
    cur.execute("UPDATE public.team SET updated_at = updated_at WHERE id = (SELECT id FROM public.team LIMIT 1)")
    print(port, "accepted", cur.rowcount)
except psycopg2.errors.ReadOnlySqlTransaction:
    print(port, "refused")
conn.rollback()
"""


@pytest.fixture(scope="module")
def step(host):
    return host.file(STEP_FILE).content_string.strip()


def expect(step, *steps):
    if step not in steps:
        pytest.skip(f"not checked after step {step}")


def http_get(host, url):
    """(status, headers text, body) of a GET made on the host."""
    out = host.check_output(f"curl -sS --max-time 10 -D - {url}")
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    return int(head.split()[1]), head, body


def health(host, url=APP):
    status, _, body = http_get(host, f"{url}/health")
    assert status == 200, body
    return json.loads(body)


def write_probe(host):
    return host.check_output(f"python3 - <<'EOF'\n{WRITE_PROBE}\nEOF").split()


def worker_log_grows(host, seconds=6):
    before = host.file(WORKER_LOG).size
    time.sleep(seconds)
    return host.file(WORKER_LOG).size > before


def last_heartbeat(host):
    lines = [line for line in host.file(WORKER_LOG).content_string.splitlines() if " heartbeat " in line]
    return lines[-1] if lines else ""


# --- every step -------------------------------------------------------------------------------------------


def test_web_application_and_nginx_run(host):
    for unit in ("cdp-web.service", "nginx.service"):
        assert host.service(unit).is_running, unit
        assert host.service(unit).is_enabled, unit


def test_application_answers_directly(host, step):
    body = health(host)
    assert body["status"] == "ok"
    assert body["database"] == DBNAME
    assert body["team_members"] > 0


def test_env_file_is_root_only_and_password_never_on_a_command_line(host):
    env = host.file(ENV_FILE)
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)
    password = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "cdp_molecule_app.password").read_text().strip()
    assert password in env.content_string
    assert password not in host.check_output("ps -eww -o args")
    for unit in ("cdp-web", "cdp-worker", "cdp-report"):
        assert password not in host.file(f"/etc/systemd/system/{unit}.service").content_string


# --- the application running normally -----------------------------------------------------------------------


def test_site_serves_the_application(host, step):
    expect(step, *APP_RUNNING)
    status, _, body = http_get(host, f"{SITE}/health")
    assert status == 200, body
    assert json.loads(body)["status"] == "ok"


def test_background_jobs_run(host, step):
    expect(step, *APP_RUNNING)
    for unit in ("cdp-worker.service", "cdp-report.timer"):
        assert host.service(unit).is_running, unit
        assert host.service(unit).is_enabled, unit
    assert host.file(CRON_FILE).exists
    assert worker_log_grows(host)


def test_application_role_can_write(host, step):
    expect(step, *APP_RUNNING)
    port, outcome, rows = write_probe(host)
    assert outcome == "accepted" and rows == "1"


def test_no_maintenance_state_is_left(host, step):
    expect(step, *APP_RUNNING)
    assert not host.file(STATE_FILE).exists
    assert not host.file("/var/lib/cdp-maintenance/maintenance.on").exists


def test_application_uses_the_source(host, step):
    expect(step, *ON_SOURCE)
    assert health(host)["server_port"] == SOURCE_PORT
    assert write_probe(host)[0] == str(SOURCE_PORT)


# --- maintenance mode on ------------------------------------------------------------------------------------


def test_site_answers_503_with_the_maintenance_page(host, step):
    expect(step, "maintenance_on")
    for path in ("/", "/health", "/any/page"):
        status, headers, body = http_get(host, f"{SITE}{path}")
        assert status == 503, path
        assert "Scheduled maintenance" in body
        assert re.search(r"(?im)^retry-after: \d+", headers)


def test_background_jobs_are_stopped(host, step):
    expect(step, "maintenance_on")
    for unit in ("cdp-worker.service", "cdp-report.timer"):
        assert not host.service(unit).is_running, unit
        assert not host.service(unit).is_enabled, unit
    assert not host.file(CRON_FILE).exists
    assert host.file(f"/var/lib/cdp-maintenance/cron.d/{os.path.basename(CRON_FILE)}").exists
    assert not worker_log_grows(host)


def test_application_role_cannot_write(host, step):
    expect(step, "maintenance_on")
    assert write_probe(host)[1] == "refused"
    status, _, body = http_get(host, f"{APP}/health/write")
    assert status == 503 and json.loads(body)["status"] == "read_only"
    assert health(host)["read_only"] is True


def test_sessions_opened_before_were_terminated(host, step):
    expect(step, "maintenance_on")
    # Its pg_sleep(900) was cut short: by pg_terminate_backend (57P01 when libpq still read the reason).
    outcome = host.file("/run/cdp-molecule-session").content_string.strip()
    assert outcome.startswith("ended"), outcome
    assert re.search(r"57P01|administrator command|server closed the connection unexpectedly", outcome), outcome


def test_state_before_maintenance_is_recorded(host, step):
    expect(step, "maintenance_on")
    state_file = host.file(STATE_FILE)
    assert (state_file.user, state_file.mode) == ("root", 0o600)
    state = json.loads(state_file.content_string)
    units = {unit["Id"]: unit for unit in state["units"]}
    assert units["cdp-worker.service"]["ActiveState"] == "active"
    assert units["cdp-worker.service"]["UnitFileState"] == "enabled"
    assert units["cdp-report.timer"]["ActiveState"] == "active"
    assert state["cron_files"] == [CRON_FILE]
    assert state["database"]["role"] == APP_ROLE and state["database"]["previous"] is None


# --- after maintenance mode off -----------------------------------------------------------------------------


def test_heartbeats_resumed_on_the_source(host, step):
    expect(step, "maintenance_off", "switched_back")
    assert f"server_port={SOURCE_PORT} read_only=off" in last_heartbeat(host)


# --- connection switch --------------------------------------------------------------------------------------


def test_application_uses_the_target(host, step):
    expect(step, "switched_to_target")
    for url in (APP, SITE):
        body = health(host, url)
        assert (body["database"], body["server_port"]) == (DBNAME, TARGET_PORT)
    assert write_probe(host)[:2] == [str(TARGET_PORT), "accepted"]


def test_worker_follows_the_target(host, step):
    expect(step, "switched_to_target")
    deadline = time.time() + 20
    while f"server_port={TARGET_PORT}" not in last_heartbeat(host) and time.time() < deadline:
        time.sleep(1)
    assert f"server_port={TARGET_PORT} read_only=off" in last_heartbeat(host)


def test_previous_env_file_is_kept_for_the_rollback(host, step):
    expect(step, "switched_to_target", "switched_back")
    previous = host.file(f"{ENV_FILE}.previous")
    assert (previous.user, previous.mode) == ("root", 0o600)
    url = next(line for line in previous.content_string.splitlines() if line.startswith("DATABASE_URL="))
    assert f":{SOURCE_PORT}/{DBNAME}" in url


# --- each side effect is idempotent -------------------------------------------------------------------------


def test_running_the_step_again_changes_nothing(step):
    expect(step, *STEP_PLAYBOOKS)
    playbook = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"], STEP_PLAYBOOKS[step])
    ansible_playbook = Path(os.environ.get("VIRTUAL_ENV", ""), "bin", "ansible-playbook")
    # Tagged like molecule's own idempotence step skips: the scenario's set-up of a step, not the role.
    command = [str(ansible_playbook) if ansible_playbook.exists() else "ansible-playbook",
               "-i", os.environ["MOLECULE_INVENTORY_FILE"], "--skip-tags", "molecule-idempotence-notest",
               str(playbook)]
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, env=env)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    recap = [line for line in run.stdout.splitlines() if re.search(r"\bok=\d+", line)]
    assert recap and all(re.search(r"\bchanged=0\b", line) for line in recap), "\n".join(recap)
