"""scripts/pgmigrate-run: migrate.yml through ansible-runner, as AWX runs it, on the embedded servers."""

import json
import subprocess

import pytest

import dbcompare
from cdp_reference import generate
from conftest import PROJECT_DIR, write_inventory
from pgmigrate_runner import EventPrinter, build_cmdline, parse_extravars

RUNNER = str(PROJECT_DIR / "scripts" / "pgmigrate-run")


def pgmigrate_run(*args):
    return subprocess.run([RUNNER, *args], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=600, check=False)


def test_migrate_yml_through_ansible_runner_shows_phases_and_tables_keeps_events_and_exits_zero(db_pair, tmp_path):
    src, dst = db_pair
    generate.load(src, 0.3)
    inventory = write_inventory(tmp_path, src, dst, {"migration_workers": 1, "migration_progress_poll_seconds": 1})
    result = pgmigrate_run("-i", str(inventory), "--skip-tags", "backup", "--artifacts-dir", str(tmp_path / "runs"),
                           "--ident", "first")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert dbcompare.compare_databases(src, dst) == []
    out = result.stdout
    phases = [line for line in out.splitlines() if line.startswith("==> ")]
    # the checks once (the phase playbooks' own imports of them match no host and are not shown), then the phases
    assert [p.split(":")[0] for p in phases[:8]] == [
        "==> [Pre-Check] The inventory has a migration controller",
        "==> [Pre-Check] The settings, the connections and the overwrite",
        "==> (1/10) ASSESS", "==> (2/10) BACKUP", "==> (3/10) PREPARE TARGET",
        "==> (4/10) MAINTENANCE", "==> (5/10) COPY", "==> (6/10) VALIDATE"]
    assert len([p for p in phases if p.startswith("==> [Pre-Check]")]) == 2
    assert "      table public.report_executions:" in out  # each table as the copy completes it
    assert "Result: successful (exit code 0)" in out and "copy complete: 21 tables" in out
    run_dir = tmp_path / "runs" / "first"
    assert (run_dir / "rc").read_text().strip() == "0" and (run_dir / "status").read_text().strip() == "successful"
    assert list((run_dir / "job_events").glob("*.json"))
    assert "env" not in json.loads((run_dir / "command").read_text())
    for secret in (src["password"], dst["password"]):
        assert secret not in out + result.stderr
        for path in run_dir.rglob("*"):
            if path.is_file():
                assert secret not in path.read_text(errors="replace"), path


def test_a_failed_run_exits_non_zero_and_names_the_failed_task(db_pair, tmp_path):
    src, dst = db_pair
    inventory = write_inventory(tmp_path, src, {**dst, "port": 1}, {})
    result = pgmigrate_run("-i", str(inventory), "--tags", "assess", "--artifacts-dir", str(tmp_path / "runs"))
    assert result.returncode != 0
    assert "FAILED localhost: Assess the source and plan the copy:" in result.stdout
    assert "Result: failed" in result.stdout


def test_bad_arguments_are_refused_before_anything_runs(tmp_path):
    result = pgmigrate_run("-i", str(tmp_path / "missing"))
    assert result.returncode != 0 and "no inventory" in result.stderr
    with pytest.raises(SystemExit, match="write name=value"):
        parse_extravars(["novalue"])
    assert parse_extravars(["migration_workers=8", "flag=true"]) == {"migration_workers": 8, "flag": True}
    assert build_cmdline(check=True, tags="copy", vault_password_file="v")[:3] == ["--check", "--tags", "copy"]


def test_the_event_printer_closes_each_phase_with_its_outcome():
    lines = []
    printer = EventPrinter(lines.append)
    printer.handle({"event": "playbook_on_play_start", "event_data": {"play": "(1/10) ASSESS"}})
    printer.handle({"event": "runner_on_failed", "event_data": {"host": "h", "task": "t", "res": {"msg": "boom"}}})
    printer.handle({"event": "playbook_on_stats", "event_data": {}})
    assert lines[:2] == ["==> (1/10) ASSESS", "    FAILED h: t: boom"] and lines[2].startswith("    failed in")


def test_a_play_switched_off_is_not_shown_and_one_with_no_host_says_skipped():
    lines = []
    printer = EventPrinter(lines.append)
    printer.handle({"event": "playbook_on_play_start", "event_data": {"play": "[Pre-Check] again",
                                                                       "play_pattern": "!all"}})
    printer.handle({"event": "playbook_on_no_hosts_matched", "event_data": {}})
    printer.handle({"event": "playbook_on_play_start", "event_data": {"play": "(1/10) ASSESS", "play_pattern": "x"}})
    printer.handle({"event": "playbook_on_task_start", "event_data": {"task": "t"}})
    printer.handle({"event": "playbook_on_play_start", "event_data": {"play": "(4/10) MAINTENANCE",
                                                                       "play_pattern": "cdp_app_servers"}})
    printer.handle({"event": "playbook_on_no_hosts_matched", "event_data": {}})
    printer.handle({"event": "playbook_on_stats", "event_data": {}})
    assert lines[0] == "==> (1/10) ASSESS" and lines[1].startswith("    ok in"), lines
    assert lines[2:] == ["==> (4/10) MAINTENANCE", "    skipped: no host matched"], lines
    assert [phase[0] for phase in printer.phases] == ["(1/10) ASSESS", "(4/10) MAINTENANCE"]


def test_a_phase_that_did_nothing_is_not_called_ok_and_changes_are_counted():
    """A play none of whose tasks the tags select, and one whose every task was skipped (the rollback plays
    after a passing validation), are skipped; a play's changes are counted."""
    lines = []
    printer = EventPrinter(lines.append)
    printer.handle({"event": "playbook_on_play_start", "event_data": {"play": "(2/10) BACKUP", "play_pattern": "x"}})
    printer.handle({"event": "playbook_on_play_start", "event_data": {"play": "(R2/3) ROLLBACK", "play_pattern": "x"}})
    printer.handle({"event": "playbook_on_task_start", "event_data": {"task": "Restore"}})
    printer.handle({"event": "runner_on_skipped", "event_data": {"host": "h", "task": "Restore"}})
    printer.handle({"event": "playbook_on_play_start", "event_data": {"play": "(5/10) COPY", "play_pattern": "x"}})
    printer.handle({"event": "playbook_on_task_start", "event_data": {"task": "Copy (rows)"}})
    printer.handle({"event": "runner_on_ok",
                    "event_data": {"host": "h", "task": "Copy (rows)", "res": {"changed": True}}})
    printer.handle({"event": "playbook_on_task_start", "event_data": {"task": "Report"}})
    printer.handle({"event": "runner_on_ok", "event_data": {"host": "h", "task": "Report", "res": {"changed": False}}})
    printer.handle({"event": "playbook_on_stats", "event_data": {}})
    assert lines[:2] == ["==> (2/10) BACKUP", "    skipped: no task selected (tags)"], lines
    assert lines[2] == "==> (R2/3) ROLLBACK" and lines[3].endswith(": every task's condition was false"), lines
    assert lines[4] == "==> (5/10) COPY" and lines[5].startswith("    ok, 1 changed in"), lines
    summary = printer.summary_lines("successful", 0, "/a")
    assert "  skipped: (2/10) BACKUP" in summary and "  skipped: (R2/3) ROLLBACK" in summary
    assert "  ok, 1 changed: (5/10) COPY" in summary
