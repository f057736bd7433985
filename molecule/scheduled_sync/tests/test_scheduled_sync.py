"""Outcomes on the control host after each step of the scheduled_sync scenario (molecule.yml).

Each step's playbook writes its name to /var/lib/molecule-step on the host; the tests of the other step are
skipped. installed (converge.yml): the timer waits for the schedule; the service, started as the timer starts
it, runs the configured command as the configured user with the vault password readable through the systemd
credential alone, and the password shows nowhere; a failed or hung run leaves the service failed; bad input
fails before anything changes. removed (remove.yml, state absent): the units are gone, and running it again
changes nothing. The project's scripts/pgmigrate-run is the stand-in files/fake_pgmigrate_run.py, which
records every run in fake-runs.jsonl.
"""

import hashlib
import json
import os
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

STEP_FILE = "/var/lib/molecule-step"
PREFIX = "pgmigrate-staging-sync"
SERVICE = f"{PREFIX}.service"
TIMER = f"{PREFIX}.timer"
UNIT_FILES = [f"/etc/systemd/system/{SERVICE}", f"/etc/systemd/system/{TIMER}"]
RUNNER = f"/usr/local/libexec/{PREFIX}-run"
PROJECT_DIR = "/srv/pgmigrate"
PGMIGRATE_RUN = f"{PROJECT_DIR}/scripts/pgmigrate-run"
ARTIFACTS = f"{PROJECT_DIR}/artifacts"
RUNS_FILE = f"{ARTIFACTS}/fake-runs.jsonl"
LOG_FILE = f"{ARTIFACTS}/{PREFIX}.log"
BEHAVIOUR_FILE = f"{PROJECT_DIR}/fixture-behaviour"
VAULT_SOURCE = f"/etc/pgmigrate/{PREFIX}.vault-password"
FAILURE_MARK = f"/var/lib/sync-failures/{SERVICE}"
# The scenario's settings (molecule.yml).
USER, GROUP = "pgsync", "pgsync-runs"
ON_CALENDAR = "Sun *-*-* 02:00:00 UTC"
RANDOMIZED_DELAY = timedelta(minutes=10)
EXTRA_ARGS = ["-e", 'staging_sync_reason=scheduled 100% $HOME "quoted"']
SCENARIO = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])


@pytest.fixture(scope="module")
def step(host):
    return host.file(STEP_FILE).content_string.strip()


def expect(step, *steps):
    if step not in steps:
        pytest.skip(f"not checked after step {step}")


@pytest.fixture(scope="module")
def password():
    """The vault password molecule.yml generated into the ephemeral directory."""
    return Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "vault.password").read_text().split()[0]


def show(host, unit, *properties):
    out = host.check_output(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in properties))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def runs(host):
    """Every run the stand-in ansible-playbook recorded."""
    if not host.file(RUNS_FILE).exists:
        return []
    return [json.loads(line) for line in host.file(RUNS_FILE).content_string.splitlines()]


def start_service(host, behaviour=None):
    """systemctl start, as the timer starts the service; the stand-in behaves as told ("exit 3", "sleep 5")."""
    if behaviour:
        host.check_output(f"printf '%s\\n' '{behaviour}' > {BEHAVIOUR_FILE} && chmod 0644 {BEHAVIOUR_FILE}")
    else:
        host.check_output(f"rm -f {BEHAVIOUR_FILE}")
    try:
        return host.run(f"systemctl start {SERVICE}")
    finally:
        host.check_output(f"rm -f {BEHAVIOUR_FILE}")


def run_playbook(playbook, *extra_vars):
    """ansible-playbook with the scenario's inventory, as molecule runs it; extra_vars as JSON."""
    ansible_playbook = Path(os.environ.get("VIRTUAL_ENV", ""), "bin", "ansible-playbook")
    command = [str(ansible_playbook) if ansible_playbook.exists() else "ansible-playbook",
               "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(SCENARIO / playbook)]
    for variables in extra_vars:
        command += ["-e", json.dumps(variables)]
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, env=env)


def unit_state(host):
    """What a failed change must leave as it was: the installed files and the timer."""
    return ({path: host.file(path).sha256sum for path in [*UNIT_FILES, RUNNER]},
            show(host, TIMER, "ActiveState", "UnitFileState"))


# --- installed: the timer ---------------------------------------------------------------------------------------


def test_timer_is_enabled_and_waiting(host, step):
    expect(step, "installed")
    timer = host.service(TIMER)
    assert timer.is_enabled and timer.is_running
    props = show(host, TIMER, "Triggers", "Persistent", "RandomizedDelayUSec", "TimersCalendar")
    assert props["Triggers"] == SERVICE
    assert props["Persistent"] == "yes"
    assert props["RandomizedDelayUSec"] == "10min"
    assert f"OnCalendar={ON_CALENDAR} ;" in props["TimersCalendar"]


def test_next_elapse_matches_the_schedule(host, step):
    expect(step, "installed")
    analyzed = host.check_output(f"systemd-analyze calendar '{ON_CALENDAR}'")
    scheduled = re.search(r"Next elapse: (.+)", analyzed).group(1).strip()
    parse = lambda text: datetime.strptime(text, "%a %Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)  # noqa: E731
    next_elapse = parse(show(host, TIMER, "NextElapseUSecRealtime")["NextElapseUSecRealtime"])
    # The next Sunday at 02:00 UTC, plus at most the randomized delay.
    assert parse(scheduled) <= next_elapse <= parse(scheduled) + RANDOMIZED_DELAY
    assert parse(scheduled).strftime("%a %H:%M") == "Sun 02:00"
    listed = host.check_output(f"systemctl list-timers --no-pager {TIMER}")
    assert next_elapse.strftime("%Y-%m-%d %H:%M:%S") in listed and SERVICE in listed


# --- installed: a run, as the timer starts it -------------------------------------------------------------------


@pytest.fixture(scope="module")
def successful_run(host, step):
    expect(step, "installed")
    before = len(runs(host))
    result = start_service(host)
    assert result.rc == 0, result.stderr
    recorded = runs(host)
    assert len(recorded) == before + 1
    return recorded[-1]


def test_the_service_runs_the_configured_command(host, successful_run):
    credential = f"{successful_run['env']['CREDENTIALS_DIRECTORY']}/vault-password"
    assert successful_run["argv"] == [PGMIGRATE_RUN, "--playbook", "playbooks/staging_sync.yml",
                                      "-i", "inventories/staging", *EXTRA_ARGS, "--vault-password-file", credential]
    assert successful_run["cwd"] == PROJECT_DIR
    assert (successful_run["user"], successful_run["group"]) == (USER, GROUP)
    assert successful_run["env"]["LANG"] == "C.UTF-8"
    assert successful_run["no_new_privs"] is True
    props = show(host, SERVICE, "ActiveState", "Result", "ExecMainStatus")
    assert (props["ActiveState"], props["Result"], props["ExecMainStatus"]) == ("inactive", "success", "0")


def test_the_vault_password_is_readable_through_the_credential_alone(host, successful_run, password):
    assert successful_run["vault_error"] is None
    assert successful_run["vault_sha256"] == hashlib.sha256(password.encode()).hexdigest()
    assert successful_run["vault_file"].startswith(f"/run/credentials/{SERVICE}/")
    # The run user cannot read the file the credential is loaded from, nor can anyone but root.
    assert successful_run["source_readable"] is False
    source = host.file(VAULT_SOURCE)
    assert (source.user, source.group, source.mode) == ("root", "root", 0o600)
    assert host.file(os.path.dirname(VAULT_SOURCE)).mode == 0o700
    # The credential goes away with the run.
    assert not host.file(f"/run/credentials/{SERVICE}").exists


def test_the_output_is_in_the_journal_and_the_log_file(host, successful_run):
    invocation = successful_run["env"]["INVOCATION_ID"]
    journal = host.check_output(f"journalctl --no-pager -o cat _SYSTEMD_INVOCATION_ID={invocation}")
    assert "stand-in ansible-playbook ran playbooks/staging_sync.yml as pgsync" in journal
    log = host.file(LOG_FILE)
    assert (log.user, log.group, log.mode) == (USER, GROUP, 0o640)
    run_lines = [line for line in log.content_string.splitlines() if invocation in line]
    assert len(run_lines) == 2 and run_lines[0].endswith("started")
    assert run_lines[1].endswith("ended with exit status 0")
    assert "PLAY RECAP *** stand-in: ok=1" in log.content_string


def test_the_vault_password_shows_nowhere(host, successful_run, password):
    places = {path: host.file(path).content_string for path in [*UNIT_FILES, RUNNER, LOG_FILE, RUNS_FILE]}
    for unit in (SERVICE, TIMER):
        places[f"systemctl show {unit}"] = host.check_output(f"systemctl show {unit}")
        places[f"systemctl cat {unit}"] = host.check_output(f"systemctl cat {unit}")
        places[f"systemctl status {unit}"] = host.run(f"systemctl status --no-pager -l {unit}").stdout
    # Every field of every journal entry since boot.
    places["journal"] = host.check_output("journalctl --no-pager -o verbose")
    leaks = [place for place, text in places.items() if password in text]
    assert not leaks, f"the vault password appears in {leaks}"


def test_the_service_is_sandboxed(host, step):
    expect(step, "installed")
    props = show(host, SERVICE, "Type", "User", "Group", "WorkingDirectory", "NoNewPrivileges", "PrivateTmp",
                 "ProtectSystem", "ReadWritePaths", "TimeoutStartUSec", "OnFailure", "LoadCredential")
    assert props["Type"] == "oneshot"
    assert (props["User"], props["Group"], props["WorkingDirectory"]) == (USER, GROUP, PROJECT_DIR)
    assert (props["NoNewPrivileges"], props["PrivateTmp"], props["ProtectSystem"]) == ("yes", "yes", "full")
    assert props["ReadWritePaths"] == ARTIFACTS
    assert props["TimeoutStartUSec"] == "10s"
    assert props["OnFailure"] == f"scheduled-sync-failed@{SERVICE}.service"


# --- installed: one run at a time, failures -----------------------------------------------------------------------


def test_a_start_while_a_run_is_going_starts_no_second_run(host, step):
    expect(step, "installed")
    before = len(runs(host))
    host.check_output(f"printf 'sleep 3\\n' > {BEHAVIOUR_FILE} && chmod 0644 {BEHAVIOUR_FILE}")
    try:
        host.check_output(f"systemctl start --no-block {SERVICE}")
        for _ in range(50):
            if show(host, SERVICE, "ActiveState")["ActiveState"] == "activating":
                break
            time.sleep(0.1)
        # What the timer does when it elapses during a run: the start joins the running one.
        started = time.monotonic()
        assert host.run(f"systemctl start {SERVICE}").rc == 0
        assert time.monotonic() - started >= 2
    finally:
        host.check_output(f"rm -f {BEHAVIOUR_FILE}")
    assert len(runs(host)) == before + 1


def test_a_failed_run_leaves_the_service_failed_with_its_exit_status(host, step):
    expect(step, "installed")
    host.check_output(f"rm -f {FAILURE_MARK}")
    result = start_service(host, "exit 3")
    assert result.rc != 0
    props = show(host, SERVICE, "ActiveState", "Result", "ExecMainStatus")
    assert (props["ActiveState"], props["Result"], props["ExecMainStatus"]) == ("failed", "exit-code", "3")
    status = host.run(f"systemctl status --no-pager {SERVICE}")
    assert status.rc == 3 and "status=3/NOTIMPLEMENTED" in status.stdout
    assert "stand-in ansible-playbook fails with exit status 3" in host.check_output(
        f"journalctl --no-pager -o cat -u {SERVICE} -n 20")
    assert host.file(LOG_FILE).content_string.rstrip().endswith("ended with exit status 3")
    # The OnFailure= unit ran.
    for _ in range(50):
        if host.file(FAILURE_MARK).exists:
            break
        time.sleep(0.1)
    assert host.file(FAILURE_MARK).exists


def test_a_hung_run_is_killed_at_its_time_limit(host, step):
    expect(step, "installed")
    started = time.monotonic()
    result = start_service(host, "sleep 120")
    assert result.rc != 0
    assert 9 <= time.monotonic() - started < 60
    props = show(host, SERVICE, "ActiveState", "Result")
    assert (props["ActiveState"], props["Result"]) == ("failed", "timeout")
    assert "killed by SIGTERM" in host.file(LOG_FILE).content_string.splitlines()[-1]


# --- installed: bad input fails before anything changes -----------------------------------------------------------


@pytest.mark.parametrize(("variables", "message"), [
    ({"scheduled_sync_on_calendar": "Funday 25:00"},
     "scheduled_sync_on_calendar 'Funday 25:00' is not a systemd calendar expression"),
    ({"scheduled_sync_on_failure": "not/a unit"}, "systemd-analyze verify rejected the units"),
], ids=["calendar", "unit"])
def test_bad_input_fails_before_anything_changes(host, step, variables, message):
    expect(step, "installed")
    before = unit_state(host)
    result = run_playbook("converge.yml", variables)
    assert result.returncode != 0
    # The failure's message as Ansible prints it on stderr ([ERROR]: …); the recap on stdout.
    output = re.sub(r"\s+", " ", result.stdout + result.stderr)
    assert message in output, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Nothing was changed" in output or "nothing was changed" in output
    assert re.search(r"changed=0\b", output)
    assert unit_state(host) == before


# --- removed -------------------------------------------------------------------------------------------------------


def test_the_units_are_gone(host, step):
    expect(step, "removed")
    for unit in (SERVICE, TIMER):
        props = show(host, unit, "LoadState", "ActiveState")
        assert (props["LoadState"], props["ActiveState"]) == ("not-found", "inactive")
    for path in [*UNIT_FILES, RUNNER, VAULT_SOURCE, f"/etc/systemd/system/timers.target.wants/{TIMER}"]:
        assert not host.file(path).exists, path
    assert TIMER not in host.check_output("systemctl list-timers --all --no-pager")
    assert PREFIX not in host.check_output("systemctl list-units --failed --all --no-pager")
    # The runs' record stays.
    assert host.file(LOG_FILE).exists


def test_removing_again_changes_nothing(step):
    expect(step, "removed")
    result = run_playbook("remove.yml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    recap = [line for line in result.stdout.splitlines() if re.search(r"\bok=\d+", line)]
    assert recap and all(re.search(r"\bchanged=0\b", line) for line in recap), "\n".join(recap)
